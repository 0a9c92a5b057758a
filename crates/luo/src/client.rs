//! The agent connection.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use luo_proto::ops::{
    AbortSession, CreateSession, FinishSession, GetStatus, HandoverSession, Kexec, ListSessions,
    PersistSession, RetrieveSession, Show, Update, Upgrade, Upgraded,
};
use luo_proto::types::{merge_details, merge_preflight, Preflight, SessionInfo, Status};
use luo_proto::{Call, Errno, Error, RecvBuf, Value};

use crate::wire;
use crate::{Result, Session};

/// What a kernel live update boots: see [`Client::kexec`].
#[derive(Debug, Clone, Copy)]
pub struct KexecPlan<'a> {
    /// The kernel image (a bzImage), opened for reading.
    pub kernel: BorrowedFd<'a>,
    /// The initramfs, if any.
    pub initrd: Option<BorrowedFd<'a>>,
    /// The new kernel's command line; it needs `liveupdate=on`.
    pub cmdline: &'a str,
    /// Go ahead although the preflight found problems (files that cannot
    /// cross would be lost).
    pub force: bool,
}

/// A connection to `luod`: the counterpart of the kernel's
/// `/dev/liveupdate`. Sessions are created and retrieved here, and the agent
/// is asked about its state.
///
/// The agent knows the caller by the uid of the process that connected
/// (`SO_PEERCRED`): sessions belong to that uid, and only root may act on
/// another uid's sessions (the `owner` arguments).
///
/// A `Client` is `Send` and `Sync`: requests from several threads are
/// serialised, one request and its reply at a time. Dropping it closes the
/// connection; sessions already created or retrieved live on in their
/// [`Session`] handles.
///
/// ```no_run
/// let luo = luo::Client::connect()?;
/// let status = luo.status()?;
/// println!("{} at epoch {}", status.agent, status.epoch);
/// # Ok::<(), luo::Error>(())
/// ```
pub struct Client {
    fd: OwnedFd,
    path: PathBuf,
    /// Held for one request and its reply; the receive buffer comes with it.
    lock: Mutex<RecvBuf>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.path)
            .finish()
    }
}

/// The error for a failed `connect(2)` to `path`, saying what to do.
fn connect_error(path: &Path, errno: Errno) -> Error {
    let path = path.display();
    let why = match errno {
        Errno::ENOENT => "no such socket (is luod running? start it with `luod`, or set LUOD_SOCKET or --socket)".to_string(),
        Errno::ECONNREFUSED => "connection refused (the socket exists but nobody is listening: luod may have exited; start it again with `luod`, or set LUOD_SOCKET or --socket)".to_string(),
        Errno::EACCES | Errno::EPERM => "permission denied (the socket or a directory above it is not accessible to this user; check their permissions, or set LUOD_SOCKET or --socket)".to_string(),
        Errno::ENOTDIR => "a component of the path is not a directory (set LUOD_SOCKET or --socket to luod's socket)".to_string(),
        Errno::ENAMETOOLONG => "the path is too long for a Unix socket (at most 107 bytes; use a shorter LUOD_SOCKET or --socket)".to_string(),
        Errno::EAGAIN => "luod is not accepting connections now (its backlog is full); try again".to_string(),
        e => format!("{} (is luod running? start it with `luod`, or set LUOD_SOCKET or --socket)", e.description()),
    };
    Error::new(errno, format!("cannot connect to luod at {path}: {why}"))
}

impl Client {
    /// Connects to `luod` at [`default_socket_path`](crate::default_socket_path).
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// println!("connected to {}", luo.path().display());
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::connect_to`].
    pub fn connect() -> Result<Client> {
        Client::connect_to(crate::default_socket_path())
    }

    /// Connects to `luod` at `path`.
    ///
    /// # Errors
    ///
    /// `connect(2)`'s errno, with a message naming the path and saying what
    /// to do: `ENOENT` (no socket there: luod is not running, or is
    /// listening elsewhere), `ECONNREFUSED` (a stale socket: luod exited),
    /// `EACCES` (no permission to reach the socket).
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("luo-doc-nowhere");
    /// let e = luo::Client::connect_to(dir.join("luod.sock")).unwrap_err();
    /// assert_eq!(e.errno, luo::Errno::ENOENT);
    /// assert!(e.message.contains("is luod running?"));
    /// ```
    pub fn connect_to(path: impl AsRef<Path>) -> Result<Client> {
        let path = path.as_ref();
        let fd = luo_sys::seqpacket_connect(path).map_err(|e| connect_error(path, e))?;
        Ok(Client::from_parts(fd, path.to_path_buf()))
    }

