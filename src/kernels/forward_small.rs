//! `cuda/forward_small_sm90.cu`, the persistent small-batch forward: a program of steps — the
//! embeddings, the stream GEMMs and attention of every layer, the final norm — run by one
//! co-scheduled launch, a grid barrier between steps (issue 14). This module builds the program
//! from the same parameter structs the per-launch path launches ([`gemm_stream_params`],
//! [`AttentionParams`]), checks it, and launches it.
use super::device::Device;
use super::gemm_stream::{stream_tile_params, STREAM_K_MULTIPLE};
use super::ops::{self, GemmSm90};
use super::params::{
    AttentionParams, EmbeddingLayerNormParams, ForwardSmallParams, ForwardSmallStep, LayerNormParams,
    MB_ATTENTION_HEAD_DIM, MB_ATTENTION_SMEM_BYTES, MB_FSMALL_ATTENTION, MB_FSMALL_CLUSTER, MB_FSMALL_EMBED,
    MB_FSMALL_GEMM, MB_FSMALL_MAX_BLOCKS, MB_FSMALL_MAX_HEADS, MB_FSMALL_MAX_ROWS, MB_FSMALL_NORM, MB_FSMALL_SLOTS,
    MB_FSMALL_SLOTS_OFFSET, MB_FSMALL_THREADS, MB_NORM_PER_THREAD, MB_STREAM_BN, MB_STREAM_MAX_M, MB_STREAM_MAX_SMEM,
    MB_STREAM_ROPE, MB_STREAM_ROW_PAD, MB_STREAM_WARPS,
};
use super::{Dtype, KernelError, KernelParam, LaunchAttrs};

fn unsupported(message: String) -> KernelError {
    KernelError::Unsupported {
        kernel: "forward_small_sm90".into(),
        message,
    }
}

/// `MB_FSMALL_SMEM_BYTES(mr, k)` of params.h (a macro bindgen does not export) for chunks of `m`
/// rows: the slots' barriers, two weight slots of the widest K, then the larger of a GEMM step's
/// chunk of x, partial tiles and row statistics, and attention's two blocks.
pub fn forward_small_smem_bytes(m: u32, k: u32) -> u32 {
    let (mr, pitch) = (m.div_ceil(16) * 16, 2 * k + MB_STREAM_ROW_PAD);
    let gemm = mr * pitch + MB_STREAM_WARPS * mr * MB_STREAM_BN * 4 + mr * 8;
    MB_FSMALL_SLOTS_OFFSET + MB_FSMALL_SLOTS * MB_STREAM_BN * pitch + gemm.max(2 * MB_ATTENTION_SMEM_BYTES)
}

/// The most rows of x a chunk can hold at widest K `k` (a multiple of 16, at most
/// `MB_STREAM_MAX_M`; 0: none fit).
pub fn forward_small_max_chunk(k: u32) -> u32 {
    (1..=MB_STREAM_MAX_M / 16)
        .rev()
        .map(|t| 16 * t)
        .find(|&m| forward_small_smem_bytes(m, k) <= MB_STREAM_MAX_SMEM)
        .unwrap_or(0)
}

/// A row step's block holds the row in its threads' registers (norm.cuh: 8 elements a thread).
fn check_row_width(hidden: u32) -> Result<(), KernelError> {
    if hidden > MB_FSMALL_THREADS * MB_NORM_PER_THREAD {
        return Err(unsupported(format!(
            "a row of {hidden} in {MB_FSMALL_THREADS} threads of {MB_NORM_PER_THREAD} elements"
        )));
    }
    Ok(())
}

/// A program under construction: its steps in order, the capacity rows they share, the widest K,
/// and the rows of x in shared memory at once (0: the most that fit).
#[derive(Default)]
pub struct ForwardSmallProgram {
    steps: Vec<ForwardSmallStep>,
    m: u32,
    k: u32,
    chunk: u32,
}

