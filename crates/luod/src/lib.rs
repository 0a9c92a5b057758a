//! `luod`, the Live Update Orchestrator agent, as a library.
//!
//! The agent plays the part of the kernel's `/dev/liveupdate` for userspace:
//! clients connect to a `SOCK_SEQPACKET` Unix socket and speak the protocol
//! of `docs/protocol.md`; the agent keeps their sessions and preserved files
//! in a [`luo_core::Luo`] model. The `luod` binary is a thin wrapper around
//! [`run()`]; tests and demos can run an agent in-process:
//!
//! ```no_run
//! use luod::{Agent, Config};
//!
//! let mut agent = Agent::bind(Config::new("/tmp/luod-demo/luod.sock")).unwrap();
//! // The socket accepts connections from here on.
//! std::thread::spawn(move || agent.serve());
//! ```
//!
//! The agent is a single-threaded, level-triggered epoll loop over
//! non-blocking sockets: nothing a client does can block it, and malformed
//! input of any kind is answered with an error on the same socket.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::path::PathBuf;

mod agent;
pub mod cli;
pub mod ctl;
#[doc(hidden)]
pub mod fuzzing;
pub mod gen;
pub mod registry;
pub mod run;
mod store;
pub use store::keeper_main;

pub use agent::upgrade::{fall_back, probe_answer, resume, FALLBACK_FLAG, STATE_FLAG};
pub use agent::Agent;
pub use luo_core::Quota;

/// Which implementation keeps the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// [`Backend::Kernel`] when the device can be opened, else
    /// [`Backend::Emulated`] (the log says why).
    #[default]
    #[value(help = "kernel when the device can be opened, else emulated")]
    Auto,
    /// Sessions live in the agent's memory; they survive a service's restart,
    /// not a kexec.
    #[value(
        help = "Sessions live in luod's memory: they survive a service's restart, not a kexec"
    )]
    Emulated,
    /// The kernel's `/dev/liveupdate`: memfds are also preserved in kernel
    /// sessions, so they survive a kexec (`luoctl update --kexec`); binding
    /// fails with [`AgentError::Backend`] when the device cannot be opened.
    #[value(help = "The kernel's /dev/liveupdate: memfds also survive a kexec")]
    Kernel,
}

impl Backend {
    /// The name used on the command line and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Emulated => "emulated",
            Backend::Kernel => "kernel",
        }
    }

    /// Parses [`Backend::as_str`].
    pub fn parse(s: &str) -> Option<Backend> {
        Some(match s {
            "auto" => Backend::Auto,
            "emulated" => Backend::Emulated,
            "kernel" => Backend::Kernel,
            _ => return None,
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to run an agent ([`Config::new`] gives the defaults).
///
/// It is also `luod`'s options ([`cli::Cli`]); the defaults on the command
/// line are those of [`Config::new`], except that the socket path is
/// [`luo::default_socket_path`] and the keeper is on.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Where the listening socket goes.
    #[arg(
        long,
        value_name = "PATH",
        default_value_os_t = luo::default_socket_path(),
        hide_default_value = true,
        help = "Listen on PATH (default: $LUOD_SOCKET, else /run/luod/luod.sock for root \
                and $XDG_RUNTIME_DIR/luod.sock, else /run/user/UID/luod.sock, for other users)"
    )]
    pub socket: PathBuf,
    /// Which backend keeps the sessions.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value_t = Backend::Auto,
        help = "Which backend keeps the sessions"
    )]
    pub backend: Backend,
    /// The per-uid quota (root is exempt).
    #[command(flatten)]
    pub quota: Quota,
    /// Most agent connections one uid may have open at once (root is
    /// exempt), so that no user can take every descriptor the agent has.
    #[arg(
        long = "quota-connections",
        value_name = "N",
        default_value_t = DEFAULT_CONNECTIONS_PER_UID,
        help = "At most N open connections to luod per uid (root is exempt)"
    )]
    pub connections_per_uid: u64,
    /// The LUO device the kernel backend opens.
    #[arg(
        long,
        value_name = "PATH",
        default_value = luo_sys::liveupdate::DEVICE,
        help = "The LUO device of the kernel backend"
    )]
    pub device: PathBuf,
    /// Whether copies of the custody descriptors are kept outside the agent
    /// (systemd's fd store under `$NOTIFY_SOCKET`, else a keeper process),
    /// so that a crash loses nothing. The keeper is the running binary
    /// started with `--keeper-process`, so only the `luod` binary sets this
    /// (unless `--keeper off`); [`Config::new`] leaves it off.
    #[arg(
        long = "keeper",
        value_name = "MODE",
        default_value = "auto",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["auto", "off"]),
            |s: String| s == "auto"
        ),
        help = "auto: copies of the files of every session a restarted luod takes back \
                (handed over, or persistent) are kept outside luod, so that a crash or \
                restart of luod loses nothing: in systemd's fd store when $NOTIFY_SOCKET \
                is set, else in a keeper process that luod starts (it answers at \
                SOCKET.keeper); off: none"
    )]
    pub keeper: bool,
    /// Most files the kernel backend puts in one kernel session before it
    /// opens another for the same agent session (a kernel that refuses
    /// more, with `ENOSPC`, also gets another).
    #[arg(
        long = "kernel-session-files",
        value_name = "N",
        default_value_t = usize::MAX,
        hide_default_value = true,
        value_parser = cli::at_least_one,
        help = "At most N files per kernel session; an agent session with more spreads over \
                several (default: as many as the kernel takes)"
    )]
    pub kernel_files_per_session: usize,
    /// After a refused registry: the previous kernel's registry, read from
    /// this file instead of the kernel session `luod/registry` (which the
    /// refusal consumed).
    #[arg(
        long = "registry",
        value_name = "FILE",
        help = "Kernel backend, after a refused registry: restore the previous kernel's \
                sessions from the registry in FILE (for example registry.rejected, repaired, \
                or rewritten by the luod that reads it) instead of the kernel session \
                luod/registry"
    )]
    pub registry: Option<PathBuf>,
}

