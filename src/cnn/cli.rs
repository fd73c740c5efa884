//! `sigflow infer` (run a model window by window over a .npy input) and `sigflow bench cnn` (streaming vs
//! full-window vs ONNX Runtime per-hop time).

use super::exec::nrmse;
use super::{import, int8, npy, Engine, Mode, Plan, WeightFormat};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `sigflow infer`: run a CNN over a long `[channels, time]` input window by window and stack the outputs.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The ONNX model (a 1-D CNN with one `[1, channels, time]` input).
    pub model: PathBuf,
    /// Input signal: a .npy file of float32 `[channels, time]` (or `[1, channels, time]`, or `[time]` for one channel).
    #[arg(long)]
    pub input: PathBuf,
    /// Window length in input frames (default: the model's fixed input length).
    #[arg(long)]
    pub window: Option<usize>,
    /// Hop between windows in input frames (default: the window).
    #[arg(long)]
    pub hop: Option<usize>,
    /// exact (streaming, equal to full), approximate (streaming, no edge work) or full (recompute each window).
    #[arg(long, default_value = "exact")]
    pub mode: Mode,
    /// Where to write the outputs, stacked: `[windows, …output shape]` float32 .npy.
    #[arg(long)]
    pub output: PathBuf,
    /// Print the model's time map (per node: frames, stride, receptive field, context) to stderr.
    #[arg(long)]
    pub plan: bool,
    /// Weights of convolutions and dense layers: f32 as in the file, or int8 per output channel.
    #[arg(long, default_value = "f32")]
    pub weights: WeightFormat,
}

impl clap::ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Exact, Mode::Approximate, Mode::Full]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Mode::Exact => "exact",
            Mode::Approximate => "approximate",
            Mode::Full => "full",
        }))
    }
}

/// Read a `[C, T]` / `[1, C, T]` / `[T]` npy file as time-major frames for a model with `channels` inputs.
fn read_signal(path: &Path, channels: usize) -> Result<(Vec<f32>, usize)> {
    let a = npy::read(path)?;
    let (c, t) = match a.shape.as_slice() {
        [t] => (1, *t),
        [c, t] => (*c, *t),
        [1, c, t] => (*c, *t),
        s => {
            return Err(Error::file(
                path,
                format!("array of shape {s:?}: expected [channels, time]"),
            ))
        }
    };
    if c != channels {
        return Err(Error::file(
            path,
            format!("the input has {c} channels, the model takes {channels}"),
        ));
    }
    let mut frames = vec![0.0; c * t];
    for ch in 0..c {
        for j in 0..t {
            frames[j * c + ch] = a.data[ch * t + j];
        }
    }
    Ok((frames, t))
}

fn model_window(g: &super::Graph, window: Option<usize>, model: &Path) -> Result<usize> {
    window.or(g.fixed_window).ok_or_else(|| {
        Error::file(
            model,
            "the model's input length is not fixed: give --window",
        )
    })
}

/// Run `sigflow infer`.
pub fn infer(a: &InferArgs) -> Result<()> {
    let mut g = import::load(&a.model)?;
    int8::apply(&mut g, a.weights);
    let g = Arc::new(g);
    let (frames, t) = read_signal(&a.input, g.in_channels)?;
    let w = model_window(&g, a.window, &a.model)?;
    let h = a.hop.unwrap_or(w);
    let plan = Plan::new(&g, w, h).map_err(|e| Error::file(&a.model, e))?;
    if a.plan {
        eprint!("{}", plan.describe(&g));
    }
    if t < w {
        return Err(Error::file(
            &a.input,
            format!("the input has {t} frames, shorter than the window {w}"),
        ));
    }
    let mut engine = Engine::new(g.clone(), plan.clone(), a.mode);
    let started = Instant::now();
    let mut outs = vec![];
    engine.push(&frames, &mut outs);
    let secs = started.elapsed().as_secs_f64();
    let dims = engine.output_dims();
    if a.mode == Mode::Approximate {
        let mut full = Engine::new(g.clone(), plan, Mode::Full);
        let c = g.in_channels;
        let (mut got, mut want) = (vec![], vec![]);
        for (i, y) in outs.iter().enumerate() {
            got.extend_from_slice(y);
            want.extend(full.run_window(&frames[i * h * c..(i * h + w) * c]));
        }
        eprintln!(
            "approximate mode: NRMSE against the full-window run = {:.3e}",
            nrmse(&got, &want)
        );
    }
    let mut shape = vec![outs.len()];
    shape.extend(&dims);
    let data: Vec<f32> = outs.into_iter().flatten().collect();
    npy::write(
        &a.output,
        &npy::Array {
            shape: shape.clone(),
            data,
        },
    )?;
    eprintln!(
        "{} windows of {w} (hop {h}, mode {:?}) in {:.1} ms → {} {:?}",
        shape[0],
        a.mode,
        secs * 1e3,
        a.output.display(),
        shape
    );
    Ok(())
}

