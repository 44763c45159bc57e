//! `tokenizer.json` through the `tokenizers` crate: batches, the `[CLS] … [SEP]` template (from the
//! file's own post-processor), pairs for cross-encoders, and the over-long-input policy.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// What to do with a text longer than the model's maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OverlongPolicy {
    /// Keep the first tokens (special tokens preserved), as transformers' `truncation=True`.
    #[default]
    Truncate,
    /// Refuse the request with an error naming the text.
    Refuse,
}

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    policy: OverlongPolicy,
}

impl TextTokenizer {
    /// Load `tokenizer.json`; `max_len` counts special tokens.
    pub fn from_file(path: &Path, max_len: usize, policy: OverlongPolicy) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, "no such file"));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: cannot load ({e})", path.display())))?;
        Self::from_tokenizer(inner, max_len, policy)
    }

    pub fn from_tokenizer(mut inner: Tokenizer, max_len: usize, policy: OverlongPolicy) -> Result<Self> {
        if max_len < 2 {
            return Err(Error::Tokenizer(format!("maximum length {max_len} is too small")));
        }
        inner.with_padding(None);
        let truncation = match policy {
            OverlongPolicy::Truncate => Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }),
            OverlongPolicy::Refuse => None,
        };
        inner
            .with_truncation(truncation)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(TextTokenizer { inner, max_len, policy })
    }

    /// The same tokenizer with another maximum length (PyLate's query/document lengths).
    pub fn with_max_len(&self, max_len: usize) -> Result<Self> {
        Self::from_tokenizer(self.inner.clone(), max_len, self.policy)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Ids of each text with the special tokens of the file's template.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.encode_with(texts.len(), |i| (texts[i], None))
    }

    /// Ids of each `(a, b)` pair: `[CLS] a [SEP] b [SEP]` for ModernBERT's template.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<u32>>> {
        self.encode_with(pairs.len(), |i| (pairs[i].0, Some(pairs[i].1)))
    }

    fn encode_with<'a>(&self, n: usize, item: impl Fn(usize) -> (&'a str, Option<&'a str>)) -> Result<Vec<Vec<u32>>> {
        if n == 0 {
            return Err(Error::Input("no texts given".into()));
        }
        let mut inputs = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = item(i);
            if a.is_empty() || b == Some("") {
                return Err(Error::Input(format!("text {} is empty", i + 1)));
            }
            inputs.push(match b {
                None => tokenizers::EncodeInput::Single(a.into()),
                Some(b) => tokenizers::EncodeInput::Dual(a.into(), b.into()),
            });
        }
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids: Vec<Vec<u32>> = encodings.into_iter().map(|e| e.get_ids().to_vec()).collect();
        if self.policy == OverlongPolicy::Refuse {
            if let Some((i, s)) = ids.iter().enumerate().find(|(_, s)| s.len() > self.max_len) {
                return Err(Error::TextTooLong(format!(
                    "text {} has {} tokens, more than the maximum {} (truncation is off)",
                    i + 1,
                    s.len(),
                    self.max_len
                )));
            }
        }
        if let Some(i) = ids.iter().position(Vec::is_empty) {
            return Err(Error::Input(format!("text {} produced no tokens", i + 1)));
        }
        Ok(ids)
    }

    /// Ids of a text with no special tokens and no truncation (prefixes, skiplists).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of one token as transformers' fill-mask shows it (`" Paris"`, with its space).
    pub fn decode_token(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }
}
