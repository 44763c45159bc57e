//! Coalescing (src/coalesce.rs): concurrent single-text calls on one engine give exactly what the
//! same calls give one after another, in fewer forwards than calls (read from the engine's
//! counters); a bad text, a different task or a withdrawn call affects no other call.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::fixtures_dir;
use modernbert::coalesce::{with_call_limits, CallLimits};
use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::error::Error;
use modernbert::tokenize::OverlongPolicy;

const THREADS: usize = 8;
const CALLS_PER_THREAD: usize = 6;

fn engine(fixture: &str, device: DeviceChoice, coalesce: bool, overlong: OverlongPolicy) -> Engine {
    Engine::new(
        &fixtures_dir().join(fixture),
        &EngineOptions {
            device,
            max_batch_tokens: 256,
            coalesce,
            overlong,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Texts of 3 to about 40 tokens, all different.
fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("text {i}: {}", "the quick brown fox ".repeat(i % 7 + 1)))
        .collect()
}

/// Largest |a - b| over two rows.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Run `call(i)` for every i in 0..THREADS*CALLS_PER_THREAD from THREADS threads started together;
/// results in index order.
fn concurrently<T: Send>(call: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(THREADS);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, call) = (&barrier, &call);
                s.spawn(move || {
                    barrier.wait();
                    (0..CALLS_PER_THREAD)
                        .map(|m| {
                            let i = m * THREADS + t;
                            (i, call(i))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Embeddings of single-text calls from 8 threads equal the sequential calls' (tolerance: the
/// CPU's f32 GEMM may block K differently for another batch height, a few ulps; the device
/// computes each row of a batch independently of the others in the same order, so a bf16 row
/// differs at most by the same rounding) and take fewer forwards than calls.
fn concurrent_embeddings_equal_sequential(fixture: &str, device: DeviceChoice, tolerance: f32) {
    let n = THREADS * CALLS_PER_THREAD;
    let texts = texts(n);
    let options = EmbedOptions::default();
    let alone = engine(fixture, device, false, OverlongPolicy::Truncate);
    let sequential: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| alone.embed(&[t.as_str()], &options).unwrap().remove(0))
        .collect();
    let c = alone.counters();
    assert_eq!((c.calls, c.forwards), (n as u64, n as u64), "{c:?}");

    let shared = engine(fixture, device, true, OverlongPolicy::Truncate);
    let got = concurrently(|i| shared.embed(&[texts[i].as_str()], &options).unwrap().remove(0));
    for (i, (g, want)) in got.iter().zip(&sequential).enumerate() {
        let d = max_diff(g, want);
        assert!(d <= tolerance, "{device:?} text {i}: max |diff| {d} > {tolerance}");
    }
    let c = shared.counters();
    assert_eq!(c.calls, n as u64, "{c:?}");
    assert!(c.forwards < c.calls, "no call shared a forward: {c:?}");
    assert!(c.shared_runs < c.calls && c.forwards >= c.shared_runs, "{c:?}");
    assert_eq!(c.tokens, alone.counters().tokens, "{c:?}");
    eprintln!(
        "{device:?}: {} calls in {} forwards ({} runs)",
        c.calls, c.forwards, c.shared_runs
    );
}

#[test]
fn concurrent_calls_on_the_cpu_equal_sequential_calls_in_fewer_forwards() {
    concurrent_embeddings_equal_sequential("st_mean_normalize_prompts", DeviceChoice::Cpu, 2e-6);
}

#[test]
fn concurrent_calls_on_the_emulated_device_equal_sequential_calls_in_fewer_forwards() {
    concurrent_embeddings_equal_sequential("mlm_hd64_v5_bf16", DeviceChoice::EMULATED, 1e-6);
}

/// Calls of two tasks and two option sets at once: each call gets its own task's result.
#[test]
fn different_tasks_and_options_never_mix() {
    let e = engine(
        "seqcls_hd64_mean_f32",
        DeviceChoice::Cpu,
        true,
        OverlongPolicy::Truncate,
    );
    let texts = texts(THREADS * CALLS_PER_THREAD);
    let dim8 = EmbedOptions {
        dim: Some(8),
        ..Default::default()
    };
    #[derive(Debug, PartialEq)]
    enum Out {
        Embed(Vec<f32>),
        Embed8(Vec<f32>),
        Class(Vec<f32>),
    }
    let run = |i: usize| {
        let t = [texts[i].as_str()];
        match i % 3 {
            0 => Out::Embed(e.embed(&t, &EmbedOptions::default()).unwrap().remove(0)),
            1 => Out::Embed8(e.embed(&t, &dim8).unwrap().remove(0)),
            _ => Out::Class(e.classify(&t).unwrap().remove(0).logits),
        }
    };
    let sequential: Vec<Out> = (0..texts.len()).map(run).collect();
    let got = concurrently(run);
    for (i, (g, s)) in got.iter().zip(&sequential).enumerate() {
        let (a, b) = match (g, s) {
            (Out::Embed(a), Out::Embed(b)) | (Out::Embed8(a), Out::Embed8(b)) | (Out::Class(a), Out::Class(b)) => {
                (a, b)
            }
            _ => panic!("call {i}: {g:?} is another task's result than {s:?}"),
        };
        assert!(max_diff(a, b) <= 2e-6, "call {i}: {a:?} vs {b:?}");
    }
}

/// A text too long (truncation off) fails its own call only, while the calls around it share
/// forwards.
#[test]
fn a_failing_call_fails_alone() {
    let e = engine(
        "st_mean_normalize_prompts",
        DeviceChoice::Cpu,
        true,
        OverlongPolicy::Refuse,
    );
    let long = "word ".repeat(10_000);
    let texts = texts(THREADS * CALLS_PER_THREAD);
    let got = concurrently(|i| {
        let t = if i % 5 == 0 { long.as_str() } else { texts[i].as_str() };
        e.embed(&[t], &EmbedOptions::default())
    });
    for (i, r) in got.iter().enumerate() {
        match r {
            Err(Error::TextTooLong(m)) if i % 5 == 0 => assert!(m.contains("text 1"), "{m}"),
            Ok(v) if i % 5 != 0 => assert_eq!(v.len(), 1),
            other => panic!("call {i}: {other:?}"),
        }
    }
}

/// Start a run that holds the engine for many forwards (1,000 texts, 256-token batches), and
/// return once its first forward has begun.
fn hold_engine<'s>(s: &'s std::thread::Scope<'s, '_>, e: &'s Engine, texts: &'s [String]) {
    let before = e.counters().forwards;
    s.spawn(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        e.embed(&refs, &EmbedOptions::default()).unwrap();
    });
    while e.counters().forwards == before {
        std::thread::yield_now();
    }
}

#[test]
fn a_queued_call_leaves_at_its_deadline_and_when_cancelled() {
    let e = engine(
        "st_mean_normalize_prompts",
        DeviceChoice::Cpu,
        true,
        OverlongPolicy::Truncate,
    );
    let many = texts(1000);
    std::thread::scope(|s| {
        hold_engine(s, &e, &many);
        let t0 = Instant::now();
        let limits = CallLimits {
            deadline: Some(t0 + Duration::from_millis(20)),
            ..Default::default()
        };
        let r = with_call_limits(limits, || e.embed(&["queued"], &EmbedOptions::default()));
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_millis(20), "left before its deadline");

        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let limits = CallLimits {
            cancel: Some(cancel),
            ..Default::default()
        };
        let r = with_call_limits(limits, || e.embed(&["queued"], &EmbedOptions::default()));
        assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
    });
    let c = e.counters();
    assert_eq!((c.timed_out, c.cancelled), (1, 1), "{c:?}");
    // Limits end with their scope: the same call afterwards succeeds.
    assert!(e.embed(&["after"], &EmbedOptions::default()).is_ok());
}