/// `sigflow bench cnn`: per-hop time of streaming vs native full window vs ONNX Runtime, single-threaded.
#[derive(Debug, clap::Args)]
pub struct BenchCnnArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Window length in input frames (default: the model's fixed input length).
    #[arg(long)]
    pub window: Option<usize>,
    /// One hop to measure; default: the overlaps 50 %, 75 %, 87.5 %, 93.75 % (W/2 … W/16, rounded to valid hops).
    #[arg(long)]
    pub hop: Option<usize>,
    /// Print one JSON object per hop instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measuring time per configuration, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Skip the ONNX Runtime column (no ORT_DYLIB_PATH needed).
    #[arg(long)]
    pub no_ort: bool,
    /// Weights of the native runs: f32, or int8 per output channel (then the f32 full-window run is timed too,
    /// and the int8 output's NRMSE against f32 is reported).
    #[arg(long, default_value = "f32")]
    pub weights: WeightFormat,
}

/// One row of the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub model: String,
    pub window: usize,
    pub hop: usize,
    pub overlap: f64,
    pub stream_us_per_hop: f64,
    pub approx_us_per_hop: f64,
    pub full_us_per_hop: f64,
    pub ort_us_per_hop: Option<f64>,
    pub speedup: f64,
    pub theoretical: f64,
    pub efficiency: f64,
    pub full_vs_ort: Option<f64>,
    pub isa: &'static str,
    /// `f32` or `int8`.
    pub weights: &'static str,
    /// Bytes of convolution and dense weights in this format.
    pub weight_bytes: usize,
    /// int8 only: the same with f32 weights, timed in the same rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f32_full_us_per_hop: Option<f64>,
    /// int8 only: f32 weight bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f32_weight_bytes: Option<usize>,
    /// int8 only: NRMSE of the int8 full-window output against the f32 one on the first window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8_nrmse: Option<f64>,
}

/// CPU time of the calling thread in seconds (wall time where the OS does not report it). Every timed function
/// runs on this thread (ONNX Runtime too, with one intra-op thread), so on a machine shared with other work the
/// time the thread spends preempted does not count.
fn thread_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the struct we pass; the clock id is a constant.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Time per call of each function, in µs of thread CPU time. The functions are measured in interleaved rounds (so
/// load from other processes hits all of them alike) and each one's fastest round counts: noise only ever adds
/// time.
fn time_interleaved(seconds: f64, fns: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    const ROUNDS: usize = 9;
    let mut best = vec![f64::INFINITY; fns.len()];
    for f in fns.iter_mut() {
        f();
    }
    let per = seconds / ROUNDS as f64 / fns.len().max(1) as f64;
    for _ in 0..ROUNDS {
        for (k, f) in fns.iter_mut().enumerate() {
            let (wall, start) = (Instant::now(), thread_seconds());
            let mut n = 0u64;
            while n < 3 || wall.elapsed().as_secs_f64() < per {
                f();
                n += 1;
            }
            best[k] = best[k].min((thread_seconds() - start) / n as f64 * 1e6);
        }
    }
    best
}

/// A closure pushing one hop of new frames per call into an engine in `mode`, cycling through `signal`.
fn hop_runner<'a>(
    g: &Arc<super::Graph>,
    plan: &Plan,
    mode: Mode,
    signal: &'a [f32],
) -> impl FnMut() + 'a {
    let c = g.in_channels;
    let (w, h) = (plan.window, plan.hop);
    let mut e = Engine::new(g.clone(), plan.clone(), mode);
    let mut out = Vec::with_capacity(4);
    e.push(&signal[..w * c], &mut out);
    let hops = (signal.len() / c - w) / h;
    let mut i = 0;
    move || {
        let s = (w + (i % hops) * h) * c;
        out.clear();
        e.push(&signal[s..s + h * c], &mut out);
        i += 1;
    }
}

