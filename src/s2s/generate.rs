//! Generation of a reply: text tokens and audio frames from the backbone, in the reference's two modes.
//!
//! - **Interleaved**: up to `n_text` text tokens, then `n_audio` audio frames, repeat. `<|text_end|>` ends the
//!   text (from then on only audio), an end-of-audio frame (code 2048 in codebook 0) switches back to text, and
//!   `<|im_end|>` stops without being emitted.
//! - **Sequential**: text until `<|audio_start|>`, then audio until end-of-audio, then text again;
//!   `<|im_end|>` is emitted and stops.
//!
//! Every step feeds the previous token's embedding (text: token embedding, audio: sum of code embeddings) to the
//! backbone and reads its last hidden state; the text logits come from the tied token embedding, the audio frame
//! from the depthformer. A [`Conversation`] keeps the backbone state between turns: what was generated and not
//! yet fed waits as a pending embedding and goes in front of the next turn's prompt, so a second turn on the kept
//! state computes the same as one prefill of the whole history.

use crate::s2s::lfm2::Lfm2State;
use crate::s2s::lfm2_audio::{Lfm2Audio, Segment, END_OF_AUDIO};
use crate::s2s::sampling::{Sampler, SamplingParams};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::sync::Arc;

/// `<|im_end|>`: end of a turn.
pub const IM_END: u32 = 7;
/// `<|audio_start|>`: sequential mode switches to audio.
pub const AUDIO_START: u32 = 128;
/// `<|text_end|>`: interleaved mode has finished its text.
pub const TEXT_END: u32 = 130;

/// How text and audio alternate in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Interleaved,
    Sequential,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "interleaved" => Ok(Mode::Interleaved),
            "sequential" => Ok(Mode::Sequential),
            other => Err(format!(
                "unknown mode `{other}` (expected interleaved or sequential)"
            )),
        }
    }
}

/// One generated item, serialised as `{"text": id}` or `{"audio": [codes]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Token {
    Text(u32),
    Audio(Vec<u32>),
}

impl Token {
    /// An end-of-audio frame (all codes 2048): it carries no sound.
    pub fn is_end_of_audio(&self) -> bool {
        matches!(self, Token::Audio(c) if c.first() == Some(&END_OF_AUDIO))
    }
}

/// Settings of one reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationParams {
    pub mode: Mode,
    /// Backbone steps at most (text tokens and audio frames together).
    pub max_new_tokens: usize,
    pub text: SamplingParams,
    pub audio: SamplingParams,
    pub seed: u64,
}

impl GenerationParams {
    /// Greedy text and audio.
    pub fn greedy(mode: Mode, max_new_tokens: usize) -> GenerationParams {
        let g = SamplingParams {
            temperature: 0.0,
            top_k: 0,
            greedy: true,
        };
        GenerationParams {
            mode,
            max_new_tokens,
            text: g,
            audio: g,
            seed: 0,
        }
    }
}

/// A conversation with the model: the backbone state, the embeddings not yet run, and the history of segments.
pub struct Conversation {
    model: Arc<Lfm2Audio>,
    state: Lfm2State,
    /// Input embeddings waiting for the next backbone call (`n × hidden`).
    pending: Vec<f32>,
    history: Vec<Segment>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    turns: u64,
}

impl Conversation {
    pub fn new(model: Arc<Lfm2Audio>) -> Conversation {
        let state = model.lfm.new_state(1024);
        Conversation {
            model,
            state,
            pending: Vec::new(),
            history: Vec::new(),
            hidden: Vec::new(),
            logits: Vec::new(),
            turns: 0,
        }
    }

    pub fn model(&self) -> &Arc<Lfm2Audio> {
        &self.model
    }

    /// Everything the conversation holds, in order: prompts pushed and items generated.
    pub fn history(&self) -> &[Segment] {
        &self.history
    }

    /// Backbone positions run so far.
    pub fn position(&self) -> usize {
        self.state.pos
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.state = self.model.lfm.new_state(1024);
        self.pending.clear();
        self.history.clear();
        self.turns = 0;
    }

    /// Append prompt segments (embedded now, run through the backbone with the next generation step).
    pub fn push(&mut self, segments: &[Segment]) -> Result<()> {
        self.model.embed_segments(segments, &mut self.pending)?;
        for s in segments {
            push_history(&mut self.history, s.clone());
        }
        Ok(())
    }

    /// Append prompt embeddings computed elsewhere (`n × hidden`), recorded in the history as `recorded`.
    pub fn push_embeddings(&mut self, embeds: &[f32], recorded: Segment) -> Result<()> {
        if !embeds.len().is_multiple_of(self.model.hidden()) {
            return Err(Error::Model(format!(
                "prompt embeddings: {} values is not a multiple of the hidden width {}",
                embeds.len(),
                self.model.hidden()
            )));
        }
        self.pending.extend_from_slice(embeds);
        push_history(&mut self.history, recorded);
        Ok(())
    }

