//! Speech-to-speech model (LFM2-Audio architecture): LFM2 backbone, encoder, depthformer, detokenizer.
