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
use std::fmt::Display;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use luo_proto::{Errno, Error, RecvBuf};
use luo_sys::epoll::{EPOLLIN, EPOLLRDHUP};
use serde::{Deserialize, Serialize};

/// Most names in one keeper message (one descriptor each).
pub(crate) const BATCH: usize = luo_sys::SCM_MAX_FD;
/// How long the agent waits for the keeper to say what it holds.
pub(crate) const KEEPER_ASK_MS: i32 = 200;

/// What the agent asks of its keeper, in the agent protocol's envelope.
/// The agent writes names of any [`Serialize`] type that is a string (the
/// mirror's are formatted straight into the message); the keeper reads
/// `String`s.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ToKeeper<N = String> {
    /// Keep the attached descriptors under these names (one each).
    Put { names: Vec<N> },
    /// Drop the descriptors under these names.
    Remove { names: Vec<N> },
    /// Send a page of entries from index `start`: [`Taken`].
    Take {
        #[serde(default)]
        start: u64,
    },
    /// How many entries, and the keeper's pid: [`Counted`].
    Count {},
    /// The agent stops and leaves nothing to keep: exit.
    Bye {},
    /// Drop every entry of the session whose names carry `prefix`
    /// (`luo.f.PREFIX.*`, `luo.s.PREFIX.*`): a finished session in one
    /// message instead of one name per file. Only sent to a keeper that
    /// lists it in [`Counted::ops`]: older keepers take an unknown op for
    /// a broken link.
    Forget { prefix: N },
}

/// [`ToKeeper::Forget`]'s name, as [`Counted::ops`] lists it.
const FORGET: &str = "forget";
/// The optional ops this keeper takes, for [`Counted::ops`].
const KEEPER_OPS: &[&str] = &[FORGET];

/// A page of the keeper's entries, their descriptors attached.
#[derive(Debug, Serialize, Deserialize)]
struct Taken {
    names: Vec<String>,
    more: bool,
}

/// The keeper's answer to [`ToKeeper::Count`]. `files` and `sessions`
/// (entries that are custody files, session records) and `ops` are absent
/// from keepers of older binaries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Counted {
    pub(crate) entries: u64,
    pub(crate) pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sessions: Option<u64>,
    /// The ops it takes beyond those every keeper takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ops: Vec<String>,
}

/// The keeper's first message: it listens at its path.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {}

fn tell<N: Serialize>(
    link: BorrowedFd<'_>,
    m: &ToKeeper<N>,
    fds: &[BorrowedFd<'_>],
) -> Result<(), Error> {
    luo_proto::send(link, &luo_proto::encode_message(m, fds.len())?, fds)
}

fn answer<T: Serialize>(link: BorrowedFd<'_>, m: &T, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
    luo_proto::send(link, &luo_proto::encode_reply(m, fds.len())?, fds)
}

/// How the agent came by its keeper, for `luoctl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This agent started it.
    Started,
    /// It answered for a previous agent, and this one took its files back.
    Found,
    /// Carried over an in-place upgrade from a binary that did not say.
    Unknown,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Started => "started",
            Origin::Found => "found",
            Origin::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Origin {
        match s {
            "started" => Origin::Started,
            "found" => Origin::Found,
            _ => Origin::Unknown,
        }
    }
}

