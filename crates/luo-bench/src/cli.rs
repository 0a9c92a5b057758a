//! What the benchmarks' command-line parsing leaves to them: why a
//! benchmark stopped, and the value parsers their options share.

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad command line (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The benchmark itself failed (exit status 1).
    #[error("{0}")]
    Run(String),
}

impl Failure {
    pub fn usage(msg: impl Into<String>) -> Failure {
        Failure::Usage(msg.into())
    }
    pub fn run(msg: impl Into<String>) -> Failure {
        Failure::Run(msg.into())
    }
}

impl From<luo_core::Error> for Failure {
    fn from(e: luo_core::Error) -> Self {
        Failure::Run(e.to_string())
    }
}

impl From<luo_sys::Errno> for Failure {
    fn from(e: luo_sys::Errno) -> Self {
        Failure::Run(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Run(e.to_string())
    }
}

/// A count: `16000` or `16_000`.
pub fn count(s: &str) -> Result<usize, String> {
    s.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| "a whole number".to_string())
}

/// A count above zero.
pub fn positive(s: &str) -> Result<usize, String> {
    match count(s) {
        Ok(0) | Err(_) => Err("a positive integer".to_string()),
        Ok(n) => Ok(n),
    }
}

/// luod's keeper (its crash-safety mirror), as the benchmarks that run
/// luod with and without it take the setting (`--keeper on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Keeper {
    On,
    Off,
}

impl Keeper {
    pub fn is_on(self) -> bool {
        self == Keeper::On
    }

    /// luod's own `--keeper` value for it.
    pub fn luod_arg(self) -> &'static str {
        match self {
            Keeper::On => "auto",
            Keeper::Off => "off",
        }
    }
}

/// Sorted, without repeats.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}
