//! The C ABI (`libmodernbert.so` / `libmodernbert.a`, header `include/modernbert.h`, generated from
//! this file by cbindgen with `cbindgen.toml`; `tests/c_abi.rs` fails when the committed header is
//! stale).
//!
//! Rules every entry point follows:
//! - Opaque handles only (`mb_engine`); no Rust type crosses the boundary.
//! - Every function that can fail returns an `mb_status`; on failure the thread-local message
//!   `mb_last_error()` says why, in one line. The pointer it returns is owned by the library and
//!   stays valid until the next `mb_*` call on the same thread (each call other than `mb_version`,
//!   `mb_last_error` and `mb_engine_destroy` clears it first).
//! - Nothing unwinds across the boundary: each body runs under `catch_unwind`; a panic becomes
//!   `MB_ERR_INTERNAL`.
//! - Inputs are checked before anything is written: NULL pointers (`MB_ERR_NULL_POINTER`), zero
//!   counts and out-of-range options (`MB_ERR_INVALID_ARGUMENT`), invalid UTF-8
//!   (`MB_ERR_INVALID_UTF8`). Output buffers come with their capacity in elements; the needed size
//!   is computed (by tokenising, without running the model) and reported through `out_needed`
//!   before any write, so a too-small buffer gives `MB_ERR_BUFFER_TOO_SMALL` and is left untouched.
//!   Passing `NULL` with capacity 0 is the "query the size first" call.
//! - Caller-owned memory stays caller-owned: the library never keeps a pointer passed to it after
//!   the call returns. Library-owned strings: `mb_version()` (static), `mb_last_error()` (until the
//!   next call on the thread), `mb_engine_label()` (until `mb_engine_destroy`).
//! - Threads: an engine is `Sync`; any number of threads may call it at once. Concurrent calls of
//!   one task and options are merged into shared forwards (up to `max_batch_tokens`; each call
//!   gets exactly its own results), so many threads each embedding one text cost far fewer
//!   forwards than calls (`mb_engine_counters`). `mb_engine_destroy` must not race with other
//!   calls on the same engine.
//!
//! Safety contract (all `unsafe extern "C"` functions): every non-NULL pointer must point to valid
//! memory of the size its documentation states (e.g. `n_texts` `mb_text` entries, `capacity`
//! floats), aligned for its type, and (for outputs) not aliased by other arguments.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::ffi::{c_char, CString};
use std::mem::offset_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::coalesce::with_call_limits;
use crate::engine::Engine;

mod marshal;
mod outputs;
use marshal::*;
pub use outputs::*;

/// The result of every fallible call. `MB_OK` is 0; every other value is an error, with a message
/// in `mb_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_status {
    MB_OK = 0,
    /// A required pointer argument (or a text's `ptr`) is NULL.
    MB_ERR_NULL_POINTER = 1,
    /// A count is 0, an option is out of range, `struct_size` is too small, a pointer is misaligned,
    /// or a size (`max_batch_tokens`, a config.json value) overflows or does not fit in the device's
    /// or the host's memory (refused before anything is allocated).
    MB_ERR_INVALID_ARGUMENT = 2,
    /// A text (or the model path) is not valid UTF-8.
    MB_ERR_INVALID_UTF8 = 3,
    /// An output buffer is too small: `*out_needed` (where given) holds the size needed; nothing
    /// was written to the buffer.
    MB_ERR_BUFFER_TOO_SMALL = 4,
    /// A text has more tokens than the model's maximum and the engine refuses over-long texts
    /// (`MB_OVERLONG_REFUSE`).
    MB_ERR_TEXT_TOO_LONG = 5,
    /// Another problem with the input (a fill-mask text without `[MASK]`, an
    /// unknown prompt name, an embedding dimension out of range).
    MB_ERR_INPUT = 6,
    /// The model has no head for this task (e.g. `mb_classify` on an embedding model).
    MB_ERR_UNSUPPORTED = 7,
    /// The model could not be loaded (missing directory or file, a special file, invalid config or
    /// weights).
    MB_ERR_MODEL = 8,
    /// The tokenizer failed (or lacks a token the task needs).
    MB_ERR_TOKENIZER = 9,
    /// The device could not be opened or failed (CUDA).
    MB_ERR_DEVICE = 10,
    /// A bug in the library (a caught panic or a broken internal invariant).
    MB_ERR_INTERNAL = 11,
    /// A text's outputs are NaN or infinite (broken weights); `mb_last_error()` names the text.
    /// Nothing was written.
    MB_ERR_NON_FINITE = 12,
    /// The call waited in the engine's queue past its `timeout_us` (`mb_embed_options`) and was
    /// withdrawn before its forward started. Nothing was written.
    MB_ERR_TIMEOUT = 13,
}