/// A named-descriptor store.
#[derive(Debug)]
pub(crate) enum Sink {
    /// The keeper: the agent's end of its connection, its pid, whether
    /// this agent started it, and whether it takes [`ToKeeper::Forget`]
    /// (see [`Sink::keeper`]).
    Keeper {
        link: OwnedFd,
        pid: u32,
        origin: Origin,
        forgets: bool,
    },
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
    pub(crate) fn put<N: Serialize + Display>(
        &self,
        entries: &[(N, BorrowedFd<'_>)],
    ) -> Result<(), Error> {
        match self {
            Sink::Keeper { link, .. } => {
                for chunk in entries.chunks(BATCH) {
                    let names = chunk.iter().map(|(n, _)| n).collect();
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
    pub(crate) fn remove<N: Serialize + Display>(&self, names: &[N]) -> Result<(), Error> {
        match self {
            Sink::Keeper { link, .. } => {
                for chunk in names.chunks(512) {
                    let names = chunk.iter().collect();
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

    /// The keeper at the other end of `link`, asked which optional ops it
    /// takes: one that does not answer in time, or is older and does not
    /// say, takes none.
    pub(crate) fn keeper(link: OwnedFd, pid: u32, origin: Origin) -> Sink {
        let mut sink = Sink::Keeper {
            link,
            pid,
            origin,
            forgets: false,
        };
        let ops = sink.count(KEEPER_ASK_MS).map(|c| c.ops).unwrap_or_default();
        if let Sink::Keeper { forgets, .. } = &mut sink {
            *forgets = ops.iter().any(|o| o == FORGET);
        }
        sink
    }

    /// Drops every entry whose names carry `prefix` in one message; `None`
    /// when this store drops entries by name only (systemd's, or a keeper
    /// that does not take [`ToKeeper::Forget`]).
    pub(crate) fn forget(&self, prefix: &str) -> Option<Result<(), Error>> {
        let Sink::Keeper {
            link,
            forgets: true,
            ..
        } = self
        else {
            return None;
        };
        Some(
            tell(link.as_fd(), &ToKeeper::Forget { prefix }, &[])
                .map_err(|e| fail("telling the keeper to drop a session failed", e.errno)),
        )
    }

    /// What `luoctl status` says about it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Sink::Keeper { pid, .. } => format!("keeper (pid {pid})"),
            Sink::Systemd(_) => "systemd fd store".to_string(),
        }
    }

    /// Asks the keeper what it holds; `None` when it does not answer within
    /// `ms` (the link then may hold a late answer: the next ask skips it).
    pub(crate) fn count(&self, ms: i32) -> Option<Counted> {
        let Sink::Keeper { link, .. } = self else {
            return None;
        };
        let link = link.as_fd();
        let mut buf = RecvBuf::default();
        // Nothing else reads this link: drop a late answer to an earlier ask.
        luo_sys::set_nonblocking(link, true).ok()?;
        while let Ok(Some(_)) = luo_proto::recv(link, &mut buf) {}
        let _ = luo_sys::set_nonblocking(link, false);
        tell(link, &ToKeeper::<String>::Count {}, &[]).ok()?;
        let ep = luo_sys::Epoll::new().ok()?;
        ep.add(link, 0, EPOLLIN).ok()?;
        let mut ready = Vec::new();
        ep.wait(&mut ready, 1, ms).ok()?;
        if ready.is_empty() {
            return None;
        }
        let m = luo_proto::recv(link, &mut buf).ok()??;
        m.reply::<Counted>().ok().map(|(c, _)| c)
    }

    /// Tells the keeper it may exit: the agent stops and leaves nothing.
    pub(crate) fn release(&self) {
        if let Sink::Keeper { link, .. } = self {
            let _ = tell(link.as_fd(), &ToKeeper::<String>::Bye {}, &[]);
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
        tell(link, &ToKeeper::<String>::Take { start }, &[])?;
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
    let mut listener = listen(path)?;
    // Without it (a directory it may not open), it waits as before.
    let mut place = Place::new(path)
        .map_err(|e| {
            eprintln!(
                "luod keeper (pid {}): {e}: it will not notice when no luod can reach it any more",
                std::process::id()
            )
        })
        .ok();
    let mut last_check = std::time::Instant::now();
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
        // With no agent connected, check now and then that one can still
        // reach this keeper (see `Place`).
        let timeout = if link.is_some() { -1 } else { ORPHAN_CHECK_MS };
        match ep.wait(&mut events, 8, timeout) {
            Ok(()) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("epoll: {e}")),
        }
        if link.is_none() && last_check.elapsed().as_millis() >= ORPHAN_CHECK_MS as u128 {
            last_check = std::time::Instant::now();
            let reach = place.as_ref().map_or(Reach::Yes, |p| p.check(path));
            match reach {
                Reach::Yes => {}
                Reach::Rebind => match listen(path) {
                    Ok(l) => {
                        let _ = ep.delete(listener.as_fd());
                        listener = l;
                        ep.add(listener.as_fd(), 0, EPOLLIN)
                            .map_err(|e| e.to_string())?;
                        match Place::new(path) {
                            Ok(p) => place = Some(p),
                            Err(e) => eprintln!("luod keeper (pid {}): {e}", std::process::id()),
                        }
                        eprintln!(
                            "luod keeper (pid {}): its socket {} was removed; listening there again, so that the next luod finds its {} entries",
                            std::process::id(),
                            path.display(),
                            entries.len()
                        );
                    }
                    Err(e) => eprintln!("luod keeper (pid {}): {e}", std::process::id()),
                },
                Reach::Lost(why) => {
                    report_dropped(path, &why, &entries);
                    return Ok(());
                }
            }
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

/// How often a keeper without an agent checks that it can still be reached.
const ORPHAN_CHECK_MS: i32 = 1000;

/// Listens at `path` (mode 0600).
fn listen(path: &Path) -> Result<OwnedFd, String> {
    use std::os::unix::fs::PermissionsExt;
    let listener = luo_sys::seqpacket_listen(path, 16)
        .map_err(|e| format!("listening on {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// Where the keeper listens, as it was when it started listening: its
/// directory (held open, and its device and inode) and its socket file's
/// device and inode. A luod finds the keeper by its path only; once the
/// path leads elsewhere, nothing can ever take the files back.
struct Place {
    dir: PathBuf,
    dir_file: std::fs::File,
    dir_id: (u64, u64),
    sock_id: (u64, u64),
}

/// What [`Place::check`] found.
enum Reach {
    /// The path still leads here.
    Yes,
    /// The directory is the same but the socket file is gone: listen again.
    Rebind,
    /// The path can never lead here again: why.
    Lost(String),
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

impl Place {
    fn new(path: &Path) -> Result<Place, String> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir_file =
            std::fs::File::open(&dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
        let dir_id = file_id(
            &dir_file
                .metadata()
                .map_err(|e| format!("{}: {e}", dir.display()))?,
        );
        let sock_id = file_id(
            &std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        Ok(Place {
            dir,
            dir_file,
            dir_id,
            sock_id,
        })
    }

    /// Only what proves the path cannot lead here again counts as lost: a
    /// directory removed (no links left) or replaced, or the socket file
    /// replaced by another's. Errors that prove nothing (`EACCES`) do not.
    fn check(&self, path: &Path) -> Reach {
        use std::io::ErrorKind::NotFound;
        use std::os::unix::fs::MetadataExt;
        let dir = self.dir.display();
        if self.dir_file.metadata().is_ok_and(|m| m.nlink() == 0) {
            return Reach::Lost(format!("its directory {dir} was removed"));
        }
        match std::fs::metadata(&self.dir) {
            Err(e) if e.kind() == NotFound => {
                return Reach::Lost(format!("its directory {dir} is gone"));
            }
            Ok(m) if file_id(&m) != self.dir_id => {
                return Reach::Lost(format!(
                    "{dir} is another directory now (the one it listened in was removed or moved)"
                ));
            }
            _ => {}
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == NotFound => Reach::Rebind,
            Ok(m) if file_id(&m) != self.sock_id => Reach::Lost(format!(
                "{} is another socket now (a new keeper's)",
                path.display()
            )),
            _ => Reach::Yes,
        }
    }
}

/// One session as the keeper holds it, for [`report_dropped`].
#[derive(Default)]
struct Held {
    /// The newest record: generation, and its owner, name and state.
    record: Option<(u64, String)>,
    files: u64,
    bytes: u64,
}

/// Logs every session the keeper drops (owner, name, state, files, bytes).
fn report_dropped(path: &Path, why: &str, entries: &BTreeMap<String, OwnedFd>) {
    use crate::agent::mirror::{parse_name, Entry};
    let me = std::process::id();
    let mut held: BTreeMap<&str, Held> = BTreeMap::new();
    let mut unknown = 0u64;
    for (name, fd) in entries {
        match parse_name(name) {
            Some(Entry::Record(prefix, gen)) => {
                let h = held.entry(prefix).or_default();
                if h.record.as_ref().is_none_or(|(g, _)| *g < gen) {
                    h.record = Some((gen, describe_record(fd.as_fd())));
                }
            }
            Some(Entry::File(prefix, _, _)) => {
                let h = held.entry(prefix).or_default();
                h.files += 1;
                h.bytes += luo_sys::fstat(fd.as_fd())
                    .ok()
                    .filter(|st| st.is_regular())
                    .map_or(0, |st| st.size);
            }
            None => unknown += 1,
        }
    }
    let files: u64 = held.values().map(|h| h.files).sum();
    let bytes: u64 = held.values().map(|h| h.bytes).sum();
    eprintln!(
        "luod keeper (pid {me}): {why}, so no luod can reach {} again: dropping {} sessions with {files} files ({bytes} bytes) and exiting",
        path.display(),
        held.len()
    );
    for h in held.values() {
        let what = h
            .record
            .as_ref()
            .map_or("a session without a record", |(_, d)| d.as_str());
        eprintln!(
            "luod keeper (pid {me}): dropped {what}: {} files, {} bytes",
            h.files, h.bytes
        );
    }
    if unknown > 0 {
        eprintln!("luod keeper (pid {me}): dropped {unknown} unknown entries");
    }
}

/// `session "NAME" of uid OWNER (STATE)` from a session record.
fn describe_record(fd: BorrowedFd<'_>) -> String {
    use std::os::unix::fs::FileExt;
    let mut text = vec![0u8; 4096];
    let n = fd
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.read_at(&mut text, 0))
        .unwrap_or(0);
    let v: serde_json::Value = serde_json::from_slice(&text[..n]).unwrap_or_default();
    format!(
        "session {:?} of uid {} ({})",
        v["name"].as_str().unwrap_or("?"),
        v["owner"]
            .as_u64()
            .map_or("?".to_string(), |o| o.to_string()),
        v["state"].as_str().unwrap_or("?")
    )
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
        ToKeeper::Forget { prefix } => {
            use crate::agent::mirror::parse_name;
            for kind in ["luo.f.", "luo.s."] {
                // A session's names sort together; the exact prefix is
                // checked, as `PREFIX.` also starts the names of `PREFIX.uGEN`.
                let from = format!("{kind}{prefix}.");
                let gone: Vec<String> = entries
                    .range(from.clone()..)
                    .take_while(|(n, _)| n.starts_with(&from))
                    .filter(|(n, _)| parse_name(n).is_some_and(|e| e.prefix() == prefix))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in gone {
                    entries.remove(&n);
                }
            }
        }
        ToKeeper::Count {} => {
            use crate::agent::mirror::{parse_name, Entry};
            let (mut files, mut sessions) = (0, 0);
            for n in entries.keys() {
                match parse_name(n) {
                    Some(Entry::File(..)) => files += 1,
                    Some(Entry::Record(..)) => sessions += 1,
                    None => {}
                }
            }
            let counted = Counted {
                entries: entries.len() as u64,
                pid: std::process::id(),
                files: Some(files),
                sessions: Some(sessions),
                ops: KEEPER_OPS.iter().map(|o| o.to_string()).collect(),
            };
            let _ = answer(l, &counted, &[]);
        }
        ToKeeper::Bye {} => return Served::Bye,
    }
    Served::One
}
