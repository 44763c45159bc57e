//! The C ABI's entry points for serving hosts: the ABI version, the engine's counters, quantized
//! embeddings (sentence-transformers' `quantize_embeddings`) and token classification. Same rules
//! as every entry point (`ffi.rs`): checked arguments, sizes before writes, no unwinding.

use std::mem::size_of;
use std::ptr;

use super::marshal::*;
use super::{mb_embed_options, mb_engine, mb_status, mb_text};
use crate::coalesce::with_call_limits;
use crate::quantize::{quantize, Precision, Quantized};

/// The version of this C ABI: raised by one with every addition (functions, enum values, struct
/// fields at the end); a removal or change would be a new major version of the library. A host
/// built against a header with `MB_ABI_VERSION` N runs on any library whose `mb_abi_version()` is
/// at least N.
pub const MB_ABI_VERSION: u32 = 2;

/// `MB_ABI_VERSION` of the loaded library (for hosts that load it at run time).
#[no_mangle]
pub extern "C" fn mb_abi_version() -> u32 {
    MB_ABI_VERSION
}

/// Values of `mb_embed_quantized`'s `precision`: sentence-transformers' `quantize_embeddings`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mb_precision {
    /// 4-byte floats, as `mb_embed`.
    MB_PRECISION_FLOAT32 = 0,
    /// One signed byte per dimension: `(x - min) / ((max - min) / 255) - 128`, with `min` and `max`
    /// per dimension over the call's own texts.
    MB_PRECISION_INT8 = 1,
    /// One unsigned byte per dimension, as INT8 without the `- 128`.
    MB_PRECISION_UINT8 = 2,
    /// Sign bits (x > 0) packed 8 per byte, most significant first, over the row-major matrix,
    /// stored as `byte - 128` (signed).
    MB_PRECISION_BINARY = 3,
    /// The same bits as unsigned bytes.
    MB_PRECISION_UBINARY = 4,
}

/// The engine's totals since it was created. Same ABI-growth rule as `mb_engine_options`:
/// `mb_counters c = { .struct_size = sizeof c }; mb_engine_counters(engine, &c);`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mb_counters {
    /// `sizeof(mb_counters)`, set by the caller.
    pub struct_size: usize,
    /// Calls that reached the model.
    pub calls: u64,
    /// Backbone forwards (packed batches).
    pub forwards: u64,
    /// Tokens through the backbone.
    pub tokens: u64,
    /// Sum and maximum over calls of the nanoseconds spent queued before their forward.
    pub queue_wait_ns: u64,
    pub queue_wait_max_ns: u64,
    /// Calls withdrawn at their timeout while queued.
    pub timed_out: u64,
}

/// Fill `*out` (its `struct_size` set) with the engine's counters.
#[no_mangle]
pub unsafe extern "C" fn mb_engine_counters(engine: *const mb_engine, out: *mut mb_counters) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        non_null(out as *const mb_counters, "out")?;
        let size = ptr::addr_of!((*out).struct_size).read();
        struct_size_ok(size, "mb_counters")?;
        let c = e.engine.counters();
        let full = mb_counters {
            struct_size: size,
            calls: c.calls,
            forwards: c.forwards,
            tokens: c.tokens,
            queue_wait_ns: c.queue_wait_ns,
            queue_wait_max_ns: c.queue_wait_max_ns,
            timed_out: c.timed_out,
        };
        // Only the bytes the caller's struct has.
        let n = size.min(size_of::<mb_counters>());
        ptr::copy_nonoverlapping(&full as *const mb_counters as *const u8, out as *mut u8, n);
        Ok(())
    })
}

fn precision_of(v: i32) -> Res<Precision> {
    Ok(match v {
        0 => Precision::Float32,
        1 => Precision::Int8,
        2 => Precision::Uint8,
        3 => Precision::Binary,
        4 => Precision::Ubinary,
        v => {
            return Err(fail(
                mb_status::MB_ERR_INVALID_ARGUMENT,
                format!("precision {v} is out of range"),
            ))
        }
    })
}

