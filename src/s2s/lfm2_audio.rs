//! The assembled LFM2-Audio model: log-mel front end, FastConformer encoder and MLP adapter (audio in), the LFM2
//! backbone, the depthformer with its audio-code embedding (audio out) and, when the checkpoint has one, the
//! detokenizer.
//!
//! A prompt is a sequence of [`Segment`]s — text token ids, user audio, and earlier reply audio frames — which
//! [`Lfm2Audio::embed_segments`] turns into one sequence of backbone input embeddings: text through the token
//! embedding, audio in through mel → encoder → adapter (⌈mel frames / 8⌉ positions per segment), audio out through
//! the sum of the per-codebook code embeddings.
//!
//! The checkpoint is the published directory: `config.json` (sections `lfm`, `encoder`, `depthformer`,
//! `preprocessor` plus `codebooks` and `interleaved_n_text` / `interleaved_n_audio`), `model.safetensors` with
//! tensors `lfm.*`, `conformer.*`, `audio_adapter.*`, `audio_embedding.*`, `depth_linear.*`, `depthformer.*`,
//! `depth_embeddings.*`, and optionally `audio_detokenizer/`. Matrices are converted to the chosen [`DType`] at load.

use crate::kernels::quant::DType;
use crate::s2s::conformer::{Adapter, Encoder, EncoderConfig};
use crate::s2s::depthformer::{AudioEmbedding, Depthformer, DepthformerConfig};
use crate::s2s::detokenizer::Detokenizer;
use crate::s2s::lfm2::{self, Lfm2, Lfm2ConfigFile};
use crate::s2s::mel::{LogMel, PreprocessorConfig};
use crate::s2s::weights::Checkpoint;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// Codes per codebook, plus one: code 2048 ends the audio of a reply.
pub const AUDIO_VOCAB: usize = 2049;
/// The end-of-audio code (in codebook 0 it switches generation back to text).
pub const END_OF_AUDIO: u32 = 2048;
/// Samples of 24 kHz reply audio per audio frame (80 ms).
pub const SAMPLES_PER_FRAME: usize = 1920;
/// Sample rate of the user audio the encoder expects.
pub const INPUT_RATE: u32 = 16_000;

/// `config.json` of an LFM2-Audio checkpoint (keys sigflow reads; training-only keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Lfm2AudioConfigFile {
    pub codebooks: usize,
    #[serde(default)]
    pub tie_audio_embeddings: bool,
    pub interleaved_n_text: usize,
    pub interleaved_n_audio: usize,
    pub preprocessor: PreprocessorConfig,
    pub encoder: EncoderConfig,
    pub lfm: Lfm2ConfigFile,
    pub depthformer: DepthformerConfig,
}

/// The runtime configuration of the assembled model.
#[derive(Debug, Clone)]
pub struct Lfm2AudioConfig {
    pub codebooks: usize,
    /// Text tokens per turn of interleaved generation.
    pub n_text: usize,
    /// Audio frames per turn of interleaved generation.
    pub n_audio: usize,
    pub preprocessor: PreprocessorConfig,
    pub encoder: EncoderConfig,
    pub lfm: lfm2::Config,
    pub depthformer: DepthformerConfig,
}