    pub(crate) fn from_parts(fd: OwnedFd, path: PathBuf) -> Client {
        Client {
            fd,
            path,
            lock: Mutex::new(RecvBuf::default()),
        }
    }

    /// The socket path this client connected to.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect_to("/run/luod/luod.sock")?;
    /// assert_eq!(luo.path(), std::path::Path::new("/run/luod/luod.sock"));
    /// # Ok::<(), luo::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&self) -> wire::Line<'_> {
        wire::Line {
            sock: self.fd.as_fd(),
            lock: &self.lock,
        }
    }

    fn call_for_session<C: Call>(&self, req: &C) -> Result<Session> {
        let (_, mut fds) = self.line().call_with(req, &[], 1)?;
        let fd = fds.pop().ok_or_else(|| wire::unexpected("no handle"))?;
        Ok(Session::from(fd))
    }

    /// Sends one request that carries no descriptors and expects none back,
    /// and returns the whole successful reply (`"ok": true`, `"v"`, `"fds"`
    /// and the results). For tools such as `luoctl` that show the agent's
    /// replies as they are; programs should prefer the typed methods.
    ///
    /// `"v"` and `"fds"` are set for you. A request whose reply carries
    /// descriptors (`create_session`, `retrieve_session`) fails with
    /// `EPROTO`, and the descriptors are closed.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let reply = luo.raw_request(&serde_json::json!({"op": "status"}))?;
    /// println!("{reply:#}");
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The agent's refusal, or `EPROTO`/`ECONNRESET` as for every request.
    pub fn raw_request(&self, body: &Value) -> Result<Value> {
        let bytes = luo_proto::encode_message(body, 0)?;
        let mut buf = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (mut reply, _) = wire::exchange::<Value>(self.fd.as_fd(), &mut buf, &bytes, &[], 0)?;
        if let Value::Object(m) = &mut reply {
            m.insert("ok".into(), true.into());
            m.insert("v".into(), luo_proto::VERSION.into());
            m.insert("fds".into(), 0.into());
        }
        Ok(reply)
    }

    /// Creates an outgoing session named `name` (1 to 63 bytes, no NUL),
    /// owned by the caller's uid, and returns its handle. Closing the last
    /// copy of the handle before [`Session::handover`] aborts the session:
    /// every file in it is let go.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` a bad name, `EEXIST` an outgoing session of that name exists,
    /// `ENOSPC` too many sessions, `EDQUOT` over the caller's session quota.
    pub fn create_session(&self, name: &str) -> Result<Session> {
        self.call_for_session(&CreateSession { name: name.into() })
    }

    /// Opens the caller's persistent outgoing session named `name`, or
    /// creates it persistent when the caller has no outgoing session of
    /// that name, and returns a handle on it.
    ///
    /// A persistent session is an outgoing session that closing its last
    /// handle does not abort: it stays open with every file (counted in the
    /// caller's quotas) until it is opened again by name, for a supervisor
    /// that may die at any moment and must lose nothing. Its files can be
    /// taken without retrieving them ([`Session::fetch`]) and let go one by
    /// one ([`Session::unpreserve`]); it survives an agent upgrade, an
    /// agent crash (with a keeper or systemd's fd store) and, for its
    /// memfds, a kernel live update. Handing it over makes it an ordinary
    /// incoming session.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.persist_session("web")?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:8080").expect("bind");
    /// session.preserve(1, &listener)?;
    /// drop(session); // the session stays, with the listener
    ///
    /// // Later, in another process:
    /// let session = luo.persist_session("web")?;
    /// let listener = std::net::TcpListener::from(session.fetch(&[1])?.remove(0));
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` a bad name, `EEXIST` the caller has an outgoing session of
    /// that name that is not persistent; creating one, as
    /// [`Client::create_session`]: `ENOSPC` too many sessions, `EDQUOT` over
    /// the caller's session quota. `EOPNOTSUPP` from an agent without
    /// persistent sessions (luod 0.1.0).
    pub fn persist_session(&self, name: &str) -> Result<Session> {
        self.call_for_session(&PersistSession { name: name.into() })
    }

    /// Retrieves the caller's incoming (handed-over) session named `name`
    /// and returns its handle.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.retrieve_session("kv")?;
    /// let state = session.retrieve_fd(1)?;
    /// session.finish()?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ENOENT` no incoming session of that name, `EINVAL` it was already
    /// retrieved (and its handle is still open somewhere).
    pub fn retrieve_session(&self, name: &str) -> Result<Session> {
        self.call_for_session(&RetrieveSession {
            name: name.into(),
            owner: None,
        })
    }

    /// As [`Client::retrieve_session`], for the session named `name` of uid
    /// `owner`. Only root may name another uid.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?; // as root
    /// let session = luo.retrieve_session_of(1000, "kv")?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::retrieve_session`], and `EPERM` for a caller other than
    /// root naming another uid.
    pub fn retrieve_session_of(&self, owner: u32, name: &str) -> Result<Session> {
        self.call_for_session(&RetrieveSession {
            name: name.into(),
            owner: Some(owner),
        })
    }

    /// An emulated live update: every outgoing session crosses (is handed
    /// over) at once and the epoch advances. Handles on the crossed sessions
    /// become stale (`ESTALE`); retrieve the sessions anew. Returns the new
    /// epoch.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let epoch = luo.update()?;
    /// println!("now at epoch {epoch}");
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EPERM` unless the caller is root or the agent's own uid, `EEXIST` an
    /// incoming session of the same name and owner as an outgoing one is
    /// unfinished, or the errno of a handler that refused to freeze.
    pub fn update(&self) -> Result<u64> {
        Ok(self.line().call(&Update {})?.epoch)
    }

    /// Upgrades the agent in place: luod re-executes itself as `binary`
    /// (default: the binary at its own path, as a package upgrade leaves
    /// it), same pid, keeping every connection, session and file; clients
    /// notice nothing. The reply comes from the new agent: its `pid`,
    /// `agent` (version) and `previous` version. Root or the agent's uid.
    ///
    /// # Errors
    ///
    /// `EPERM` for other users; `ENOEXEC` when `binary` is not a luod;
    /// `EOPNOTSUPP` when it cannot read this agent's state (the old
    /// agent keeps running in both cases); `exec`'s errno.
    pub fn upgrade_agent(&self, binary: Option<&Path>) -> Result<Upgraded> {
        self.line().call(&Upgrade {
            binary: binary.map(|b| b.to_string_lossy().into_owned()),
        })
    }

    fn kexec_request(
        &self,
        plan: &KexecPlan<'_>,
        dry_run: bool,
        start: Option<u64>,
    ) -> Result<Option<Preflight>> {
        let req = Kexec {
            cmdline: plan.cmdline.into(),
            initrd: plan.initrd.is_some(),
            dry_run,
            force: plan.force,
            start,
        };
        let mut fds = vec![plan.kernel];
        fds.extend(plan.initrd);
        Ok(self.line().call_with(&req, &fds, 0)?.0.preflight)
    }

    /// Every page of the preflight, once.
    fn preflight_pages(&self, plan: &KexecPlan<'_>) -> Result<Preflight> {
        let mut acc = None;
        let mut start = None;
        loop {
            let page = self
                .kexec_request(plan, true, start)?
                .ok_or_else(|| wire::unexpected("no \"preflight\""))?;
            let next = page.next;
            merge_preflight(&mut acc, page)?;
            match next {
                Some(n) if Some(n) <= start => {
                    return Err(wire::unexpected("a preflight page that does not advance"))
                }
                Some(n) => start = Some(n),
                None => break,
            }
        }
        let all = acc.expect("one page at least");
        if all
            .session_count
            .is_some_and(|n| n != all.sessions.len() as u64)
        {
            return Err(Error::new(
                Errno::EAGAIN,
                "the sessions changed while the preflight was being read; ask again",
            ));
        }
        Ok(all)
    }

    /// The preflight of a kernel live update: every session and file, what
    /// cannot cross a kexec and why, whether `liveupdate=on` is active now
    /// and on the next kernel's command line, and the `problems` that make
    /// [`Client::kexec`] refuse without `force` (docs/protocol.md,
    /// `kexec`). Root only.
    ///
    /// luod sends a large preflight in pages; this reads them all. When the
    /// sessions change between pages it starts again (a few times).
    ///
    /// # Errors
    ///
    /// `EPERM` unless the caller is root; `EINVAL` for an unreadable image;
    /// `EAGAIN` when the sessions kept changing while it read the pages.
    pub fn preflight(&self, plan: &KexecPlan<'_>) -> Result<Preflight> {
        let mut tries = 0;
        loop {
            match self.preflight_pages(plan) {
                Err(e) if e.errno == Errno::EAGAIN && tries < 4 => tries += 1,
                r => return r,
            }
        }
    }

    /// A kernel live update: luod loads the new kernel (`kexec_file_load`),
    /// writes its registry into a kernel session and reboots into it. On
    /// success the machine reboots and this call never returns; the new
    /// kernel's luod restores every session. Root only.
    ///
    /// # Errors
    ///
    /// `ECANCELED` when the preflight found problems and `force` is not set;
    /// `EOPNOTSUPP` on the emulated backend; the errno of `kexec_file_load`;
    /// or the kernel's errno when it refused to freeze a preserved file
    /// (then nothing changed).
    pub fn kexec(&self, plan: &KexecPlan<'_>) -> Result<()> {
        self.kexec_request(plan, false, None)?;
        Ok(())
    }

    /// The agent's state: version, backend, epoch, the caller's sessions,
    /// files and pinned bytes, connections and descriptors, quota and usage.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let s = luo.status()?;
    /// println!("{} sessions out, {} files, {} bytes pinned", s.outgoing, s.files, s.pinned_bytes);
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EPROTO` for a reply this library cannot read, `ECONNRESET` if the
    /// agent hung up.
    pub fn status(&self) -> Result<Status> {
        self.line().call(&GetStatus {})
    }

    /// Summaries (without files) of the caller's sessions, or of every
    /// session for root.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// for s in luo.sessions()? {
    ///     println!("{} (uid {}): {}, {} files", s.name_lossy(), s.owner, s.state.as_str(), s.file_count);
    /// }
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::status`].
    pub fn sessions(&self) -> Result<Vec<SessionInfo>> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let page = self.line().call(&ListSessions { start: Some(start) })?;
            all.extend(page.sessions);
            match page.next {
                Some(n) => start = n,
                None => return Ok(all),
            }
        }
    }

    /// Details, with files, of the sessions named `name` of the caller (or
    /// of uid `owner`, for root): one, or two when an outgoing and an
    /// incoming session share the name.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// for s in luo.show("kv", None)? {
    ///     for f in &s.files {
    ///         println!("{}: {} {} bytes", f.token, f.kind, f.size);
    ///     }
    /// }
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ENOENT` no session of that name, `EPERM` a caller other than root
    /// naming another uid.
    pub fn show(&self, name: &str, owner: Option<u32>) -> Result<Vec<SessionInfo>> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let page = self.line().call(&Show {
                name: name.into(),
                owner,
                start: Some(start),
            })?;
            merge_details(&mut all, page.sessions)?;
            match page.next {
                Some(n) => start = n,
                None => return Ok(all),
            }
        }
    }

    /// Hands over the outgoing session named `name` (of uid `owner`, for
    /// root) without holding its handle: the same as [`Session::handover`].
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// luo.handover("kv", None)?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ENOENT` no outgoing session of that name, `EEXIST` an incoming
    /// session of that name is unfinished, a handler's freeze errno, `EPERM`.
    pub fn handover(&self, name: &str, owner: Option<u32>) -> Result<()> {
        let name = name.into();
        self.line().call(&HandoverSession { name, owner }).map(drop)
    }

    /// Retrieves and finishes the incoming session named `name` (of uid
    /// `owner`, for root) in one step. Files that were never retrieved are
    /// discarded: this is how an operator clears a session nobody will come
    /// back for.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// luo.finish("kv", None)?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ENOENT` no such incoming session, `EINVAL` a process holds it
    /// (retrieved, handle open), `EBUSY` a handler cannot finish, `EPERM`.
    pub fn finish(&self, name: &str, owner: Option<u32>) -> Result<()> {
        let name = name.into();
        self.line().call(&FinishSession { name, owner }).map(drop)
    }

    /// Aborts the session named `name` (of uid `owner`, for root), whoever
    /// holds it: an open session (persistent or not) loses every file, as
    /// on the last close of its handle, and its handles go stale; a waiting
    /// incoming session is discarded, as [`Client::finish`] does with files
    /// nobody retrieved. luod logs who did it.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// luo.abort("kv", None)?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ENOENT` no such session, `EPERM` another uid's session and the
    /// caller is not root, `EBUSY` a retrieved session whose handle a
    /// process holds (or a handler cannot finish a file yet);
    /// `EOPNOTSUPP` from a luod older than this op.
    pub fn abort(&self, name: &str, owner: Option<u32>) -> Result<()> {
        let name = name.into();
        self.line().call(&AbortSession { name, owner }).map(drop)
    }
}
