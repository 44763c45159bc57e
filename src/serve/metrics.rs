//! `GET /metrics`: Prometheus text. TEI's request metrics (`te_request_count`,
//! `te_request_success`, `te_request_failure{err}`, `te_request_duration` as a histogram,
//! `te_request_input_length` as a sum) per route, and the engine's counters (calls, forwards,
//! tokens, queue wait), from which coalescing is read: calls per forward.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// Upper bounds (seconds) of the request-duration buckets: 100 µs to 10 s.
const BUCKETS: [f64; 11] = [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 1e-1, 1.0, 10.0];

#[derive(Default)]
struct Route {
    count: u64,
    success: u64,
    inputs: u64,
    /// Failures by error type (`Validation`, `Overloaded`, ...).
    failures: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS.len()],
    seconds: f64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    routes: Mutex<BTreeMap<&'static str, Route>>,
}

impl Metrics {
    pub fn record(&self, route: &'static str, inputs: usize, took: Duration, error: Option<&ApiError>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let r = routes.entry(route).or_default();
        r.count += 1;
        r.inputs += inputs as u64;
        match error {
            None => r.success += 1,
            Some(e) => *r.failures.entry(e.error_type).or_default() += 1,
        }
        let s = took.as_secs_f64();
        r.seconds += s;
        for (b, &le) in r.buckets.iter_mut().zip(&BUCKETS) {
            if s <= le {
                *b += 1;
            }
        }
    }

    fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# TYPE te_request_count counter");
        for (name, r) in routes.iter() {
            let _ = writeln!(out, "te_request_count{{route=\"{name}\"}} {}", r.count);
        }
        let _ = writeln!(out, "# TYPE te_request_success counter");
        for (name, r) in routes.iter() {
            let _ = writeln!(out, "te_request_success{{route=\"{name}\"}} {}", r.success);
        }
        let _ = writeln!(out, "# TYPE te_request_failure counter");
        for (name, r) in routes.iter() {
            for (err, n) in &r.failures {
                let _ = writeln!(out, "te_request_failure{{route=\"{name}\",err=\"{err}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# TYPE te_request_input_count counter");
        for (name, r) in routes.iter() {
            let _ = writeln!(out, "te_request_input_count{{route=\"{name}\"}} {}", r.inputs);
        }
        let _ = writeln!(out, "# TYPE te_request_duration histogram");
        for (name, r) in routes.iter() {
            for (le, n) in BUCKETS.iter().zip(&r.buckets) {
                let _ = writeln!(out, "te_request_duration_bucket{{route=\"{name}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "te_request_duration_bucket{{route=\"{name}\",le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(out, "te_request_duration_sum{{route=\"{name}\"}} {}", r.seconds);
            let _ = writeln!(out, "te_request_duration_count{{route=\"{name}\"}} {}", r.count);
        }
    }
}

/// The handler of `GET /metrics`.
pub(crate) async fn render(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    s.metrics.render(&mut out);
    let c = s.engine.counters();
    for (name, kind, help, value) in [
        (
            "modernbert_calls_total",
            "counter",
            "engine calls that reached the model",
            c.calls as f64,
        ),
        (
            "modernbert_forwards_total",
            "counter",
            "backbone forwards (packed batches)",
            c.forwards as f64,
        ),
        (
            "modernbert_tokens_total",
            "counter",
            "tokens through the backbone",
            c.tokens as f64,
        ),
        (
            "modernbert_queue_wait_seconds_total",
            "counter",
            "time calls spent queued for a forward",
            c.queue_wait_ns as f64 * 1e-9,
        ),
        (
            "modernbert_queue_wait_max_seconds",
            "gauge",
            "the longest a call was queued",
            c.queue_wait_max_ns as f64 * 1e-9,
        ),
        (
            "modernbert_withdrawn_total",
            "counter",
            "calls withdrawn while queued (timeout or disconnect)",
            (c.timed_out + c.cancelled) as f64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
