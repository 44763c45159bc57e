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

/// One token of [`TextTokenizer::spans`]: its text is the input's bytes `start..stop`, or the
/// token itself for a special token (no span).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TokenSpan {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    policy: OverlongPolicy,
    /// Bytes of the longest token's text (vocabulary and added tokens): bounds how few tokens a
    /// prefix can yield.
    max_token_bytes: usize,
}

/// A text ready to be tokenised: the text itself, or the prefix of it that is enough for the
/// model's maximum length (`cut` says which).
struct Bounded<'a> {
    text: &'a str,
    cut: bool,
}

impl TextTokenizer {
    /// Load `tokenizer.json`; `max_len` counts special tokens.
    pub fn from_file(path: &Path, max_len: usize, policy: OverlongPolicy) -> Result<Self> {
        let bytes = crate::limits::read_regular_file(path, crate::limits::file_bound::TOKENIZER)?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: cannot load ({e})", path.display())))?;
        Self::from_tokenizer(inner, max_len, policy)
    }

    pub fn from_tokenizer(inner: Tokenizer, max_len: usize, policy: OverlongPolicy) -> Result<Self> {
        // Bytes of the longest token: one decode per vocabulary entry, done once per file.
        let max_token_bytes = inner
            .get_vocab(true)
            .values()
            .map(|&id| inner.decode(&[id], false).map_or(0, |t| t.len()))
            .max()
            .unwrap_or(1)
            .max(1);
        Self::with_limits(inner, max_len, policy, max_token_bytes)
    }

    fn with_limits(
        mut inner: Tokenizer,
        max_len: usize,
        policy: OverlongPolicy,
        max_token_bytes: usize,
    ) -> Result<Self> {
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
        Ok(TextTokenizer {
            inner,
            max_len,
            policy,
            max_token_bytes,
        })
    }