/// Values of `mb_engine_options.device`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_device {
    /// CUDA when a usable GPU is present, else the CPU.
    MB_DEVICE_AUTO = 0,
    /// The exact f32 CPU reference executor.
    MB_DEVICE_CPU = 1,
    /// The GPU code path on the host emulator (needs head_dim 64; for testing).
    MB_DEVICE_EMULATED = 2,
    /// The CUDA device `mb_engine_options.device_index` (an error when unavailable).
    MB_DEVICE_CUDA = 3,
}

/// Values of `mb_engine_options.dtype` (activation dtype of the GPU executor; the CPU is f32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_dtype {
    MB_DTYPE_BF16 = 0,
    MB_DTYPE_F16 = 1,
}

/// Values of `mb_engine_options.overlong`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_overlong {
    /// Keep the first tokens of a text longer than the model's maximum.
    MB_OVERLONG_TRUNCATE = 0,
    /// Fail the call with `MB_ERR_TEXT_TOO_LONG`.
    MB_OVERLONG_REFUSE = 1,
}

/// Values of `mb_embed_options.pooling`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_pooling {
    /// The directory's sentence-transformers pooling, else mean.
    MB_POOLING_DEFAULT = 0,
    MB_POOLING_CLS = 1,
    MB_POOLING_MEAN = 2,
}

/// Values of `mb_embed_options.normalize`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_normalize {
    /// L2-normalise iff the directory has a sentence-transformers Normalize module.
    MB_NORMALIZE_DEFAULT = 0,
    MB_NORMALIZE_ON = 1,
    MB_NORMALIZE_OFF = 2,
}

/// Engine options. ABI growth: `struct_size` is the caller's `sizeof(mb_engine_options)`; the
/// library reads (and `mb_engine_options_default` writes) only the fields that lie entirely within
/// `struct_size` bytes, and fields past it take their defaults, so a program built against an older
/// header keeps working with a newer library. Usage:
/// `mb_engine_options o = { .struct_size = sizeof o }; mb_engine_options_default(&o);`
/// `o.device = MB_DEVICE_CPU;`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mb_engine_options {
    /// `sizeof(mb_engine_options)`, set by the caller.
    pub struct_size: usize,
    /// An `mb_device` (default `MB_DEVICE_AUTO`).
    pub device: i32,
    /// An `mb_dtype` (default `MB_DTYPE_BF16`).
    pub dtype: i32,
    /// Tokens per forward batch, > 0 (default 16384); longer requests are split, order kept.
    pub max_batch_tokens: usize,
    /// Nonzero: replay CUDA graphs for small batches (CUDA only; default 1).
    pub graphs: i32,
    /// An `mb_overlong` (default `MB_OVERLONG_TRUNCATE`).
    pub overlong: i32,
    /// With `MB_DEVICE_CUDA`: which CUDA device, in the driver's numbering (default 0); must be 0
    /// for every other device. One engine per device in one process is fine.
    pub device_index: u32,
}

/// Embedding options; NULL means all defaults, and so does an all-zero struct with `struct_size`
/// set: `mb_embed_options e = { .struct_size = sizeof e }; e.dim = 256;`. Same ABI-growth rule as
/// `mb_engine_options`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mb_embed_options {
    /// `sizeof(mb_embed_options)`, set by the caller.
    pub struct_size: usize,
    /// An `mb_pooling`.
    pub pooling: i32,
    /// An `mb_normalize`.
    pub normalize: i32,
    /// Keep the first `dim` dimensions (Matryoshka; normalised after truncation); 0: all.
    pub dim: usize,
    /// A prompt name from `config_sentence_transformers.json` (NUL-terminated UTF-8), or NULL for
    /// the directory's default prompt.
    pub prompt_name: *const c_char,
    /// A literal prompt prepended to every text (NUL-terminated UTF-8; overrides `prompt_name`),
    /// or NULL.
    pub prompt: *const c_char,
    /// The most microseconds the call may wait in the engine's queue for its forward (concurrent
    /// calls share forwards) before it fails with `MB_ERR_TIMEOUT`; 0: no limit. A call whose
    /// forward has started runs to the end.
    pub timeout_us: u64,
}

