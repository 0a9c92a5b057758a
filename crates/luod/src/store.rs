//! Where copies of the agent's custody descriptors live so that they
//! outlive the agent: systemd's file descriptor store (under systemd,
//! `$NOTIFY_SOCKET`), or else the keeper, a minimal process the agent
//! starts that holds duplicates and hands them back.
//!
//! Both hold named descriptors. The agent puts one entry per custody file
//! and one per session (a small sealed memfd with its owner, name and
//! state), removes them when files leave custody, and a restarted agent
//! takes them all back (see `agent/mirror.rs`).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use luo_proto::{Errno, Error, RecvBuf};
use luo_sys::epoll::{EPOLLIN, EPOLLRDHUP};
use serde::{Deserialize, Serialize};

/// Most names in one keeper message (one descriptor each).
const BATCH: usize = luo_sys::SCM_MAX_FD;

/// What the agent asks of its keeper, in the agent protocol's envelope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ToKeeper {
    /// Keep the attached descriptors under these names (one each).
    Put { names: Vec<String> },
    /// Drop the descriptors under these names.
    Remove { names: Vec<String> },
    /// Send a page of entries from index `start`: [`Taken`].
    Take {
        #[serde(default)]
        start: u64,
    },
    /// How many entries, and the keeper's pid: [`Counted`].
    Count {},
    /// The agent stops and leaves nothing to keep: exit.
    Bye {},
}

/// A page of the keeper's entries, their descriptors attached.
#[derive(Debug, Serialize, Deserialize)]
struct Taken {
    names: Vec<String>,
    more: bool,
}

/// The keeper's answer to [`ToKeeper::Count`].
#[derive(Debug, Serialize, Deserialize)]
struct Counted {
    entries: u64,
    pid: u32,
}

/// The keeper's first message: it listens at its path.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {}

fn tell(link: BorrowedFd<'_>, m: &ToKeeper, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
    luo_proto::send(link, &luo_proto::encode_message(m, fds.len())?, fds)
}

fn answer<T: Serialize>(link: BorrowedFd<'_>, m: &T, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
    luo_proto::send(link, &luo_proto::encode_reply(m, fds.len())?, fds)
}

/// A named-descriptor store.
#[derive(Debug)]
pub(crate) enum Sink {
    /// The keeper: the agent's end of its connection, and its pid.
    Keeper { link: OwnedFd, pid: u32 },
    /// systemd's fd store, through `$NOTIFY_SOCKET`.
    Systemd(PathBuf),
}

fn fail(what: &str, e: impl Into<Errno>) -> Error {
    let e = e.into();
    Error::new(e, format!("{what}: {e}"))
}

impl Sink {
    /// Adds descriptors under names (a name may repeat: the keeper replaces,
    /// systemd keeps both until removed).
    pub(crate) fn put(&self, entries: &[(String, BorrowedFd<'_>)]) -> Result<(), Error> {
        match self {
            Sink::Keeper { link, .. } => {
                for chunk in entries.chunks(BATCH) {
                    let names = chunk.iter().map(|(n, _)| n.clone()).collect();
                    let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, f)| *f).collect();
                    tell(link.as_fd(), &ToKeeper::Put { names }, &fds)
                        .map_err(|e| fail("sending descriptors to the keeper failed", e.errno))?;
                }
                Ok(())
            }
            Sink::Systemd(path) => {
                for (name, fd) in entries {
                    let msg = format!("FDSTORE=1\nFDNAME={name}");
                    luo_sys::dgram_send_to(path, msg.as_bytes(), &[*fd])
                        .map_err(|e| fail("storing a descriptor with systemd failed", e))?;
                }
                Ok(())
            }
        }
    }

    /// Drops the descriptors stored under `names`.
    pub(crate) fn remove(&self, names: &[String]) -> Result<(), Error> {
        match self {
            Sink::Keeper { link, .. } => {
                for chunk in names.chunks(512) {
                    let names = chunk.to_vec();
                    tell(link.as_fd(), &ToKeeper::Remove { names }, &[]).map_err(|e| {
                        fail("telling the keeper to drop descriptors failed", e.errno)
                    })?;
                }
                Ok(())
            }
            Sink::Systemd(path) => {
                for name in names {
                    let msg = format!("FDSTOREREMOVE=1\nFDNAME={name}");
                    luo_sys::dgram_send_to(path, msg.as_bytes(), &[]).map_err(|e| {
                        fail("removing a descriptor from systemd's store failed", e)
                    })?;
                }
                Ok(())
            }
        }
    }