    /// Bounded tokenisation: the prefix of `text` that yields the same ids after truncation as the
    /// whole text, so that memory and time are bounded by the model's maximum length, not by the
    /// input's size.
    ///
    /// A text of at most `first` = 4 · (max_len + 1) bytes is used whole. A longer one is cut at
    /// `p`, the last whitespace boundary (a non-whitespace character followed by ASCII whitespace)
    /// in the second half of a window of `b` bytes, and the prefix is kept if it alone yields more
    /// than `max_len` tokens; else the window doubles. Why the ids are unchanged, for ModernBERT's
    /// pipeline (added tokens, NFC, the ByteLevel regex split, BPE within each piece): the added
    /// tokens (whitespace runs and bracketed names) never span such a boundary; NFC never composes
    /// across a whitespace character; the split regex always starts a new piece at whitespace that
    /// follows a non-whitespace character. So the prefix's tokens are exactly the whole text's
    /// first tokens, and since they number more than `max_len`, truncation keeps the same ones
    /// (for pairs too: longest-first truncation of two sides that each exceed `max_len` depends
    /// only on `max_len`). A window with no whitespace boundary is cut at a character boundary
    /// instead: the run it cuts is tokenised from its prefix (BPE merges are local; not proved).
    /// The window never grows past 3 · max_token_bytes · (max_len + 1) bytes, the size that yields
    /// more than `max_len` tokens whatever the text (each token covers at most max_token_bytes
    /// normalised bytes, and NFC shrinks a text at most 3×).
    fn bounded<'a>(&self, text: &'a str) -> Result<Bounded<'a>> {
        let need = self.max_len + 1;
        let first = 4 * need;
        if text.len() <= first {
            return Ok(Bounded { text, cut: false });
        }
        let cap = need.saturating_mul(self.max_token_bytes).saturating_mul(3);
        let mut window = first;
        loop {
            if window >= text.len() {
                return Ok(Bounded { text, cut: false });
            }
            let prefix = &text[..cut_point(text, window)];
            if window >= cap {
                return Ok(Bounded {
                    text: prefix,
                    cut: true,
                });
            }
            let tokens = self
                .inner
                .encode_fast(prefix, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .len();
            if tokens > self.max_len {
                return Ok(Bounded {
                    text: prefix,
                    cut: true,
                });
            }
            window = window.saturating_mul(2).min(cap);
        }
    }

    /// The same tokenizer with another maximum length (PyLate's query/document lengths).
    pub fn with_max_len(&self, max_len: usize) -> Result<Self> {
        Self::with_limits(self.inner.clone(), max_len, self.policy, self.max_token_bytes)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Ids of each text with the special tokens of the file's template; the first bad text fails
    /// the whole call (its error names it).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        collect_per_text(self.encode_each(texts)?)
    }

    /// Ids of each `(a, b)` pair: `[CLS] a [SEP] b [SEP]` for ModernBERT's template.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<u32>>> {
        collect_per_text(self.encode_each_with(pairs.len(), |i| (pairs[i].0, Some(pairs[i].1)))?)
    }

    /// Ids of each text, or that text's own error (an over-long text when truncation is off). The
    /// outer error is the tokenizer's own failure. An empty text is `[CLS] [SEP]`, as in
    /// transformers and sentence-transformers.
    pub fn encode_each(&self, texts: &[&str]) -> Result<Vec<Result<Vec<u32>>>> {
        self.encode_each_with(texts.len(), |i| (texts[i], None))
    }

    /// As [`encode_each`](Self::encode_each) for `(a, b)` pairs.
    pub fn encode_each_pair(&self, pairs: &[(&str, &str)]) -> Result<Vec<Result<Vec<u32>>>> {
        self.encode_each_with(pairs.len(), |i| (pairs[i].0, Some(pairs[i].1)))
    }

    fn encode_each_with<'a>(
        &self,
        n: usize,
        item: impl Fn(usize) -> (&'a str, Option<&'a str>),
    ) -> Result<Vec<Result<Vec<u32>>>> {
        if n == 0 {
            return Err(Error::Input("no texts given".into()));
        }
        let mut inputs = Vec::with_capacity(n);
        let mut cut = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = item(i);
            let a = self.bounded(a)?;
            let b = b.map(|b| self.bounded(b)).transpose()?;
            cut.push(a.cut || b.as_ref().is_some_and(|b| b.cut));
            inputs.push(match b {
                None => tokenizers::EncodeInput::Single(a.text.into()),
                Some(b) => tokenizers::EncodeInput::Dual(a.text.into(), b.text.into()),
            });
        }
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // A call may refuse over-long texts on an engine that truncates (`CallLimits`): there, a
        // truncated encoding keeps what it cut as overflowing encodings.
        let refuse = self.policy == OverlongPolicy::Refuse || crate::coalesce::refuses_overlong();
        Ok(encodings
            .into_iter()
            .zip(cut)
            .map(|(e, cut)| {
                let truncated = !e.get_overflowing().is_empty();
                let ids = e.get_ids().to_vec();
                if refuse && (cut || truncated || ids.len() > self.max_len) {
                    let count = if cut {
                        format!("at least {} tokens, more", ids.len().max(self.max_len + 1))
                    } else if truncated {
                        "more tokens".to_string()
                    } else {
                        format!("{} tokens, more", ids.len())
                    };
                    return Err(Error::TextTooLong(format!(
                        "has {count} than the maximum {} (truncation is off)",
                        self.max_len
                    )));
                }
                if ids.is_empty() {
                    return Err(Error::Input("produced no tokens".into()));
                }
                Ok(ids)
            })
            .collect())
    }

    /// The tokens of `text` with their byte spans in it (`None` for special tokens), as the model
    /// would see them (truncated as the engine truncates; a text too long with truncation off is
    /// an error).
    pub fn spans(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenSpan>> {
        // `encode`, not `encode_fast`: the offsets are wanted.
        if !add_special_tokens {
            let enc = self
                .inner
                .encode(text, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            return Ok(Self::spans_of(&enc, text));
        }
        // The same checks (bounded input, over-long policy) as the model's inputs.
        self.encode_each(&[text])?.remove(0)?;
        let bounded = self.bounded(text)?;
        let enc = self
            .inner
            .encode(bounded.text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self::spans_of(&enc, text))
    }

    fn spans_of(enc: &tokenizers::Encoding, text: &str) -> Vec<TokenSpan> {
        let special = enc.get_special_tokens_mask();
        enc.get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets())
            .enumerate()
            .map(|(i, ((&id, token), &(start, stop)))| {
                let is_special = special.get(i).is_some_and(|&s| s == 1);
                let piece = (!is_special).then(|| text.get(start..stop)).flatten();
                TokenSpan {
                    id,
                    text: piece.map_or_else(|| token.clone(), str::to_string),
                    special: is_special,
                    start: piece.map(|_| start),
                    stop: piece.map(|_| stop),
                }
            })
            .collect()
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

/// The end of the prefix of at most `window` bytes to tokenise: the last whitespace boundary (a
/// non-whitespace character followed by ASCII whitespace) in its second half, else the last
/// character boundary.
fn cut_point(text: &str, window: usize) -> usize {
    let bytes = text.as_bytes();
    let end = window.min(text.len());
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    // Byte p is ASCII whitespace and byte p - 1 ends a non-whitespace character (any byte that is
    // not ASCII whitespace: a UTF-8 continuation byte ends a non-ASCII character only at p).
    if let Some(p) = (end / 2 + 1..end)
        .rev()
        .find(|&p| is_space(bytes[p]) && !is_space(bytes[p - 1]))
    {
        return p;
    }
    (0..=end).rev().find(|&p| text.is_char_boundary(p)).unwrap_or(0)
}

/// Per-text results as one: the values, or the first text's error with its number (from 1).
pub fn collect_per_text<T>(items: Vec<Result<T>>) -> Result<Vec<T>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| e.for_text(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::cut_point;

    #[test]
    fn cuts_before_whitespace_that_follows_a_word() {
        let text = "aaaa bbbb cccc dddd";
        assert_eq!(cut_point(text, 12), 9); // "aaaa bbbb|"
        assert_eq!(&text[..cut_point(text, 17)], "aaaa bbbb cccc");
        // In a run of spaces the cut goes before the run, not inside it.
        assert_eq!(cut_point("abcdef   gh", 10), 6);
        // Whitespace after a multi-byte character is a boundary too.
        assert_eq!(cut_point("aaaaé bb", 8), 6);
        // No whitespace in the second half: a character boundary (never inside "é").
        let text = "ééééééééé";
        let p = cut_point(text, 7);
        assert!(text.is_char_boundary(p) && p <= 7);
    }
}
