//! `cuda/forward_small_sm90.cu`, the persistent small-batch forward: a program of steps — the
//! stream GEMMs and attention of every layer — run by one co-scheduled launch, a grid barrier
//! between steps (issue 14). This module builds the program from the same parameter structs the
//! per-launch path launches ([`gemm_stream_params`], [`AttentionParams`]), checks it, and launches
//! it.
use super::device::Device;
use super::gemm_stream::{gemm_stream_params, STREAM_K_MULTIPLE};
use super::ops::GemmSm90;
use super::params::{
    AttentionParams, ForwardSmallParams, ForwardSmallStep, MB_ATTENTION_BLOCK_M, MB_ATTENTION_HEAD_DIM,
    MB_ATTENTION_SMEM_BYTES, MB_FSMALL_ATTENTION, MB_FSMALL_GEMM, MB_FSMALL_MAX_BLOCKS, MB_FSMALL_SLOTS,
    MB_FSMALL_SLOTS_OFFSET, MB_FSMALL_THREADS, MB_STREAM_BN, MB_STREAM_MAX_M, MB_STREAM_MAX_SMEM, MB_STREAM_ROW_PAD,
    MB_STREAM_WARPS,
};
use super::{Dtype, KernelError, KernelParam};

fn unsupported(message: String) -> KernelError {
    KernelError::Unsupported {
        kernel: "forward_small_sm90".into(),
        message,
    }
}

/// `MB_FSMALL_SMEM_BYTES(mr, k)` of params.h (a macro bindgen does not export): the slots'
/// barriers, two weight slots of the widest K, then the larger of a GEMM step's x, partial tiles
/// and row statistics, and attention's two blocks.
pub fn forward_small_smem_bytes(m: u32, k: u32) -> u32 {
    let (mr, pitch) = (m.div_ceil(16) * 16, 2 * k + MB_STREAM_ROW_PAD);
    let gemm = mr * pitch + MB_STREAM_WARPS * mr * MB_STREAM_BN * 4 + mr * 8;
    MB_FSMALL_SLOTS_OFFSET + MB_FSMALL_SLOTS * MB_STREAM_BN * pitch + gemm.max(2 * MB_ATTENTION_SMEM_BYTES)
}

/// The most rows the program can take at widest K `k` (a multiple of 16; 0: none fit).
pub fn forward_small_max_rows(k: u32) -> u32 {
    (1..=MB_STREAM_MAX_M / 16)
        .rev()
        .map(|t| 16 * t)
        .find(|&m| forward_small_smem_bytes(m, k) <= MB_STREAM_MAX_SMEM)
        .unwrap_or(0)
}

/// A program under construction: its steps in order, the capacity rows they share, the widest K.
#[derive(Default)]
pub struct ForwardSmallProgram {
    steps: Vec<ForwardSmallStep>,
    m: u32,
    k: u32,
}

impl ForwardSmallProgram {
    /// Add `g` as a stream GEMM step (its rows in use: the `BatchDesc` at `batch`). Every GEMM of
    /// a program has the same capacity rows `g.m`.
    pub fn gemm(&mut self, dt: Dtype, g: &GemmSm90, batch: u64) -> Result<(), KernelError> {
        let mut p = gemm_stream_params(dt, g, batch)?;
        p.cluster = 1; // the program's blocks are co-scheduled, not clustered
        if self.m != 0 && p.m != self.m {
            return Err(unsupported(format!(
                "a GEMM of {} rows in a program of {}",
                p.m, self.m
            )));
        }
        self.m = p.m;
        self.k = self.k.max(p.k);
        self.steps.push(ForwardSmallStep {
            gemm: p,
            kind: MB_FSMALL_GEMM,
            ..Default::default()
        });
        Ok(())
    }

    /// Add an attention step (attention.cu's parameters and contract; `ops::check_attention`'s
    /// rules are the caller's, as for a launch).
    pub fn attention(&mut self, p: &AttentionParams) -> Result<(), KernelError> {
        if p.head_dim != MB_ATTENTION_HEAD_DIM || p.heads == 0 || p.max_sequences == 0 || p.max_seqlen == 0 {
            return Err(unsupported(format!(
                "attention of head_dim {}, {} heads, capacities {} sequences x {} tokens",
                p.head_dim, p.heads, p.max_sequences, p.max_seqlen
            )));
        }
        self.steps.push(ForwardSmallStep {
            attention: *p,
            kind: MB_FSMALL_ATTENTION,
            ..Default::default()
        });
        Ok(())
    }

    pub fn steps(&self) -> &[ForwardSmallStep] {
        &self.steps
    }

    /// The program's bytes, for the caller to place in device memory (the executor's arena).
    pub fn bytes(&self) -> Vec<u8> {
        self.steps.iter().flat_map(|s| s.as_bytes().to_vec()).collect()
    }

    /// The launch of this program once its bytes are at `steps_at`, with `blocks` zeroed flags at
    /// `flags_at` (`blocks`: [`forward_small_grid`], at most `MB_FSMALL_MAX_BLOCKS`).
    pub fn launch_at(&self, steps_at: u64, flags_at: u64, blocks: u32) -> Result<ForwardSmall, KernelError> {
        let smem = forward_small_smem_bytes(self.m, self.k);
        if self.steps.is_empty()
            || self.k == 0
            || !self.k.is_multiple_of(STREAM_K_MULTIPLE)
            || smem > MB_STREAM_MAX_SMEM
        {
            return Err(unsupported(format!(
                "{} steps of {} rows at K up to {}: {smem} bytes of shared memory (at most {MB_STREAM_MAX_SMEM}), \
                 at least one GEMM needed",
                self.steps.len(),
                self.m,
                self.k
            )));
        }
        if blocks == 0 || blocks > MB_FSMALL_MAX_BLOCKS || steps_at == 0 || flags_at == 0 {
            return Err(unsupported(format!(
                "a grid of {blocks} blocks (1 to {MB_FSMALL_MAX_BLOCKS}), program at {steps_at:#x}, flags at {flags_at:#x}"
            )));
        }
        let params = ForwardSmallParams {
            steps: steps_at,
            flags: flags_at,
            count: self.steps.len() as u32,
            m: self.m,
            k: self.k,
            blocks,
        };
        Ok(ForwardSmall { params, smem })
    }
}

/// The grid: one block per multiprocessor, no more than the widest step's units (GEMM tiles,
/// attention's pairs of 64-query blocks).
pub fn forward_small_grid(dev: &dyn Device, steps: &[ForwardSmallStep]) -> u32 {
    let units = |s: &ForwardSmallStep| match s.kind {
        MB_FSMALL_GEMM => s.gemm.n / MB_STREAM_BN,
        _ => {
            let a = &s.attention;
            (a.max_sequences * a.heads * a.max_seqlen.div_ceil(MB_ATTENTION_BLOCK_M)).div_ceil(2)
        }
    };
    let widest = steps.iter().map(units).max().unwrap_or(1);
    dev.multiprocessors().min(widest).max(1)
}

/// A placed program, ready to launch (its memory is its owner's, the executor's arena).
pub struct ForwardSmall {
    pub params: ForwardSmallParams,
    pub smem: u32,
}

impl ForwardSmall {
    /// One co-scheduled launch: every step of the program.
    pub fn launch(&self, dev: &dyn Device, dt: Dtype) -> Result<(), KernelError> {
        let name = dt.pick("forward_small_sm90_bf16", "forward_small_sm90_f16");
        dev.launch_coscheduled(
            name,
            [self.params.blocks, 1, 1],
            [MB_FSMALL_THREADS, 1, 1],
            self.smem,
            &self.params,
        )
    }
}
