//! Speech-to-speech model (LFM2-Audio architecture): LFM2 backbone, encoder, depthformer, detokenizer.

pub mod chat;
pub mod cli;
pub mod conformer;
pub mod depthformer;
pub mod detokenizer;
pub mod generate;
pub mod lfm2;
pub mod lfm2_audio;
pub mod lfm2_audio_responder;
pub mod mel;
pub mod random_weights;
pub mod sampling;
pub mod session;
pub mod stage;
pub mod weights;