impl Lfm2AudioConfig {
    /// Read and check `config.json`; errors name the file, the section and the key.
    pub fn from_file(path: &Path) -> Result<Lfm2AudioConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let f: Lfm2AudioConfigFile = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("{}:{}: {e}", e.line(), e.column())))?;
        let lfm = lfm2::Config::from_config_file(&f.lfm)
            .map_err(|m| Error::file(path, format!("section `lfm`: {m}")))?;
        if f.codebooks == 0 {
            return Err(Error::file(path, "`codebooks` must be at least 1"));
        }
        if f.interleaved_n_text == 0 || f.interleaved_n_audio == 0 {
            return Err(Error::file(
                path,
                "`interleaved_n_text` and `interleaved_n_audio` must be at least 1",
            ));
        }
        Ok(Lfm2AudioConfig {
            codebooks: f.codebooks,
            n_text: f.interleaved_n_text,
            n_audio: f.interleaved_n_audio,
            preprocessor: f.preprocessor,
            encoder: f.encoder,
            lfm,
            depthformer: f.depthformer,
        })
    }

    /// The shapes of the published LFM2-Audio-1.5B: LFM2-1.2B backbone, 17 × 512 conformer, 6 × 1024
    /// depthformer, 8 codebooks, 6 text / 12 audio interleaving.
    pub fn lfm2_audio_1_5b() -> Lfm2AudioConfig {
        Lfm2AudioConfig {
            codebooks: 8,
            n_text: 6,
            n_audio: 12,
            preprocessor: PreprocessorConfig::lfm2_audio(),
            encoder: EncoderConfig::lfm2_audio(),
            lfm: lfm2::Config::preset("1.2b").unwrap_or_else(|| unreachable!("built-in preset")),
            depthformer: DepthformerConfig::lfm2_audio_1_5b(),
        }
    }
}

/// One piece of a prompt, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text token ids.
    Text(Vec<u32>),
    /// User audio: 16 kHz mono samples.
    AudioIn(Vec<f32>),
    /// Reply audio frames already produced (one `Vec` of `codebooks` codes per frame).
    AudioOut(Vec<Vec<u32>>),
}

/// The assembled model.
pub struct Lfm2Audio {
    pub cfg: Lfm2AudioConfig,
    pub lfm: Lfm2,
    pub mel: LogMel,
    pub encoder: Encoder,
    pub adapter: Adapter,
    pub depthformer: Depthformer,
    pub audio_embedding: AudioEmbedding,
    /// `audio_detokenizer/` of the checkpoint, if it has one.
    pub detokenizer: Option<Detokenizer>,
}

impl Lfm2Audio {
    /// Load a checkpoint directory in the published layout, converting matrices to `dtype`.
    pub fn load(dir: &Path, dtype: DType, threads: usize) -> Result<Lfm2Audio> {
        let cfg = Lfm2AudioConfig::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        let hidden = cfg.lfm.hidden;
        let lfm = Lfm2::load_prefixed(&ck, "lfm", cfg.lfm.clone(), dtype, threads)?;
        let mel = LogMel::new(&cfg.preprocessor).map_err(|e| {
            Error::file(
                dir.join("config.json"),
                format!("section `preprocessor`: {e}"),
            )
        })?;
        let encoder = Encoder::load(&ck, "conformer", &cfg.encoder, dtype, threads)?;
        let adapter = Adapter::load(
            &ck,
            "audio_adapter",
            encoder.out_dim(),
            hidden,
            dtype,
            threads,
        )?;
        let depthformer =
            Depthformer::load(&ck, &cfg.depthformer, hidden, cfg.codebooks, dtype, threads)?;
        let audio_embedding = AudioEmbedding::load(&ck, cfg.codebooks, hidden)?;
        let detok_dir = dir.join("audio_detokenizer");
        let detokenizer = if detok_dir.is_dir() {
            Some(Detokenizer::load(&detok_dir, dtype, threads)?)
        } else {
            None
        };
        Ok(Lfm2Audio {
            cfg,
            lfm,
            mel,
            encoder,
            adapter,
            depthformer,
            audio_embedding,
            detokenizer,
        }
        .sharing_one_pool())
    }

