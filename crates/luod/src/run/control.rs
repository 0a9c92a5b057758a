//! The supervisor's control socket: `<luod socket>.run/NAME.sock`, mode
//! 0600, `SOCK_SEQPACKET`; one typed request, one typed reply, in
//! luo-proto's envelope ([`luo_proto::encode_message`]).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use luo::{Errno, Error};
use serde::{Deserialize, Serialize};

use super::listen::ListenSpec;

/// A request to a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Restart the service, with a new command if given; the reply comes
    /// when the restart has succeeded or was rolled back.
    Restart {
        /// The command from now on, if the restart succeeds.
        command: Option<Vec<String>>,
    },
    /// Describe the service.
    Service {},
}

/// A supervisor's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// The new instance is ready (and the old one stopped, or stopping).
    Restarted {
        /// The new main pid.
        pid: i32,
    },
    /// The restart failed and was rolled back.
    RolledBack {
        /// What happened.
        message: String,
    },
    /// The service.
    Service {
        /// Its description.
        service: ServiceInfo,
    },
    /// The request was refused.
    Refused {
        /// Why.
        message: String,
    },
}

/// A service as `luoctl services` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// The supervisor's pid.
    pub supervisor: i32,
    /// Its command.
    pub command: Vec<String>,
    /// The main pid of the serving instance.
    pub pid: Option<i32>,
    /// starting, ready, reloading, stopping, or `down` between a crash and
    /// the next start.
    pub state: String,
    /// The last `STATUS=`.
    pub status: Option<String>,
    /// `overlap` or `stop-start`.
    pub mode: String,
    /// The listeners.
    pub listeners: Vec<ListenerInfo>,
    /// The stored fds.
    pub stored: Vec<StoredInfo>,
    /// Restarts (crashes and requested ones).
    pub restarts: u64,
    /// Restarts rolled back.
    pub rollbacks: u64,
    /// A restart in progress: the new instance's pid.
    pub restarting: Option<i32>,
}

/// A listener in [`ServiceInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerInfo {
    /// Its name and address.
    pub spec: ListenSpec,
    /// Its token in the session.
    pub token: u64,
}

/// A stored fd in [`ServiceInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredInfo {
    /// Its `FDNAME=`.
    pub name: String,
    /// What kind of file.
    pub kind: String,
    /// Dropped on hang-up (`FDPOLL`).
    pub poll: bool,
    /// Its token in the session.
    pub token: u64,
    /// Stored by an instance that is not ready yet.
    pub pending: bool,
}

/// The directory of the control sockets for the luod at `socket`.
pub fn run_dir(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_os_string();
    s.push(".run");
    PathBuf::from(s)
}

/// The control socket of service `name`.
pub fn socket_path(socket: &Path, name: &str) -> PathBuf {
    run_dir(socket).join(format!("{name}.sock"))
}

/// Whether `name` may name a service: 1 to 63 (the longest session name,
/// since it names the service's luod session too) of `A-Za-z0-9._@-`, not
/// starting with `.` or `-`.
pub fn name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= luo_core::MAX_SESSION_NAME
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// Sends one message.
pub fn send<T: Serialize>(sock: &OwnedFd, msg: &T) -> luo::Result<()> {
    let bytes = luo_proto::encode_message(msg, 0)?;
    luo_proto::send(sock.as_fd(), &bytes, &[])
}

/// Receives one message; `None` when the peer hung up.
pub fn recv<T: serde::de::DeserializeOwned>(sock: &OwnedFd) -> luo::Result<Option<T>> {
    let mut buf = luo_proto::RecvBuf::default();
    match luo_proto::recv(sock.as_fd(), &mut buf)? {
        None => Ok(None),
        Some(d) => Ok(Some(d.message::<T>()?.0)),
    }
}

/// Asks the supervisor of `name` (blocking until it answers).
pub fn call(socket: &Path, name: &str, req: &Request) -> luo::Result<Reply> {
    let path = socket_path(socket, name);
    let sock = luo_sys::seqpacket_connect(&path).map_err(|e| {
        Error::new(
            e,
            format!("no supervisor for '{name}' at {}: {e}", path.display()),
        )
    })?;
    send(&sock, req)?;
    recv::<Reply>(&sock)?.ok_or_else(|| Error::new(Errno::ECONNRESET, "the supervisor hung up"))
}

/// Every service with a control socket next to the luod at `socket`.
pub fn names(socket: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run_dir(socket))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let n = n.strip_suffix(".sock")?.to_string();
            name_is_valid(&n).then_some(n)
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert_eq!(
            socket_path(Path::new("/run/luod/luod.sock"), "web"),
            Path::new("/run/luod/luod.sock.run/web.sock")
        );
        assert!(name_is_valid("web-1.a@b_c"));
        assert!(name_is_valid(&"x".repeat(63)));
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(64)] {
            assert!(!name_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn messages_round_trip_and_unknown_fields_are_refused() {
        let r = Request::Restart {
            command: Some(vec!["/bin/true".into()]),
        };
        let b = luo_proto::encode_message(&r, 0).unwrap();
        assert_eq!(luo_proto::decode_message::<Request>(&b, 0).unwrap(), r);
        let b = luo_proto::encode_message(&serde_json::json!({"request": "service", "x": 1}), 0)
            .unwrap();
        assert!(luo_proto::decode_message::<Request>(&b, 0).is_err());
        let b = luo_proto::encode_message(&serde_json::json!({"request": "reboot"}), 0).unwrap();
        assert!(luo_proto::decode_message::<Request>(&b, 0).is_err());
    }
}
