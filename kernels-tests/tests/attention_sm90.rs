//! cuda/attention_sm90.cu (wgmma, TMA, warp-specialised) against the f32 reference
//! (`modernbert::reference::ops::attention`), on every case of attention.cu's table: the same
//! contract, so the same cases, the same naive yardstick and the same tolerance rule (max |kernel −
//! ref| ≤ 2 · max |naive − ref| + the shared floor; see kernels-tests/tests/attention.rs for why
//! it holds: the kernel keeps S, the softmax statistics and O in f32 and rounds P and O once each,
//! as the naive computation rounds S, P and O).
//!
//! What the Hopper kernel adds and these cases reach: tiles of 128 keys (global) and 64 (window)
//! whose ends fall inside and outside sequences (lengths 1 … 1000 and 8192, varlen batches whose
//! sequences start mid-box), a consumer warpgroup whose 64 rows are all past its sequence, tiles
//! one consumer of a window block skips and the other computes, key_lens cutting a tile, and the
//! last tile's V rows past the keys — zeroed before P·V even where they hold NaN (the
//! `*_stale_tail` cases, whose qkv has 300 NaN rows after the batch, which the tensor map covers).
//! On the emulator both thread orders (the protocol is checked adversarially: a TMA destination is
//! NaN until its barrier's phase is observed, wgmma operands are re-read at the wait that retires
//! them, its accumulators are NaN in between). On a GPU that is not sm_90 the kernel does not
//! exist: the tests say so and check nothing there.

use kernels_tests::cases::attention::{self as cases, check_cases, AttentionCase, AttentionKernel};
use kernels_tests::device;
use modernbert::kernels::attention_sm90::{attention_sm90, attention_sm90_params, key_tile, smem_bytes};
use modernbert::kernels::params::{AttentionParams, MB_ATT90_BN_GLOBAL, MB_ATT90_BN_LOCAL};
use modernbert::kernels::{Dtype, KernelError};

fn hopper(cases: Vec<AttentionCase>) -> Vec<AttentionCase> {
    cases.into_iter().map(|c| c.on(AttentionKernel::Sm90)).collect()
}

fn run(test: &str, pick: impl Fn(&AttentionCase) -> bool, both_orders: bool) {
    let cases = hopper(cases::cases().into_iter().filter(|c| pick(c)).collect());
    assert!(!cases.is_empty(), "{test}: no case picked");
    check_cases(&*device(), test, &cases, both_orders);
}

#[test]
fn attention_sm90_global_edge_lengths() {
    run(
        "attention_sm90_global_edge_lengths",
        |c| c.name.starts_with("global_len"),
        true,
    );
}

#[test]
fn attention_sm90_local_edge_lengths() {
    run(
        "attention_sm90_local_edge_lengths",
        |c| c.name.starts_with("local64_len"),
        true,
    );
}

#[test]
fn attention_sm90_varlen_windows_key_lens_stale_rows() {
    run(
        "attention_sm90_varlen_windows_key_lens_stale_rows",
        |c| !c.name.starts_with("global_len") && !c.name.starts_with("local64_len"),
        true,
    );
}

#[test]
fn attention_sm90_8192_global_bf16() {
    let cases = hopper(cases::long_cases().into_iter().filter(|c| c.radius.is_none()).collect());
    check_cases(&*device(), "attention_sm90_8192_global_bf16", &cases, false);
}

#[test]
fn attention_sm90_8192_local_f16() {
    let cases = hopper(cases::long_cases().into_iter().filter(|c| c.radius.is_some()).collect());
    check_cases(&*device(), "attention_sm90_8192_local_f16", &cases, true);
}

/// The launcher refuses what the kernel cannot do, on the host, before any launch: the rules
/// attention.cu's launcher states (ops::check_attention, one owner) and a qkv of no rows.
#[test]
fn attention_sm90_refuses_what_it_cannot_run() {
    let dev = device();
    let ok = AttentionParams {
        qkv: 256,
        out: 256,
        cu_seqlens: 256,
        key_lens: 0,
        batch: 256,
        max_sequences: 1,
        max_seqlen: 16,
        heads: 1,
        head_dim: 64,
        window_radius: -1,
        softmax_scale: 0.125,
    };
    let refusals = [
        (AttentionParams { head_dim: 128, ..ok }, 16, "head_dim 128"),
        (AttentionParams { heads: 0, ..ok }, 16, "heads 0"),
        (AttentionParams { qkv: 8, ..ok }, 16, "16-byte aligned"),
        (
            AttentionParams {
                softmax_scale: f32::NAN,
                ..ok
            },
            16,
            "softmax_scale",
        ),
        (AttentionParams { batch: 0, ..ok }, 16, "batch"),
        (ok, 0, "qkv_rows 0"),
    ];
    for (p, rows, words) in refusals {
        for dt in [Dtype::Bf16, Dtype::F16] {
            match attention_sm90_params(&*dev, dt, &p, rows) {
                Err(KernelError::Unsupported { message, .. }) => {
                    assert!(message.contains(words), "{words}: {message}")
                }
                other => panic!("{words}: must be refused on the host, got {other:?}"),
            }
            assert!(attention_sm90(&*dev, dt, &p, rows).is_err(), "{words}");
        }
    }
}

/// The key tile follows the window (global 128 keys, windows 64) and the shared memory the launch
/// asks for follows the tile: what params.h's MB_ATT90_SMEM_BYTES gives and the kernel's header
/// states.
#[test]
fn attention_sm90_geometry_follows_the_window() {
    assert_eq!(key_tile(-1), MB_ATT90_BN_GLOBAL);
    assert_eq!(key_tile(0), MB_ATT90_BN_LOCAL);
    assert_eq!(key_tile(64), MB_ATT90_BN_LOCAL);
    assert_eq!(smem_bytes(MB_ATT90_BN_GLOBAL), 83_200);
    assert_eq!(smem_bytes(MB_ATT90_BN_LOCAL), 50_432);
}
