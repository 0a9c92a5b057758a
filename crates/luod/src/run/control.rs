//! The supervisor's control socket: `<luod socket>.run/NAME.sock`, mode
//! 0600, `SOCK_SEQPACKET`; one typed request, one typed reply, in
//! luo-proto's envelope ([`luo_proto::encode_message`]).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use luo::{Errno, Error};
use luo_proto::json_len;
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
    /// Describe the service (one page of it).
    Service {
        /// The `next` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u64>,
    },
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
    /// The service: one page of it ([`page_service`]).
    Service {
        /// Its description, with one page of its lists.
        service: Box<ServiceInfo>,
        /// The `start` of the next page; absent on the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
        /// The same on every page while the lists do not change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<u64>,
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

/// Bytes of one message a page of [`page_service`] leaves for the envelope.
const PAGE_SLACK: usize = 512;

/// What a service's lists say, to tell pages of one description from
/// pages of a changed one.
fn fingerprint(s: &ServiceInfo) -> u64 {
    luo_proto::fingerprint(&(&s.command, &s.listeners, &s.stored))
}

/// One page of a service's description from item `start`, the items being
/// its command's arguments, then its listeners, then its stored fds: a fd
/// store of thousands (`--fdstore-max`), or a long command, is more than
/// one message. Returns the page, the next `start` (`None` on the last) and
/// the fingerprint. Every page has the other members whole; a page holds
/// at least one item, and no single item is near a message's size (an
/// argument is at most [`MAX_ARG`] bytes, a name 255).
pub fn page_service(all: &ServiceInfo, start: u64) -> (ServiceInfo, Option<u64>, u64) {
    let mut page = ServiceInfo {
        command: Vec::new(),
        listeners: Vec::new(),
        stored: Vec::new(),
        ..all.clone()
    };
    let room = luo_proto::MAX_MESSAGE - json_len(&page) - PAGE_SLACK;
    let (c, l) = (all.command.len() as u64, all.listeners.len() as u64);
    let total = c + l + all.stored.len() as u64;
    let mut used = 0;
    let mut i = start;
    while i < total {
        let len = if i < c {
            json_len(&all.command[i as usize])
        } else if i < c + l {
            json_len(&all.listeners[(i - c) as usize])
        } else {
            json_len(&all.stored[(i - c - l) as usize])
        } + 1;
        if used > 0 && used + len > room {
            break;
        }
        used += len;
        if i < c {
            page.command.push(all.command[i as usize].clone());
        } else if i < c + l {
            page.listeners.push(all.listeners[(i - c) as usize].clone());
        } else {
            page.stored.push(all.stored[(i - c - l) as usize].clone());
        }
        i += 1;
    }
    (page, (i < total).then_some(i), fingerprint(all))
}

/// The longest argument a supervised command may have, so that
/// `luoctl services` can always show it (the kernel allows 128 KiB).
pub const MAX_ARG: usize = 16 * 1024;

/// Refuses a command with an argument longer than [`MAX_ARG`] (`E2BIG`).
pub fn check_command(command: &[String]) -> luo::Result<()> {
    match command.iter().find(|a| a.len() > MAX_ARG) {
        None => Ok(()),
        Some(a) => Err(Error::new(
            Errno::E2BIG,
            format!(
                "an argument of the command is {} bytes; at most {MAX_ARG} (luoctl services shows the command)",
                a.len()
            ),
        )),
    }
}

/// The whole description of service `name`, every page of it; starts again
/// when the lists change between pages (a few times, then `EAGAIN`).
pub fn service(socket: &Path, name: &str) -> luo::Result<ServiceInfo> {
    let mut tries = 0;
    'again: loop {
        let mut acc: Option<(ServiceInfo, Option<u64>)> = None;
        let mut start = None;
        loop {
            let (page, next, print) = match call(socket, name, &Request::Service { start })? {
                Reply::Service {
                    service,
                    next,
                    fingerprint,
                } => (service, next, fingerprint),
                Reply::Refused { message } => return Err(Error::new(Errno::EINVAL, message)),
                _ => {
                    return Err(Error::new(
                        Errno::EPROTO,
                        "unexpected reply from the supervisor",
                    ))
                }
            };
            match &mut acc {
                None => acc = Some((*page, print)),
                Some((all, first)) => {
                    if print != *first {
                        tries += 1;
                        if tries > 4 {
                            return Err(Error::new(
                                Errno::EAGAIN,
                                "the service changed while it was being described; ask again",
                            ));
                        }
                        continue 'again;
                    }
                    all.command.extend(page.command);
                    all.listeners.extend(page.listeners);
                    all.stored.extend(page.stored);
                }
            }
            match next {
                Some(n) if Some(n) > start => start = Some(n),
                Some(_) => return Err(Error::new(Errno::EPROTO, "a page that does not advance")),
                None => return Ok(acc.expect("one page at least").0),
            }
        }
    }
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
    fn a_service_with_thousands_of_stored_fds_comes_in_pages_that_fit() {
        let all = ServiceInfo {
            name: "web".into(),
            supervisor: 1,
            command: (0..40)
                .map(|i| format!("--arg{i}={}", "x".repeat(MAX_ARG - 10)))
                .collect(),
            pid: Some(2),
            state: "ready".into(),
            status: Some("s".repeat(1024)),
            mode: "overlap".into(),
            listeners: (0..300)
                .map(|i| ListenerInfo {
                    spec: crate::run::listen::parse_spec(
                        &format!("tcp:127.0.0.1:{}", 1000 + i),
                        "web",
                    )
                    .unwrap(),
                    token: i,
                })
                .collect(),
            stored: (0..5000)
                .map(|i| StoredInfo {
                    name: format!("{i}-{}", "n".repeat(240)),
                    kind: "tcp-socket".into(),
                    poll: true,
                    token: 1000 + i,
                    pending: false,
                })
                .collect(),
            restarts: 0,
            rollbacks: 0,
            restarting: None,
        };
        let mut got: Option<ServiceInfo> = None;
        let mut start = 0;
        let mut pages = 0;
        loop {
            let (service, next, fingerprint) = page_service(&all, start);
            let reply = Reply::Service {
                service: Box::new(service),
                next,
                fingerprint: Some(fingerprint),
            };
            let bytes = luo_proto::encode_message(&reply, 0).expect("a page fits one message");
            let Reply::Service { service, .. } =
                luo_proto::decode_message::<Reply>(&bytes, 0).unwrap()
            else {
                unreachable!()
            };
            match &mut got {
                None => got = Some(*service),
                Some(g) => {
                    g.command.extend(service.command);
                    g.listeners.extend(service.listeners);
                    g.stored.extend(service.stored);
                }
            }
            pages += 1;
            match next {
                Some(n) => start = n,
                None => break,
            }
        }
        assert!(pages > 20, "{pages} pages");
        assert_eq!(got.unwrap(), all);
        assert_eq!(
            check_command(&["x".repeat(MAX_ARG + 1)]).unwrap_err().errno,
            Errno::E2BIG
        );
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
