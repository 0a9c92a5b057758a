//! Client library for `luod`, the Live Update Orchestrator agent.
//!
//! A service keeps files (memfds, listening and connected sockets, eventfds,
//! pipes) across its own restart by handing them to `luod` in a named
//! *session*. The next instance of the service retrieves the session by name,
//! takes its files back by token, and finishes the session. The wire
//! protocol is described in `docs/protocol.md`; this crate speaks it for you.
//!
//! - [`Client`] is the agent connection (the counterpart of the kernel's
//!   `/dev/liveupdate`): create, retrieve and inspect sessions.
//! - [`Session`] is a session handle, a file descriptor like the kernel's
//!   session fd: preserve and retrieve files, hand over, finish. Closing the
//!   last copy of an outgoing session's handle aborts the session.
//!
//! Every call is synchronous and returns a typed [`Error`] carrying the errno
//! (the kernel's, where the kernel has one) and a message that says what went
//! wrong.
//!
//! # Example
//!
//! The old process preserves a memfd holding its state and its listening
//! socket, then hands the session over:
//!
//! ```no_run
//! use std::io::Write;
//! use std::net::TcpListener;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const STATE: u64 = 1;
//! const LISTENER: u64 = 2;
//!
//! let luo = luo::Client::connect()?;
//! let session = luo.create_session("kv")?;
//!
//! let mut state = std::fs::File::from(luo::memfd_create("kv-state")?);
//! state.write_all(b"everything the next process needs")?;
//! let listener = TcpListener::bind("127.0.0.1:8080")?;
//!
//! session.preserve(STATE, &state)?;
//! session.preserve(LISTENER, &listener)?;
//! session.handover()?; // the session is now waiting for the next process
//! # Ok(()) }
//! ```
//!
//! The next process retrieves the session and its files, and finishes it:
//!
//! ```no_run
//! use std::io::{Read, Seek};
//! use std::net::TcpListener;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # const STATE: u64 = 1;
//! # const LISTENER: u64 = 2;
//! let luo = luo::Client::connect()?;
//! let session = luo.retrieve_session("kv")?;
//!
//! let mut state = std::fs::File::from(session.retrieve_fd(STATE)?);
//! let listener = TcpListener::from(session.retrieve_fd(LISTENER)?);
//! session.finish()?; // luod lets go of the files
//!
//! let mut saved = String::new();
//! state.rewind()?;
//! state.read_to_string(&mut saved)?;
//! // ... serve on `listener` from where the old process left off.
//! # drop(listener);
//! # Ok(()) }
//! ```
//!
//! Errors carry the errno, for code to match on, and print as a sentence for
//! people:
//!
//! ```
//! use luo::{Errno, Error};
//!
//! let e = Error::new(Errno::EEXIST, "an outgoing session named 'kv' already exists");
//! assert_eq!(e.errno, Errno::EEXIST);
//! assert_eq!(e.to_string(), "an outgoing session named 'kv' already exists (EEXIST)");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

mod client;
mod session;
mod wire;

pub use client::{Client, KexecPlan};
pub use luo_proto::ops::Upgraded;
pub use luo_proto::types::{
    FileStatus, Identity, IdentityKind, KeeperStatus, LostFile, Preflight, PreflightSession, Quota,
    RetrieveStatus, SessionInfo, SessionState, Status, Usage,
};
pub use luo_proto::{Errno, Error, Value};
pub use session::Session;

/// Result of a request to `luod`.
///
/// ```
/// /// Retrieves the session a previous instance handed over, or starts afresh.
/// fn session(luo: &luo::Client, name: &str) -> luo::Result<(luo::Session, bool)> {
///     match luo.retrieve_session(name) {
///         Ok(s) => Ok((s, true)),
///         Err(e) if e.errno == luo::Errno::ENOENT => Ok((luo.create_session(name)?, false)),
///         Err(e) => Err(e),
///     }
/// }
/// ```
pub type Result<T> = std::result::Result<T, Error>;

/// Where `luod` listens: `$LUOD_SOCKET` if set and non-empty; else
/// `/run/luod/luod.sock` for root (effective uid 0); else
/// `$XDG_RUNTIME_DIR/luod.sock`; else `/run/user/<euid>/luod.sock`.
///
/// The agent uses the same function, so a client and an agent started by the
/// same user in the same environment agree without configuration.
///
/// ```
/// let path = luo::default_socket_path();
/// if std::env::var_os("LUOD_SOCKET").is_none_or(|s| s.is_empty()) {
///     assert!(path.ends_with("luod.sock"));
/// }
/// ```
pub fn default_socket_path() -> PathBuf {
    socket_path_from(
        std::env::var_os("LUOD_SOCKET"),
        luo_sys::geteuid(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn socket_path_from(luod_socket: Option<OsString>, euid: u32, xdg: Option<OsString>) -> PathBuf {
    let nonempty = |v: Option<OsString>| v.filter(|s| !s.is_empty());
    if let Some(p) = nonempty(luod_socket) {
        return p.into();
    }
    if euid == 0 {
        return "/run/luod/luod.sock".into();
    }
    match nonempty(xdg) {
        Some(dir) => PathBuf::from(dir).join("luod.sock"),
        None => format!("/run/user/{euid}/luod.sock").into(),
    }
}

/// A new memfd (`memfd_create(2)` with `MFD_CLOEXEC`), the usual home for
/// state a service wants to keep across its restart: write the state into
/// it, then [`Session::preserve`] it.
///
/// ```
/// use std::io::{Read, Seek, Write};
///
/// let mut f = std::fs::File::from(luo::memfd_create("state").unwrap());
/// f.write_all(b"hello").unwrap();
/// f.rewind().unwrap();
/// let mut s = String::new();
/// f.read_to_string(&mut s).unwrap();
/// assert_eq!(s, "hello");
/// ```
pub fn memfd_create(name: &str) -> std::io::Result<OwnedFd> {
    luo_sys::memfd_create(name, 0).map_err(|e| std::io::Error::from_raw_os_error(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn luod_socket_wins_when_set_and_not_empty() {
        assert_eq!(
            socket_path_from(os("/tmp/x.sock"), 1000, os("/run/user/1000")),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(
            socket_path_from(os("/tmp/x.sock"), 0, None),
            PathBuf::from("/tmp/x.sock")
        );
        // Empty is the same as unset.
        assert_eq!(
            socket_path_from(os(""), 0, None),
            PathBuf::from("/run/luod/luod.sock")
        );
    }

    #[test]
    fn root_uses_run_luod() {
        assert_eq!(
            socket_path_from(None, 0, os("/run/user/0")),
            PathBuf::from("/run/luod/luod.sock")
        );
    }

    #[test]
    fn users_use_xdg_runtime_dir_else_run_user() {
        assert_eq!(
            socket_path_from(None, 1000, os("/run/user/1000")),
            PathBuf::from("/run/user/1000/luod.sock")
        );
        assert_eq!(
            socket_path_from(None, 1000, os("")),
            PathBuf::from("/run/user/1000/luod.sock")
        );
        assert_eq!(
            socket_path_from(None, 1234, None),
            PathBuf::from("/run/user/1234/luod.sock")
        );
        assert_eq!(
            socket_path_from(os(""), 1000, os("/xdg")),
            PathBuf::from("/xdg/luod.sock")
        );
    }

    #[test]
    fn error_display_names_the_errno() {
        let e = Error::new(Errno::EBUSY, "file is busy");
        assert_eq!(e.to_string(), "file is busy (EBUSY)");
        let e = Error::new(Errno(9999), "odd");
        assert_eq!(e.to_string(), "odd (errno 9999)");
    }
}
