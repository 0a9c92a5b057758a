//! Option parsing shared by the benchmarks (no dependency for a few flags).

use std::fmt;

/// Why a benchmark stopped.
#[derive(Debug)]
pub enum Failure {
    /// Bad command line (exit status 2).
    Usage(String),
    /// The benchmark itself failed (exit status 1).
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

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Run(m) => f.write_str(m),
        }
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

/// Walks `--flag value`, `--flag=value` and bare `--flag` arguments.
#[derive(Debug)]
pub struct Parser<'a> {
    args: std::slice::Iter<'a, String>,
    flag: &'a str,
    inline: Option<&'a str>,
}

impl<'a> Parser<'a> {
    pub fn new(args: &'a [String]) -> Parser<'a> {
        Parser {
            args: args.iter(),
            flag: "",
            inline: None,
        }
    }

    /// The next flag, or `None` at the end.
    pub fn flag(&mut self) -> Result<Option<&'a str>, Failure> {
        if let Some(v) = self.inline.take() {
            return Err(Failure::usage(format!(
                "{} takes no value (got {v:?})",
                self.flag
            )));
        }
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if !arg.starts_with('-') {
            return Err(Failure::usage(format!("unexpected argument {arg:?}")));
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        self.flag = flag;
        self.inline = inline;
        Ok(Some(flag))
    }

    /// The value of the flag just returned by [`Parser::flag`].
    pub fn value(&mut self) -> Result<&'a str, Failure> {
        self.inline
            .take()
            .or_else(|| self.args.next().map(String::as_str))
            .ok_or_else(|| Failure::usage(format!("{} needs a value", self.flag)))
    }

    /// An unknown flag's error.
    pub fn unknown(&self) -> Failure {
        Failure::usage(format!("unknown option {:?}", self.flag))
    }
}