/// One UTF-8 text: `len` bytes at `ptr` (no NUL terminator needed; `ptr` must not be NULL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mb_text {
    pub ptr: *const c_char,
    pub len: usize,
}

/// A loaded model and its executor (opaque). Create with `mb_engine_create`, free with
/// `mb_engine_destroy`. Safe to use from many threads at once.
pub struct mb_engine {
    engine: Engine,
    /// `id2label` as C strings, for `mb_engine_label`.
    labels: Vec<CString>,
}

// An engine is shared by reference across threads; keep that a compile-time fact.
const _: () = {
    const fn assert_sync_send<T: Sync + Send>() {}
    assert_sync_send::<mb_engine>()
};

// ---------------------------------------------------------------------------------------------
// Entry points

/// The library version (`"MAJOR.MINOR.PATCH"`), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn mb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The message of the last failed `mb_*` call on this thread (one line, NUL-terminated UTF-8), or
/// `""` when the last call succeeded. Owned by the library; valid until the next `mb_*` call on
/// this thread. Never NULL.
#[no_mangle]
pub extern "C" fn mb_last_error() -> *const c_char {
    let p = catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| slot.try_borrow().ok().and_then(|s| s.as_ref().map(|c| c.as_ptr())))
            .ok()
            .flatten()
    });
    match p {
        Ok(Some(p)) => p,
        _ => c"".as_ptr(),
    }
}

/// Fill `*options` with the defaults. The caller sets `options->struct_size = sizeof *options`
/// first; only fields within `struct_size` bytes are written.
#[no_mangle]
pub unsafe extern "C" fn mb_engine_options_default(options: *mut mb_engine_options) -> mb_status {
    guard(|| {
        non_null(options as *const mb_engine_options, "options")?;
        let size = ptr::addr_of!((*options).struct_size).read();
        struct_size_ok(size, "mb_engine_options")?;
        let d = default_engine_options();
        macro_rules! put {
            ($f:ident) => {
                if size >= offset_of!(mb_engine_options, $f) + size_of_val(&d.$f) {
                    ptr::addr_of_mut!((*options).$f).write(d.$f);
                }
            };
        }
        put!(device);
        put!(dtype);
        put!(max_batch_tokens);
        put!(graphs);
        put!(overlong);
        put!(device_index);
        Ok(())
    })
}

/// Load a model: `model` is a local checkpoint directory or a Hugging Face repo id
/// (NUL-terminated UTF-8); `options` may be NULL for the defaults. On success `*out_engine` is a
/// new engine (free it with `mb_engine_destroy`); on failure it is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn mb_engine_create(
    model: *const c_char,
    options: *const mb_engine_options,
    out_engine: *mut *mut mb_engine,
) -> mb_status {
    guard(|| {
        non_null(out_engine as *const *mut mb_engine, "out_engine")?;
        *out_engine = ptr::null_mut();
        let model = c_str(model, "model")?;
        if model.is_empty() {
            return Err(fail(mb_status::MB_ERR_INVALID_ARGUMENT, "model is an empty string"));
        }
        let options = read_engine_options(options)?;
        let dir = crate::hub::resolve_model(model)?;
        let engine = Engine::new(&dir, &options)?;
        // As `Engine::classify`: `id2label`, else `LABEL_<i>`.
        let n_labels = engine.classifier.as_ref().map_or(0, |c| c.classifier.out_features);
        let labels = (0..n_labels)
            .map(|i| {
                let l = engine
                    .config
                    .id2label
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"));
                CString::new(l.replace('\0', "\\0")).unwrap_or_default()
            })
            .collect();
        *out_engine = Box::into_raw(Box::new(mb_engine { engine, labels }));
        Ok(())
    })
}