    /// What `luoctl status` says about it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Sink::Keeper { pid, .. } => format!("keeper (pid {pid})"),
            Sink::Systemd(_) => "systemd fd store".to_string(),
        }
    }

    /// Tells the keeper it may exit: the agent stops and leaves nothing.
    pub(crate) fn release(&self) {
        if let Sink::Keeper { link, .. } = self {
            let _ = tell(link.as_fd(), &ToKeeper::Bye {}, &[]);
        }
    }
}

/// Sends a state line to systemd (`READY=1`, `STATUS=...`), if
/// `$NOTIFY_SOCKET` is set. Failures are not fatal: systemd will say so.
pub(crate) fn notify(state: &str) {
    if let Some(path) = notify_socket() {
        if let Err(e) = luo_sys::dgram_send_to(&path, state.as_bytes(), &[]) {
            tracing::warn!("sd_notify to {} failed: {e}", path.display());
        }
    }
}

/// `$NOTIFY_SOCKET`, when set.
pub(crate) fn notify_socket() -> Option<PathBuf> {
    std::env::var_os("NOTIFY_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// The descriptors systemd passed (`$LISTEN_FDS` from 3 on, named by
/// `$LISTEN_FDNAMES`), when `$LISTEN_PID` is this process: the fd store's
/// contents after a restart, and the listening socket under socket
/// activation. The variables are removed, so that children do not see them.
pub(crate) fn listen_fds() -> Result<Vec<(String, OwnedFd)>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let n = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(n)) = (pid, n) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = n
        .parse()
        .map_err(|_| format!("LISTEN_FDS={n:?} is not a number"))?;
    let nums: Vec<i32> = (3..3 + n).collect();
    let fds = luo_sys::adopt_inherited(&nums)
        .map_err(|e| format!("taking the {n} descriptors systemd passed failed ({e})"))?;
    let mut names = names.split(':').map(str::to_string);
    Ok(fds
        .into_iter()
        .map(|f| (names.next().unwrap_or_else(|| "unknown".into()), f))
        .collect())
}

/// The keeper's socket: beside the agent's.
pub(crate) fn keeper_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".keeper");
    PathBuf::from(p)
}

/// Connects to a keeper left by a previous agent: `None` when none answers
/// (no socket file, or nobody listening). Any other failure (`EMFILE`,
/// `ENOMEM`, ...) is an error: a keeper may be there, and starting another
/// over it would lose the files it holds.
pub(crate) fn connect_keeper(path: &Path) -> Result<Option<(OwnedFd, u32)>, Error> {
    let link = match luo_sys::seqpacket_connect(path) {
        Ok(l) => l,
        Err(Errno::ENOENT | Errno::ECONNREFUSED) => return Ok(None),
        Err(e) => return Err(fail("connecting to the keeper failed", e)),
    };
    let cred = luo_sys::peer_cred(link.as_fd())
        .map_err(|e| fail("reading the keeper's credentials failed", e))?;
    // Only a keeper of root's or of our own uid may hand us files.
    let me = luo_sys::geteuid();
    if cred.uid != 0 && cred.uid != me {
        tracing::warn!(
            "{} is served by uid {}, not by root or uid {me}: ignored",
            path.display(),
            cred.uid
        );
        return Ok(None);
    }
    Ok(Some((link, cred.pid as u32)))
}

/// Starts a keeper: this binary with `--keeper-process PATH --keeper-link N`,
/// in its own process group (a Ctrl-C meant for luod must not reach it).
pub(crate) fn spawn_keeper(path: &Path) -> Result<(OwnedFd, u32), Error> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET)
        .map_err(|e| fail("creating the keeper's connection failed", e))?;
    let exe = std::env::current_exe().map_err(|e| fail("finding luod's binary failed", e))?;
    luo_sys::set_cloexec(theirs.as_fd(), false)
        .map_err(|e| fail("preparing the keeper's connection failed", e))?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    let child = std::process::Command::new(exe)
        .arg("--keeper-process")
        .arg(path)
        .arg("--keeper-link")
        .arg(raw.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| fail("starting the keeper failed", e))?;
    drop(theirs);
    // Not ready until it answers at `path`: a luod that crashed right after
    // this must find it there.
    let ep = luo_sys::Epoll::new().map_err(|e| fail("waiting for the keeper failed", e))?;
    ep.add(ours.as_fd(), 0, EPOLLIN)
        .map_err(|e| fail("waiting for the keeper failed", e))?;
    let mut ready = Vec::new();
    let _ = ep.wait(&mut ready, 1, KEEPER_START_MS);
    let mut buf = RecvBuf::default();
    let ready = match luo_proto::recv(ours.as_fd(), &mut buf) {
        Ok(Some(m)) => m.reply::<Ready>().is_ok(),
        _ => false,
    };
    match ready {
        true => Ok((ours, child.id())),
        _ => {
            let _ = luo_sys::try_reap(child.id());
            Err(Error::new(
                Errno::ETIMEDOUT,
                format!(
                    "the keeper did not get ready at {} within {KEEPER_START_MS} ms",
                    path.display()
                ),
            ))
        }
    }
}

