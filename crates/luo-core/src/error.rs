//! Errors: the kernel's errno plus a sentence that says what went wrong.

use std::borrow::Cow;
use std::fmt;

pub use luo_sys::Errno;

/// A refused operation: the errno the kernel would return, and a message for
/// the person reading it. The same type travels on luod's wire
/// (`luo_proto::Error`) and reaches clients (`luo::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The errno, as in the kernel's LUO.
    pub errno: Errno,
    /// What was refused and why (and, where it helps, what to do).
    pub message: Cow<'static, str>,
    /// For a batch preserve: the token that was refused (the files before it
    /// in the batch were preserved).
    pub token: Option<u64>,
}

impl Error {
    /// An error with `errno` and `message`.
    pub fn new(errno: Errno, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            errno,
            message: message.into(),
            token: None,
        }
    }

    /// The errno.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The same error, naming the refused `token`.
    pub fn with_token(mut self, token: u64) -> Error {
        self.token = Some(token);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno.name() {
            Some(n) => write!(f, "{} ({n})", self.message),
            None => write!(f, "{} (errno {})", self.message, self.errno.0),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a LUO operation.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn err<T>(errno: Errno, message: impl Into<Cow<'static, str>>) -> Result<T> {
    Err(Error::new(errno, message))
}
