//! `sigflow generate` (run an LFM2 checkpoint on token ids) and `sigflow bench lfm2` (throughput with random
//! weights of the published shapes, against the memory-bandwidth roofline measured in the same run).

use crate::kernels::pool::ThreadPool;
use crate::kernels::quant::DType;
use crate::s2s::lfm2::{Config, Lfm2};
use crate::s2s::sampling::{Sampler, SamplingParams};
use crate::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    DType::parse(s).ok_or_else(|| format!("unknown dtype `{s}` (expected f32, bf16, q8 or q4)"))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Arguments of `sigflow generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint directory (config.json + model.safetensors or sharded safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Prompt token ids, comma-separated (e.g. 1,2,3).
    #[arg(long)]
    pub tokens: String,
    /// Number of tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Pick the most likely token each step (otherwise sample with --temperature / --top-k / --seed).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight format after loading: f32, bf16, q8 or q4.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// Threads for the kernels (default: all available).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the logits that chose each generated token to this .npy file (f32, [steps, vocab]).
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
}

/// Parse `1,2,3` into token ids.
pub fn parse_tokens(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            t.parse::<u32>()
                .map_err(|e| Error::Other(format!("--tokens: item {} (`{t}`): {e}", i + 1)))
        })
        .collect()
}

/// Run `sigflow generate`: prints the generated ids on one line, comma-separated.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let prompt = parse_tokens(&args.tokens)?;
    if prompt.is_empty() {
        return Err(Error::Other(
            "--tokens: at least one token id is needed".into(),
        ));
    }
    let threads = args.threads.unwrap_or_else(default_threads);
    let model = Lfm2::load(&args.checkpoint, args.dtype, threads)?;
    let ids = run_generation(&model, &prompt, args)?;
    let line: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
    println!("{}", line.join(","));
    Ok(())
}

fn run_generation(model: &Lfm2, prompt: &[u32], args: &GenerateArgs) -> Result<Vec<u32>> {
    let mut sampler = Sampler::new(
        SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            greedy: args.greedy,
        },
        args.seed,
    );
    let mut st = model.new_state(prompt.len() + args.max_new_tokens);
    let (mut hidden, mut logits) = (Vec::new(), Vec::new());
    let mut dumped: Vec<f32> = Vec::new();
    let mut out = Vec::with_capacity(args.max_new_tokens);
    if args.max_new_tokens > 0 {
        model.forward(prompt, &mut st, &mut hidden, Some(&mut logits), false)?;
    }
    for i in 0..args.max_new_tokens {
        if args.dump_logits.is_some() {
            dumped.extend_from_slice(&logits);
        }
        let t = sampler.sample(&logits);
        out.push(t);
        if i + 1 < args.max_new_tokens {
            model.forward(&[t], &mut st, &mut hidden, Some(&mut logits), false)?;
        }
    }
    if let Some(path) = &args.dump_logits {
        write_npy_f32(path, &dumped, &[out.len(), model.cfg.vocab_size])?;
    }
    Ok(out)
}

/// Write a little-endian f32 array as a NumPy .npy (format 1.0) file.
pub fn write_npy_f32(path: &std::path::Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| Error::file(path, format!("cannot write: {e}")))
}

/// Arguments of `sigflow bench lfm2`.
#[derive(clap::Args, Debug)]
pub struct BenchLfm2Args {
    /// Model shape: 350m or 1.2b (LFM2-350M / LFM2-1.2B), random weights.
    #[arg(long, default_value = "350m")]
    pub shape: String,
    /// Weight format: f32, bf16, q8 or q4.
    #[arg(long, default_value = "q8", value_parser = parse_dtype)]
    pub dtype: DType,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 128)]
    pub prefill_tokens: usize,
    /// Number of decode steps measured.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Print one JSON object instead of a text line.
    #[arg(long)]
    pub json: bool,
}

/// What `sigflow bench lfm2` measures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchLfm2Result {
    pub shape: String,
    pub dtype: String,
    pub threads: usize,
    pub isa: String,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Weight bytes one decode step reads.
    pub weight_bytes_per_token: usize,
    /// Read bandwidth measured in this run on the model's own pool (the median of the rounds' measurements).
    pub bandwidth_gb_s: f64,
    /// weight_bytes_per_token × decode tok/s ÷ bandwidth, per decode round against the bandwidth measured just
    /// before it; the median over the rounds.
    pub roofline_fraction: f64,
    /// CPU time used during decode ÷ (wall time × threads): below 1 when other processes took the cores (or
    /// workers waited).
    pub decode_cpu_share: f64,
}

/// A buffer much larger than the caches, read by every thread of a pool to measure sustained read bandwidth.
pub struct ReadProbe {
    buf: Vec<u64>,
}

impl ReadProbe {
    pub fn new(bytes: usize) -> ReadProbe {
        // Same page treatment as the weights (huge pages where the kernel grants them).
        let mut buf: Vec<u64> = crate::kernels::quant::huge_vec(bytes / 8);
        for (i, v) in buf.iter_mut().enumerate() {
            *v = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        ReadProbe { buf }
    }

    /// The median read bandwidth (GB/s) of `passes` passes over the buffer, split over `pool`'s threads.
    pub fn measure(&self, pool: &ThreadPool, passes: usize) -> f64 {
        let (buf, n) = (&self.buf, self.buf.len());
        let parts = pool.threads();
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..parts)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        let mut rates = Vec::with_capacity(passes);
        for _ in 0..passes.max(1) {
            let t0 = Instant::now();
            pool.run(parts, &|p| {
                let r = crate::kernels::pool::split_range(n, parts, p, 64);
                let mut acc = [0u64; 8];
                for c in buf[r].chunks_exact(8) {
                    for k in 0..8 {
                        acc[k] ^= c[k];
                    }
                }
                let s = acc.iter().fold(0u64, |a, b| a ^ b);
                sums[p].fetch_xor(s, std::sync::atomic::Ordering::Relaxed);
            });
            let dt = t0.elapsed().as_secs_f64();
            rates.push((n * 8) as f64 / dt / 1e9);
        }
        std::hint::black_box(&sums);
        // The median: a single lucky pass on a shared machine would overstate the roofline.
        median(&mut rates)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// CPU time (user + system) this process has used, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zero-initialised struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run the LFM2 benchmark.
pub fn bench_lfm2_run(args: &BenchLfm2Args) -> Result<BenchLfm2Result> {
    let cfg = Config::preset(&args.shape).ok_or_else(|| {
        Error::Other(format!(
            "--shape: unknown shape `{}` (expected 350m or 1.2b)",
            args.shape
        ))
    })?;
    let model = Lfm2::random(cfg, args.dtype, args.threads, 42)?;
    let vocab = model.cfg.vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prefill_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let (mut hidden, mut logits) = (Vec::new(), Vec::new());
    // Warm-up: touch every weight once and size the scratch buffers.
    {
        let mut st = model.new_state(args.prefill_tokens + args.decode_tokens);
        model.forward(&prompt, &mut st, &mut hidden, Some(&mut logits), false)?;
        model.forward(&[1], &mut st, &mut hidden, Some(&mut logits), false)?;
    }
    let mut st = model.new_state(args.prefill_tokens + args.decode_tokens);
    let t0 = Instant::now();
    model.forward(&prompt, &mut st, &mut hidden, Some(&mut logits), false)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut tok = crate::s2s::sampling::argmax(&logits);
    // Decode in rounds, each right after a bandwidth measurement on the model's own pool: the memory bandwidth
    // of a shared machine drifts by tens of percent within seconds, so each round's decode speed is compared
    // with the bandwidth of its own moment, and the roofline fraction is the median over rounds.
    let wb = model.weight_bytes_per_token();
    let probe = ReadProbe::new(512 << 20);
    let rounds = args.decode_tokens.clamp(1, 4);
    let (mut decode_s, mut decode_cpu) = (0.0, 0.0);
    let (mut bandwidths, mut fractions) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let n = args.decode_tokens / rounds + usize::from(r < args.decode_tokens % rounds);
        let bw = probe.measure(model.pool(), 3);
        let cpu1 = process_cpu_seconds();
        let t1 = Instant::now();
        for _ in 0..n {
            model.forward(&[tok], &mut st, &mut hidden, Some(&mut logits), false)?;
            tok = crate::s2s::sampling::argmax(&logits);
        }
        let dt = t1.elapsed().as_secs_f64();
        decode_s += dt;
        decode_cpu += process_cpu_seconds() - cpu1;
        bandwidths.push(bw);
        fractions.push(wb as f64 * n as f64 / dt / (bw * 1e9));
    }
    let bandwidth = median(&mut bandwidths);
    let decode_tok_s = args.decode_tokens as f64 / decode_s;
    Ok(BenchLfm2Result {
        shape: args.shape.clone(),
        dtype: args.dtype.name().to_string(),
        threads: args.threads,
        isa: crate::kernels::isa::Isa::get().name().to_string(),
        prefill_tokens: args.prefill_tokens,
        decode_tokens: args.decode_tokens,
        prefill_tok_s: args.prefill_tokens as f64 / prefill_s,
        decode_tok_s,
        weight_bytes_per_token: wb,
        bandwidth_gb_s: bandwidth,
        roofline_fraction: median(&mut fractions),
        decode_cpu_share: decode_cpu / (decode_s * args.threads as f64),
    })
}

/// `sigflow bench lfm2`: print the result as a text line or JSON.
pub fn bench_lfm2(args: &BenchLfm2Args) -> Result<()> {
    let r = bench_lfm2_run(args)?;
    let mut out = std::io::stdout().lock();
    let line = if args.json {
        serde_json::to_string(&r).map_err(|e| Error::Other(e.to_string()))?
    } else {
        format!(
            "lfm2 {} {} threads={} isa={}: prefill {:.1} tok/s ({} tokens), decode {:.1} tok/s ({} tokens), \
             weights/token {:.1} MB, read bandwidth {:.1} GB/s, roofline fraction {:.2}, decode CPU share {:.2}",
            r.shape,
            r.dtype,
            r.threads,
            r.isa,
            r.prefill_tok_s,
            r.prefill_tokens,
            r.decode_tok_s,
            r.decode_tokens,
            r.weight_bytes_per_token as f64 / 1e6,
            r.bandwidth_gb_s,
            r.roofline_fraction,
            r.decode_cpu_share
        )
    };
    writeln!(out, "{line}").map_err(|e| Error::io("writing to stdout", e))
}

// ---- sigflow s2s, sigflow detokenize, sigflow bench s2s ----

fn parse_mode(s: &str) -> std::result::Result<crate::s2s::generate::Mode, String> {
    s.parse()
}

/// Arguments of `sigflow s2s`.
#[derive(clap::Args, Debug)]
pub struct S2sArgs {
    /// LFM2-Audio checkpoint directory (config.json, model.safetensors, audio_detokenizer/, tokenizer.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The user turn (WAV, any rate; resampled to 16 kHz, channels averaged).
    #[arg(long, required_unless_present = "prompt", conflicts_with = "prompt")]
    pub input: Option<PathBuf>,
    /// Prompt segments instead of the chat template (for checkpoints without tokenizer.json): a JSON list of
    /// `{"text_ids": [...]}` and `{"audio": "file.wav"}` (paths relative to the JSON file).
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// System prompt (default: "Respond with interleaved text and audio.").
    #[arg(long)]
    pub system: Option<String>,
    /// interleaved or sequential.
    #[arg(long, default_value = "interleaved", value_parser = parse_mode)]
    pub mode: crate::s2s::generate::Mode,
    /// Pick the most likely text token and audio code each step.
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample among the k most likely (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generation steps at most (text tokens and audio frames together).
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Write the reply audio here (24 kHz mono, 32-bit float WAV).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the generated items here as JSON: `[{"text": id} | {"audio": [8 codes]}, …]`.
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
    /// Weight format after loading: f32, bf16, q8 or q4.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// Threads for the kernels (default: all available).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Read a WAV file as mono f32 at `rate` Hz (channels averaged, resampled if needed).
pub fn read_wav_mono(path: &std::path::Path, rate: u32) -> Result<Vec<f32>> {
    let info = crate::io::wav_source::WavInfo::probe(path)?;
    let spec = info.spec;
    let reader =
        hound::WavReader::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
        }
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<std::result::Result<_, _>>(),
    }
    .map_err(|e| Error::file(path, format!("cannot decode samples: {e}")))?;
    let ch = spec.channels.max(1) as usize;
    let mono: Vec<f32> = interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    if spec.sample_rate == rate {
        return Ok(mono);
    }
    let mut rs = crate::dsp::resample::StreamResampler::new(spec.sample_rate, rate)?;
    let mut out = Vec::with_capacity(mono.len() * rate as usize / spec.sample_rate as usize + 64);
    rs.process(&mono, &mut out);
    rs.finish(&mut out);
    Ok(out)
}

/// Write 24 kHz mono audio as a 32-bit float WAV.
pub fn write_wav_f32(path: &std::path::Path, samples: &[f32], rate: u32) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let err = |e: hound::Error| Error::file(path, format!("cannot write: {e}"));
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for &s in samples {
        w.write_sample(s).map_err(err)?;
    }
    w.finalize().map_err(err)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptSegmentFile {
    #[serde(default)]
    text_ids: Option<Vec<u32>>,
    #[serde(default)]
    audio: Option<PathBuf>,
}

/// Read a `--prompt` file: a JSON list of `{"text_ids": [...]}` / `{"audio": "file.wav"}` segments.
pub fn read_prompt_segments(
    path: &std::path::Path,
) -> Result<Vec<crate::s2s::lfm2_audio::Segment>> {
    use crate::s2s::lfm2_audio::{Segment, INPUT_RATE};
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let items: Vec<PromptSegmentFile> = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("{}:{}: {e}", e.line(), e.column())))?;
    if items.is_empty() {
        return Err(Error::file(path, "the prompt has no segments"));
    }
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| match (it.text_ids, it.audio) {
            (Some(ids), None) => Ok(Segment::Text(ids)),
            (None, Some(wav)) => Ok(Segment::AudioIn(read_wav_mono(
                &base.join(wav),
                INPUT_RATE,
            )?)),
            _ => Err(Error::file(
                path,
                format!("segment {i}: expected exactly one of `text_ids` or `audio`"),
            )),
        })
        .collect()
}

/// What `sigflow s2s` produced.
pub struct S2sOutput {
    pub tokens: Vec<crate::s2s::generate::Token>,
    /// Reply audio (24 kHz), empty when the checkpoint has no detokenizer.
    pub audio: Vec<f32>,
    /// The reply text, when the checkpoint has a tokenizer.
    pub text: Option<String>,
}

/// Generation settings from the command line.
pub fn s2s_params(args: &S2sArgs) -> crate::s2s::generate::GenerationParams {
    let p = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        greedy: args.greedy,
    };
    crate::s2s::generate::GenerationParams {
        mode: args.mode,
        max_new_tokens: args.max_new_tokens,
        text: p,
        audio: p,
        seed: args.seed,
    }
}

/// Run one user turn through an LFM2-Audio checkpoint (the work of `sigflow s2s`, without writing files).
pub fn s2s_run(args: &S2sArgs) -> Result<S2sOutput> {
    use crate::s2s::chat::{ChatLayout, TextTokenizer, DEFAULT_SYSTEM};
    use crate::s2s::generate::{Conversation, Token};
    use crate::s2s::lfm2_audio::{Lfm2Audio, INPUT_RATE};
    let threads = args.threads.unwrap_or_else(default_threads);
    let tok_path = args.checkpoint.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        Some(TextTokenizer::load(&tok_path)?)
    } else {
        None
    };
    let segments = match (&args.prompt, &args.input) {
        (Some(p), _) => read_prompt_segments(p)?,
        (None, Some(wav)) => {
            let tok = tokenizer.as_ref().ok_or_else(|| {
                Error::file(
                    &tok_path,
                    "missing: the chat template needs the tokenizer; give the prompt as --prompt segments.json",
                )
            })?;
            let layout = ChatLayout::from_tokenizer(tok)?;
            let system = tok.encode(args.system.as_deref().unwrap_or(DEFAULT_SYSTEM))?;
            layout.first_turn(Some(&system), read_wav_mono(wav, INPUT_RATE)?)
        }
        (None, None) => return Err(Error::Other("give --input or --prompt".into())),
    };
    let model = std::sync::Arc::new(Lfm2Audio::load(&args.checkpoint, args.dtype, threads)?);
    if args.out.is_some() && model.detokenizer.is_none() {
        return Err(Error::file(
            args.checkpoint.join("audio_detokenizer"),
            "missing: --out needs the checkpoint's audio detokenizer",
        ));
    }
    let mut conv = Conversation::new(model.clone());
    conv.push(&segments)?;
    let mut stream = model.detokenizer.as_ref().map(|d| d.stream());
    let mut audio = Vec::new();
    let mut failure = None;
    let tokens = conv.generate(s2s_params(args), &mut |t| {
        if let (Token::Audio(codes), Some(s)) = (t, stream.as_mut()) {
            if !t.is_end_of_audio() {
                match s.push(codes) {
                    Ok(samples) => audio.extend(samples),
                    Err(e) => {
                        failure = Some(e);
                        return std::ops::ControlFlow::Break(());
                    }
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(s) = stream.as_mut() {
        audio.extend(s.finish()?);
    }
    let text = match &tokenizer {
        Some(tok) => {
            let ids: Vec<u32> = tokens
                .iter()
                .filter_map(|t| match t {
                    Token::Text(id) => Some(*id),
                    Token::Audio(_) => None,
                })
                .collect();
            Some(tok.decode(&ids)?)
        }
        None => None,
    };
    Ok(S2sOutput {
        tokens,
        audio,
        text,
    })
}

/// `sigflow s2s`: run one turn, write the reply audio and the generated items, print the text.
pub fn s2s(args: &S2sArgs) -> Result<()> {
    let out = s2s_run(args)?;
    if let Some(path) = &args.tokens_out {
        let json = serde_json::to_string(&out.tokens).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| Error::file(path, format!("cannot write: {e}")))?;
    }
    if let Some(path) = &args.out {
        write_wav_f32(path, &out.audio, 24_000)?;
    }
    let frames = out
        .tokens
        .iter()
        .filter(|t| matches!(t, crate::s2s::generate::Token::Audio(_)))
        .count();
    if let Some(text) = &out.text {
        println!("{text}");
    }
    eprintln!(
        "{} text tokens, {frames} audio frames, {:.2} s of reply audio",
        out.tokens.len() - frames,
        out.audio.len() as f64 / 24_000.0
    );
    Ok(())
}

/// Arguments of `sigflow detokenize`.
#[derive(clap::Args, Debug)]
pub struct DetokenizeArgs {
    /// The detokenizer directory (audio_detokenizer/ of an LFM2-Audio checkpoint).
    #[arg(long)]
    pub detokenizer: PathBuf,
    /// Audio codes, .npy of shape [frames, 8] (int64, int32 or float32 holding integers).
    #[arg(long)]
    pub codes: PathBuf,
    /// The 24 kHz waveform, written as a float32 .npy of shape [samples].
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `sigflow detokenize`: audio codes → 24 kHz waveform.
pub fn detokenize(args: &DetokenizeArgs) -> Result<()> {
    use crate::s2s::lfm2_audio::END_OF_AUDIO;
    let (shape, values) = crate::cnn::npy::read_integers(&args.codes)?;
    if shape.len() != 2 || shape[1] != 8 || shape[0] == 0 {
        return Err(Error::file(
            &args.codes,
            format!("codes have shape {shape:?}, expected [frames, 8] with frames ≥ 1"),
        ));
    }
    let mut codes = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if v < 0 || v >= END_OF_AUDIO as i64 {
            return Err(Error::file(
                &args.codes,
                format!(
                    "code {v} at frame {}, codebook {} is outside 0..{END_OF_AUDIO}",
                    i / 8,
                    i % 8
                ),
            ));
        }
        codes.push(v as u32);
    }
    let threads = args.threads.unwrap_or_else(default_threads);
    let detok = crate::s2s::detokenizer::Detokenizer::load(&args.detokenizer, args.dtype, threads)?;
    let wave = detok.decode(&codes, shape[0])?;
    let n = wave.len();
    crate::cnn::npy::write(
        &args.output,
        &crate::cnn::npy::Array {
            shape: vec![n],
            data: wave,
        },
    )
}

/// Arguments of `sigflow bench s2s`.
#[derive(clap::Args, Debug)]
pub struct BenchS2sArgs {
    /// Weight formats to measure, comma-separated (f32, bf16, q8, q4).
    #[arg(long, default_value = "q4,q8")]
    pub dtype: String,
    /// Thread counts to measure, comma-separated.
    #[arg(long, default_value = "1,2")]
    pub threads: String,
    /// Audio frames generated for the real-time factor (80 ms each).
    #[arg(long, default_value_t = 24)]
    pub frames: usize,
    /// Length of the user turn before the reply (seconds).
    #[arg(long, default_value_t = 3.0)]
    pub turn_seconds: f32,
    /// Print one JSON object per (dtype, threads) instead of a text line.
    #[arg(long)]
    pub json: bool,
}

/// Where the time to first audio goes (milliseconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FirstAudioBreakdown {
    pub mel_ms: f64,
    pub encoder_ms: f64,
    pub adapter_ms: f64,
    /// Backbone prefill of the whole prompt (text + audio-in positions).
    pub prefill_ms: f64,
    pub prompt_positions: usize,
    /// The interleaved text steps before the first audio frame.
    pub text_steps_ms: f64,
    pub text_steps: usize,
    /// Backbone step and depthformer of the first frame.
    pub first_frame_ms: f64,
    /// Detokenizer work (and any further frames it needed) until its first samples.
    pub first_samples_ms: f64,
}

/// What `sigflow bench s2s` measures for one (dtype, threads).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchS2sResult {
    pub dtype: String,
    pub threads: usize,
    /// Compute time of interleaved generation ÷ duration of the audio it produced.
    pub rtf: f64,
    /// From the end of the user turn to the first detokenized reply samples.
    pub first_audio_ms: f64,
    pub frames: usize,
    pub text_tokens: usize,
    pub turn_seconds: f32,
    pub generation_ms: f64,
    /// Mean per backbone step, per depthformer frame (8 codebooks), per detokenized frame.
    pub backbone_step_ms: f64,
    pub depthformer_frame_ms: f64,
    pub detokenizer_frame_ms: f64,
    pub breakdown: FirstAudioBreakdown,
    pub isa: String,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Measure one (dtype, threads) on random weights of the LFM2-Audio-1.5B shapes. Generation follows the
/// interleaved schedule (6 text steps, 12 audio frames, repeat) without stopping on sampled stop tokens, which
/// random weights would emit at arbitrary points; each step does the same work as [`Generation::next_token`].
///
/// [`Generation::next_token`]: crate::s2s::generate::Generation::next_token
pub fn bench_s2s_one(
    dtype: DType,
    threads: usize,
    frames: usize,
    turn_seconds: f32,
) -> Result<BenchS2sResult> {
    use crate::s2s::generate::Conversation;
    use crate::s2s::lfm2_audio::{Lfm2Audio, Lfm2AudioConfig, Segment, END_OF_AUDIO};
    use crate::s2s::sampling::argmax;
    let built = Instant::now();
    let model = std::sync::Arc::new(Lfm2Audio::random(
        Lfm2AudioConfig::lfm2_audio_1_5b(),
        dtype,
        threads,
        42,
    )?);
    eprintln!(
        "bench s2s {} threads={threads}: random LFM2-Audio-1.5B built in {:.1} s",
        dtype.name(),
        built.elapsed().as_secs_f64()
    );
    let detok = model
        .detokenizer
        .as_ref()
        .ok_or_else(|| Error::Model("random model without detokenizer".into()))?;
    let n = (turn_seconds.max(0.1) * 16_000.0) as usize;
    // A voiced-like test signal: harmonics with a slow vibrato, plus a little noise.
    let mut rng = 0x1234_5678u32;
    let turn: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let mut v = 0.0;
            for k in 1..6 {
                v += (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin() * 0.1 / k as f32;
            }
            rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v + ((rng >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.01
        })
        .collect();
    let head: Vec<u32> = vec![
        1, 6, 1001, 10, 2001, 2002, 2003, 2004, 2005, 7, 10, 6, 1002, 10,
    ];
    let tail: Vec<u32> = vec![7, 10, 6, 1003, 10];
    let codebooks = model.cfg.codebooks;
    let (n_text, n_audio) = (model.cfg.n_text, model.cfg.n_audio);
    // Warm-up: size the scratch buffers and touch the weights once.
    {
        let mut c = Conversation::new(model.clone());
        c.push(&[Segment::Text(head.clone())])?;
        c.flush()?;
        let _ = argmax(c.text_logits());
        let _ = model
            .depthformer
            .frame(c.last_hidden(), &mut |_, l| argmax(l));
        let mut s = detok.stream();
        for _ in 0..4 {
            s.push(&vec![5; codebooks])?;
        }
    }
    let mut conv = Conversation::new(model.clone());
    let t0 = Instant::now();
    let t = Instant::now();
    let (mel, mel_frames) = model.mel.compute(&turn);
    let mel_ms = ms(t);
    let t = Instant::now();
    let (enc, enc_n) = model.encoder.forward(&mel, mel_frames)?;
    let encoder_ms = ms(t);
    let t = Instant::now();
    let audio_emb = model.adapter.forward(&enc, enc_n);
    let adapter_ms = ms(t);
    conv.push(&[Segment::Text(head)])?;
    conv.push_embeddings(&audio_emb, Segment::AudioIn(turn))?;
    conv.push(&[Segment::Text(tail)])?;
    let t = Instant::now();
    conv.flush()?;
    let prefill_ms = ms(t);
    let prompt_positions = conv.position();
    let mut stream = detok.stream();
    let (mut text_tokens, mut made) = (0usize, 0usize);
    let (mut text_steps_ms, mut first_frame_ms, mut first_samples_ms) = (0.0, 0.0, 0.0);
    let mut text_steps_before = 0;
    let mut first_audio_ms = None;
    let (mut backbone_s, mut depth_s, mut detok_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut backbone_steps = 0usize;
    let gen_start = Instant::now();
    let mut first_step = true;
    while made < frames {
        for _ in 0..n_text {
            let t = Instant::now();
            if !first_step {
                conv.flush()?;
            }
            first_step = false;
            let id = argmax(conv.text_logits());
            // Keep the schedule: a stop token from random weights is replaced by an ordinary one.
            let id = if [7, 128, 130].contains(&id) {
                2000
            } else {
                id
            };
            conv.push(&[Segment::Text(vec![id])])?;
            let dt = t.elapsed().as_secs_f64();
            backbone_s += dt;
            backbone_steps += 1;
            text_tokens += 1;
            if first_audio_ms.is_none() {
                text_steps_ms += dt * 1e3;
                text_steps_before += 1;
            }
        }
        for _ in 0..n_audio {
            if made >= frames && first_audio_ms.is_some() {
                break;
            }
            let t = Instant::now();
            conv.flush()?;
            let tb = t.elapsed().as_secs_f64();
            let td = Instant::now();
            let mut codes = model
                .depthformer
                .frame(conv.last_hidden(), &mut |_, l| argmax(l));
            if codes[0] == END_OF_AUDIO {
                codes[0] = 0;
            }
            for c in codes.iter_mut() {
                *c = (*c).min(END_OF_AUDIO - 1);
            }
            conv.push(&[Segment::AudioOut(vec![codes.clone()])])?;
            let dd = td.elapsed().as_secs_f64();
            let tk = Instant::now();
            let samples = stream.push(&codes)?;
            let dk = tk.elapsed().as_secs_f64();
            backbone_s += tb;
            backbone_steps += 1;
            depth_s += dd;
            detok_s += dk;
            made += 1;
            if first_audio_ms.is_none() {
                if made == 1 {
                    first_frame_ms = (tb + dd) * 1e3;
                    first_samples_ms += dk * 1e3;
                } else {
                    first_samples_ms += (tb + dd + dk) * 1e3;
                }
                if !samples.is_empty() {
                    first_audio_ms = Some(ms(t0));
                }
            }
        }
    }
    let generation_ms = ms(gen_start);
    let audio_s = made as f64 * 0.08;
    Ok(BenchS2sResult {
        dtype: dtype.name().to_string(),
        threads,
        rtf: generation_ms / 1e3 / audio_s,
        first_audio_ms: first_audio_ms.unwrap_or(f64::NAN),
        frames: made,
        text_tokens,
        turn_seconds,
        generation_ms,
        backbone_step_ms: backbone_s * 1e3 / backbone_steps.max(1) as f64,
        depthformer_frame_ms: depth_s * 1e3 / made.max(1) as f64,
        detokenizer_frame_ms: detok_s * 1e3 / made.max(1) as f64,
        breakdown: FirstAudioBreakdown {
            mel_ms,
            encoder_ms,
            adapter_ms,
            prefill_ms,
            prompt_positions,
            text_steps_ms,
            text_steps: text_steps_before,
            first_frame_ms,
            first_samples_ms,
        },
        isa: crate::kernels::isa::Isa::get().name().to_string(),
    })
}

fn parse_list<T>(s: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    let v: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| f(t).ok_or_else(|| Error::Other(format!("{what}: cannot read `{t}`"))))
        .collect::<Result<_>>()?;
    if v.is_empty() {
        return Err(Error::Other(format!("{what}: give at least one value")));
    }
    Ok(v)
}

/// `sigflow bench s2s`: one line (or JSON object) per (dtype, threads).
pub fn bench_s2s(args: &BenchS2sArgs) -> Result<()> {
    let dtypes = parse_list(&args.dtype, "--dtype", DType::parse)?;
    let threads = parse_list(&args.threads, "--threads", |t| {
        t.parse::<usize>().ok().filter(|&n| n > 0)
    })?;
    if args.frames == 0 {
        return Err(Error::Other("--frames: at least 1".into()));
    }
    let mut out = std::io::stdout().lock();
    for &d in &dtypes {
        for &t in &threads {
            let r = bench_s2s_one(d, t, args.frames, args.turn_seconds)?;
            let line = if args.json {
                serde_json::to_string(&r).map_err(|e| Error::Other(e.to_string()))?
            } else {
                let b = &r.breakdown;
                format!(
                    "s2s {} threads={} isa={}: RTF {:.2} ({} frames, {} text tokens; backbone {:.1} ms/step, \
                     depthformer {:.1} ms/frame, detokenizer {:.1} ms/frame); first audio {:.0} ms after a {:.1} s \
                     turn (mel {:.1}, encoder {:.1}, adapter {:.1}, prefill {:.1} of {} positions, {} text steps \
                     {:.1}, first frame {:.1}, first samples {:.1})",
                    r.dtype,
                    r.threads,
                    r.isa,
                    r.rtf,
                    r.frames,
                    r.text_tokens,
                    r.backbone_step_ms,
                    r.depthformer_frame_ms,
                    r.detokenizer_frame_ms,
                    r.first_audio_ms,
                    r.turn_seconds,
                    b.mel_ms,
                    b.encoder_ms,
                    b.adapter_ms,
                    b.prefill_ms,
                    b.prompt_positions,
                    b.text_steps,
                    b.text_steps_ms,
                    b.first_frame_ms,
                    b.first_samples_ms
                )
            };
            writeln!(out, "{line}").map_err(|e| Error::io("writing to stdout", e))?;
        }
    }
    Ok(())
}