/// Free an engine (NULL is a no-op). No other call may be using it. Does not change
/// `mb_last_error()`.
#[no_mangle]
pub unsafe extern "C" fn mb_engine_destroy(engine: *mut mb_engine) {
    if engine.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(engine))));
}

/// The number of floats per text that `mb_embed` writes with these options (NULL: defaults).
#[no_mangle]
pub unsafe extern "C" fn mb_engine_embed_dim(
    engine: *const mb_engine,
    options: *const mb_embed_options,
    out_dim: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        non_null(out_dim as *const usize, "out_dim")?;
        let (options, _) = read_embed_options(options)?;
        *out_dim = e.engine.embed_dim(&options)?;
        Ok(())
    })
}

/// The number of floats per ColBERT vector (`MB_ERR_UNSUPPORTED` for a non-ColBERT model).
#[no_mangle]
pub unsafe extern "C" fn mb_engine_colbert_dim(engine: *const mb_engine, out_dim: *mut usize) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        non_null(out_dim as *const usize, "out_dim")?;
        *out_dim = e.engine.colbert_dim()?;
        Ok(())
    })
}

/// The number of classifier labels (logits per text of `mb_classify`; `MB_ERR_UNSUPPORTED`
/// without a classification head).
#[no_mangle]
pub unsafe extern "C" fn mb_engine_num_labels(engine: *const mb_engine, out_labels: *mut usize) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        non_null(out_labels as *const usize, "out_labels")?;
        *out_labels = e.engine.num_labels()?;
        Ok(())
    })
}

/// The name of label `index` < `mb_engine_num_labels` (from the config's `id2label`, else
/// `"LABEL_<index>"`). `*out_label` is owned by the engine and valid until `mb_engine_destroy`.
#[no_mangle]
pub unsafe extern "C" fn mb_engine_label(
    engine: *const mb_engine,
    index: usize,
    out_label: *mut *const c_char,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        non_null(out_label as *const *const c_char, "out_label")?;
        let label = e.labels.get(index).ok_or_else(|| {
            fail(
                mb_status::MB_ERR_INVALID_ARGUMENT,
                format!(
                    "label index {index} is out of range (the model has {} labels)",
                    e.labels.len()
                ),
            )
        })?;
        *out_label = label.as_ptr();
        Ok(())
    })
}

/// Sentence embeddings of `n_texts` texts: `n_texts * dim` floats, row-major, into `out`
/// (`capacity` floats), where `dim` is `mb_engine_embed_dim`. `options` may be NULL.
/// `*out_needed` (if `out_needed` is not NULL) receives `n_texts * dim`, also when the buffer is too
/// small.
#[no_mangle]
pub unsafe extern "C" fn mb_embed(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    options: *const mb_embed_options,
    out: *mut f32,
    capacity: usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let (options, limits) = read_embed_options(options)?;
        let dim = e.engine.embed_dim(&options)?;
        let needed = n_texts.checked_mul(dim).ok_or_else(|| overflow("n_texts * dim"))?;
        let out = out_buffer(out, capacity, needed, out_needed, "out")?;
        let rows = with_call_limits(limits, || e.engine.embed(&texts, &options))?;
        if rows.len() != n_texts || rows.iter().any(|r| r.len() != dim) {
            return Err(internal("embedding shape"));
        }
        for (dst, row) in out.chunks_exact_mut(dim).zip(&rows) {
            dst.copy_from_slice(row);
        }
        Ok(())
    })
}

/// ColBERT sizes without running the model: `token_counts[i]` (an array of `n_texts`) receives the
/// number of vectors text `i` gives, `*out_total` (if not NULL) their sum. `is_query` nonzero:
/// encode as queries (`[Q]` prefix, query expansion), else as documents (skiplist removed).
#[no_mangle]
pub unsafe extern "C" fn mb_colbert_sizes(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    is_query: i32,
    token_counts: *mut usize,
    out_total: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(token_counts, n_texts, "token_counts")?;
        if !out_total.is_null() {
            non_null(out_total as *const usize, "out_total")?;
        }
        let (_, counts) = colbert_tokens(&e.engine, &texts, is_query != 0)?;
        let total = sum(&counts, "total vectors")?;
        counts_out.copy_from_slice(&counts);
        if !out_total.is_null() {
            *out_total = total;
        }
        Ok(())
    })
}

