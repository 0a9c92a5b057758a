//! The `luod` command line: [`Cli`], whose options are a [`Config`] plus
//! logging and the flags an agent passes to the images it starts.
//!
//! ```
//! use clap::Parser;
//! use luod::cli::Cli;
//!
//! let cli = Cli::try_parse_from(["luod", "--quota-bytes", "64M", "--socket=/tmp/l.sock"]).unwrap();
//! assert_eq!(cli.config.quota.pinned_bytes, 64 << 20);
//! assert_eq!(cli.config.socket.to_str(), Some("/tmp/l.sock"));
//! assert!(Cli::try_parse_from(["luod", "--bogus"]).is_err());
//! ```

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::Config;

pub use luo_core::parse_size;

/// The environment variable with the log filter.
pub const LOG_ENV: &str = "LUOD_LOG";

const ABOUT: &str = "luod: the Live Update Orchestrator agent";

const LONG_ABOUT: &str = "\
luod: the Live Update Orchestrator agent

Keeps memfds, sockets, pipes and eventfds in custody across a service's
restart, and memfds across a kernel live update (kexec) on the kernel
backend. Clients (the luo library, luoctl) talk to it over a Unix socket.";

const AFTER_HELP: &str = "\
Environment:
  LUOD_SOCKET  the socket path when --socket is not given
  LUOD_LOG     what to log when --log-level is not given: a level (error, warn,
               info, debug, trace) or tracing-subscriber EnvFilter directives
               such as luod=debug or info,luod::agent=trace (default: info);
               logs go to stderr";

/// `luod`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "luod",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    max_term_width = 80
)]
pub struct Cli {
    /// How to run the agent.
    #[command(flatten)]
    pub config: Config,
    /// `--log-level`; `None` means `$LUOD_LOG` or `info` ([`log_filter`]).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "LEVEL",
        help = "What to log (default: $LUOD_LOG, else info); logs go to stderr"
    )]
    pub log_level: Option<LogLevel>,
    /// `--upgrade-probe`: print the upgrade state versions this binary
    /// reads (what an agent asks before it re-executes as this binary).
    #[arg(long, hide = true, exclusive = true)]
    pub upgrade_probe: bool,
    /// `--upgrade-state FD`: this is an in-place upgrade; the state is in
    /// this inherited memfd (set by the agent that re-executes, not by
    /// people).
    #[arg(long, hide = true, value_name = "FD", value_parser = inherited_fd)]
    pub upgrade_state: Option<i32>,
    /// `--upgrade-fallback FD`: the previous binary, to go back to when the
    /// state is refused.
    #[arg(long, hide = true, value_name = "FD", value_parser = inherited_fd)]
    pub upgrade_fallback: Option<i32>,
    /// `--keeper-process PATH --keeper-link N`: run as the keeper an agent
    /// started (not for people); PATH is where it answers a restarted agent.
    #[arg(long, hide = true, value_name = "PATH", requires = "keeper_link")]
    pub keeper_process: Option<PathBuf>,
    /// The inherited connection to the agent that started the keeper.
    #[arg(long, hide = true, value_name = "N", requires = "keeper_process")]
    pub keeper_link: Option<i32>,
}

/// How much the agent logs (`--log-level`); [`LOG_ENV`] takes a full
/// filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    #[value(alias = "warning")]
    Warn,
    /// The default: start-up, sessions created, handed over, finished, aborted.
    Info,
    /// Every connection and request.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level as a filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A descriptor an agent passes on to the image it executes: above 2.
fn inherited_fd(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if n > 2 => Ok(n),
        Ok(_) => Err("a descriptor number above 2".into()),
        Err(_) => Err("a descriptor number".into()),
    }
}

/// `--kernel-session-files`: a whole number, at least 1.
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("at least 1".into()),
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Err(_) => Err("a whole number".into()),
    }
}

