//! `luod`, the Live Update Orchestrator agent, as a library.
//!
//! The agent plays the part of the kernel's `/dev/liveupdate` for userspace:
//! clients connect to a `SOCK_SEQPACKET` Unix socket and speak the protocol
//! of `docs/protocol.md`; the agent keeps their sessions and preserved files
//! in a [`luo_core::Luo`] model. The `luod` binary is a thin wrapper around
//! [`run`]; tests and demos can run an agent in-process:
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
pub mod registry;
mod store;
pub use store::keeper_main;

pub use agent::upgrade::{fall_back, probe_answer, resume, FALLBACK_FLAG, STATE_FLAG};
pub use agent::Agent;
pub use luo_core::Quota;

/// Which implementation keeps the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// [`Backend::Kernel`] when the device can be opened, else
    /// [`Backend::Emulated`] (the log says why).
    #[default]
    Auto,
    /// Sessions live in the agent's memory; they survive a service's restart,
    /// not a kexec.
    Emulated,
    /// The kernel's `/dev/liveupdate`: memfds are also preserved in kernel
    /// sessions, so they survive a kexec (`luoctl update --kexec`); binding
    /// fails with [`AgentError::Backend`] when the device cannot be opened.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the listening socket goes.
    pub socket: PathBuf,
    /// Which backend keeps the sessions.
    pub backend: Backend,
    /// The per-uid quota (root is exempt).
    pub quota: Quota,
    /// Most agent connections one uid may have open at once (root is
    /// exempt), so that no user can take every descriptor the agent has.
    pub connections_per_uid: u64,
    /// The LUO device the kernel backend opens.
    pub device: PathBuf,
    /// Whether copies of the custody descriptors are kept outside the agent
    /// (systemd's fd store under `$NOTIFY_SOCKET`, else a keeper process),
    /// so that a crash loses nothing. The keeper is the running binary
    /// started with `--keeper-process`, so only the `luod` binary sets this
    /// (unless `--keeper off`); [`Config::new`] leaves it off.
    pub keeper: bool,
    /// Most files the kernel backend puts in one kernel session before it
    /// opens another for the same agent session (a kernel that refuses
    /// more, with `ENOSPC`, also gets another).
    pub kernel_files_per_session: usize,
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
        }
    }
}

/// Why the agent could not start, or stopped.
#[derive(Debug)]
pub enum AgentError {
    /// [`Config::socket`] is empty.
    NoSocketPath,
    /// Another agent answers on this socket.
    AlreadyRunning(PathBuf),
    /// The socket path exists and is not a socket.
    NotASocket(PathBuf),
    /// The requested backend is not available.
    Backend(String),
    /// An in-place upgrade's state cannot be used (the new image refuses it
    /// before taking anything over).
    Upgrade(String),
    /// The previous kernel's registry cannot be used (missing, corrupt or
    /// of another version): starting would lose track of its sessions.
    Registry(String),
    /// A system call failed: what the agent was doing, and the errno.
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

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::NoSocketPath => write!(
                f,
                "the socket path is empty; pass --socket PATH or set $LUOD_SOCKET"
            ),
            AgentError::AlreadyRunning(p) => write!(
                f,
                "luod is already running at {}; stop it first or pass another --socket",
                p.display()
            ),
            AgentError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; remove it or pass another --socket",
                p.display()
            ),
            AgentError::Backend(m) => f.write_str(m),
            AgentError::Registry(m) => write!(f, "refusing to start: {m}"),
            AgentError::Upgrade(m) => write!(f, "refusing the upgrade: {m}"),
            AgentError::Sys { what, errno } => write!(f, "{what}: {errno}"),
        }
    }
}

impl std::error::Error for AgentError {}

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