/// How long a new keeper may take to answer at its path.
const KEEPER_START_MS: i32 = 10_000;

/// Takes every entry back from a keeper (it keeps its copies until told
/// to remove them).
pub(crate) fn take(link: BorrowedFd<'_>) -> Result<Vec<(String, OwnedFd)>, Error> {
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut buf = RecvBuf::default();
    loop {
        tell(link, &ToKeeper::Take { start }, &[])?;
        let m = loop {
            match luo_proto::recv(link, &mut buf) {
                Ok(Some(m)) => break m,
                Ok(None) => return Err(Error::new(Errno::ECONNRESET, "the keeper hung up")),
                Err(e) if e.errno == Errno::EAGAIN || e.errno == Errno::EINTR => continue,
                Err(e) => return Err(e),
            }
        };
        let (page, fds) = m.reply::<Taken>()?;
        check_page(&page, fds.len())?;
        start += page.names.len() as u64;
        out.extend(page.names.into_iter().zip(fds));
        if !page.more {
            return Ok(out);
        }
    }
}

/// A page of [`take`] names one entry per descriptor.
fn check_page(page: &Taken, nfds: usize) -> Result<(), Error> {
    if page.names.len() != nfds {
        return Err(Error::new(
            Errno::EPROTO,
            "the keeper sent names and descriptors that do not match",
        ));
    }
    Ok(())
}

/// For `crate::fuzzing`: a message decoded as the keeper decodes its
/// agent's (`to_keeper`) or as the agent decodes the keeper's (a page of
/// [`take`], else its first message), with `nfds` descriptors; the message
/// encoded again when it is accepted.
pub(crate) fn decode_keeper(bytes: &[u8], nfds: usize, to_keeper: bool) -> Result<Vec<u8>, Error> {
    if to_keeper {
        let m: ToKeeper = luo_proto::decode_message(bytes, nfds)?;
        return luo_proto::encode_message(&m, nfds);
    }
    match luo_proto::decode_reply::<Taken>(bytes, nfds) {
        Ok(page) => check_page(&page, nfds).and_then(|()| luo_proto::encode_reply(&page, nfds)),
        Err(e) => match luo_proto::decode_reply::<Ready>(bytes, nfds) {
            Ok(r) => luo_proto::encode_reply(&r, nfds),
            Err(_) => Err(e),
        },
    }
}

/// `luod --keeper-process PATH --keeper-link N`: the keeper process. It holds the
/// descriptors its agent puts, answers at PATH for a restarted agent, and
/// exits when its agent leaves it nothing (or says goodbye).
pub fn keeper_main(path: &Path, link: i32) -> ExitCode {
    match keeper(path, link) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("luod keeper: {e}");
            ExitCode::from(1)
        }
    }
}

