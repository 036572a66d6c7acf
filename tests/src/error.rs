//! The harness's one error type: what went wrong, with enough context to act on it.

use std::fmt;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A prerequisite (binary, `.wasm`, Envoy, tool) is missing; `how` says how to get it.
    Missing { what: String, how: String },
    /// A file or socket operation failed.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The TLS layer refused (e.g. the server demanded a client certificate).
    Tls(String),
    /// The peer answered something that is not HTTP we understand, or nothing at all.
    Http(String),
    /// A child process failed to start, died, or never became ready.
    Proc(String),
    /// The Envoy template could not be rendered, or Envoy refused the rendering.
    Config(String),
    /// A token or key could not be built or read.
    Token(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { what, how } => write!(f, "{what} is missing: {how}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Tls(e) => write!(f, "TLS refused: {e}"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::Proc(e) => write!(f, "process: {e}"),
            Self::Config(e) => write!(f, "Envoy config: {e}"),
            Self::Token(e) => write!(f, "token: {e}"),
        }
    }
}

impl std::error::Error for Error {}