    /// A model with random weights of the shapes in `cfg` (the detokenizer has the published shape).
    pub fn random(
        cfg: Lfm2AudioConfig,
        dtype: DType,
        threads: usize,
        seed: u64,
    ) -> Result<Lfm2Audio> {
        let hidden = cfg.lfm.hidden;
        let lfm = Lfm2::random(cfg.lfm.clone(), dtype, threads, seed)?;
        let mel = LogMel::new(&cfg.preprocessor)?;
        let encoder = Encoder::random(&cfg.encoder, dtype, threads, seed ^ 1)?;
        let adapter = Adapter::random(encoder.out_dim(), hidden, dtype, threads, seed ^ 2)?;
        let depthformer = Depthformer::random(
            &cfg.depthformer,
            hidden,
            cfg.codebooks,
            dtype,
            threads,
            seed ^ 3,
        )?;
        let audio_embedding = AudioEmbedding::random(cfg.codebooks, hidden, seed ^ 4);
        let detokenizer = Some(Detokenizer::random(dtype, threads, seed ^ 5)?);
        Ok(Lfm2Audio {
            cfg,
            lfm,
            mel,
            encoder,
            adapter,
            depthformer,
            audio_embedding,
            detokenizer,
        }
        .sharing_one_pool())
    }

    /// Every part runs its kernels on the backbone's pool: the parts run one after another, and separate pools
    /// would leave each one's idle workers spinning on the cores the next part needs.
    fn sharing_one_pool(mut self) -> Self {
        let pool = self.lfm.shared_pool();
        self.encoder.use_pool(Arc::clone(&pool));
        self.adapter.use_pool(Arc::clone(&pool));
        self.depthformer.use_pool(Arc::clone(&pool));
        if let Some(d) = &mut self.detokenizer {
            d.use_pool(pool);
        }
        self
    }

    pub fn hidden(&self) -> usize {
        self.cfg.lfm.hidden
    }

    /// Backbone positions a segment takes.
    pub fn segment_len(&self, seg: &Segment) -> usize {
        match seg {
            Segment::Text(ids) => ids.len(),
            Segment::AudioIn(samples) => Encoder::output_len(self.mel.compute(samples).1),
            Segment::AudioOut(frames) => frames.len(),
        }
    }

    /// User audio (16 kHz) → adapter embeddings (`n × hidden`, n = ⌈mel frames / 8⌉).
    pub fn embed_audio_in(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let (mel, frames) = self.mel.compute(samples);
        if frames == 0 {
            return Err(Error::Model(format!(
                "user audio of {} samples is too short for one mel frame",
                samples.len()
            )));
        }
        let (enc, n) = self.encoder.forward(&mel, frames)?;
        Ok(self.adapter.forward(&enc, n))
    }

    /// The backbone input embedding of one audio frame (sum over codebooks of the code embeddings).
    pub fn embed_audio_frame(&self, codes: &[u32], out: &mut [f32]) -> Result<()> {
        if codes.len() != self.cfg.codebooks {
            return Err(Error::Model(format!(
                "an audio frame has {} codes, the model has {} codebooks",
                codes.len(),
                self.cfg.codebooks
            )));
        }
        if let Some(&bad) = codes.iter().find(|&&c| c as usize >= AUDIO_VOCAB) {
            return Err(Error::Model(format!(
                "audio code {bad} is outside 0..{AUDIO_VOCAB}"
            )));
        }
        self.audio_embedding.embed(codes, out);
        Ok(())
    }

    /// A prompt → backbone input embeddings (`positions × hidden`, time-major), appended to `out`.
    pub fn embed_segments(&self, segments: &[Segment], out: &mut Vec<f32>) -> Result<()> {
        let h = self.hidden();
        for seg in segments {
            match seg {
                Segment::Text(ids) => {
                    let start = out.len();
                    out.resize(start + ids.len() * h, 0.0);
                    self.lfm.embed_tokens(ids, &mut out[start..])?;
                }
                Segment::AudioIn(samples) => out.extend(self.embed_audio_in(samples)?),
                Segment::AudioOut(frames) => {
                    for f in frames {
                        let start = out.len();
                        out.resize(start + h, 0.0);
                        self.embed_audio_frame(f, &mut out[start..])?;
                    }
                }
            }
        }
        Ok(())
    }
}