/// Embeddings of `n_texts` texts at `precision` (an `mb_precision`), row-major, into `out`
/// (`capacity` bytes). `*out_row_bytes` (if not NULL) receives the bytes per text and
/// `*out_needed` (if not NULL) `n_texts` times that, also when the buffer is too small. FLOAT32
/// rows are `dim` native floats; INT8 / UINT8 rows `dim` bytes; BINARY / UBINARY rows
/// `n_texts * dim / 8` bytes split evenly over the texts (`n_texts * dim` must then be a multiple of
/// 8 per row's share, as in NumPy). INT8 / UINT8 are calibrated on this call's texts, as
/// `quantize_embeddings` without calibration embeddings: the same text may quantize differently
/// in another call. `options` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn mb_embed_quantized(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    options: *const mb_embed_options,
    precision: i32,
    out: *mut u8,
    capacity: usize,
    out_row_bytes: *mut usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = super::texts(texts, n_texts, "texts")?;
        let (options, limits) = read_embed_options(options)?;
        let precision = precision_of(precision)?;
        let dim = e.engine.embed_dim(&options)?;
        let width = precision.width(n_texts, dim);
        let packed = matches!(precision, Precision::Binary | Precision::Ubinary);
        if packed && (n_texts * dim).div_ceil(8) != width * n_texts {
            return Err(fail(
                mb_status::MB_ERR_INVALID_ARGUMENT,
                format!("{n_texts} texts x {dim} bits do not pack into equal rows of bytes"),
            ));
        }
        let row_bytes = width
            .checked_mul(if precision == Precision::Float32 { 4 } else { 1 })
            .ok_or_else(|| overflow("row bytes"))?;
        if !out_row_bytes.is_null() {
            non_null(out_row_bytes as *const usize, "out_row_bytes")?;
            *out_row_bytes = row_bytes;
        }
        let needed = n_texts
            .checked_mul(row_bytes)
            .ok_or_else(|| overflow("n_texts * row bytes"))?;
        let out = out_buffer(out, capacity, needed, out_needed, "out")?;
        let rows = with_call_limits(limits, || e.engine.embed(&texts, &options))?;
        if rows.len() != n_texts || rows.iter().any(|r| r.len() != dim) {
            return Err(internal("embedding shape"));
        }
        let bytes: Vec<u8> = match quantize(rows.concat(), dim, precision, None)? {
            Quantized::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            Quantized::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Quantized::U8(v) => v,
        };
        if bytes.len() != needed {
            return Err(internal("quantized size"));
        }
        out.copy_from_slice(&bytes);
        Ok(())
    })
}

/// Token-classification sizes without running the model: `token_counts[i]` (an array of
/// `n_texts`) receives the tokens of text `i` (special tokens included), `*out_total` (if not
/// NULL) their sum.
#[no_mangle]
pub unsafe extern "C" fn mb_token_classify_sizes(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    token_counts: *mut usize,
    out_total: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = super::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(token_counts, n_texts, "token_counts")?;
        if !out_total.is_null() {
            non_null(out_total as *const usize, "out_total")?;
        }
        let counts = token_counts_of(e, &texts)?;
        let total = sum(&counts, "total tokens")?;
        counts_out.copy_from_slice(&counts);
        if !out_total.is_null() {
            *out_total = total;
        }
        Ok(())
    })
}

fn token_counts_of(e: &mb_engine, texts: &[&str]) -> Res<Vec<usize>> {
    e.engine.num_labels()?;
    let ids = all_texts(e.engine.tokenizer()?.encode_each(texts)?)?;
    Ok(ids.iter().map(Vec::len).collect())
}

/// Token classification: for each text in order, `token_counts[i]` rows of `num_labels` logits,
/// concatenated into `logits` (`capacity` floats; `*out_needed`, if not NULL, receives the floats
/// needed, also when the buffer is too small). Optionally, per token, the argmax label index into
/// `label_ids` and its softmax probability into `label_scores` (arrays of the total token count,
/// as `mb_token_classify_sizes` gives it, or NULL). `token_counts` (an array of `n_texts`) is
/// always filled once the texts are tokenised.
#[no_mangle]
pub unsafe extern "C" fn mb_token_classify(
    engine: *const mb_engine,
    texts: *const mb_text,
    n_texts: usize,
    logits: *mut f32,
    capacity: usize,
    label_ids: *mut u32,
    label_scores: *mut f32,
    token_counts: *mut usize,
    out_needed: *mut usize,
) -> mb_status {
    guard(|| {
        let e = engine_ref(engine)?;
        let texts = super::texts(texts, n_texts, "texts")?;
        let counts_out = per_text_out(token_counts, n_texts, "token_counts")?;
        let labels = e.engine.num_labels()?;
        let counts = token_counts_of(e, &texts)?;
        counts_out.copy_from_slice(&counts);
        let total = sum(&counts, "total tokens")?;
        let ids_out = if label_ids.is_null() {
            None
        } else {
            Some(per_text_out(label_ids, total, "label_ids")?)
        };
        let scores_out = if label_scores.is_null() {
            None
        } else {
            Some(per_text_out(label_scores, total, "label_scores")?)
        };
        let needed = total.checked_mul(labels).ok_or_else(|| overflow("tokens * labels"))?;
        let out = out_buffer(logits, capacity, needed, out_needed, "logits")?;
        let tokens = e.engine.token_classify(&texts)?;
        if tokens.len() != n_texts
            || tokens
                .iter()
                .zip(&counts)
                .any(|(t, &c)| t.len() != c || t.iter().any(|t| t.logits.len() != labels))
        {
            return Err(internal("token-classification shape differs from its sizes"));
        }
        let flat = tokens.iter().flatten();
        for (dst, t) in out.chunks_exact_mut(labels).zip(flat.clone()) {
            dst.copy_from_slice(&t.logits);
        }
        if let Some(ids) = ids_out {
            for (dst, t) in ids.iter_mut().zip(flat.clone()) {
                *dst = t.label_id as u32;
            }
        }
        if let Some(scores) = scores_out {
            for (dst, t) in scores.iter_mut().zip(flat) {
                *dst = t.score;
            }
        }
        Ok(())
    })
}