impl ForwardSmallProgram {
    /// Add `g` as a stream GEMM step (its rows in use: the `BatchDesc` at `batch`). Every GEMM of
    /// a program has the same capacity rows `g.m`, at most `MB_FSMALL_MAX_ROWS`.
    pub fn gemm(&mut self, dt: Dtype, g: &GemmSm90, batch: u64) -> Result<(), KernelError> {
        let name = dt.pick("forward_small_sm90_bf16", "forward_small_sm90_f16");
        let mut p = stream_tile_params(name, g, batch, MB_FSMALL_MAX_ROWS)?;
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
    /// rules are the caller's, as for a launch) after its Wqkv GEMM step: it runs inside that
    /// step, each head's by the block that finishes the head's last tile, with no grid barrier.
    pub fn attention(&mut self, p: &AttentionParams) -> Result<(), KernelError> {
        if p.head_dim != MB_ATTENTION_HEAD_DIM
            || p.heads == 0
            || p.heads > MB_FSMALL_MAX_HEADS
            || p.max_sequences == 0
            || p.max_seqlen == 0
        {
            return Err(unsupported(format!(
                "attention of head_dim {}, {} heads (at most {MB_FSMALL_MAX_HEADS}), capacities {} sequences x {} \
                 tokens",
                p.head_dim, p.heads, p.max_sequences, p.max_seqlen
            )));
        }
        // It runs inside the step before: its heads' q, k and v must be that GEMM's tiles, a
        // head_dim / 16 of them each for q, k and v, in that order (the RoPE epilogue's layout).
        let qkv = self.steps.last().filter(|s| s.kind == MB_FSMALL_GEMM).map(|s| s.gemm);
        if !qkv.is_some_and(|g| g.epilogue == MB_STREAM_ROPE && g.n == 3 * p.heads * p.head_dim) {
            return Err(unsupported(format!(
                "attention of {} heads after a step that is not their Wqkv GEMM (RoPE epilogue, n = {})",
                p.heads,
                3 * p.heads * p.head_dim
            )));
        }
        self.steps.push(ForwardSmallStep {
            attention: *p,
            kind: MB_FSMALL_ATTENTION,
            ..Default::default()
        });
        Ok(())
    }

    /// Add the embeddings (`embeddings.cu`'s rows and contract) as a step: the program's first.
    pub fn embeddings(&mut self, p: &EmbeddingLayerNormParams) -> Result<(), KernelError> {
        ops::check_embeddings("forward_small_sm90 (embeddings)", p)?;
        check_row_width(p.hidden)?;
        self.steps.push(ForwardSmallStep {
            embed: *p,
            kind: MB_FSMALL_EMBED,
            ..Default::default()
        });
        Ok(())
    }

    /// Add a LayerNorm (`layernorm.cu`'s rows and contract) as a step: the final norm.
    pub fn norm(&mut self, p: &LayerNormParams) -> Result<(), KernelError> {
        ops::check_layernorm("forward_small_sm90 (norm)", p)?;
        check_row_width(p.hidden)?;
        self.steps.push(ForwardSmallStep {
            norm: *p,
            kind: MB_FSMALL_NORM,
            ..Default::default()
        });
        Ok(())
    }

    pub fn steps(&self) -> &[ForwardSmallStep] {
        &self.steps
    }

    /// Pass x through shared memory `rows` at a time (a multiple of 16 up to `MB_STREAM_MAX_M`,
    /// checked at placement) instead of the most that fit: the rows of a chunk are computed as
    /// they would be in any other, so tests can make small batches take several chunks.
    pub fn set_chunk(&mut self, rows: u32) {
        self.chunk = rows;
    }

    /// The rows of x in shared memory at once: the capacity rounded up to 16, or fewer where the
    /// widest K leaves no room for them ([`forward_small_max_chunk`]); a chunk [`Self::set_chunk`]
    /// chose.
    pub fn chunk_rows(&self) -> u32 {
        match self.chunk {
            0 => (self.m.div_ceil(16) * 16).min(forward_small_max_chunk(self.k)),
            rows => rows,
        }
    }

    /// The capacity rows of the program's GEMMs: the most tokens a launch of it takes.
    pub fn rows(&self) -> u32 {
        self.m
    }

    /// The launch's dynamic shared memory ([`forward_small_smem_bytes`] at this program's chunk
    /// and widest K).
    pub fn smem_bytes(&self) -> u32 {
        forward_small_smem_bytes(self.chunk_rows(), self.k)
    }

    /// The program's bytes, for the caller to place in device memory (the executor's arena).
    pub fn bytes(&self) -> Vec<u8> {
        self.steps.iter().flat_map(|s| s.as_bytes().to_vec()).collect()
    }

    /// The launch of this program once its bytes are at `steps_at`, with `grid.blocks` flags at
    /// `flags_at` (each `MB_FSMALL_FLAGS_START` when placed) and `MB_FSMALL_MAX_HEADS` zeroed head
    /// counters at `head_counts_at` (`grid`: [`forward_small_grid`]; at most
    /// `MB_FSMALL_MAX_BLOCKS` blocks, in clusters that fit the program: [`ForwardSmallGrid::fits`]).
    pub fn launch_at(
        &self,
        steps_at: u64,
        flags_at: u64,
        head_counts_at: u64,
        grid: ForwardSmallGrid,
    ) -> Result<ForwardSmall, KernelError> {
        let ForwardSmallGrid { blocks, cluster } = grid;
        let (smem, chunk) = (self.smem_bytes(), self.chunk_rows());
        if self.steps.is_empty()
            || self.k == 0
            || !self.k.is_multiple_of(STREAM_K_MULTIPLE)
            || chunk == 0
            || !chunk.is_multiple_of(16)
            || chunk > MB_STREAM_MAX_M
            || smem > MB_STREAM_MAX_SMEM
        {
            return Err(unsupported(format!(
                "{} steps of {} rows at K up to {}, in chunks of {chunk} rows (a multiple of 16 up to \
                 {MB_STREAM_MAX_M}): {smem} bytes of shared memory (at most {MB_STREAM_MAX_SMEM}), at least one GEMM \
                 needed",
                self.steps.len(),
                self.m,
                self.k
            )));
        }
        if blocks == 0 || blocks > MB_FSMALL_MAX_BLOCKS || steps_at == 0 || flags_at == 0 || head_counts_at == 0 {
            return Err(unsupported(format!(
                "a grid of {blocks} blocks (1 to {MB_FSMALL_MAX_BLOCKS}), program at {steps_at:#x}, flags at \
                 {flags_at:#x}, head counters at {head_counts_at:#x}"
            )));
        }
        if !grid.fits(&self.steps) {
            return Err(unsupported(format!(
                "clusters of {cluster} on a grid of {blocks} blocks: a power of two up to {MB_FSMALL_CLUSTER} \
                 dividing the grid and every GEMM step's blocks with a tile"
            )));
        }
        let params = ForwardSmallParams {
            steps: steps_at,
            flags: flags_at,
            count: self.steps.len() as u32,
            m: chunk,
            k: self.k,
            blocks,
            cluster,
            reserved: 0,
            head_counts: head_counts_at,
        };
        Ok(ForwardSmall {
            params,
            smem,
            rows: self.m,
        })
    }
}

/// Row slices of GEMM step `i` on a grid of `blocks` (`MB_FSMALL_SLICES` of params.h, a macro
/// bindgen does not export): 2 — each tile's rows in use split in halves on two blocks — where
/// the grid has a block for every (tile, half) and no attention step follows; else 1.
pub fn gemm_slices(steps: &[ForwardSmallStep], i: usize, blocks: u32) -> u32 {
    let then_attention = steps.get(i + 1).is_some_and(|s| s.kind == MB_FSMALL_ATTENTION);
    match !then_attention && 2 * (steps[i].gemm.n / MB_STREAM_BN) <= blocks {
        true => 2,
        false => 1,
    }
}

/// GEMM step `i`'s blocks with a unit (units are dealt in a snake, the first `blocks` to blocks 0 ..
/// blocks − 1: the blocks with one are the first min(units, blocks)), and its tiles.
fn blocks_with_a_unit(steps: &[ForwardSmallStep], i: usize, blocks: u32) -> Option<(u32, u32)> {
    let s = &steps[i];
    let tiles = s.gemm.n / MB_STREAM_BN;
    (s.kind == MB_FSMALL_GEMM).then(|| ((tiles * gemm_slices(steps, i, blocks)).min(blocks), tiles))
}

/// The persistent forward's grid: `blocks` co-scheduled blocks in clusters of `cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardSmallGrid {
    pub blocks: u32,
    pub cluster: u32,
}

