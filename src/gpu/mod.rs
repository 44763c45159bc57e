//! The GPU executor: weights uploaded once, one activation arena, the forward pass as kernel
//! launches and GEMMs on a [`crate::kernels::device::Device`] (a GPU, or the host emulator).

pub mod arena;
pub mod cost_model;
pub mod executor;
pub mod heads;
pub mod path;
pub mod weights;

pub use executor::{GpuExecutor, LaunchShape};
pub use path::{GpuPath, GpuPathChoice};
