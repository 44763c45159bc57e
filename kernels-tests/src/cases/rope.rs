//! Cases for cuda/rope.cu: a packed batch (sequence lengths), heads, head_dim, theta.
#[derive(Clone, Debug)]
pub struct RopeCase {
    pub seqlens: Vec<u32>,
    /// Rows of capacity (>= the batch's tokens; the extra rows must stay untouched).
    pub capacity: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub theta: f32,
}

pub fn cases() -> Vec<RopeCase> {
    let mut v = Vec::new();
    let c = |seqlens: Vec<u32>, heads, head_dim, theta| {
        let t: u32 = seqlens.iter().sum();
        RopeCase {
            seqlens,
            capacity: t + 5,
            heads,
            head_dim,
            theta,
        }
    };
    // Every single length (one sequence each), global theta 160k and local 10k alternating.
    for (i, &l) in super::SEQ_LENS.iter().enumerate() {
        let theta = if i % 2 == 0 { 160_000.0 } else { 10_000.0 };
        v.push(c(vec![l], if l > 1000 { 1 } else { 3 }, 64, theta));
    }
    for lens in super::varlen_batches() {
        v.push(c(lens, 2, 64, 160_000.0));
    }
    v.push(c(vec![3, 129, 64], 2, 24, 10_000.0)); // head_dim % 16 != 0: scalar path
    v.push(c(vec![65, 2], 1, 2, 10_000.0));
    v.push(c(vec![7, 70], 2, 256, 10_000.0)); // the largest head_dim the shared angle table holds
    v
}
