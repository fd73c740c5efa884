//! Test signals and alignment by content (cross-correlation).

use realfft::RealFftPlanner;
use std::f64::consts::TAU;

/// A recording with content that aligns unambiguously: a linear chirp, two tones, then seeded noise.
pub fn test_recording(rate: u32, seconds: f64) -> Vec<f32> {
    let n = (seconds * rate as f64) as usize;
    let r = rate as f64;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / r;
            let part = t / seconds;
            let v = if part < 0.4 {
                let f = 200.0 + (3000.0 - 200.0) * (part / 0.4);
                phase = (phase + TAU * f / r) % TAU;
                phase.sin() * 0.5
            } else if part < 0.7 {
                0.3 * (TAU * 440.0 * t).sin() + 0.2 * (TAU * 1320.0 * t).sin()
            } else {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.6
            };
            v as f32
        })
        .collect()
}

/// The lag `d` maximising Σ x[i + d]·y[i]: where `y` starts inside `x` (negative when `x` starts inside `y`).
pub fn best_lag(x: &[f32], y: &[f32]) -> i64 {
    let n = (x.len() + y.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |s: &[f32]| {
        let mut buf = vec![0.0f64; n];
        for (b, &v) in buf.iter_mut().zip(s) {
            *b = v as f64;
        }
        let mut out = fwd.make_output_vec();
        fwd.process(&mut buf, &mut out).unwrap();
        out
    };
    let (sx, sy) = (spectrum(x), spectrum(y));
    let mut prod: Vec<_> = sx.iter().zip(&sy).map(|(a, b)| a * b.conj()).collect();
    let mut r = vec![0.0f64; n];
    inv.process(&mut prod, &mut r).unwrap();
    let best = (0..n).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
    if best > n / 2 {
        best as i64 - n as i64
    } else {
        best as i64
    }
}

/// The overlapping parts of `x` and `y` when `y` starts at `lag` inside `x`.
pub fn overlap<'a>(x: &'a [f32], y: &'a [f32], lag: i64) -> (&'a [f32], &'a [f32]) {
    let (xs, ys) = if lag >= 0 {
        (lag as usize, 0)
    } else {
        (0, (-lag) as usize)
    };
    let len = x.len().saturating_sub(xs).min(y.len().saturating_sub(ys));
    (&x[xs..xs + len], &y[ys..ys + len])
}

/// RMS of the difference relative to the RMS of `reference`, in dB.
pub fn error_db(got: &[f32], reference: &[f32]) -> f64 {
    let e: f64 = got
        .iter()
        .zip(reference)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let s: f64 = reference.iter().map(|&b| (b as f64).powi(2)).sum();
    10.0 * (e / s.max(1e-30)).log10()
}
