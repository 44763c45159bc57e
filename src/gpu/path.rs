//! Which launch list the GPU executor's forward pass issues, and the one rule that picks it.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::device::Device;
use crate::kernels::forward_small::forward_small_max_chunk;
use crate::kernels::gemm_stream::{stream_max_rows, STREAM_K_MULTIPLE};
use crate::kernels::params::{MB_GEMM90_BK, MB_GEMM90_BN, MB_GEMM90_ROPE_HEAD_DIM};

/// The launch list of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuPath {
    /// The sm_80 kernels and cuBLASLt, on every device: LayerNorm (with the residual add), Wqkv,
    /// RoPE, attention, Wo, LayerNorm (with the add), Wi, GeGLU, Wo2 — 9 launches a layer.
    Portable,
    /// sm_90a: `gemm_sm90` with its epilogues — RoPE inside Wqkv, GeGLU inside Wi (its rows
    /// permuted once at upload, `ops::geglu_weight_rows`), the residual add inside Wo and Wo2,
    /// each LayerNorm inside the GEMM after it — and `attention_sm90`, so a layer is Wqkv,
    /// attention, Wo, Wi, Wo2: 5 launches. Small batches (at most [`small_batch_tokens`]) take
    /// `gemm_stream_sm90` and attention.cu, every launch a programmatic dependent.
    Hopper,
}

/// What a caller asks for (`--gpu-path`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuPathChoice {
    /// [`GpuPath::Hopper`] where the model and device allow it and the device is the emulator or
    /// the cost model; [`GpuPath::Portable`] otherwise — on a real GPU too, until a measurement
    /// shows `gemm_sm90` with its epilogues at least as fast as cuBLASLt plus the passes it
    /// removes (profiles/optimisation-log.md; none has been made yet).
    #[default]
    Auto,
    Portable,
    /// Refused where the model or the device cannot run it.
    Hopper,
}

impl GpuPathChoice {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(GpuPathChoice::Auto),
            "portable" => Ok(GpuPathChoice::Portable),
            "hopper" => Ok(GpuPathChoice::Hopper),
            _ => Err(format!("unknown GPU path `{s}` (expected auto, portable or hopper)")),
        }
    }
}

impl GpuPath {
    /// The path `choice` gives `config` on `dev`; `has_biases`: the checkpoint's linear layers
    /// carry biases (`gemm_sm90` has no bias epilogue).
    pub fn resolve(choice: GpuPathChoice, dev: &dyn Device, config: &ModelConfig, has_biases: bool) -> Result<Self> {
        let why_not = hopper_refusal(dev, config, has_biases);
        match (choice, why_not) {
            (GpuPathChoice::Portable, _) => Ok(GpuPath::Portable),
            (GpuPathChoice::Hopper, None) => Ok(GpuPath::Hopper),
            (GpuPathChoice::Hopper, Some(why)) => Err(Error::Unsupported(format!("the Hopper GPU path: {why}"))),
            (GpuPathChoice::Auto, Some(_)) => Ok(GpuPath::Portable),
            (GpuPathChoice::Auto, None) => {
                let simulated = dev.as_emulator().is_some() || dev.as_model().is_some();
                Ok(if simulated { GpuPath::Hopper } else { GpuPath::Portable })
            }
        }
    }

    /// The name in the bench's JSON (`"path"`).
    pub fn name(self) -> &'static str {
        match self {
            GpuPath::Portable => "sm80",
            GpuPath::Hopper => "sm90a",
        }
    }
}

/// The most tokens a launch may hold for [`GpuPath::Hopper`]'s GEMMs to be the small-batch
/// `gemm_stream_sm90` (all of a layer's weights streamed by every SM, the activations on chip):
/// the fewest rows its shared memory takes at any of the layer's widths K — hidden (Wqkv, Wo,
/// Wi) and intermediate (Wo2). Base (768, 1152): 64; large (1024, 2624): 16. 0: none (a width
/// not a multiple of `STREAM_K_MULTIPLE`).
pub fn small_batch_tokens(config: &ModelConfig) -> u32 {
    let (h, i) = (config.hidden_size as u32, config.intermediate_size as u32);
    if h % STREAM_K_MULTIPLE != 0 || i % STREAM_K_MULTIPLE != 0 {
        return 0;
    }
    stream_max_rows(h).min(stream_max_rows(i))
}

/// The most tokens a launch may hold for [`GpuPath::Hopper`]'s small batches to run as the
/// persistent forward (`forward_small_sm90`: every layer in one co-scheduled launch), which
/// passes x through shared memory in chunks: [`PERSISTENT_TOKENS`] where a chunk of 16 rows fits
/// beside two weight slots at the widest K (base, K up to 1152: chunks of 48), where tokens ×
/// the longest sequence is at most [`PERSISTENT_TOKENS_X_SEQLEN`]; large (2624): 0 (two slots of
/// its Wo2 tile leave no room for x).
pub fn persistent_tokens(config: &ModelConfig) -> u32 {
    let (h, i) = (config.hidden_size as u32, config.intermediate_size as u32);
    if h % STREAM_K_MULTIPLE != 0 || i % STREAM_K_MULTIPLE != 0 || forward_small_max_chunk(h.max(i)) == 0 {
        return 0;
    }
    PERSISTENT_TOKENS
}

/// The persistent forward's bounds, from the cost model until a GPU measures them (base on an
/// H100, bf16: profiles/optimisation-log.md, 2026-12-08): at most 256 tokens (the kernel's
/// `MB_FSMALL_MAX_ROWS`), and tokens × the longest sequence at most 2^14. A head's attention
/// units (64 queries of a sequence each) all run on the block that took its last ticket, so
/// their time grows as the batch's tokens times its longest sequence: 1 × 128, 4 × 64 and 8 × 32
/// are predicted under the large-batch path (310 against 439 µs; 395 against 465; 359 against
/// 465), 2 × 128 and 1 × 176 over it.
pub const PERSISTENT_TOKENS: u32 = 256;
pub const PERSISTENT_TOKENS_X_SEQLEN: u32 = 1 << 14;

/// Why the Hopper path cannot run `config` on `dev`, or `None` when it can. `gemm_sm90` takes
/// N in whole 128-column tiles and K in whole 64-element blocks: Wqkv's N = 3·hidden, Wo's =
/// hidden, Wi's = 2·intermediate, Wo2's K = intermediate; RoPE's tile holds whole heads of 64.
fn hopper_refusal(dev: &dyn Device, config: &ModelConfig, has_biases: bool) -> Option<String> {
    let (h, i) = (config.hidden_size as u32, config.intermediate_size as u32);
    if dev.compute_capability() < (9, 0) {
        let (major, minor) = dev.compute_capability();
        return Some(format!("needs sm_90a; {} is sm_{major}{minor}", dev.name()));
    }
    if has_biases {
        return Some("the checkpoint's linear layers have biases (gemm_sm90 adds none)".into());
    }
    if config.norm_bias {
        return Some("the checkpoint's LayerNorms have biases (the GEMMs' fused LayerNorm adds none)".into());
    }
    if config.head_dim() as u32 != MB_GEMM90_ROPE_HEAD_DIM {
        return Some(format!(
            "head_dim {} (needs {MB_GEMM90_ROPE_HEAD_DIM})",
            config.head_dim()
        ));
    }
    if h % MB_GEMM90_BN != 0 || (2 * i) % MB_GEMM90_BN != 0 || i % MB_GEMM90_BK != 0 {
        return Some(format!(
            "hidden {h} must be a multiple of {MB_GEMM90_BN} and intermediate {i} of {}",
            MB_GEMM90_BN / 2
        ));
    }
    None
}
