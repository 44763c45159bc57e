//! One error type for the library: every message is one line that names the file, tensor or
//! input at fault, so the CLI (and later the C ABI) can print it as is.

use std::path::PathBuf;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: invalid config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("checkpoint: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("input: {0}")]
    Input(String),
    /// A text longer than the model's maximum while truncation is off.
    #[error("input: {0}")]
    TextTooLong(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("device: {0}")]
    Device(String),
    /// A size from outside (an option, a config value, a count) that overflows or does not fit in
    /// memory (`limits`).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A text whose outputs are not finite (NaN or infinite): the checkpoint's weights are broken.
    #[error("output: {0}")]
    NonFinite(String),
    /// A call's deadline passed while it waited for a forward (`coalesce::CallLimits`).
    #[error("timeout: {0}")]
    Timeout(String),
    /// A call withdrawn by its caller while it waited for a forward.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error as one about text `index` (from 0) of a call: `text 3: …`, same variant.
    pub fn for_text(self, index: usize) -> Self {
        let n = index + 1;
        match self {
            Error::Input(m) => Error::Input(format!("text {n} {m}")),
            Error::TextTooLong(m) => Error::TextTooLong(format!("text {n} {m}")),
            Error::NonFinite(m) => Error::NonFinite(format!("text {n}: {m}")),
            Error::Tokenizer(m) => Error::Tokenizer(format!("text {n}: {m}")),
            other => other,
        }
    }

    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
}
