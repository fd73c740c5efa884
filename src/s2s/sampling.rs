//! Choosing the next token from logits: greedy, or temperature + top-k sampling with a seeded generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 (or `greedy`) means argmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    pub greedy: bool,
}

/// A sampler with its random state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    probs: Vec<(f32, u32)>,
}

/// Index of the largest value (the first one on ties, as `torch.argmax` does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Sampler {
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
            probs: Vec::new(),
        }
    }

    /// Pick a token id from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.greedy || p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (l / p.temperature, i as u32)),
        );
        if p.top_k > 0 && p.top_k < self.probs.len() {
            self.probs
                .select_nth_unstable_by(p.top_k - 1, |a, b| b.0.total_cmp(&a.0));
            self.probs.truncate(p.top_k);
        }
        let m = self.probs.iter().fold(f32::NEG_INFINITY, |a, b| a.max(b.0));
        let mut total = 0f32;
        for e in self.probs.iter_mut() {
            e.0 = (e.0 - m).exp();
            total += e.0;
        }
        let mut u = self.rng.random::<f32>() * total;
        for e in &self.probs {
            if u < e.0 {
                return e.1;
            }
            u -= e.0;
        }
        self.probs.last().map_or(0, |e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_seeds() {
        let logits = [0.1f32, 3.0, 2.9, -1.0, 2.95];
        let mut g = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                greedy: true,
            },
            1,
        );
        assert_eq!(g.sample(&logits), 1);
        // top-k = 3 never picks outside {1, 2, 4}.
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            greedy: false,
        };
        let mut s = Sampler::new(params, 7);
        let picks: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(picks.iter().all(|p| [1, 2, 4].contains(p)));
        assert!([1u32, 2, 4].iter().all(|t| picks.contains(t)));
        // Same seed, same sequence.
        let mut s2 = Sampler::new(params, 7);
        let again: Vec<u32> = (0..200).map(|_| s2.sample(&logits)).collect();
        assert_eq!(picks, again);
        // Low temperature concentrates on the argmax.
        let mut cold = Sampler::new(
            SamplingParams {
                temperature: 0.001,
                top_k: 0,
                greedy: false,
            },
            3,
        );
        assert!((0..50).all(|_| cold.sample(&logits) == 1));
    }
}
