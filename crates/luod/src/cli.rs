//! The `luod` command line, parsed by hand.
//!
//! ```
//! use luod::cli::{parse, Command};
//!
//! let Command::Run(o) = parse(["--quota-bytes", "64M", "--socket=/tmp/l.sock"]).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(o.quota.pinned_bytes, 64 << 20);
//! assert_eq!(o.socket.unwrap().to_str(), Some("/tmp/l.sock"));
//! assert!(parse(["--bogus"]).is_err());
//! ```

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::{Backend, Quota};

/// The text of `luod --help`.
pub const USAGE: &str = "\
luod: the Live Update Orchestrator agent

Keeps memfds, sockets, pipes and eventfds in custody across a service's
restart, and memfds across a kernel live update (kexec) on the kernel
backend. Clients (the luo library, luoctl) talk to it over a Unix socket.

Usage: luod [OPTIONS]

Options:
  --socket PATH          listen on PATH (default: $LUOD_SOCKET, else
                         /run/luod/luod.sock for root and
                         $XDG_RUNTIME_DIR/luod.sock, else
                         /run/user/UID/luod.sock, for other users)
  --backend MODE         kernel, emulated or auto (default: auto, which picks
                         kernel when /dev/liveupdate can be opened, else
                         emulated)
  --device PATH          the LUO device of the kernel backend (default:
                         /dev/liveupdate)
  --kernel-session-files N
                         at most N files per kernel session; an agent session
                         with more spreads over several (default: as many as
                         the kernel takes)
  --quota-sessions N     at most N sessions per uid (root is exempt)
  --quota-files N        at most N preserved files per uid (root is exempt)
  --quota-connections N  at most N open connections to luod per uid (root is
                         exempt; default 1024)
  --quota-bytes SIZE     at most SIZE bytes of memfd pinned per uid (root is
                         exempt); SIZE is bytes or has a K, M, G or T suffix
                         (powers of 1024)
  --keeper auto|off      auto (the default): copies of every file in custody
                         are kept outside luod, so that a crash or restart of
                         luod loses nothing: in systemd's fd store when
                         $NOTIFY_SOCKET is set, else in a keeper process that
                         luod starts (it answers at SOCKET.keeper); off: none
  --log-level LEVEL      error, warn, info, debug or trace (default: $LUOD_LOG,
                         else info); logs go to stderr
  -h, --help             print this help and exit
  -V, --version          print the version and exit
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the agent.
    Run(Options),
    /// Print [`USAGE`].
    Help,
    /// Print the version.
    Version,
    /// `--upgrade-probe`: print the upgrade state versions this binary
    /// reads (what an agent asks before it re-executes as this binary).
    UpgradeProbe,
    /// `--keeper-process PATH --keeper-link N`: run as the keeper an agent
    /// started (not for people).
    Keeper {
        /// Where the keeper answers a restarted agent.
        path: PathBuf,
        /// The inherited connection to the agent that started it.
        link: i32,
    },
}

/// The options of [`Command::Run`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `--socket`; `None` means `$LUOD_SOCKET` or the default
    /// ([`crate::resolve_socket_path`]).
    pub socket: Option<PathBuf>,
    /// `--backend`.
    pub backend: Backend,
    /// `--quota-sessions`, `--quota-files`, `--quota-bytes`.
    pub quota: Quota,
    /// `--quota-connections`; `None` means the default
    /// ([`crate::DEFAULT_CONNECTIONS_PER_UID`]).
    pub connections_per_uid: Option<u64>,
    /// `--log-level`; `None` means `$LUOD_LOG` or `info`.
    pub log_level: Option<LogLevel>,
    /// `--device`; `None` means `/dev/liveupdate`.
    pub device: Option<PathBuf>,
    /// `--kernel-session-files`; `None` means no limit of the agent's own.
    pub kernel_session_files: Option<u64>,
    /// `--upgrade-state FD`: this is an in-place upgrade; the state is in
    /// this inherited memfd (set by the agent that re-executes, not by
    /// people).
    pub upgrade_state: Option<i32>,
    /// `--upgrade-fallback FD`: the previous binary, to go back to when the
    /// state is refused.
    pub upgrade_fallback: Option<i32>,
    /// `--keeper off`: keep no copies of the custody descriptors outside
    /// the agent.
    pub no_keeper: bool,
}

