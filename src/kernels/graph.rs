//! CUDA-graph capture and replay for small batches.
//!
//! A small forward pass is dominated by launch overhead (dozens of kernels and GEMMs per layer). We
//! record the whole pass once per *capacity bucket* ([`bucket`]) into a CUDA graph and replay it with
//! one launch. This works because the kernels read the actual batch shape from device memory
//! (`BatchDesc`) and are launched with the bucket's capacity, and because every buffer lives at a fixed
//! address (the arena): a graph bakes in kernel parameters and addresses, never data.
//!
//! Requirements on the caller (the device layer / executor):
//! - Call [`prepare_context_for_graphs`] (cudarc's `disable_event_tracking`) **before allocating any
//!   buffer used inside a capture**; otherwise cudarc makes the stream wait on / record per-buffer
//!   events, which is not capturable.
//! - `record` may only enqueue work on the capturing stream: kernel launches and cuBLASLt GEMMs whose
//!   plans were prepared beforehand. No allocation, no synchronisation, no host↔device copies of the
//!   per-batch inputs (upload them before calling [`GraphCache::replay_or_capture`]).
//! - Do not call `replay_or_capture` on the same cache from inside `record` (the cache lock is held).
//! - Drop a `GraphCache` before the buffers and the cuBLASLt workspace its graphs reference.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use cudarc::driver::{CudaContext, CudaGraph, CudaStream};

use super::KernelError;

/// Largest token bucket (tokens are rounded up to a power of two from 16).
pub const MAX_GRAPH_TOKENS: usize = 2048;
/// Smallest token bucket.
pub const MIN_GRAPH_TOKENS: usize = 16;
/// Largest sequence bucket (sequences are rounded up to a power of two).
pub const MAX_GRAPH_SEQUENCES: usize = 64;
/// `max_seqlen` is rounded up to a multiple of this (then capped at the token bucket).
pub const SEQLEN_GRANULE: usize = 64;

/// The capacity bucket `(tokens, sequences, max_seqlen)` whose graph serves this batch, or `None` when
/// the batch is too big (or inconsistent/empty) for graphs: then launch directly.
///
/// - tokens: the next power of two, at least 16, at most 2048;
/// - sequences: the next power of two, at most 64;
/// - max_seqlen: rounded up to a multiple of 64, capped at the token bucket (so for token buckets 16
///   and 32 it equals the token bucket).
///
/// Each bucket component is ≥ the batch's and non-decreasing in it.
pub fn bucket(tokens: usize, sequences: usize, max_seqlen: usize) -> Option<(u32, u32, u32)> {
    if tokens == 0 || sequences == 0 || sequences > tokens || max_seqlen > tokens {
        return None;
    }
    if tokens > MAX_GRAPH_TOKENS || sequences > MAX_GRAPH_SEQUENCES {
        return None;
    }
    let t = tokens.next_power_of_two().max(MIN_GRAPH_TOKENS);
    let s = sequences.next_power_of_two();
    let l = max_seqlen.max(1).next_multiple_of(SEQLEN_GRANULE).min(t);
    Some((t as u32, s as u32, l as u32))
}

/// Let buffers allocated from now on be used inside graph captures: turns off cudarc's per-buffer
/// event tracking. The device layer must call this right after creating the context, before
/// allocating the arena, the weights, or the cuBLASLt workspace.
pub fn prepare_context_for_graphs(ctx: &CudaContext) {
    // SAFETY: cudarc's contract for disabling event tracking is that the user synchronises streams
    // themselves. This crate runs every kernel, copy and GEMM of a context on a single stream, so
    // stream order already orders every use, allocation and free of each buffer.
    unsafe { ctx.disable_event_tracking() };
}

fn drv(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda(format!("CUDA graph {what}: {e:?}"))
}

/// An instantiated graph and the stream it was captured on (it always launches there).
struct Stored {
    graph: CudaGraph,
    cu_stream: usize,
}

// SAFETY: a CUDA graph is not bound to a host thread; the driver only requires that calls on one graph
// be serialised. Every access to a `Stored` (launch, drop) happens with the cache's mutex held or
// with exclusive ownership.
unsafe impl Send for Stored {}

/// Instantiated CUDA graphs by bucket key.
pub struct GraphCache<K: Hash + Eq> {
    graphs: Mutex<HashMap<K, Stored>>,
    flags: CUgraphInstantiate_flags,
}

