//! LFM2-Audio as the assistant's [`Responder`]: each user turn is laid out with the chat template, the reply is
//! generated on the kept conversation state, text tokens are emitted as they come and audio frames go through
//! the streaming detokenizer, so reply audio is emitted as soon as it is final.

use crate::s2s::chat::{ChatLayout, TextTokenizer, DEFAULT_SYSTEM, STAND_IN_SYSTEM};
use crate::s2s::generate::{Conversation, GenerationParams, Token};
use crate::s2s::lfm2_audio::Lfm2Audio;
use crate::s2s::session::{Responder, ResponseChunk};
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

/// A conversation with LFM2-Audio that answers user turns with text and 24 kHz audio.
pub struct Lfm2AudioResponder {
    conv: Conversation,
    layout: ChatLayout,
    /// Token ids of the system prompt (none: no system turn).
    system: Option<Vec<u32>>,
    tokenizer: Option<TextTokenizer>,
    params: GenerationParams,
}

impl Lfm2AudioResponder {
    /// A responder over `model`, which must have a detokenizer. Without a tokenizer the text pieces are empty.
    pub fn new(
        model: Arc<Lfm2Audio>,
        layout: ChatLayout,
        system: Option<Vec<u32>>,
        tokenizer: Option<TextTokenizer>,
        params: GenerationParams,
    ) -> Result<Lfm2AudioResponder> {
        if model.detokenizer.is_none() {
            return Err(Error::Model(
                "the model has no audio detokenizer (audio_detokenizer/ of the checkpoint)".into(),
            ));
        }
        Ok(Lfm2AudioResponder {
            conv: Conversation::new(model),
            layout,
            system,
            tokenizer,
            params,
        })
    }

    /// A responder over the model loaded from checkpoint directory `dir`, laid out by its `tokenizer.json`;
    /// `system` defaults to the published interleaved prompt. A checkpoint without `tokenizer.json` (a test
    /// checkpoint) gets [`ChatLayout::stand_in`] and its stand-in system prompt; `system` must then be `None`.
    pub fn from_checkpoint(
        model: Arc<Lfm2Audio>,
        dir: &Path,
        system: Option<&str>,
        params: GenerationParams,
    ) -> Result<Lfm2AudioResponder> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            if system.is_some() {
                return Err(Error::file(
                    &path,
                    "missing: a system prompt needs the tokenizer to be encoded",
                ));
            }
            let sys = STAND_IN_SYSTEM.to_vec();
            return Lfm2AudioResponder::new(model, ChatLayout::stand_in(), Some(sys), None, params);
        }
        let tok = TextTokenizer::load(&path)?;
        let layout = ChatLayout::from_tokenizer(&tok)?;
        let sys = tok.encode(system.unwrap_or(DEFAULT_SYSTEM))?;
        Lfm2AudioResponder::new(model, layout, Some(sys), Some(tok), params)
    }

    pub fn conversation(&self) -> &Conversation {
        &self.conv
    }
}

impl Responder for Lfm2AudioResponder {
    fn respond(
        &mut self,
        turn: &[f32],
        emit: &mut dyn FnMut(ResponseChunk) -> ControlFlow<()>,
    ) -> Result<()> {
        let prompt = if self.conv.history().is_empty() {
            self.layout
                .first_turn(self.system.as_deref(), turn.to_vec())
        } else {
            self.layout.next_turn(turn.to_vec())
        };
        self.conv.push(&prompt)?;
        let model = self.conv.model().clone();
        let detok = model
            .detokenizer
            .as_ref()
            .ok_or_else(|| Error::Model("the model has no audio detokenizer".into()))?;
        let mut stream = detok.stream();
        let mut reply = self.conv.reply(self.params);
        while let Some(token) = reply.next_token()? {
            let flow = match &token {
                Token::Text(id) => {
                    let piece = match &self.tokenizer {
                        Some(t) => t.decode(&[*id])?,
                        None => String::new(),
                    };
                    emit(ResponseChunk::Text { id: *id, piece })
                }
                Token::Audio(_) if token.is_end_of_audio() => ControlFlow::Continue(()),
                Token::Audio(codes) => {
                    let samples = stream.push(codes)?;
                    if samples.is_empty() {
                        ControlFlow::Continue(())
                    } else {
                        emit(ResponseChunk::Audio(samples))
                    }
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
        let rest = stream.finish()?;
        if !rest.is_empty() {
            let _ = emit(ResponseChunk::Audio(rest));
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.conv.reset();
    }
}
