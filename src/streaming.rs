//! `StreamingModule`: a model that consumes its input a few frames at a time and keeps the state it needs.

/// A stateful model stepped over a stream. The CNN engine's activation caches and the LFM2 decode cache
/// (conv state + KV cache) both have this shape. Feeding a sequence in any split must give the same outputs as
/// feeding it whole (the "streaming equals batch" rule; each implementation tests it).
pub trait StreamingModule {
    /// What one step consumes (e.g. new samples, or token ids).
    type Input: ?Sized;
    /// What one step produces.
    type Output;
    /// Consume `input` (the new frames only) and return the outputs they make available.
    fn step(&mut self, input: &Self::Input) -> crate::Result<Self::Output>;
    /// Forget all stream state.
    fn reset_state(&mut self);
}
