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
    /// Read bandwidth measured in this run with the same thread count.
    pub bandwidth_gb_s: f64,
    /// weight_bytes_per_token × decode_tok_s ÷ bandwidth.
    pub roofline_fraction: f64,
    /// CPU time used during decode ÷ (wall time × threads): below 1 when other processes took the cores (or
    /// workers waited).
    pub decode_cpu_share: f64,
}

/// Sustained read bandwidth (GB/s) of `threads` threads streaming a buffer much larger than the caches.
pub fn measure_read_bandwidth(pool: &ThreadPool, bytes: usize, passes: usize) -> f64 {
    let n = bytes / 8;
    // Same page treatment as the weights (huge pages where the kernel grants them).
    let mut buf: Vec<u64> = crate::kernels::quant::huge_vec(n);
    for (i, v) in buf.iter_mut().enumerate() {
        *v = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let parts = pool.threads();
    let sums: Vec<std::sync::atomic::AtomicU64> = (0..parts)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let mut rates = Vec::with_capacity(passes);
    for _ in 0..passes {
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
        rates.push(bytes as f64 / dt / 1e9);
    }
    std::hint::black_box(&sums);
    // The median: a single lucky pass on a shared machine would overstate the roofline.
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
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
    let cpu1 = process_cpu_seconds();
    let t1 = Instant::now();
    for _ in 0..args.decode_tokens {
        model.forward(&[tok], &mut st, &mut hidden, Some(&mut logits), false)?;
        tok = crate::s2s::sampling::argmax(&logits);
    }
    let decode_s = t1.elapsed().as_secs_f64();
    let decode_cpu = process_cpu_seconds() - cpu1;
    let pool = ThreadPool::new(args.threads);
    let bandwidth = measure_read_bandwidth(&pool, 512 << 20, 7);
    let decode_tok_s = args.decode_tokens as f64 / decode_s;
    let wb = model.weight_bytes_per_token();
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
        roofline_fraction: wb as f64 * decode_tok_s / (bandwidth * 1e9),
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