/// The log filter: `--log-level` when given, else `$LUOD_LOG` (`env`,
/// ignored when empty), else `info`.
///
/// `$LUOD_LOG` takes [`EnvFilter`] directives (`luod=debug`,
/// `warn,luod::agent=trace`); a directive without `=` must be a level, so
/// that a misspelt level is an error rather than a filter for a target of
/// that name.
///
/// ```
/// use luod::cli::{log_filter, LogLevel};
///
/// assert_eq!(log_filter(None, None).unwrap().to_string(), "info");
/// assert_eq!(log_filter(None, Some("luod=debug")).unwrap().to_string(), "luod=debug");
/// assert_eq!(log_filter(Some(LogLevel::Warn), Some("trace")).unwrap().to_string(), "warn");
/// assert!(log_filter(None, Some("chatty")).is_err());
/// ```
pub fn log_filter(flag: Option<LogLevel>, env: Option<&str>) -> Result<EnvFilter, String> {
    let directives = match (flag, env) {
        (Some(level), _) => level.as_str(),
        (None, Some(v)) if !v.trim().is_empty() => v,
        (None, _) => LogLevel::Info.as_str(),
    };
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if !d.contains('=') && !levels.iter().any(|l| l.eq_ignore_ascii_case(d)) {
            return Err(format!(
                "{LOG_ENV}={directives:?}: {d:?} is not a level; choose off, error, warn, info, \
                 debug or trace, or give TARGET=LEVEL"
            ));
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("{LOG_ENV}={directives:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Quota};
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Cli {
        let all = std::iter::once("luod").chain(args.iter().copied());
        match Cli::try_parse_from(all) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = run(&[]);
        let want = Config {
            keeper: true,
            ..Config::new(luo::default_socket_path())
        };
        assert_eq!(c.config, want);
        assert_eq!(c.config.backend, Backend::Auto);
        assert_eq!(c.config.quota, Quota::default());
        assert_eq!(c.log_level, None);
        assert_eq!(c.upgrade_state, None);
    }

    #[test]
    fn every_flag_both_spellings() {
        let c = run(&[
            "--socket",
            "/a/b.sock",
            "--backend=emulated",
            "--quota-sessions",
            "3",
            "--quota-files=7",
            "--quota-bytes",
            "1K",
            "--quota-connections",
            "9",
            "--device=/dev/x",
            "--kernel-session-files",
            "5",
            "--keeper",
            "off",
            "--log-level",
            "DEBUG",
        ]);
        let o = c.config;
        assert_eq!(o.socket, PathBuf::from("/a/b.sock"));
        assert_eq!(o.backend, Backend::Emulated);
        assert_eq!(
            o.quota,
            Quota {
                sessions: 3,
                files: 7,
                pinned_bytes: 1024
            }
        );
        assert_eq!(o.connections_per_uid, 9);
        assert_eq!(o.device, PathBuf::from("/dev/x"));
        assert_eq!(o.kernel_files_per_session, 5);
        assert!(!o.keeper);
        assert_eq!(c.log_level, Some(LogLevel::Debug));
        // The kernel backend parses; binding with it is what fails.
        assert_eq!(
            run(&["--backend", "kernel"]).config.backend,
            Backend::Kernel
        );
    }

    #[test]
    fn internal_flags() {
        assert!(run(&["--upgrade-probe"]).upgrade_probe);
        let c = run(&["--upgrade-state", "5", "--upgrade-fallback", "6"]);
        assert_eq!((c.upgrade_state, c.upgrade_fallback), (Some(5), Some(6)));
        let c = run(&["--keeper-process", "/k", "--keeper-link", "4"]);
        assert_eq!(c.keeper_process, Some(PathBuf::from("/k")));
        assert_eq!(c.keeper_link, Some(4));
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
            &["--kernel-session-files", "0"],
            &["--keeper", "maybe"],
            &["--log-level", "loud"],
            &["--upgrade-state", "1"],
            &["--keeper-process", "/k"],
        ] {
            let all = std::iter::once("luod").chain(bad.iter().copied());
            let e = Cli::try_parse_from(all).expect_err(&format!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn log_filters() {
        assert!(log_filter(None, Some("")).is_ok());
        assert!(log_filter(None, Some("info,luod::agent=trace")).is_ok());
        assert!(log_filter(None, Some("DEBUG")).is_ok());
        assert!(log_filter(None, Some("luod=loud")).is_err());
        assert!(log_filter(None, Some("chatty")).is_err());
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