struct OrtModel {
    session: ort::session::Session,
    input: String,
}

impl OrtModel {
    fn load(path: &Path) -> Result<Self> {
        crate::onnx::runtime::ensure_loaded()?;
        let env = crate::onnx::runtime::environment()?;
        let err = |e: &dyn std::fmt::Display| Error::file(path, format!("ONNX Runtime: {e}"));
        let b = ort::session::Session::builder(&env).map_err(|e| err(&e))?;
        let b = b.with_intra_threads(1).map_err(|e| err(&e))?;
        let b = b.with_inter_threads(1).map_err(|e| err(&e))?;
        let mut b = b
            .with_config_entry("session.intra_op.allow_spinning", "0")
            .map_err(|e| err(&e))?;
        let session = b.commit_from_file(path).map_err(|e| err(&e))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .unwrap_or_default();
        Ok(OrtModel { session, input })
    }

    /// Run one `[1, c, w]` window (channel-major data).
    fn run(&mut self, c: usize, w: usize, x: &[f32]) -> Result<Vec<f32>> {
        let t = ort::value::Tensor::from_array(([1usize, c, w], x.to_vec()))
            .map_err(|e| Error::Other(format!("ONNX Runtime: {e}")))?;
        let out = self
            .session
            .run(ort::inputs![self.input.as_str() => t])
            .map_err(|e| Error::Other(format!("ONNX Runtime: {e}")))?;
        let (_, y) = out[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Other(format!("ONNX Runtime: {e}")))?;
        Ok(y.to_vec())
    }
}

/// Measure one model at the given hops.
pub fn bench_rows(
    model: &Path,
    window: Option<usize>,
    hops: Option<Vec<usize>>,
    seconds: f64,
    with_ort: bool,
    weights: WeightFormat,
) -> Result<Vec<BenchRow>> {
    let g = Arc::new(import::load(model)?);
    let gq = {
        let mut q = (*g).clone();
        int8::apply(&mut q, weights);
        Arc::new(q)
    };
    let quantized = weights == WeightFormat::Int8;
    let w = model_window(&g, window, model)?;
    let (_, stride) = Plan::time_map(&g, w).map_err(|e| Error::file(model, e))?;
    let hops = hops.unwrap_or_else(|| {
        [2usize, 4, 8, 16]
            .iter()
            .map(|d| ((w / d) / stride).max(1) * stride)
            .collect()
    });
    let c = g.in_channels;
    let max_hop = hops.iter().copied().max().unwrap_or(1);
    // A signal long enough for 64 hops of the largest hop.
    let len = w + 64 * max_hop;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let signal: Vec<f32> = (0..len * c)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let mut ort_model = if with_ort {
        Some(OrtModel::load(model)?)
    } else {
        None
    };
    let mut ort_x = None;
    if let Some(m) = ort_model.as_mut() {
        let mut x = vec![0.0; c * w];
        for ch in 0..c {
            for j in 0..w {
                x[ch * w + j] = signal[j * c + ch];
            }
        }
        // Check agreement once, then time.
        let want = m.run(c, w, &x)?;
        let plan = Plan::new(&g, w, stride).map_err(|e| Error::file(model, e))?;
        let got = Engine::new(g.clone(), plan, Mode::Full).run_window(&signal[..w * c]);
        let scale = got.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-12);
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
        if got.len() != want.len() || diff > 1e-4 * scale {
            return Err(Error::file(
                model,
                format!("native and ONNX Runtime outputs differ (max|diff| {diff:e})"),
            ));
        }
        ort_x = Some(x);
    }
    let int8_nrmse = if quantized {
        let plan = Plan::new(&g, w, stride).map_err(|e| Error::file(model, e))?;
        let want = Engine::new(g.clone(), plan.clone(), Mode::Full).run_window(&signal[..w * c]);
        let got = Engine::new(gq.clone(), plan, Mode::Full).run_window(&signal[..w * c]);
        Some(nrmse(&got, &want))
    } else {
        None
    };
    let mut rows = vec![];
    for h in hops {
        let plan = Plan::new(&g, w, h).map_err(|e| Error::file(model, e))?;
        let mut stream = hop_runner(&gq, &plan, Mode::Exact, &signal);
        let mut approx = hop_runner(&gq, &plan, Mode::Approximate, &signal);
        let mut full = hop_runner(&gq, &plan, Mode::Full, &signal);
        let mut full_f32 = hop_runner(&g, &plan, Mode::Full, &signal);
        let mut ort_err = None;
        let mut ort_run = || {
            if let (Some(m), Some(x)) = (ort_model.as_mut(), ort_x.as_ref()) {
                if let Err(e) = m.run(c, w, x) {
                    ort_err = Some(e);
                }
            }
        };
        let mut fns: Vec<&mut dyn FnMut()> = vec![&mut stream, &mut approx, &mut full];
        if quantized {
            fns.push(&mut full_f32);
        }
        if with_ort {
            fns.push(&mut ort_run);
        }
        let t = time_interleaved(seconds, &mut fns);
        drop(fns);
        if let Some(e) = ort_err {
            return Err(e);
        }
        let (stream, approx, full) = (t[0], t[1], t[2]);
        let f32_full = quantized.then(|| t[3]);
        let ort_us = with_ort.then(|| t[t.len() - 1]);
        let theoretical = w as f64 / h as f64;
        rows.push(BenchRow {
            model: model
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            window: w,
            hop: h,
            overlap: 100.0 * (1.0 - h as f64 / w as f64),
            stream_us_per_hop: stream,
            approx_us_per_hop: approx,
            full_us_per_hop: full,
            ort_us_per_hop: ort_us,
            speedup: full / stream,
            theoretical,
            efficiency: full / stream / theoretical,
            full_vs_ort: ort_us.map(|o| o / full),
            isa: super::super::kernels::conv::ConvKernels::get().name,
            weights: if quantized { "int8" } else { "f32" },
            weight_bytes: int8::weight_bytes(&gq),
            f32_full_us_per_hop: f32_full,
            f32_weight_bytes: quantized.then(|| int8::weight_bytes(&g)),
            int8_nrmse,
        });
    }
    Ok(rows)
}

