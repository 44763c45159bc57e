//! ModernBERT inference: Hugging Face checkpoints, an exact f32 CPU reference executor, and
//! hand-written CUDA kernels (with a host emulator so they are tested on every machine).
//!
//! Reading order, from the checkpoint to the user:
//! - [`config`] (what `config.json` says, and the shared enums: activation, window, pooling),
//!   [`weights`] (mmapped safetensors), [`model`] (the named tensors of one model), [`layout`]
//!   (sentence-transformers / PyLate files), [`tokenize`];
//! - [`batch`] (the packed token layout) → [`reference`](mod@reference) (the exact f32 forward, op by op, and the
//!   host heads) and [`gpu`] (the same forward and heads as kernel launches on a [`kernels`]
//!   device: CUDA or the host emulator);
//! - [`engine`] (the tasks and their rules: embed, fill-mask, classify, rerank, ColBERT; concurrent
//!   calls share forwards through [`coalesce`]), used by
//!   the front ends: `main.rs` (the command line), [`ffi`] (the C ABI) and [`bench`](mod@bench);
//! - [`limits`] (checked sizes and bounded reads), [`matmul`] (the host's f32 GEMM), [`hub`] (model names to directories), [`error`].

pub mod batch;
pub mod bench;
pub mod coalesce;
pub mod config;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod gpu;
pub mod hub;
pub mod kernels;
pub mod layout;
pub mod limits;
pub mod matmul;
pub mod model;
pub mod npy;
pub mod quantize;
pub mod reference;
#[cfg(feature = "server")]
pub mod serve;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
