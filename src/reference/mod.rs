//! The exact f32 CPU executor and its per-op building blocks.

pub mod executor;
pub mod heads;
pub mod ops;
pub mod sgemm;

pub use executor::CpuExecutor;
