//! Signal processing: streaming resampling (rubato), STFT / log-mel, level metering.

pub mod beats;
pub mod framer;
pub mod istft;
pub mod level;
pub mod logmel;
pub mod resample;