impl ForwardSmallGrid {
    /// Whether the kernel can run `steps` on this grid: clusters of a power of two up to
    /// `MB_FSMALL_CLUSTER` blocks that divide the grid and, at every GEMM step, its blocks with a
    /// unit — each cluster's blocks all take part in a step's multicast of x, or none does — and,
    /// where its rows are in two slices, its tiles (a cluster's blocks copy the same rows).
    pub fn fits(&self, steps: &[ForwardSmallStep]) -> bool {
        let c = self.cluster;
        c.is_power_of_two()
            && c <= MB_FSMALL_CLUSTER
            && self.blocks.is_multiple_of(c)
            && (0..steps.len())
                .filter_map(|i| blocks_with_a_unit(steps, i, self.blocks).map(|b| (i, b)))
                .all(|(i, (b, tiles))| {
                    b.is_multiple_of(c) && (gemm_slices(steps, i, self.blocks) == 1 || tiles.is_multiple_of(c))
                })
    }
}

/// The grid: one block per multiprocessor, no more than the widest step's units (GEMM tiles, a
/// norm's rows), in the widest clusters (of `MB_FSMALL_CLUSTER`, 2, 1 blocks) that divide that
/// count and fit the program, as many of them as the device holds at
/// once (on a GPU whose SMs do not all group into clusters, fewer blocks: each cluster reads x
/// from L2 once for its blocks, which at batch one is worth more than the SMs left out).
pub fn forward_small_grid(
    dev: &dyn Device,
    dt: Dtype,
    program: &ForwardSmallProgram,
) -> Result<ForwardSmallGrid, KernelError> {
    let steps = program.steps();
    // (Attention's units run on the blocks that finish their heads' Wqkv tiles.)
    let units = |s: &ForwardSmallStep| match s.kind {
        MB_FSMALL_GEMM => s.gemm.n / MB_STREAM_BN,
        MB_FSMALL_EMBED => s.embed.max_tokens,
        MB_FSMALL_NORM => s.norm.max_tokens,
        _ => 1,
    };
    let widest = steps.iter().map(units).max().unwrap_or(1);
    let one_per_sm = dev.multiprocessors().min(widest).max(1);
    let name = dt.pick("forward_small_sm90_bf16", "forward_small_sm90_f16");
    let mut cluster = MB_FSMALL_CLUSTER;
    loop {
        if cluster == 1 || one_per_sm.is_multiple_of(cluster) {
            let resident = dev.coscheduled_clusters(name, MB_FSMALL_THREADS, program.smem_bytes(), cluster)?;
            let grid = ForwardSmallGrid {
                blocks: cluster * resident.min(one_per_sm / cluster),
                cluster,
            };
            if grid.blocks > 0 && grid.fits(steps) {
                return Ok(grid);
            }
        }
        if cluster == 1 {
            return Err(unsupported(format!("{} holds no block of {name} at once", dev.name())));
        }
        cluster /= 2;
    }
}