/// ColBERT multi-vectors: for each text in order, `token_counts[i]` L2-normalised vectors of
/// `mb_engine_colbert_dim` floats, concatenated into `out` (`capacity` floats).
/// `token_counts` (an array of `n_texts`) is always filled once the texts are tokenised, and
/// `*out_needed` (if not NULL) receives the floats needed, also when the buffer is too small (the
/// model is not run then).
#[no_mangle]
pub unsafe extern "C" fn mb_colbert(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    is_query: i32,
    out: *mut f32,
    capacity: usize,
    token_counts: *mut usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(token_counts, n_texts, "token_counts")?;
        let dim = e.engine.colbert_dim()?;
        let (tokens, counts) = colbert_tokens(&e.engine, &texts, is_query != 0)?;
        counts_out.copy_from_slice(&counts);
        let needed = sum(&counts, "total vectors")?
            .checked_mul(dim)
            .ok_or_else(|| overflow("vectors * dim"))?;
        let out = out_buffer(out, capacity, needed, out_needed, "out")?;
        let tokens = tokens.into_iter().map(Ok).collect();
        let vectors = all_texts(e.engine.colbert_from_tokens(tokens, is_query != 0)?)?;
        if vectors.len() != n_texts
            || vectors
                .iter()
                .zip(&counts)
                .any(|(v, &c)| v.len() != c || v.iter().any(|x| x.len() != dim))
        {
            return Err(internal("ColBERT shape differs from its sizes"));
        }
        for (dst, src) in out.chunks_exact_mut(dim).zip(vectors.iter().flatten()) {
            dst.copy_from_slice(src);
        }
        Ok(())
    })
}

/// Sequence classification: `n_texts * num_labels` logits (row-major) into `logits` (`capacity`
/// floats; `*out_needed`, if not NULL, receives the size). Optionally, per text, the argmax label
/// index into `label_ids` and its probability (softmax; sigmoid for one logit) into `label_scores`
/// (arrays of `n_texts`, or NULL).
#[no_mangle]
pub unsafe extern "C" fn mb_classify(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    logits: *mut f32,
    capacity: usize,
    label_ids: *mut u32,
    label_scores: *mut f32,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let labels = e.engine.num_labels()?;
        let ids_out = if label_ids.is_null() {
            None
        } else {
            Some(per_text_out(label_ids, n_texts, "label_ids")?)
        };
        let scores_out = if label_scores.is_null() {
            None
        } else {
            Some(per_text_out(label_scores, n_texts, "label_scores")?)
        };
        let needed = n_texts
            .checked_mul(labels)
            .ok_or_else(|| overflow("n_texts * labels"))?;
        let out = out_buffer(logits, capacity, needed, out_needed, "logits")?;
        let results = e.engine.classify(&texts)?;
        if results.len() != n_texts || results.iter().any(|r| r.logits.len() != labels) {
            return Err(internal("classification shape"));
        }
        for (dst, r) in out.chunks_exact_mut(labels).zip(&results) {
            dst.copy_from_slice(&r.logits);
        }
        if let Some(ids) = ids_out {
            for (dst, r) in ids.iter_mut().zip(&results) {
                *dst = r.label_id as u32;
            }
        }
        if let Some(scores) = scores_out {
            for (dst, r) in scores.iter_mut().zip(&results) {
                *dst = r.score;
            }
        }
        Ok(())
    })
}

/// Cross-encoder relevance of each of `n_documents` documents to the query (`query_len` bytes of
/// UTF-8): `n_documents` scores into `scores` (`capacity` floats).
#[no_mangle]
pub unsafe extern "C" fn mb_rerank(
    engine: *const mb_engine,
    query: *const c_char,
    query_len: usize,
    documents: *const mb_text,
    n_documents: usize,
    scores: *mut f32,
    capacity: usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let q = utf8(query, query_len, "query")?;
        let docs = texts(documents, n_documents, "documents")?;
        e.engine.num_labels()?;
        let out = out_buffer(scores, capacity, n_documents, out_needed, "scores")?;
        let s = e.engine.rerank(q, &docs)?;
        if s.len() != n_documents {
            return Err(internal("rerank shape"));
        }
        out.copy_from_slice(&s);
        Ok(())
    })
}

