//! Coalescing: concurrent calls on one engine share forwards, as text-embeddings-inference's
//! batching does, but inside the engine, so the Rust API, the C ABI, Python threads and the HTTP
//! server all get it.
//!
//! The contract:
//! - A call (after tokenisation; a text's own errors stay its own) is queued as one *job*: its
//!   sequences and a [`BatchKey`] naming the task and every option its post-processing reads.
//! - When no forward is running, the caller of the oldest queued job becomes the *leader*: it
//!   takes the queued jobs with its key, oldest first, while their tokens fit in
//!   `max_batch_tokens` (the first job always), runs them as one call of its task, and hands
//!   every job its own outputs, in its order. Then the caller of the next oldest job leads (so no
//!   key starves behind another). An idle engine adds no wait: the first call of a quiet engine
//!   leads at once.
//! - A job whose deadline passes or whose cancel flag is set while it is still queued leaves the
//!   queue with [`Error::Timeout`] / [`Error::Cancelled`]; once its forward has started it runs to
//!   the end. A forward that fails gives every job in it the same error (a device failure is
//!   everyone's); a panic in it fails the others' jobs and unwinds in the leader.
//! - [`Counters`]: calls, forwards, tokens, queue wait — read by Rust ([`Engine::counters`]), C
//!   (`mb_engine_counters`) and the server's `/metrics`.
//!
//! [`Engine::counters`]: crate::engine::Engine::counters

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::reference::ops::Pooling;

/// What a job's outputs are made of: jobs share a forward only when their keys are equal, because
/// the leader's task (with the leader's options) computes everyone's outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchKey {
    Embed {
        pooling: Pooling,
        normalize: bool,
        dim: usize,
    },
    /// Sequence-classification logits (of texts or pairs; the callers' rules apply after).
    SequenceLogits,
    TokenLogits,
    FillMask {
        top_k: usize,
    },
    Colbert {
        is_query: bool,
    },
}

/// Limits of the calls a thread makes inside [`with_call_limits`]: a deadline for the time a job
/// may wait in the queue, a flag another thread may set to withdraw it, and a refusal of
/// over-long texts for this call even when the engine truncates them (the server's per-request
/// `truncate: false`).
#[derive(Clone, Debug, Default)]
pub struct CallLimits {
    pub deadline: Option<Instant>,
    pub cancel: Option<Arc<AtomicBool>>,
    pub refuse_overlong: bool,
}

thread_local! {
    static CALL_LIMITS: RefCell<CallLimits> = RefCell::new(CallLimits::default());
}

/// Run `f` with `limits` applying to every engine call it makes on this thread (restored after,
/// also when `f` panics).
pub fn with_call_limits<R>(limits: CallLimits, f: impl FnOnce() -> R) -> R {
    struct Restore(CallLimits);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = std::mem::take(&mut self.0);
            let _ = CALL_LIMITS.try_with(|l| *l.borrow_mut() = old);
        }
    }
    let old = CALL_LIMITS.with(|l| std::mem::replace(&mut *l.borrow_mut(), limits));
    let _restore = Restore(old);
    f()
}

/// Whether this thread's calls refuse over-long texts ([`CallLimits::refuse_overlong`]).
pub(crate) fn refuses_overlong() -> bool {
    CALL_LIMITS.try_with(|l| l.borrow().refuse_overlong).unwrap_or(false)
}

fn current_limits() -> CallLimits {
    CALL_LIMITS.try_with(|l| l.borrow().clone()).unwrap_or_default()
}

/// Monotonic totals since the engine was created.
#[derive(Default, Debug)]
pub struct Counters {
    calls: AtomicU64,
    forwards: AtomicU64,
    tokens: AtomicU64,
    shared_runs: AtomicU64,
    queue_wait_ns: AtomicU64,
    queue_wait_max_ns: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// Calls that reached the model (one per API call with at least one valid text).
    pub calls: u64,
    /// Backbone forwards (packed batches) run.
    pub forwards: u64,
    /// Tokens through the backbone.
    pub tokens: u64,
    /// Leader runs: each serves one or more calls in one or more forwards.
    pub shared_runs: u64,
    /// Sum and maximum over calls of the time from queueing to the start of its run.
    pub queue_wait_ns: u64,
    pub queue_wait_max_ns: u64,
    /// Calls that left the queue at their deadline / on cancellation.
    pub timed_out: u64,
    pub cancelled: u64,
}

impl Counters {
    pub(crate) fn forward(&self, tokens: usize) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    fn waited(&self, since: Instant) {
        let ns = since.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.queue_wait_ns.fetch_add(ns, Ordering::Relaxed);
        self.queue_wait_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            calls: get(&self.calls),
            forwards: get(&self.forwards),
            tokens: get(&self.tokens),
            shared_runs: get(&self.shared_runs),
            queue_wait_ns: get(&self.queue_wait_ns),
            queue_wait_max_ns: get(&self.queue_wait_max_ns),
            timed_out: get(&self.timed_out),
            cancelled: get(&self.cancelled),
        }
    }
}