/// A placed program, ready to launch (its memory is its owner's, the executor's arena).
pub struct ForwardSmall {
    pub params: ForwardSmallParams,
    pub smem: u32,
    /// The capacity rows of its GEMMs: the most tokens a launch takes (`params.m` is a chunk).
    pub rows: u32,
}

impl ForwardSmall {
    /// One co-scheduled launch (in clusters where the grid has them): every step of the program.
    pub fn launch(&self, dev: &dyn Device, dt: Dtype) -> Result<(), KernelError> {
        let name = dt.pick("forward_small_sm90_bf16", "forward_small_sm90_f16");
        let attrs = LaunchAttrs {
            coscheduled: true,
            cluster: self.params.cluster,
            ..LaunchAttrs::default()
        };
        dev.launch_ex_raw(
            name,
            [self.params.blocks, 1, 1],
            [MB_FSMALL_THREADS, 1, 1],
            self.smem,
            self.params.as_bytes(),
            attrs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::emu::Emulator;
    use crate::kernels::params::GemmStreamParams;

    /// A program of GEMM steps of these widths (the grid looks at nothing else of a GEMM step).
    fn program(widths: &[u32]) -> ForwardSmallProgram {
        let steps = widths
            .iter()
            .map(|&n| ForwardSmallStep {
                gemm: GemmStreamParams {
                    n,
                    ..Default::default()
                },
                kind: MB_FSMALL_GEMM,
                ..Default::default()
            })
            .collect();
        ForwardSmallProgram {
            steps,
            m: 32,
            k: 768,
            chunk: 0,
        }
    }

    /// The widest cluster that divides the blocks and every GEMM step's blocks with a tile, on
    /// as many blocks as the SMs and the widest step allow; clusters of 1 where nothing wider
    /// divides them.
    #[test]
    fn the_grid_takes_the_widest_cluster_that_fits_the_program() {
        let grid = |sms: u32, widths: &[u32]| {
            let dev = Emulator::new()
                .with_compute_capability((9, 0))
                .with_multiprocessors(sms);
            let g = forward_small_grid(&dev, Dtype::Bf16, &program(widths)).unwrap();
            (g.blocks, g.cluster)
        };
        // Base's four GEMMs (n = 2304, 768, 2304, 768: 144, 48, 144, 48 tiles) on an H100's 132.
        assert_eq!(grid(132, &[2304, 768, 2304, 768]), (132, 4));
        // 6 tiles at Wo, rows in two slices on 12 blocks: a cluster of 4 would straddle the slices.
        assert_eq!(grid(12, &[384, 96]), (12, 2));
        // 3 tiles (6 units): odd, so no clusters; 10 SMs: clusters of 2 (10 is no multiple of 4).
        assert_eq!(grid(12, &[384, 48]), (12, 1));
        assert_eq!(grid(10, &[384]), (10, 2));
        // The widest step bounds the grid (7 tiles: 7 blocks), then the cluster.
        assert_eq!(grid(132, &[112]), (7, 1));
        assert_eq!(grid(1, &[2304]), (1, 1));
    }

    /// A grid the program cannot run on is refused at placement, not at the launch.
    #[test]
    fn a_grid_whose_clusters_do_not_fit_is_refused() {
        let p = program(&[384, 96]);
        let fits = |blocks, cluster| {
            p.launch_at(0x1000, 0x2000, 0x3000, ForwardSmallGrid { blocks, cluster })
                .is_ok()
        };
        assert!(fits(12, 2) && fits(12, 1) && fits(6, 2));
        assert!(!fits(12, 4), "6 tiles in two row slices at the second step");
        assert!(!fits(12, 3), "not a power of two");
        assert!(!fits(10, 4), "does not divide the grid");
        assert!(!fits(16, 8), "wider than MB_FSMALL_CLUSTER");
        // 7 tiles on 12 blocks, one row slice (14 units would not fit): 7 blocks with a unit, which
        // clusters of 2 do not divide.
        let odd = program(&[384, 112]);
        let odd_fits = |blocks, cluster| {
            odd.launch_at(0x1000, 0x2000, 0x3000, ForwardSmallGrid { blocks, cluster })
                .is_ok()
        };
        assert!(odd_fits(12, 1) && !odd_fits(12, 2));
    }
}
