//! Signal processing: streaming resampling (rubato), STFT / log-mel, level metering.

pub mod resample;
