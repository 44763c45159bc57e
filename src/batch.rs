//! The packed (unpadded) batch: the token ids of all sequences back to back, with `cu_seqlens`
//! offsets — the layout every executor (CPU, emulated, CUDA) runs on. No padding is ever computed.

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedBatch {
    /// `[tokens]` token ids, sequence after sequence.
    pub ids: Vec<u32>,
    /// `[sequences + 1]` row offsets: sequence `b` is rows `cu_seqlens[b] .. cu_seqlens[b + 1]`.
    pub cu_seqlens: Vec<u32>,
    /// `[sequences]` how many leading tokens of each sequence are attention keys (attention mask 1).
    /// Equal to the length except for ColBERT query expansion, whose `[MASK]` tokens are queries only.
    pub key_lens: Vec<u32>,
}

impl PackedBatch {
    /// Pack sequences whose every token is a key.
    pub fn from_sequences<S: AsRef<[u32]>>(sequences: &[S]) -> Result<Self> {
        let lens: Vec<usize> = sequences.iter().map(|s| s.as_ref().len()).collect();
        Self::with_key_lens(sequences, &lens)
    }

    /// Pack sequences; sequence `b` has `key_lens[b]` (1 ..= its length) leading key tokens.
    pub fn with_key_lens<S: AsRef<[u32]>>(sequences: &[S], key_lens: &[usize]) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::Input("empty batch: no sequences".into()));
        }
        let total: usize = sequences.iter().map(|s| s.as_ref().len()).sum();
        if total > u32::MAX as usize / 2 {
            return Err(Error::Input(format!("batch of {total} tokens is too large")));
        }
        let mut batch = PackedBatch {
            ids: Vec::with_capacity(total),
            cu_seqlens: Vec::with_capacity(sequences.len() + 1),
            key_lens: Vec::with_capacity(sequences.len()),
        };
        batch.cu_seqlens.push(0);
        for (b, (s, &k)) in sequences.iter().zip(key_lens).enumerate() {
            let s = s.as_ref();
            if s.is_empty() {
                return Err(Error::Input(format!("sequence {b} has no tokens")));
            }
            if k == 0 || k > s.len() {
                return Err(Error::Input(format!("sequence {b}: {k} keys for {} tokens", s.len())));
            }
            batch.ids.extend_from_slice(s);
            batch.cu_seqlens.push(batch.ids.len() as u32);
            batch.key_lens.push(k as u32);
        }
        Ok(batch)
    }

    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    pub fn sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    pub fn seq_range(&self, b: usize) -> std::ops::Range<usize> {
        self.cu_seqlens[b] as usize..self.cu_seqlens[b + 1] as usize
    }

    pub fn max_seqlen(&self) -> usize {
        self.cu_seqlens
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }

    /// True when some token is not a key (so attention needs `key_lens`).
    pub fn has_query_only_tokens(&self) -> bool {
        self.cu_seqlens
            .windows(2)
            .zip(&self.key_lens)
            .any(|(w, &k)| w[1] - w[0] != k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_offsets_and_rejects_empty() {
        let b = PackedBatch::from_sequences(&[vec![1, 2, 3], vec![4]]).unwrap();
        assert_eq!(b.cu_seqlens, vec![0, 3, 4]);
        assert_eq!((b.tokens(), b.sequences(), b.max_seqlen()), (4, 2, 3));
        assert!(!b.has_query_only_tokens());
        assert!(PackedBatch::from_sequences::<Vec<u32>>(&[]).is_err());
        assert!(PackedBatch::from_sequences(&[vec![1], vec![]]).is_err());
        let k = PackedBatch::with_key_lens(&[vec![1, 2, 3]], &[2]).unwrap();
        assert!(k.has_query_only_tokens());
        assert!(PackedBatch::with_key_lens(&[vec![1, 2, 3]], &[4]).is_err());
    }
}
