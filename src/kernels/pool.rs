//! A small persistent thread pool for splitting one kernel call over a fixed number of threads.
//!
//! `ThreadPool::run(n_tasks, f)` calls `f(task)` for every task in `0..n_tasks`, on the calling thread and the
//! pool's workers, and returns when all are done. Nothing is allocated per call: the job is handed to the workers
//! as a borrowed trait object through shared atomics. Workers spin briefly for the next job (a decode step issues
//! about a hundred calls back to back) and then sleep on a condition variable.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Incremented for every new job; workers wait for it to change. `usize::MAX` means "shut down".
    generation: AtomicUsize,
    /// The current job. Written by the caller only while no worker reads it (all finished the previous job).
    job: UnsafeCell<Option<*const Job>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Workers that finished the current job.
    finished: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread that owns the pool while all workers are idle (they have reported
// `finished` for the previous generation and only read `job` after observing a new generation with Acquire
// ordering, which the writer publishes with Release). The pointed-to closure is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under the protocol described on `Sync`.
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serialises `run` calls from different threads (the job slot holds one job at a time).
    busy: Mutex<()>,
}

const SPIN_ROUNDS: usize = 200_000;

impl ThreadPool {
    /// A pool using `threads` threads in total (the caller counts as one; `threads - 1` workers are spawned).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("sigflow-kernel-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
            busy: Mutex::new(()),
        }
    }

    /// Number of threads work is split over (including the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(task)` for each task in `0..n_tasks` across the pool; returns when all tasks are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            for t in 0..n_tasks {
                f(t);
            }
            return;
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: all workers finished the previous generation (we waited for `finished` below before returning),
        // so none reads `job` now. The pointer's lifetime is erased; it is cleared before this function returns,
        // and workers only use it between observing the new generation and incrementing `finished`.
        unsafe {
            let erased: *const Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(erased);
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        loop {
            let t = s.next_task.fetch_add(1, Ordering::Relaxed);
            if t >= n_tasks {
                break;
            }
            f(t);
        }
        let n_workers = self.workers.len();
        let mut spins = 0usize;
        while s.finished.load(Ordering::Acquire) < n_workers {
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every worker has finished this generation; nobody reads `job` until the next generation.
        unsafe {
            *s.job.get() = None;
        }
    }
}

fn worker_loop(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0usize;
        let gen = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                let guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                if s.generation.load(Ordering::Acquire) == seen {
                    let _unused = s
                        .wake
                        .wait_timeout(guard, std::time::Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner());
                }
                spins = 0;
            }
        };
        if gen == usize::MAX {
            return;
        }
        seen = gen;
        // SAFETY: the caller stored the job before publishing this generation with Release; we loaded it with
        // Acquire. The closure stays alive until every worker increments `finished`, which happens below.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job {
            let n_tasks = s.n_tasks.load(Ordering::Relaxed);
            loop {
                let t = s.next_task.fetch_add(1, Ordering::Relaxed);
                if t >= n_tasks {
                    break;
                }
                // SAFETY: see above: the pointer is valid for the duration of this generation.
                unsafe { (*job)(t) };
            }
        }
        s.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.generation.store(usize::MAX, Ordering::Release);
        {
            let _g = self.shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Split `n` items into `parts` contiguous ranges whose starts are multiples of `align` (except possibly the end).
pub fn split_range(n: usize, parts: usize, part: usize, align: usize) -> std::ops::Range<usize> {
    let units = n.div_ceil(align);
    let per = units.div_ceil(parts.max(1));
    let start = (part * per * align).min(n);
    let end = ((part + 1) * per * align).min(n);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads);
            for n in [0usize, 1, 2, 7, 64] {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                for _round in 0..50 {
                    pool.run(n, &|t| {
                        hits[t].fetch_add(1, Ordering::Relaxed);
                    });
                }
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), 50);
                }
            }
        }
    }

    #[test]
    fn split_covers_everything() {
        for n in [0usize, 1, 31, 32, 100, 1000] {
            for parts in 1..5 {
                let mut covered = 0;
                for p in 0..parts {
                    let r = split_range(n, parts, p, 16);
                    assert_eq!(r.start, covered.min(n).max(r.start));
                    covered = covered.max(r.end);
                }
                assert_eq!(covered, n);
            }
        }
    }
}
