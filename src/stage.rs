//! The `Stage` trait: a processing step fed by the stream worker at its own sample rate.

use crate::event::Event;

/// A processing stage. The stream worker resamples the source to [`Stage::rate`] and calls [`Stage::push`] with
/// consecutive blocks of any size; the stage frames them itself (window/hop) and appends events to `out`.
/// Event `sample` fields are in the stage's own rate; the worker maps them to the source rate.
pub trait Stage: Send {
    /// The stage's name from the config (events carry it).
    fn name(&self) -> &str;
    /// Sample rate the stage wants its input at.
    fn rate(&self) -> u32;
    /// Consume the next block of samples.
    fn push(&mut self, samples: &[f32], out: &mut Vec<Event>);
    /// End of stream: emit whatever is pending (e.g. close an open segment).
    fn finish(&mut self, _out: &mut Vec<Event>) {}
    /// Forget all state, as if newly built.
    fn reset(&mut self);
}
