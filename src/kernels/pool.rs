//! A small persistent thread pool for splitting one kernel call over a fixed number of threads.
//!
//! `ThreadPool::run(n_tasks, f)` calls `f(task)` for every task in `0..n_tasks`, on the calling thread and the
//! pool's workers, and returns when all are done. Nothing is allocated per call: the job is handed to the workers
//! as a borrowed trait object through shared atomics. Workers spin briefly for the next job (a decode step issues
//! about a hundred calls back to back) and then sleep on a condition variable. Tasks are claimed one at a time, and
//! the caller only waits for tasks that were claimed: on a busy machine a worker that is not scheduled in time
//! simply does no work for that call instead of stalling it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

/// Packed claim word: generation (high 32 bits) | number of tasks (16 bits) | next task (16 bits).
fn pack(gen: u64, n_tasks: u64, next: u64) -> u64 {
    (gen << 32) | (n_tasks << 16) | next
}

struct Shared {
    /// The current job's claim word. A worker takes a task with a compare-and-swap that also checks the
    /// generation, so a worker that wakes up late can never take a task of a job that already finished.
    claim: AtomicU64,
    /// The current job. Written by the caller only when no claimed task is running.
    job: UnsafeCell<Option<*const Job>>,
    /// Tasks of the current job that have completed.
    completed: AtomicUsize,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread that owns the pool, and only while no task of the previous job is
// running (all claimed tasks completed). A worker reads it only after successfully claiming a task of the current
// generation (Acquire on the claim word, which the writer published with Release after storing the job), and the
// writer cannot replace or clear it until that task reports completion. The pointed-to closure is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under the protocol described on `Sync`.
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serialises `run` calls from different threads (the job slot holds one job at a time).
    busy: Mutex<u64>,
}

const SPIN_ROUNDS: usize = 100_000;
const MAX_TASKS: usize = 0xFFFF;

impl ThreadPool {
    /// A pool using `threads` threads in total (the caller counts as one; `threads - 1` workers are spawned).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            completed: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
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
            busy: Mutex::new(0),
        }
    }

    /// Number of threads work is split over (including the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(task)` for each task in `0..n_tasks` across the pool; returns when all tasks are done.
    /// The caller works too, so the call completes even if no worker gets scheduled.
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
        if n_tasks > MAX_TASKS {
            // Group tasks so the count fits the claim word.
            let per = n_tasks.div_ceil(MAX_TASKS);
            let groups = n_tasks.div_ceil(per);
            return self.run(groups, &|g| {
                for t in g * per..((g + 1) * per).min(n_tasks) {
                    f(t);
                }
            });
        }
        let mut gen_guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        *gen_guard = (*gen_guard + 1) & 0xFFFF_FFFF;
        let gen = *gen_guard;
        let s = &*self.shared;
        // SAFETY: no task of an earlier job is running (we waited for all to complete before the previous `run`
        // returned), and no worker can claim a task of the new generation before the Release store below. The
        // lifetime is erased; the pointer is only used while this call waits for the tasks to complete.
        unsafe {
            let erased: *const Job =
                std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(erased);
        }
        s.completed.store(0, Ordering::Relaxed);
        s.claim
            .store(pack(gen, n_tasks as u64, 0), Ordering::Release);
        {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        while let Some(t) = claim(s, gen) {
            f(t);
            s.completed.fetch_add(1, Ordering::Release);
        }
        let mut spins = 0usize;
        while s.completed.load(Ordering::Acquire) < n_tasks {
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Take the next task of generation `gen`, if any is left.
fn claim(s: &Shared, gen: u64) -> Option<usize> {
    let mut v = s.claim.load(Ordering::Acquire);
    loop {
        let (g, n, next) = (v >> 32, (v >> 16) & 0xFFFF, v & 0xFFFF);
        if g != gen || next >= n {
            return None;
        }
        match s
            .claim
            .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(next as usize),
            Err(cur) => v = cur,
        }
    }
}

fn worker_loop(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0usize;
        let gen = loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let v = s.claim.load(Ordering::Acquire);
            let (g, n, next) = (v >> 32, (v >> 16) & 0xFFFF, v & 0xFFFF);
            if g != seen && next < n {
                break g;
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                let guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                let v = s.claim.load(Ordering::Acquire);
                if v >> 32 == seen || (v & 0xFFFF) >= ((v >> 16) & 0xFFFF) {
                    let _unused = s
                        .wake
                        .wait_timeout(guard, std::time::Duration::from_millis(20))
                        .unwrap_or_else(|e| e.into_inner());
                }
                spins = 0;
            }
        };
        seen = gen;
        while let Some(t) = claim(s, gen) {
            // SAFETY: we hold a claimed, not yet completed task of generation `gen`, so the caller is still
            // inside `run` for this job and has not replaced the job slot (see `Shared`).
            let job = unsafe { *s.job.get() };
            if let Some(job) = job {
                // SAFETY: as above, the closure outlives this call.
                unsafe { (*job)(t) };
            }
            s.completed.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
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
