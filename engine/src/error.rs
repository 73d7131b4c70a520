//! The engine's error type. Bugs, bad input and external failures are kept apart; external ones carry a retry hint
//! so callers decide without parsing strings.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether retrying the failed operation may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Transient: retry with backoff.
    Retry,
    /// Permanent: retrying the same thing fails the same way.
    NoRetry,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; every problem found, one per line.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// A record or file could not be decoded. `at` names the record (file and line, topic/partition/offset).
    #[error("cannot decode {at}: {reason}")]
    Decode { at: String, reason: String },
    /// The file and the system's reason, in one line. The reason is not also this error's `source`: the CLI prints a
    /// chain of sources after the message (`{:#}`), which would repeat it.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: std::io::Error },
    /// An external system failed (Kafka, GPU, a sink).
    #[error("{system}: {message}")]
    External { system: &'static str, message: String, retry: RetryHint },
    /// A broken invariant: this is a bug.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Self::Config(vec![msg.into()])
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), reason: source }
    }

    pub fn decode(at: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Decode { at: at.into(), reason: reason.into() }
    }

    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::External { retry, .. } => *retry,
            Self::Io { reason, .. } => match reason.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    RetryHint::Retry
                }
                _ => RetryHint::NoRetry,
            },
            _ => RetryHint::NoRetry,
        }
    }
}
