//! StreamResampler: streaming in random chunk sizes equals one-shot; tone purity at 16 kHz; delay removed; length.

use proptest::prelude::*;
use realfft::RealFftPlanner;
use sigflow::dsp::resample::StreamResampler;
use std::f64::consts::PI;

fn one_shot(from: u32, to: u32, input: &[f32]) -> Vec<f32> {
    let mut r = StreamResampler::new(from, to).unwrap();
    let mut out = Vec::new();
    r.process(input, &mut out);
    r.finish(&mut out);
    out
}

fn tone(rate: u32, freq: f64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32)
        .collect()
}

/// Deterministic pseudo-random noise in [-0.5, 0.5).
fn noise(n: usize, mut seed: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

const RATES: [(u32, u32); 6] = [
    (44_100, 16_000),
    (48_000, 16_000),
    (22_050, 16_000),
    (16_000, 48_000),
    (8_000, 16_000),
    (16_000, 16_000),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn streaming_equals_one_shot(
        pair in 0usize..RATES.len(),
        len in 0usize..6000,
        chunks in proptest::collection::vec(0usize..1500, 1..40),
        seed in any::<u64>(),
    ) {
        let (from, to) = RATES[pair];
        let input = noise(len, seed);
        let expected = one_shot(from, to, &input);
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = chunks[i % chunks.len()].min(input.len() - pos);
            r.process(&input[pos..pos + n], &mut out);
            pos += n;
            i += 1;
        }
        r.finish(&mut out);
        prop_assert_eq!(out.len(), expected.len());
        prop_assert_eq!(out, expected);
    }
}

#[test]
fn length_after_finish_is_rounded_ratio() {
    for (from, to) in RATES {
        for len in [0usize, 1, 2, 3, 17, 441, 1000, 4410, 12345] {
            let out = one_shot(from, to, &noise(len, 7));
            let want = (len as f64 * to as f64 / from as f64).round() as usize;
            assert_eq!(out.len(), want, "{from}->{to} len {len}");
        }
    }
}

#[test]
fn reused_after_finish_gives_the_same_output() {
    let input = noise(5000, 3);
    let mut r = StreamResampler::new(44_100, 16_000).unwrap();
    let mut a = Vec::new();
    r.process(&input, &mut a);
    r.finish(&mut a);
    let mut b = Vec::new();
    r.process(&input[..100], &mut b);
    r.reset();
    b.clear();
    r.process(&input, &mut b);
    r.finish(&mut b);
    assert_eq!(a, b);
}

/// Power spectrum (Hann window) of `x`.
fn power_spectrum(x: &[f32]) -> Vec<f64> {
    let n = x.len();
    let mut planner = RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let mut buf: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * (0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos()))
        .collect();
    let mut spec = fft.make_output_vec();
    fft.process(&mut buf, &mut spec).unwrap();
    spec.iter().map(|c| c.norm_sqr()).collect()
}

#[test]
fn tone_at_16k_is_clean() {
    for from in [44_100u32, 48_000, 22_050] {
        let input = tone(from, 1000.0, from as usize * 2);
        let out = one_shot(from, 16_000, &input);
        assert_eq!(out.len(), 32_000);
        // Exclude 0.25 s at each edge; analyse exactly 1 s (1 Hz bins, so 1 kHz falls on bin 1000).
        let seg = &out[4000..20_000];
        let p = power_spectrum(seg);
        let peak_bin = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(peak_bin, 1000, "{from}: peak at {peak_bin} Hz");
        // Hann main lobe spans ±2 bins; everything else is spurious.
        let signal: f64 = p[998..=1002].iter().sum();
        let spurious: f64 = p
            .iter()
            .enumerate()
            .filter(|(i, _)| !(998..=1002).contains(i))
            .map(|(_, v)| v)
            .sum();
        let db = 10.0 * (spurious / signal).log10();
        let worst = p
            .iter()
            .enumerate()
            .filter(|(i, _)| !(998..=1002).contains(i))
            .map(|(_, v)| 10.0 * (v / signal).log10())
            .fold(f64::NEG_INFINITY, f64::max);
        eprintln!("{from} -> 16000: spurious total {db:.1} dB, worst bin {worst:.1} dB");
        assert!(db < -60.0, "{from}: spurious content {db:.1} dB");
        // And the tone matches the ideal one sample for sample (delay removed, amplitude kept).
        let ideal = tone(16_000, 1000.0, 32_000);
        let err = seg
            .iter()
            .zip(&ideal[4000..20_000])
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / seg.len() as f64;
        let err_db = 10.0 * (err / 0.125).log10();
        // Bounded by the residual 1/256-input-sample offset of the interpolator (about -59 dB at 22.05 kHz).
        assert!(err_db < -50.0, "{from}: error vs ideal tone {err_db:.1} dB");
    }
}

#[test]
fn click_stays_at_the_same_time() {
    for (from, to) in RATES {
        // A band-limited click (Gaussian pulse, sigma 1 ms) centred at 0.3 s.
        let n = from as usize;
        let centre = 0.3;
        let sigma = 0.001;
        let input: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / from as f64 - centre;
                (-(t * t) / (2.0 * sigma * sigma)).exp() as f32
            })
            .collect();
        let out = one_shot(from, to, &input);
        // Centre of mass of the output pulse, in seconds.
        let (mut m0, mut m1) = (0.0f64, 0.0f64);
        for (k, &v) in out.iter().enumerate() {
            m0 += v as f64;
            m1 += v as f64 * k as f64;
        }
        let t_out = m1 / m0 / to as f64;
        // The interpolator's sub-sample phases leave at most 1/256 of an input sample of offset.
        let err_in = (t_out - centre) * from as f64;
        assert!(
            err_in.abs() < 0.005,
            "{from}->{to}: click moved by {err_in:.4} input samples"
        );
        let peak = (0..out.len())
            .max_by(|&a, &b| out[a].total_cmp(&out[b]))
            .unwrap();
        assert_eq!(peak, (centre * to as f64).round() as usize, "{from}->{to}");
    }
}

/// Counts allocations made by the current thread (other tests run on other threads).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: forwards every call unchanged to the system allocator; only a thread-local counter is added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    pub fn count() -> usize {
        ALLOCATIONS.with(|c| c.get())
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[test]
fn no_allocation_per_call_after_warm_up() {
    let input = noise(48_000, 11);
    for (from, to) in [(48_000u32, 16_000u32), (16_000, 48_000), (44_100, 16_000)] {
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::with_capacity(200_000);
        // Warm-up: the first calls feed the start-up zeros.
        r.process(&input[..1000], &mut out);
        let before = counting::count();
        let mut pos = 1000;
        for n in [1usize, 7, 160, 480, 1023, 4096, 0, 333]
            .iter()
            .cycle()
            .take(60)
        {
            let n = (*n).min(input.len() - pos);
            r.process(&input[pos..pos + n], &mut out);
            pos += n;
        }
        r.finish(&mut out);
        let allocations = counting::count() - before;
        assert_eq!(
            allocations, 0,
            "{from}->{to}: {allocations} allocations while streaming"
        );
    }
}
