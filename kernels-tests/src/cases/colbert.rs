//! Cases for cuda/colbert.cu.
#[derive(Clone, Debug)]
pub struct ColbertCase {
    pub rows: u32,
    pub capacity: u32,
    pub dim: u32,
}

pub fn cases() -> Vec<ColbertCase> {
    let mut v: Vec<ColbertCase> = super::SEQ_LENS
        .iter()
        .enumerate()
        .map(|(i, &r)| ColbertCase {
            rows: r,
            capacity: r + (i as u32 % 3),
            dim: [128, 96, 1024, 2056][i % 4],
        })
        .collect();
    v.push(ColbertCase {
        rows: 130,
        capacity: 131,
        dim: 100,
    }); // scalar path
    v.push(ColbertCase {
        rows: 5,
        capacity: 5,
        dim: 1,
    });
    v
}
