//! Pushing samples into the capture ring: live sources drop and count what does not fit, file-like sources wait
//! for room.

use super::SourceControl;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Push `n` samples produced by `samples` without ever waiting: what does not fit in the ring is dropped and
/// counted in `ctl.lost`. Allocation-free and lock-free, so the audio callback may call it.
#[inline]
pub fn push_live(
    ring: &mut rtrb::Producer<f32>,
    n: usize,
    samples: impl Iterator<Item = f32>,
    ctl: &SourceControl,
) {
    let room = ring.slots().min(n);
    let written = match ring.write_chunk_uninit(room) {
        Ok(chunk) => chunk.fill_from_iter(samples),
        Err(_) => 0,
    };
    ctl.pushed.fetch_add(written as u64, Ordering::Relaxed);
    if written < n {
        ctl.lost.fetch_add((n - written) as u64, Ordering::Relaxed);
    }
}

/// Push all of `samples`, waiting for room as long as needed. Returns false (having pushed only part) when a stop
/// is requested or the reading side is gone.
pub fn push_wait(ring: &mut rtrb::Producer<f32>, mut samples: &[f32], ctl: &SourceControl) -> bool {
    loop {
        let (pushed, rest) = ring.push_partial_slice(samples);
        ctl.pushed.fetch_add(pushed.len() as u64, Ordering::Relaxed);
        samples = rest;
        if samples.is_empty() {
            return true;
        }
        if ctl.stop_requested() || ring.is_abandoned() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A clock that releases a real-time stream in blocks: block `i` is due at `start + i · block / rate`.
pub struct Pacer {
    start: Instant,
    rate: f64,
    released: u64,
}

impl Pacer {
    pub fn new(rate: u32) -> Self {
        Pacer {
            start: Instant::now(),
            rate: rate as f64,
            released: 0,
        }
    }

    /// Sleep until the `n` samples after those already released are due (their last sample's time), in steps of
    /// at most 50 ms so a stop request is seen quickly. Returns false if a stop was requested meanwhile.
    pub fn wait(&mut self, n: usize, ctl: &SourceControl) -> bool {
        self.released += n as u64;
        let due = self.start + Duration::from_secs_f64(self.released as f64 / self.rate);
        loop {
            if ctl.stop_requested() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_push_counts_exactly() {
        let ctl = SourceControl::default();
        let (mut p, mut c) = rtrb::RingBuffer::new(100);
        push_live(&mut p, 60, (0..60).map(|i| i as f32), &ctl);
        push_live(&mut p, 60, (60..120).map(|i| i as f32), &ctl);
        assert_eq!(ctl.pushed.load(Ordering::Relaxed), 100);
        assert_eq!(ctl.lost.load(Ordering::Relaxed), 20);
        let first: Vec<f32> = (0..100).map(|_| c.pop().unwrap()).collect();
        assert_eq!(first[99], 99.0);
    }
}