/// The default of [`Config::connections_per_uid`].
pub const DEFAULT_CONNECTIONS_PER_UID: u64 = 1024;

impl Config {
    /// A configuration with the `auto` backend, no quota and the default
    /// connection limit.
    pub fn new(socket: impl Into<PathBuf>) -> Config {
        Config {
            socket: socket.into(),
            backend: Backend::Auto,
            quota: Quota::default(),
            connections_per_uid: DEFAULT_CONNECTIONS_PER_UID,
            device: PathBuf::from(luo_sys::liveupdate::DEVICE),
            kernel_files_per_session: usize::MAX,
            keeper: false,
            registry: None,
        }
    }
}

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// [`Config::socket`] is empty.
    #[error("the socket path is empty; pass --socket PATH or set $LUOD_SOCKET")]
    NoSocketPath,
    /// Another agent answers on this socket.
    #[error("luod is already running at {}; stop it first or pass another --socket", .0.display())]
    AlreadyRunning(PathBuf),
    /// The socket path exists and is not a socket.
    #[error("{} exists and is not a socket; remove it or pass another --socket", .0.display())]
    NotASocket(PathBuf),
    /// The requested backend is not available.
    #[error("{0}")]
    Backend(String),
    /// An in-place upgrade's state cannot be used (the new image refuses it
    /// before taking anything over).
    #[error("refusing the upgrade: {0}")]
    Upgrade(String),
    /// The previous kernel's registry cannot be used (missing, corrupt or
    /// of another version): starting would lose track of its sessions.
    #[error("refusing to start: {0}")]
    Registry(String),
    /// A system call failed: what the agent was doing, and the errno.
    #[error("{what}: {errno}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        errno: luo_sys::Errno,
    },
}

impl AgentError {
    /// The exit status for this error: 2 for a configuration problem the
    /// user must fix on the command line, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::NoSocketPath | AgentError::Backend(_) => 2,
            _ => 1,
        }
    }

    pub(crate) fn sys(what: impl Into<String>, errno: impl Into<luo_sys::Errno>) -> AgentError {
        AgentError::Sys {
            what: what.into(),
            errno: errno.into(),
        }
    }
}

/// The socket path: `flag` (from `--socket`), else
/// [`luo::default_socket_path`] (`$LUOD_SOCKET`, else `/run/luod/luod.sock`
/// for root, `$XDG_RUNTIME_DIR/luod.sock` or `/run/user/UID/luod.sock` for
/// anyone else): one rule for the agent and its clients.
pub fn resolve_socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(luo::default_socket_path)
}

/// Runs an agent: raises the `RLIMIT_NOFILE` soft limit to the hard limit,
/// binds the socket ([`Agent::bind`]) and serves until SIGTERM or SIGINT
/// ([`Agent::stop_on_signals`]); the socket file is removed on the way out.
pub fn run(config: Config) -> Result<(), AgentError> {
    match (luo_sys::nofile_limit(), luo_sys::raise_nofile_limit()) {
        (Ok((before, _)), Ok((soft, hard))) => tracing::info!(
            "RLIMIT_NOFILE: soft limit {before} raised to {soft} (hard limit {hard})"
        ),
        (_, Err(e)) => tracing::warn!(
            "could not raise the RLIMIT_NOFILE soft limit to the hard limit: {}",
            e.description()
        ),
        (Err(e), Ok((soft, hard))) => tracing::info!(
            "RLIMIT_NOFILE: soft limit {soft}, hard limit {hard} (the old value is unknown: {})",
            e.description()
        ),
    }
    let mut agent = Agent::bind(config)?;
    agent.stop_on_signals()?;
    agent.serve()
}
