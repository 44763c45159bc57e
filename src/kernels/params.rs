//! The kernel parameter structs of `cuda/include/params.h`, plus [`KernelParam`] and, for cudarc,
//! `DeviceRepr`. The structs are bindgen's output, committed in `params_bindings.rs` with its
//! compile-time layout assertions (size, alignment and every field offset), so that building the
//! crate needs no libclang; `cargo run -p params-bindgen` refreshes it (tools/params-bindgen), and
//! that tool's test fails when it is stale.
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, clippy::all)]

include!("params_bindings.rs");

use super::KernelParam;

macro_rules! kernel_params {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: bindgen `#[repr(C)]` structs of fixed-width fields, padded explicitly (params.h rules).
        unsafe impl KernelParam for $t {}
        // SAFETY: plain data, passed by value as the kernel's only argument.
        unsafe impl cudarc::driver::DeviceRepr for $t {}
    )*};
}

kernel_params!(
    BatchDesc,
    EmbeddingLayerNormParams,
    LayerNormParams,
    RopeParams,
    AttentionParams,
    GegluParams,
    PoolParams,
    HeadActNormParams,
    RowNormalizeParams,
    GatherRowsParams,
    SoftmaxTopkParams,
    SelftestParams,
    GemmSm90Params,
    SelftestSm90Params,
    HandoffParams,
    GemmStreamParams,
    AttentionSm90Params,
    ForwardSmallStep,
    ForwardSmallParams,
);

#[cfg(test)]
mod padding {
    use super::*;
    // No implicit padding: the size is the sum of the field sizes (checked for every struct).
    #[test]
    fn sizes_are_multiples_of_8() {
        for s in [
            std::mem::size_of::<LayerNormParams>(),
            std::mem::size_of::<EmbeddingLayerNormParams>(),
            std::mem::size_of::<RopeParams>(),
            std::mem::size_of::<AttentionParams>(),
            std::mem::size_of::<GegluParams>(),
            std::mem::size_of::<PoolParams>(),
            std::mem::size_of::<HeadActNormParams>(),
            std::mem::size_of::<RowNormalizeParams>(),
            std::mem::size_of::<GatherRowsParams>(),
            std::mem::size_of::<SoftmaxTopkParams>(),
            std::mem::size_of::<SelftestParams>(),
            std::mem::size_of::<GemmSm90Params>(),
            std::mem::size_of::<SelftestSm90Params>(),
            std::mem::size_of::<HandoffParams>(),
            std::mem::size_of::<GemmStreamParams>(),
            std::mem::size_of::<AttentionSm90Params>(),
            std::mem::size_of::<ForwardSmallStep>(),
            std::mem::size_of::<ForwardSmallParams>(),
            std::mem::size_of::<MbTensorMapDesc>(),
            std::mem::size_of::<BatchDesc>(),
        ] {
            assert_eq!(s % 8, 0);
        }
    }
}
