//! `sigflow generate` and `sigflow bench lfm2`.