impl<K: Hash + Eq> Default for GraphCache<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq> GraphCache<K> {
    pub fn new() -> Self {
        // Default instantiation: the graphs contain no memory-allocation nodes.
        GraphCache {
            graphs: Mutex::new(HashMap::new()),
            flags: CUgraphInstantiate_flags(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Stored>> {
        self.graphs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
    pub fn contains(&self, key: &K) -> bool {
        self.lock().contains_key(key)
    }
    /// Drop every graph (e.g. before freeing the buffers they reference).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Launch the graph of `key` on `stream`; if there is none yet, capture `record()` (which must
    /// enqueue the work on `stream`), instantiate and upload the graph, store it, and launch it —
    /// capturing executes nothing, so the launch is what runs this batch.
    ///
    /// If `record` fails (or panics), the capture is ended and discarded, the stream is left out of
    /// capture mode, nothing is stored, and the error is returned.
    pub fn replay_or_capture(
        &self,
        key: K,
        stream: &Arc<CudaStream>,
        record: impl FnOnce() -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let mut graphs = self.lock();
        let cu_stream = stream.cu_stream() as usize;
        if let Some(s) = graphs.get(&key) {
            if s.cu_stream != cu_stream {
                return Err(KernelError::Cuda(
                    "CUDA graph replayed on another stream than it was captured on".into(),
                ));
            }
            return s.graph.launch().map_err(drv("launch"));
        }

        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv("begin capture"))?;
        // From here on, every way out (error, panic in `record`, failed end) leaves capture mode.
        let _guard = CaptureGuard(stream);
        record()?;
        let graph = stream
            .end_capture(self.flags)
            .map_err(drv("end capture / instantiate"))?
            .ok_or_else(|| KernelError::Cuda("CUDA graph capture produced no graph".into()))?;
        graph.upload().map_err(drv("upload"))?;
        let stored = graphs.entry(key).or_insert(Stored { graph, cu_stream });
        stored.graph.launch().map_err(drv("launch"))
    }
}

/// Ends a capture that is still active on `Drop` and discards its graph.
struct CaptureGuard<'a>(&'a Arc<CudaStream>);

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        abort_capture(self.0);
    }
}

/// If `stream` is capturing (active or invalidated), end the capture and destroy the partial graph.
fn abort_capture(stream: &CudaStream) {
    use cudarc::driver::result;
    match stream.capture_status() {
        Ok(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) => {}
        // Active, invalidated, or unknown: ending the capture is always the right thing to try.
        _ => {
            let _ = stream.context().bind_to_thread();
            // SAFETY: our live stream; cuStreamEndCapture leaves capture mode even when the capture
            // was invalidated (then it returns an error and no graph). A returned graph is ours.
            unsafe {
                if let Ok(g) = result::stream::end_capture(stream.cu_stream()) {
                    if !g.is_null() {
                        let _ = result::graph::destroy(g);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_examples() {
        assert_eq!(bucket(1, 1, 1), Some((16, 1, 16)));
        assert_eq!(bucket(16, 1, 16), Some((16, 1, 16)));
        assert_eq!(bucket(17, 2, 10), Some((32, 2, 32)));
        assert_eq!(bucket(40, 3, 20), Some((64, 4, 64)));
        assert_eq!(bucket(100, 3, 65), Some((128, 4, 128)));
        assert_eq!(bucket(100, 1, 100), Some((128, 1, 128)));
        assert_eq!(bucket(1000, 8, 130), Some((1024, 8, 192)));
        assert_eq!(bucket(2048, 64, 2048), Some((2048, 64, 2048)));
    }

    #[test]
    fn bucket_none_past_the_limits_or_for_bad_batches() {
        assert_eq!(bucket(2049, 1, 2049), None);
        assert_eq!(bucket(100, 65, 10), None);
        assert_eq!(bucket(0, 0, 0), None);
        assert_eq!(bucket(4, 0, 4), None);
        assert_eq!(bucket(4, 5, 1), None, "more sequences than tokens");
        assert_eq!(bucket(4, 1, 5), None, "a sequence longer than the batch");
    }

    #[test]
    fn bucket_covers_and_is_monotone() {
        let mut prev_t = None;
        for t in 1..=2100usize {
            // tokens alone, with the other two at their smallest consistent values
            let b = bucket(t, 1, 1);
            if t > MAX_GRAPH_TOKENS {
                assert_eq!(b, None);
                continue;
            }
            let (bt, _, _) = b.unwrap();
            assert!(bt as usize >= t && bt.is_power_of_two() && bt >= 16);
            if let Some(p) = prev_t {
                assert!(bt >= p);
            }
            prev_t = Some(bt);
        }
        for t in [1usize, 7, 16, 33, 64, 100, 513, 2048] {
            let mut prev = (0u32, 0u32, 0u32);
            for s in 1..=t.min(70) {
                for l in [1usize, s, t / s.max(1), t]
                    .into_iter()
                    .filter(|&l| l >= 1 && l <= t && l * s >= t)
                {
                    let Some((bt, bs, bl)) = bucket(t, s, l) else {
                        assert!(s > MAX_GRAPH_SEQUENCES, "t={t} s={s} l={l}");
                        continue;
                    };
                    assert!(
                        bt as usize >= t && bs as usize >= s && bl as usize >= l,
                        "covers t={t} s={s} l={l}"
                    );
                    assert!(bl <= bt, "max_seqlen bucket within the token bucket");
                    assert!(bs.is_power_of_two() && bs <= 64);
                    assert!(bl % 64 == 0 || bl == bt);
                    assert!(bs >= prev.1, "monotone in sequences");
                    prev = (bt, bs, bl);
                }
            }
        }
        // Monotone in max_seqlen for fixed tokens/sequences.
        for t in [16usize, 50, 300, 2048] {
            let mut prev = 0;
            for l in 1..=t {
                let (_, _, bl) = bucket(t, 1, l).unwrap();
                assert!(bl >= prev && bl as usize >= l);
                prev = bl;
            }
        }
    }

    #[test]
    fn cache_starts_empty() {
        let c: GraphCache<(u32, u32, u32)> = GraphCache::new();
        assert!(c.is_empty());
        assert_eq!(c.len(), 0);
        assert!(!c.contains(&(16, 1, 16)));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<GraphCache<(u32, u32, u32)>>();
    }
}