/// Fill-mask sizes without running the model: `mask_counts[i]` (an array of `n_texts`) receives the
/// number of `[MASK]` tokens of text `i`, `*out_total` (if not NULL) their sum.
#[no_mangle]
pub unsafe extern "C" fn mb_fill_mask_sizes(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    mask_counts: *mut usize,
    out_total: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(mask_counts, n_texts, "mask_counts")?;
        if !out_total.is_null() {
            non_null(out_total as *const usize, "out_total")?;
        }
        let (_, counts) = fill_mask_tokens(&e.engine, &texts)?;
        let total = sum(&counts, "total masks")?;
        counts_out.copy_from_slice(&counts);
        if !out_total.is_null() {
            *out_total = total;
        }
        Ok(())
    })
}

/// Fill-mask: for each `[MASK]` of each text, in order, the `k = min(top_k, vocab size)` most
/// likely token ids (into `ids`) and their probabilities (into `scores`), best first. Both buffers
/// hold `capacity` elements; `total masks * k` are needed (`*out_needed`, if not NULL).
/// `mask_counts` (an array of `n_texts`) receives the masks per text. Token text: `mb_token_text`.
#[no_mangle]
pub unsafe extern "C" fn mb_fill_mask(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    top_k: usize,
    ids: *mut u32,
    scores: *mut f32,
    capacity: usize,
    mask_counts: *mut usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = self::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(mask_counts, n_texts, "mask_counts")?;
        if top_k == 0 {
            return Err(fail(mb_status::MB_ERR_INVALID_ARGUMENT, "top_k is 0"));
        }
        let k = top_k.min(e.engine.config.vocab_size);
        let (tokens, counts) = fill_mask_tokens(&e.engine, &texts)?;
        counts_out.copy_from_slice(&counts);
        for (i, ids) in tokens.iter().enumerate() {
            e.engine.require_mask(ids).map_err(|err| err.for_text(i))?;
        }
        let needed = sum(&counts, "total masks")?
            .checked_mul(k)
            .ok_or_else(|| overflow("masks * top_k"))?;
        let ids_out = out_buffer(ids, capacity, needed, out_needed, "ids")?;
        let scores_out = out_buffer(scores, capacity, needed, ptr::null_mut(), "scores")?;
        let results = all_texts(
            e.engine
                .fill_mask_from_tokens(tokens.into_iter().map(Ok).collect(), k)?,
        )?;
        let flat: Vec<_> = results.iter().flatten().collect();
        if results.len() != n_texts
            || results.iter().zip(&counts).any(|(r, &c)| r.len() != c)
            || flat.iter().any(|m| m.len() != k)
        {
            return Err(internal("fill-mask shape differs from its sizes"));
        }
        for (j, p) in flat.iter().flat_map(|m| m.iter()).enumerate() {
            ids_out[j] = p.id;
            scores_out[j] = p.score;
        }
        Ok(())
    })
}

/// The text of token `id` as fill-mask shows it (e.g. `" Paris"`), NUL-terminated UTF-8, into the
/// caller's `buf` of `capacity` bytes. `*out_len` (if not NULL) receives its length in bytes
/// without the NUL; `capacity` must be at least that + 1 (`MB_ERR_BUFFER_TOO_SMALL` otherwise; call
/// with `buf` NULL and `capacity` 0 to query).
#[no_mangle]
pub unsafe extern "C" fn mb_token_text(
    engine: *const mb_engine,
    id: u32,
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let vocab = e.engine.config.vocab_size;
        if id as usize >= vocab {
            return Err(fail(
                mb_status::MB_ERR_INVALID_ARGUMENT,
                format!("token id {id} is out of range (vocabulary {vocab})"),
            ));
        }
        let text = e.engine.tokenizer()?.decode_token(id).replace('\0', "");
        if !out_len.is_null() {
            non_null(out_len as *const usize, "out_len")?;
            *out_len = text.len();
        }
        let dst = out_buffer(buf, capacity, text.len() + 1, ptr::null_mut(), "buf")?;
        dst[..text.len()].copy_from_slice(std::slice::from_raw_parts(text.as_ptr() as *const c_char, text.len()));
        dst[text.len()] = 0;
        Ok(())
    })
}
