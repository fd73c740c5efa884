//! Speech-to-speech model (LFM2-Audio architecture): LFM2 backbone, encoder, depthformer, detokenizer.

pub mod cli;
pub mod conformer;
pub mod depthformer;
pub mod detokenizer;
pub mod lfm2;
pub mod mel;
pub mod random_weights;
pub mod sampling;
pub mod session;
pub mod stage;
pub mod weights;
