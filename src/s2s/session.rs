//! The assistant's conversation interface: a [`Responder`] answers one user turn at a time and streams its reply
//! as [`ResponseChunk`]s; the caller may stop it early (barge-in).

use crate::Result;
use std::ops::ControlFlow;

/// One piece of a reply, in the order the model produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseChunk {
    /// A text token: its id in the model's vocabulary and its decoded text piece.
    Text { id: u32, piece: String },
    /// Reply audio at [`Responder::output_rate`] (24 kHz for LFM2-Audio), mono.
    Audio(Vec<f32>),
}

/// A conversational speech model that answers user turns.
pub trait Responder: Send {
    /// Answer one user turn (16 kHz mono). Call `emit` for each chunk as it is produced; stop early when it
    /// returns `ControlFlow::Break(())` (barge-in). Keeps conversation state across calls.
    fn respond(
        &mut self,
        turn: &[f32],
        emit: &mut dyn FnMut(ResponseChunk) -> ControlFlow<()>,
    ) -> Result<()>;
    /// Forget the conversation, as if newly built.
    fn reset(&mut self);
    /// Sample rate of the audio in [`ResponseChunk::Audio`].
    fn output_rate(&self) -> u32 {
        24_000
    }
}
