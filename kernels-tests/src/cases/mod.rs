//! One table of cases per op, shared by the kernel tests (`tests/<op>.rs`) and the microbenchmarks.

pub mod attention;
pub mod colbert;
pub mod embeddings;
pub mod geglu;
pub mod layernorm;
pub mod mlm_head;
pub mod pooling;
pub mod rope;
pub mod unpad;

/// The sequence lengths every op is tested at (tile edges around 64 and 128, and long ones).
pub const SEQ_LENS: &[u32] = &[1, 2, 63, 64, 65, 127, 128, 129, 130, 255, 257, 1000, 8192];

/// Varlen batches mixing the lengths above (token totals that are no multiple of any tile).
pub fn varlen_batches() -> Vec<Vec<u32>> {
    vec![
        vec![1, 2, 63, 64, 65],
        vec![127, 128, 129, 130, 1],
        vec![255, 257, 2, 1000],
        vec![65, 8192, 1, 129],
        vec![130, 127, 64, 63, 2, 1, 257],
    ]
}

/// cu_seqlens of a batch: [0, l0, l0 + l1, ...].
pub fn cu_seqlens(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}