/// How much the agent logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default: start-up, sessions created, handed over, finished, aborted.
    Info,
    /// Every connection and request.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Parses `error`, `warn`, `info`, `debug` or `trace` (any case).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// A command line that cannot be run; the binary prints it and exits with
/// status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see luod --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Parses a size: plain bytes, or a number with a `K`, `M`, `G` or `T`
/// suffix (powers of 1024, any case, optionally followed by `B` or `iB`).
/// `None` for anything else, or a size over `u64::MAX`.
///
/// ```
/// assert_eq!(luod::cli::parse_size("4096"), Some(4096));
/// assert_eq!(luod::cli::parse_size("1G"), Some(1 << 30));
/// assert_eq!(luod::cli::parse_size("2MiB"), Some(2 << 20));
/// assert_eq!(luod::cli::parse_size("1.5G"), None);
/// ```
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].to_ascii_uppercase();
    let (unit, tail) = match rest.chars().next() {
        None => return Some(n),
        Some('K') => (10, &rest[1..]),
        Some('M') => (20, &rest[1..]),
        Some('G') => (30, &rest[1..]),
        Some('T') => (40, &rest[1..]),
        Some('B') if rest == "B" => return Some(n),
        _ => return None,
    };
    if !matches!(tail, "" | "B" | "IB") {
        return None;
    }
    n.checked_mul(1u64 << unit)
}