type Outputs = Result<Box<dyn Any + Send>>;

struct Job {
    id: u64,
    key: BatchKey,
    /// `Vec<S>` of the caller's task; taken by the leader.
    inputs: Box<dyn Any + Send>,
    count: usize,
    tokens: usize,
    queued_at: Instant,
}

#[derive(Default)]
struct Queue {
    running: bool,
    next_id: u64,
    waiting: VecDeque<Job>,
    /// Outputs of finished jobs, until their callers pick them up.
    done: HashMap<u64, Outputs>,
}

pub struct Coalescer {
    enabled: bool,
    max_tokens: usize,
    max_sequences: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    pub counters: Counters,
}

impl Coalescer {
    /// `enabled: false`: every call runs its own forwards at once (concurrent calls then run side
    /// by side on the CPU and one after another on a GPU).
    pub fn new(enabled: bool, max_tokens: usize, max_sequences: usize) -> Self {
        Coalescer {
            enabled,
            max_tokens,
            max_sequences,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue's invariants hold between statements (no user code runs under the lock), so a
        // panic elsewhere that poisoned it left it consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `task(items)` for this caller, in a run shared with the queued callers of the same `key`.
    /// `task` must give one output per input, in order, and depend on nothing but `key` and its
    /// inputs: it may run on other callers' inputs.
    pub fn run<S, T>(
        &self,
        key: BatchKey,
        items: &[S],
        tokens_of: impl Fn(&S) -> usize,
        mut task: impl FnMut(&[S]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>>
    where
        S: Clone + Send + 'static,
        T: Send + 'static,
    {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if !self.enabled {
            self.counters.shared_runs.fetch_add(1, Ordering::Relaxed);
            return task(items);
        }
        let limits = current_limits();
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.waiting.push_back(Job {
            id,
            key: key.clone(),
            inputs: Box::new(items.to_vec()),
            count: items.len(),
            tokens: items.iter().map(&tokens_of).sum(),
            queued_at: Instant::now(),
        });
        loop {
            if let Some(out) = q.done.remove(&id) {
                return out.and_then(|b| {
                    b.downcast::<Vec<T>>()
                        .map(|v| *v)
                        .map_err(|_| Error::Device("coalescing: outputs of another task".into()))
                });
            }
            let queued = q.waiting.iter().position(|j| j.id == id);
            if let Some(i) = queued {
                if let Some(e) = self.withdrawn(&limits) {
                    q.waiting.remove(i);
                    // The oldest queued call may have changed: its caller may lead now.
                    self.wake.notify_all();
                    return Err(e);
                }
            }
            // Lead when no forward runs and the oldest queued call has this key: calls of one
            // key never wait behind a stream of another's.
            let my_turn = queued.is_some() && q.waiting.front().is_some_and(|j| j.key == key);
            if !q.running && my_turn {
                let batch = self.take_batch(&mut q, &key);
                q.running = true;
                drop(q);
                let ran = self.run_batch(batch, &mut task);
                q = self.lock();
                q.running = false;
                let panicked = match ran {
                    Ok(outputs) => {
                        q.done.extend(outputs);
                        None
                    }
                    Err((ids, payload)) => {
                        for j in ids {
                            q.done
                                .insert(j, Err(Error::Device("the forward this call shared panicked".into())));
                        }
                        Some(payload)
                    }
                };
                self.wake.notify_all();
                if let Some(payload) = panicked {
                    // This caller leaves by unwinding: nothing of its job may stay behind.
                    q.done.remove(&id);
                    q.waiting.retain(|j| j.id != id);
                    drop(q);
                    resume_unwind(payload);
                }
                continue;
            }
            q = match (queued, limits.deadline) {
                // In another caller's running forward: its outputs are coming, limits no longer apply.
                (None, _) => self.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                (Some(_), Some(d)) => {
                    let left = d
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    self.wake.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0
                }
                // A cancel flag is set by another thread with no way to wake us: poll it.
                (Some(_), None) if limits.cancel.is_some() => {
                    self.wake
                        .wait_timeout(q, Duration::from_millis(20))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                (Some(_), None) => self.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    fn withdrawn(&self, limits: &CallLimits) -> Option<Error> {
        if limits.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            return Some(Error::Cancelled("the call was cancelled while queued".into()));
        }
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return Some(Error::Timeout("the call's deadline passed while it was queued".into()));
        }
        None
    }

    /// The jobs of `key`, oldest first, while they fit in the budget (the first one always).
    fn take_batch(&self, q: &mut Queue, key: &BatchKey) -> Vec<Job> {
        let (mut tokens, mut sequences) = (0usize, 0usize);
        let mut batch = Vec::new();
        let mut i = 0;
        while i < q.waiting.len() {
            let j = &q.waiting[i];
            if &j.key != key {
                i += 1;
                continue;
            }
            let fits = tokens + j.tokens <= self.max_tokens && sequences + j.count <= self.max_sequences;
            if !batch.is_empty() && !fits {
                break;
            }
            tokens += j.tokens;
            sequences += j.count;
            batch.push(q.waiting.remove(i).expect("index checked"));
        }
        batch
    }

    /// One task call over the batch's inputs, split back into each job's outputs. On a panic:
    /// the job ids (to fail) and the payload.
    fn run_batch<S, T>(
        &self,
        batch: Vec<Job>,
        task: &mut impl FnMut(&[S]) -> Result<Vec<T>>,
    ) -> std::result::Result<Vec<(u64, Outputs)>, (Vec<u64>, Box<dyn Any + Send>)>
    where
        S: Send + 'static,
        T: Send + 'static,
    {
        let ids: Vec<u64> = batch.iter().map(|j| j.id).collect();
        self.counters.shared_runs.fetch_add(1, Ordering::Relaxed);
        let mut all: Vec<S> = Vec::new();
        let mut counts = Vec::with_capacity(batch.len());
        for job in batch {
            self.counters.waited(job.queued_at);
            counts.push(job.count);
            match job.inputs.downcast::<Vec<S>>() {
                Ok(v) => all.extend(*v),
                // Equal keys mean equal tasks; a mismatch is a bug in a key.
                Err(_) => return Err((ids, Box::new("coalescing: inputs of another task"))),
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| task(&all))).map_err(|p| (ids.clone(), p))?;
        Ok(match result {
            Ok(outputs) if outputs.len() == all.len() => {
                let mut outputs = outputs.into_iter();
                ids.into_iter()
                    .zip(counts)
                    .map(|(id, n)| {
                        (
                            id,
                            Ok(Box::new(outputs.by_ref().take(n).collect::<Vec<T>>()) as Box<dyn Any + Send>),
                        )
                    })
                    .collect()
            }
            Ok(outputs) => {
                let e = Error::Device(format!("{} outputs for {} inputs", outputs.len(), all.len()));
                ids.into_iter().map(|id| (id, Err(e.clone()))).collect()
            }
            Err(e) => ids.into_iter().map(|id| (id, Err(e.clone()))).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Every job alone in its run (budget: one token), tasks that take a while: a call of another
    /// key, queued behind a stream of one key's calls, is served after at most the calls queued
    /// before it, not whenever it wins a race for the lock.
    #[test]
    fn no_key_starves_behind_another() {
        let c = Coalescer::new(true, 1, 1);
        let runs = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let task = |x: &[u32]| -> Result<Vec<u32>> {
            runs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            Ok(x.to_vec())
        };
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (c, stop) = (&c, &stop);
                s.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        assert_eq!(c.run(BatchKey::SequenceLogits, &[t], |_| 1, task).unwrap(), [t]);
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(20));
            let before = runs.load(Ordering::SeqCst);
            assert_eq!(c.run(BatchKey::TokenLogits, &[99], |_| 1, task).unwrap(), [99]);
            let waited = runs.load(Ordering::SeqCst) - before;
            stop.store(true, Ordering::SeqCst);
            // At most the 4 streaming callers' queued jobs ran first, then this one.
            assert!(waited <= 5, "{waited} runs before the other key's call");
        });
        let q = c.lock();
        assert!(q.waiting.is_empty() && q.done.is_empty() && !q.running);
    }

    /// A panic in a shared run fails the other calls in it with an error, unwinds in the leader,
    /// and leaves nothing queued or unclaimed.
    #[test]
    fn a_panicking_run_fails_its_calls_and_leaves_nothing_behind() {
        let c = Coalescer::new(true, 1000, 1000);
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            let (c, started) = (&c, &started);
            let leader = s.spawn(move || {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    c.run(
                        BatchKey::SequenceLogits,
                        &[1u32],
                        |_| 1,
                        |_x: &[u32]| -> Result<Vec<u32>> {
                            started.store(true, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            Ok(vec![1])
                        },
                    )
                }))
            });
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // Two followers queue behind the running forward; one of them leads the next run,
            // which panics.
            let followers: Vec<_> = (0..2u32)
                .map(|i| {
                    s.spawn(move || {
                        std::panic::catch_unwind(AssertUnwindSafe(|| {
                            c.run(
                                BatchKey::SequenceLogits,
                                &[i],
                                |_| 1,
                                |_x: &[u32]| -> Result<Vec<u32>> { panic!("boom") },
                            )
                        }))
                    })
                })
                .collect();
            assert_eq!(leader.join().unwrap().unwrap().unwrap(), [1]);
            let outcomes: Vec<_> = followers.into_iter().map(|f| f.join().unwrap()).collect();
            let panicked = outcomes.iter().filter(|o| o.is_err()).count();
            let failed = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(Err(Error::Device(_)))))
                .count();
            assert_eq!(
                (panicked, failed),
                (1, 1),
                "one leader unwinds, the other call gets an error"
            );
        });
        let q = c.lock();
        assert!(q.waiting.is_empty() && q.done.is_empty() && !q.running);
    }
}
