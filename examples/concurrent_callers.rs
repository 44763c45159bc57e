//! Many callers, one engine: N threads each embed one text per call, K calls each, started
//! together, with coalescing on and off. Prints one JSON line per setting: calls per second,
//! p50 / p99 per call, and forwards per call (from the engine's counters).
//!
//!   cargo run --release --example concurrent_callers -- MODEL_DIR [DEVICE] [CALLERS] [CALLS] [WORDS]
//!
//! DEVICE: cpu (default) or any `--device` value; CALLERS: 64; CALLS per caller: 20; WORDS per
//! text: 24 (about 32 tokens with [CLS] / [SEP]).

use std::sync::Barrier;
use std::time::Instant;

use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: concurrent_callers MODEL_DIR [DEVICE] [CALLERS] [CALLS] [WORDS]");
    let device = DeviceChoice::parse(args.get(1).map_or("cpu", String::as_str)).unwrap();
    let callers: usize = args.get(2).map_or(64, |s| s.parse().unwrap());
    let calls: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let words: usize = args.get(4).map_or(24, |s| s.parse().unwrap());
    let vocab = [
        "model",
        "fast",
        "text",
        "embedding",
        "query",
        "the",
        "of",
        "search",
        "document",
        "vector",
    ];
    let text = |c: usize, k: usize| -> String {
        (0..words)
            .map(|w| vocab[(c * 7 + k * 3 + w) % vocab.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    for coalesce in [true, false] {
        let engine = Engine::new(
            std::path::Path::new(dir),
            &EngineOptions {
                device,
                coalesce,
                ..Default::default()
            },
        )
        .unwrap();
        let options = EmbedOptions::default();
        // Warm-up: one call per caller's first text, outside the timing.
        engine.embed(&[text(0, 0).as_str()], &options).unwrap();
        let before = engine.counters();
        let barrier = Barrier::new(callers);
        let start = Instant::now();
        let mut latencies: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|c| {
                    let (engine, barrier, options, text) = (&engine, &barrier, &options, &text);
                    s.spawn(move || {
                        let texts: Vec<String> = (0..calls).map(|k| text(c, k)).collect();
                        barrier.wait();
                        texts
                            .iter()
                            .map(|t| {
                                let t0 = Instant::now();
                                let v = engine.embed(&[t.as_str()], options).unwrap();
                                assert_eq!(v.len(), 1);
                                t0.elapsed().as_secs_f64() * 1e6
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let wall = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let after = engine.counters();
        let n = (callers * calls) as f64;
        let forwards = (after.forwards - before.forwards) as f64;
        println!(
            "{}",
            serde_json::json!({
                "model": dir,
                "device": engine.backbone.device_name(),
                "coalesce": coalesce,
                "callers": callers,
                "calls": callers * calls,
                "tokens_per_call": (after.tokens - before.tokens) as f64 / n,
                "calls_per_s": n / wall,
                "p50_us": percentile(&latencies, 0.5),
                "p99_us": percentile(&latencies, 0.99),
                "forwards_per_call": forwards / n,
                "mean_queue_wait_us": (after.queue_wait_ns - before.queue_wait_ns) as f64 / n / 1e3,
            })
        );
    }
}
