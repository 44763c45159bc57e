//! ModernBERT inference: Hugging Face checkpoints, an exact f32 CPU reference executor, and
//! hand-written CUDA kernels (with a host emulator so they are tested on every machine).
//!
//! Reading order: [`config`] (what the checkpoint says) → [`weights`] (mmapped safetensors) →
//! [`model`] (the named tensors of one model) → [`batch`] (the packed token layout) →
//! [`reference`] (the forward pass, op by op) → [`engine`] (tasks: embed, fill-mask, classify,
//! rerank, ColBERT) → the `modernbert` command line in `main.rs`.

pub mod batch;
pub mod bench;
pub mod config;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod gpu;
pub mod hub;
pub mod kernels;
pub mod layout;
pub mod limits;
pub mod model;
pub mod reference;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