/// Run `sigflow bench cnn`.
pub fn bench(a: &BenchCnnArgs) -> Result<()> {
    let rows = bench_rows(
        &a.model,
        a.window,
        a.hop.map(|h| vec![h]),
        a.seconds,
        !a.no_ort,
        a.weights,
    )?;
    if a.json {
        for r in &rows {
            println!(
                "{}",
                serde_json::to_string(r).map_err(|e| Error::Other(e.to_string()))?
            );
        }
        return Ok(());
    }
    println!(
        "{:<14} {:>6} {:>6} {:>8} {:>11} {:>11} {:>11} {:>11} {:>8} {:>6} {:>6} {:>8}",
        "model",
        "window",
        "hop",
        "overlap",
        "stream µs",
        "approx µs",
        "full µs",
        "ort µs",
        "speedup",
        "W/H",
        "eff",
        "ort/full"
    );
    for r in &rows {
        println!(
            "{:<14} {:>6} {:>6} {:>7.2}% {:>11.1} {:>11.1} {:>11.1} {:>11} {:>7.2}x {:>6.1} {:>5.0}% {:>8}",
            r.model,
            r.window,
            r.hop,
            r.overlap,
            r.stream_us_per_hop,
            r.approx_us_per_hop,
            r.full_us_per_hop,
            r.ort_us_per_hop.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
            r.speedup,
            r.theoretical,
            r.efficiency * 100.0,
            r.full_vs_ort.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into()),
        );
    }
    println!(
        "(single thread, kernels: {})",
        rows.first().map(|r| r.isa).unwrap_or("-")
    );
    for r in rows.iter().filter(|r| r.weights == "int8") {
        println!(
            "int8 weights, hop {}: {} bytes ({:.2} of f32), full window {:.2}× the f32 time, NRMSE vs f32 {:.2e}",
            r.hop,
            r.weight_bytes,
            r.weight_bytes as f64 / r.f32_weight_bytes.unwrap_or(1).max(1) as f64,
            r.full_us_per_hop / r.f32_full_us_per_hop.unwrap_or(f64::NAN),
            r.int8_nrmse.unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