fn parse_count(flag: &str, v: &str) -> Result<u64, UsageError> {
    match v.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => usage(format!("{flag} takes a whole number, not {v:?}")),
    }
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut o = Options::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let Some(arg) = arg.to_str().map(str::to_owned) else {
            return usage(format!("unexpected argument {arg:?}"));
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(OsString::from(v))),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<OsString, UsageError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => usage(format!("{name} needs a value")),
            }
        };
        let text = |name: &str, v: OsString| -> Result<String, UsageError> {
            v.into_string()
                .or_else(|v| usage(format!("{name}: {v:?} is not valid UTF-8")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--socket" => {
                let v = value("--socket")?;
                if v.is_empty() {
                    return usage("--socket needs a non-empty path");
                }
                o.socket = Some(PathBuf::from(v));
            }
            "--backend" => {
                let v = text("--backend", value("--backend")?)?;
                o.backend = match Backend::parse(&v) {
                    Some(b) => b,
                    None => {
                        return usage(format!(
                            "unknown backend {v:?}; choose kernel, emulated or auto"
                        ))
                    }
                };
            }
            "--upgrade-probe" => return Ok(Command::UpgradeProbe),
            "--keeper" => {
                let v = text("--keeper", value("--keeper")?)?;
                o.no_keeper = match v.as_str() {
                    "auto" => false,
                    "off" => true,
                    _ => return usage(format!("--keeper takes auto or off, not {v:?}")),
                };
            }
            "--keeper-process" => {
                let path = PathBuf::from(value("--keeper-process")?);
                let mut link = None;
                if let Some(f) = args.next() {
                    if f.to_str() == Some("--keeper-link") {
                        link = args
                            .next()
                            .and_then(|v| v.to_str().and_then(|v| v.parse().ok()));
                    }
                }
                let Some(link) = link else {
                    return usage("--keeper-process PATH needs --keeper-link N after it");
                };
                return Ok(Command::Keeper { path, link });
            }
            "--upgrade-state" | "--upgrade-fallback" => {
                let v = text(&flag, value(&flag)?)?;
                let Ok(n) = v.parse::<i32>() else {
                    return usage(format!("{flag} takes a descriptor number, not {v:?}"));
                };
                if n <= 2 {
                    return usage(format!("{flag} takes a descriptor number above 2"));
                }
                if flag == "--upgrade-state" {
                    o.upgrade_state = Some(n);
                } else {
                    o.upgrade_fallback = Some(n);
                }
            }
            "--device" => {
                let v = value("--device")?;
                if v.is_empty() {
                    return usage("--device needs a non-empty path");
                }
                o.device = Some(PathBuf::from(v));
            }
            "--kernel-session-files" => {
                let v = text("--kernel-session-files", value("--kernel-session-files")?)?;
                let n = parse_count("--kernel-session-files", &v)?;
                if n == 0 {
                    return usage("--kernel-session-files must be at least 1");
                }
                o.kernel_session_files = Some(n);
            }
            "--quota-sessions" => {
                let v = text("--quota-sessions", value("--quota-sessions")?)?;
                o.quota.sessions = parse_count("--quota-sessions", &v)?;
            }
            "--quota-connections" => {
                let v = text("--quota-connections", value("--quota-connections")?)?;
                o.connections_per_uid = Some(parse_count("--quota-connections", &v)?);
            }
            "--quota-files" => {
                let v = text("--quota-files", value("--quota-files")?)?;
                o.quota.files = parse_count("--quota-files", &v)?;
            }
            "--quota-bytes" => {
                let v = text("--quota-bytes", value("--quota-bytes")?)?;
                o.quota.pinned_bytes = match parse_size(&v) {
                    Some(n) => n,
                    None => {
                        return usage(format!(
                            "--quota-bytes takes a size such as 1048576, 512K, 64M or 2G, not {v:?}"
                        ))
                    }
                };
            }
            "--log-level" => {
                let v = text("--log-level", value("--log-level")?)?;
                o.log_level = match LogLevel::parse(&v) {
                    Some(l) => Some(l),
                    None => {
                        return usage(format!(
                            "unknown log level {v:?}; choose error, warn, info, debug or trace"
                        ))
                    }
                };
            }
            f if f.starts_with('-') => return usage(format!("unknown option {f}")),
            _ => return usage(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Command::Run(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()) {
            Ok(Command::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.backend, Backend::Auto);
        assert_eq!(o.quota, Quota::default());
    }

    #[test]
    fn every_flag_both_spellings() {
        let o = run(&[
            "--socket",
            "/a/b.sock",
            "--backend=emulated",
            "--quota-sessions",
            "3",
            "--quota-files=7",
            "--quota-bytes",
            "1K",
            "--log-level",
            "DEBUG",
        ]);
        assert_eq!(o.socket, Some(PathBuf::from("/a/b.sock")));
        assert_eq!(o.backend, Backend::Emulated);
        assert_eq!(
            o.quota,
            Quota {
                sessions: 3,
                files: 7,
                pinned_bytes: 1024
            }
        );
        assert_eq!(o.log_level, Some(LogLevel::Debug));
        // The kernel backend parses; binding with it is what fails.
        assert_eq!(run(&["--backend", "kernel"]).backend, Backend::Kernel);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help"]), Ok(Command::Help));
        assert_eq!(parse(["-h", "--bogus"]), Ok(Command::Help));
        assert_eq!(parse(["-V"]), Ok(Command::Version));
    }

    #[test]
    fn bad_command_lines() {
        for bad in [
            &["--bogus"][..],
            &["stray"],
            &["--socket"],
            &["--socket="],
            &["--backend", "magic"],
            &["--quota-sessions", "-1"],
            &["--quota-files", "many"],
            &["--quota-bytes", "12X"],
            &["--quota-bytes", "99999999999T"],
            &["--log-level", "loud"],
        ] {
            let e = parse(bad.iter().copied()).expect_err(&format!("{bad:?} accepted"));
            assert!(e.to_string().contains("--help"), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("10B"), Some(10));
        assert_eq!(parse_size("3k"), Some(3 << 10));
        assert_eq!(parse_size("3KB"), Some(3 << 10));
        assert_eq!(parse_size("5T"), Some(5 << 40));
        assert_eq!(parse_size("16777215T"), Some(16_777_215 << 40));
        assert_eq!(parse_size("16777216T"), None);
        for bad in ["", "K", "1KK", "1 K", "-1", "1.0", "0x10", "1Kb2"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