    /// Run the pending embeddings through the backbone; the last hidden state is then [`Self::last_hidden`].
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.model
            .lfm
            .forward_embeds(&pending, &mut self.state, &mut self.hidden, None, false)?;
        let h = self.model.hidden();
        let n = self.hidden.len() / h;
        if n > 1 {
            self.hidden.drain(..(n - 1) * h);
        }
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }

    /// The backbone's last hidden state after the last [`Self::flush`].
    pub fn last_hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Text logits of the last hidden state.
    pub fn text_logits(&mut self) -> &[f32] {
        let hidden = std::mem::take(&mut self.hidden);
        self.model
            .lfm
            .logits_of(&hidden, 1, &mut self.logits, &mut self.state);
        self.hidden = hidden;
        &self.logits
    }

    /// Start a reply; step it with [`Generation::next_token`]. Its seed is mixed with the turn number so that
    /// turns of a sampled conversation differ.
    pub fn reply(&mut self, params: GenerationParams) -> Generation<'_> {
        let seed = params.seed ^ self.turns.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.turns += 1;
        let n_text = self.model.cfg.n_text as i64;
        Generation {
            conv: self,
            params,
            audio_mode: false,
            left: n_text,
            text_done: false,
            steps: 0,
            finished: false,
            text_sampler: Sampler::new(params.text, seed),
            audio_sampler: Sampler::new(params.audio, seed ^ 0xA0D1_0000),
        }
    }

    /// Generate a whole reply, calling `on_token` for each item as it is produced (stop early by returning
    /// `ControlFlow::Break`). Returns the items generated.
    pub fn generate(
        &mut self,
        params: GenerationParams,
        on_token: &mut dyn FnMut(&Token) -> ControlFlow<()>,
    ) -> Result<Vec<Token>> {
        let mut g = self.reply(params);
        let mut out = Vec::new();
        while let Some(t) = g.next_token()? {
            let flow = on_token(&t);
            out.push(t);
            if flow.is_break() {
                break;
            }
        }
        Ok(out)
    }
}

/// Append to the history, merging runs of text ids and of audio frames.
fn push_history(history: &mut Vec<Segment>, seg: Segment) {
    match (history.last_mut(), seg) {
        (Some(Segment::Text(a)), Segment::Text(b)) => a.extend(b),
        (Some(Segment::AudioOut(a)), Segment::AudioOut(b)) => a.extend(b),
        (_, seg) => history.push(seg),
    }
}

/// One reply being generated.
pub struct Generation<'c> {
    conv: &'c mut Conversation,
    params: GenerationParams,
    audio_mode: bool,
    /// Items left in the current text or audio run (interleaved mode; may go below zero as in the reference).
    left: i64,
    text_done: bool,
    steps: usize,
    finished: bool,
    text_sampler: Sampler,
    audio_sampler: Sampler,
}

impl Generation<'_> {
    /// Backbone steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Whether the next step produces an audio frame.
    pub fn in_audio(&self) -> bool {
        self.audio_mode
    }

    pub fn conversation(&self) -> &Conversation {
        self.conv
    }

    /// The next item, or `None` when the reply is finished (`<|im_end|>` or `max_new_tokens` steps).
    pub fn next_token(&mut self) -> Result<Option<Token>> {
        if self.finished || self.steps >= self.params.max_new_tokens {
            self.finished = true;
            return Ok(None);
        }
        if self.conv.pending.is_empty() && self.conv.hidden.is_empty() {
            return Err(Error::Model(
                "nothing to reply to: the conversation has no prompt".into(),
            ));
        }
        self.steps += 1;
        self.left -= 1;
        self.conv.flush()?;
        let interleaved = self.params.mode == Mode::Interleaved;
        let cfg = &self.conv.model.cfg;
        let (n_text, n_audio) = (cfg.n_text as i64, cfg.n_audio as i64);
        let token = if !self.audio_mode {
            let id = self.text_sampler.sample(self.conv.text_logits());
            if interleaved {
                if id == IM_END {
                    self.finished = true;
                    return Ok(None);
                }
                if id == TEXT_END {
                    self.text_done = true;
                }
                if self.left == 0 || self.text_done {
                    self.audio_mode = true;
                    self.left = n_audio;
                }
            } else if id == AUDIO_START {
                self.audio_mode = true;
            } else if id == IM_END {
                self.finished = true;
            }
            Token::Text(id)
        } else {
            let conv = &*self.conv;
            let sampler = &mut self.audio_sampler;
            let mut codes = conv
                .model
                .depthformer
                .frame(conv.last_hidden(), &mut |_, logits| sampler.sample(logits));
            if interleaved && self.left == 0 && !self.text_done {
                self.audio_mode = false;
                self.left = n_text;
            }
            if codes.first() == Some(&END_OF_AUDIO) {
                codes.iter_mut().for_each(|c| *c = END_OF_AUDIO);
                self.audio_mode = false;
            }
            Token::Audio(codes)
        };
        // The item is part of the conversation: its embedding goes in with the next backbone call.
        let seg = match &token {
            Token::Text(id) => Segment::Text(vec![*id]),
            Token::Audio(codes) => Segment::AudioOut(vec![codes.clone()]),
        };
        self.conv.push(std::slice::from_ref(&seg))?;
        Ok(Some(token))
    }
}
