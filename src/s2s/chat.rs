//! The chat layout of LFM2-Audio checkpoints: the text tokenizer (`tokenizer.json`) and the turn structure.
//!
//! A conversation is laid out as
//! `<|startoftext|>` `<|im_start|>system\n` *system text* `<|im_end|>\n` `<|im_start|>user\n` *user audio*
//! `<|im_end|>\n` `<|im_start|>assistant\n` *reply* `<|im_end|>\n` `<|im_start|>user\n` *user audio* … — each
//! piece tokenized on its own (special tokens are matched inside the text), the user audio as encoder
//! embeddings. [`ChatLayout`] holds the token ids of those fixed pieces; it comes from a tokenizer or is given
//! as ids for checkpoints that ship none.

use crate::s2s::lfm2_audio::Segment;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// `<|startoftext|>`.
pub const BOS: u32 = 1;
/// `<|im_start|>`.
pub const IM_START: u32 = 6;
pub use crate::s2s::generate::{AUDIO_START, IM_END, TEXT_END};

/// The system prompt the published checkpoint answers in interleaved text and audio with.
pub const DEFAULT_SYSTEM: &str = "Respond with interleaved text and audio.";

/// The system prompt ids of [`ChatLayout::stand_in`] (stand-ins for a few words).
pub const STAND_IN_SYSTEM: [u32; 3] = [50, 51, 52];

/// A Hugging Face `tokenizer.json`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<TextTokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::file(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Token ids of `text`, without added BOS/EOS; special tokens written in the text become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::file(&self.path, format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens included).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::file(&self.path, format!("cannot decode {ids:?}: {e}")))
    }
}

/// Token ids of the fixed pieces of the chat layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLayout {
    /// `<|startoftext|>`.
    pub start: Vec<u32>,
    /// `<|im_start|>system\n`.
    pub system_header: Vec<u32>,
    /// `<|im_start|>user\n`.
    pub user_header: Vec<u32>,
    /// `<|im_start|>assistant\n`.
    pub assistant_header: Vec<u32>,
    /// `<|im_end|>\n`.
    pub turn_end: Vec<u32>,
}

impl ChatLayout {
    /// The layout as the tokenizer encodes it.
    pub fn from_tokenizer(tok: &TextTokenizer) -> Result<ChatLayout> {
        Ok(ChatLayout {
            start: tok.encode("<|startoftext|>")?,
            system_header: tok.encode("<|im_start|>system\n")?,
            user_header: tok.encode("<|im_start|>user\n")?,
            assistant_header: tok.encode("<|im_start|>assistant\n")?,
            turn_end: tok.encode("<|im_end|>\n")?,
        })
    }

    /// For test checkpoints that ship no tokenizer: LFM2's real special ids (1, 6, 7) with stand-in ids for
    /// the role names (system 40, user 41, assistant 42) and the newline (10), the layout the parity fixtures
    /// use. Its system prompt is [`STAND_IN_SYSTEM`].
    pub fn stand_in() -> ChatLayout {
        ChatLayout {
            start: vec![BOS],
            system_header: vec![IM_START, 40, 10],
            user_header: vec![IM_START, 41, 10],
            assistant_header: vec![IM_START, 42, 10],
            turn_end: vec![IM_END, 10],
        }
    }

    /// The prompt of the first user turn: start, optional system turn, the user's audio, the assistant header.
    pub fn first_turn(&self, system: Option<&[u32]>, user_audio: Vec<f32>) -> Vec<Segment> {
        let mut head = self.start.clone();
        if let Some(sys) = system {
            head.extend(&self.system_header);
            head.extend(sys);
            head.extend(&self.turn_end);
        }
        head.extend(&self.user_header);
        self.user_turn(head, user_audio)
    }

    /// The prompt of a later user turn: end of the previous reply, then the user's audio and the assistant header.
    pub fn next_turn(&self, user_audio: Vec<f32>) -> Vec<Segment> {
        let mut head = self.turn_end.clone();
        head.extend(&self.user_header);
        self.user_turn(head, user_audio)
    }

    fn user_turn(&self, head: Vec<u32>, user_audio: Vec<f32>) -> Vec<Segment> {
        let mut tail = self.turn_end.clone();
        tail.extend(&self.assistant_header);
        vec![
            Segment::Text(head),
            Segment::AudioIn(user_audio),
            Segment::Text(tail),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small word-level tokenizer with the LFM2 special ids.
    fn tokenizer() -> TextTokenizer {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [
            {"id": 1, "content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 6, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 7, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": null,
          "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+|[^\\w]"}, "behavior": "Isolated", "invert": false},
          "post_processor": null, "decoder": null,
          "model": {"type": "WordLevel", "unk_token": "<unk>",
                    "vocab": {"<unk>": 0, "<|startoftext|>": 1, "<|im_start|>": 6, "<|im_end|>": 7, "system": 20, "user": 21, "assistant": 22, "\n": 10, "Hi": 30, " ": 31, "there": 32, ".": 33}}
        }"#;
        let dir = std::env::temp_dir().join(format!("sigflow-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        TextTokenizer::load(&path).unwrap()
    }

    #[test]
    fn layout_of_two_turns() {
        let tok = tokenizer();
        let layout = ChatLayout::from_tokenizer(&tok).unwrap();
        assert_eq!(layout.start, vec![1]);
        assert_eq!(layout.system_header, vec![6, 20, 10]);
        assert_eq!(layout.user_header, vec![6, 21, 10]);
        assert_eq!(layout.assistant_header, vec![6, 22, 10]);
        assert_eq!(layout.turn_end, vec![7, 10]);
        let sys = tok.encode("Hi there.").unwrap();
        assert_eq!(sys, vec![30, 31, 32, 33]);
        let audio = vec![0.5f32; 4];
        let first = layout.first_turn(Some(&sys), audio.clone());
        assert_eq!(
            first,
            vec![
                Segment::Text(vec![1, 6, 20, 10, 30, 31, 32, 33, 7, 10, 6, 21, 10]),
                Segment::AudioIn(audio.clone()),
                Segment::Text(vec![7, 10, 6, 22, 10]),
            ]
        );
        let next = layout.next_turn(audio.clone());
        assert_eq!(next[0], Segment::Text(vec![7, 10, 6, 21, 10]));
        assert_eq!(tok.decode(&[6, 21]).unwrap(), "<|im_start|> user");
    }

    #[test]
    fn bad_tokenizer_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("sigflow-chat-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = TextTokenizer::load(&path).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