fn keeper(path: &Path, link: i32) -> Result<(), String> {
    // It holds as many descriptors as its agent.
    let _ = luo_sys::raise_nofile_limit();
    // luod's blocked SIGTERM and SIGINT came along with the exec.
    let _ = luo_sys::unblock_all_signals();
    let mut fds =
        luo_sys::adopt_inherited(&[link]).map_err(|e| format!("--keeper-link {link}: {e}"))?;
    let mut link = fds.pop();
    // A stale socket file of a keeper that died.
    let _ = std::fs::remove_file(path);
    let listener = luo_sys::seqpacket_listen(path, 16)
        .map_err(|e| format!("listening on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    let ep = luo_sys::Epoll::new().map_err(|e| e.to_string())?;
    ep.add(listener.as_fd(), 0, EPOLLIN)
        .map_err(|e| e.to_string())?;
    if let Some(l) = &link {
        ep.add(l.as_fd(), 1, EPOLLIN | EPOLLRDHUP)
            .map_err(|e| e.to_string())?;
        // Listening at `path` now: the agent may go on.
        let _ = answer(l.as_fd(), &Ready {}, &[]);
    }
    let me = luo_sys::geteuid();
    let mut buf = RecvBuf::default();
    let mut entries: BTreeMap<String, OwnedFd> = BTreeMap::new();
    let mut events = Vec::new();
    loop {
        match ep.wait(&mut events, 8, -1) {
            Ok(()) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("epoll: {e}")),
        }
        for &(key, _) in &events {
            if key == 0 {
                while let Ok(c) = luo_sys::accept(listener.as_fd()) {
                    let ok = luo_sys::peer_cred(c.as_fd()).is_ok_and(|p| p.uid == 0 || p.uid == me);
                    if !ok {
                        continue;
                    }
                    // A restarted agent may connect before the old one's
                    // hang-up was read: read what the old link still has.
                    if let Some(l) = &link {
                        let _ = luo_sys::set_nonblocking(l.as_fd(), true);
                        loop {
                            match serve_one(l.as_fd(), &mut buf, &mut entries) {
                                Served::One => continue,
                                Served::Idle => break,
                                Served::Gone => {
                                    let _ = ep.delete(l.as_fd());
                                    link = None;
                                    break;
                                }
                                Served::Bye => {
                                    let _ = std::fs::remove_file(path);
                                    return Ok(());
                                }
                            }
                        }
                        if let Some(l) = &link {
                            let _ = luo_sys::set_nonblocking(l.as_fd(), false);
                        }
                    }
                    // One agent at a time.
                    if link.is_some() {
                        continue;
                    }
                    let _ = luo_sys::set_nonblocking(c.as_fd(), false);
                    if ep.add(c.as_fd(), 1, EPOLLIN | EPOLLRDHUP).is_ok() {
                        link = Some(c);
                    }
                }
                continue;
            }
            let Some(l) = &link else { continue };
            match serve_one(l.as_fd(), &mut buf, &mut entries) {
                Served::One | Served::Idle => {}
                Served::Gone => {
                    // The agent is gone. Nothing to keep: done.
                    let l = link.take().expect("link");
                    let _ = ep.delete(l.as_fd());
                    if entries.is_empty() {
                        let _ = std::fs::remove_file(path);
                        return Ok(());
                    }
                }
                Served::Bye => {
                    let _ = std::fs::remove_file(path);
                    return Ok(());
                }
            }
        }
    }
}

/// What [`serve_one`] found.
enum Served {
    /// A message, handled.
    One,
    /// Nothing to read now.
    Idle,
    /// The agent hung up.
    Gone,
    /// The agent stopped with nothing to keep.
    Bye,
}

fn serve_one(
    l: BorrowedFd<'_>,
    buf: &mut RecvBuf,
    entries: &mut BTreeMap<String, OwnedFd>,
) -> Served {
    let (m, fds) = match luo_proto::recv(l, buf) {
        Ok(Some(d)) => match d.message::<ToKeeper>() {
            Ok(m) => m,
            Err(_) => return Served::Gone,
        },
        Ok(None) => return Served::Gone,
        Err(e) if e.errno == Errno::EAGAIN || e.errno == Errno::EINTR => return Served::Idle,
        Err(_) => return Served::Gone,
    };
    match m {
        ToKeeper::Put { names } => {
            for (n, fd) in names.into_iter().zip(fds) {
                entries.insert(n, fd);
            }
        }
        ToKeeper::Remove { names } => {
            for n in names {
                entries.remove(&n);
            }
        }
        ToKeeper::Take { start } => {
            let start = start as usize;
            let page: Vec<(&String, &OwnedFd)> = entries.iter().skip(start).take(BATCH).collect();
            let more = start + page.len() < entries.len();
            let names = page.iter().map(|(n, _)| (*n).clone()).collect();
            let fds: Vec<BorrowedFd<'_>> = page.iter().map(|(_, f)| f.as_fd()).collect();
            if answer(l, &Taken { names, more }, &fds).is_err() {
                return Served::Gone;
            }
        }
        ToKeeper::Count {} => {
            let counted = Counted {
                entries: entries.len() as u64,
                pid: std::process::id(),
            };
            let _ = answer(l, &counted, &[]);
        }
        ToKeeper::Bye {} => return Served::Bye,
    }
    Served::One
}
