//! The event loop: the listening socket, agent connections and session
//! handles, each with an outbox of replies.
//!
//! Start-up ([`Agent::bind`]) is in `startup.rs`, the socket path policy in
//! `socket.rs`, the in-place upgrade in `upgrade/`.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use luo_core::{Luo, SessionHandle, SessionState};
use luo_proto::{Errno, Error, RecvBuf};
use luo_sys::epoll::{EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP};
use luo_sys::Epoll;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::{AgentError, Backend};

mod kernel;
mod kexec;
pub(crate) mod mirror;
mod ops;
mod socket;
mod startup;
pub(crate) mod uapi;
pub(crate) mod upgrade;

/// Epoll key of the listening socket; connections get keys from 1 up, never
/// reused, so a stale event for a closed connection finds nothing.
const LISTENER: u64 = 0;
/// Epoll key of the signalfd (SIGTERM, SIGINT).
const SIGNALS: u64 = u64::MAX;
/// Most connections accepted per wakeup.
const MAX_ACCEPT: usize = 256;
/// How long the listener rests after `accept` ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Most over-quota connections kept at once to tell them why; past that
/// they are closed at once.
const MAX_REFUSED: usize = 64;
/// Most events taken from one `epoll_wait`: as many as it reports.
const MAX_EVENTS: usize = Epoll::MAX_EVENTS;

/// What a connection is.
#[derive(Debug, Clone)]
enum Kind {
    /// What `connect(2)` to the socket path gives; the peer's credentials
    /// were taken at accept.
    Agent { uid: u32, pid: i32 },
    /// A connection over its uid's quota, kept only to answer its first
    /// request with `EDQUOT` (so the client learns why), then closed.
    Refused { uid: u32, why: String },
    /// The agent's end of a session handle: it owns one luo handle.
    Handle {
        handle: SessionHandle,
        name: String,
        owner: u32,
    },
}

/// An encoded reply, with the descriptors to attach.
#[derive(Debug)]
pub(crate) struct Reply {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Instead of `fds` (then empty): the custody descriptors of these
    /// retrieved files of a session, in order. Sent at once they go out
    /// borrowed from the model, with no copy to make and close; a reply
    /// that has to wait in the outbox gets copies first ([`Reply::owned`]),
    /// since the model may change meanwhile. Never `Some` in an outbox.
    lent: Option<(SessionHandle, Vec<u64>)>,
}

impl Reply {
    /// A success carrying `body`'s members and `fds`. One too large for a
    /// message is an `EMSGSIZE` error (and the descriptors are closed).
    pub(crate) fn encode<T: Serialize>(body: &T, fds: Vec<OwnedFd>) -> Result<Reply, Error> {
        let bytes = Reply::encode_body(body, fds.len())?;
        Ok(Reply {
            bytes,
            fds,
            lent: None,
        })
    }

    /// A success carrying `body`'s members and the custody descriptors of
    /// the retrieved files `tokens` of session `h`.
    pub(crate) fn lending<T: Serialize>(
        body: &T,
        h: SessionHandle,
        tokens: Vec<u64>,
    ) -> Result<Reply, Error> {
        let bytes = Reply::encode_body(body, tokens.len())?;
        Ok(Reply {
            bytes,
            fds: Vec::new(),
            lent: Some((h, tokens)),
        })
    }

    fn encode_body<T: Serialize>(body: &T, nfds: usize) -> Result<Vec<u8>, Error> {
        luo_proto::encode_reply(body, nfds).map_err(|e| {
            Error::new(
                e.errno,
                format!(
                    "the reply does not fit in one message ({}); listings are paged, so this is a bug in luod",
                    e.message
                ),
            )
        })
    }

    fn refusal(e: &Error) -> Reply {
        Reply {
            bytes: luo_proto::encode_refusal(e),
            fds: Vec::new(),
            lent: None,
        }
    }

    /// The descriptors to send, borrowed (from the model for lent ones).
    fn borrow<'a>(&'a self, luo: &'a Luo) -> Result<Vec<BorrowedFd<'a>>, Error> {
        match &self.lent {
            None => Ok(self.fds.iter().map(AsFd::as_fd).collect()),
            Some((h, tokens)) => Ok(luo.retrieved_fds(*h, tokens)?),
        }
    }

    /// The reply with copies of what it borrows, to wait in an outbox; a
    /// refusal with the errno when a copy cannot be made (`EMFILE`).
    fn owned(self, luo: &Luo) -> Reply {
        let Some((h, tokens)) = &self.lent else {
            return self;
        };
        let copies = luo.retrieved_fds(*h, tokens).and_then(|lent| {
            lent.iter()
                .zip(tokens)
                .map(|(fd, &t)| {
                    fd.try_clone_to_owned().map_err(|e| {
                        Error::new(
                            e.into(),
                            "duplicating the retrieved file for a reply that has to wait failed; retrieve it again",
                        )
                        .with_token(t)
                    })
                })
                .collect::<Result<Vec<OwnedFd>, Error>>()
        });
        let fds = match copies {
            Ok(fds) => fds,
            Err(e) => return Reply::refusal(&e),
        };
        Reply {
            bytes: self.bytes,
            fds,
            lent: None,
        }
    }
}

/// What became of one send of a reply.
enum Sent {
    Done,
    /// Not now (the socket is full, or memory short for a moment): the
    /// reply waits for `EPOLLOUT`.
    Wait,
    /// For good: the connection is dead.
    Failed,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    kind: Kind,
    /// Replies not sent yet. While it is not empty the connection is not
    /// read (backpressure), so it holds at most one reply.
    outbox: VecDeque<Reply>,
    /// The events epoll watches for.
    interest: u32,
    /// Sending failed for good (the peer is gone or stopped reading for
    /// good): requests still queued are carried out, their replies dropped,
    /// until the hang-up.
    dead: bool,
    /// Sends of the first queued reply that failed for want of memory.
    send_retries: u8,
}

impl Conn {
    /// What the send `r` of a reply on this connection (epoll key `key`)
    /// means for it.
    fn sent(&mut self, key: u64, r: luo_proto::Result<()>) -> Sent {
        let e = match r {
            Ok(()) => return Sent::Done,
            Err(e) => e,
        };
        match e.errno {
            Errno::EAGAIN => Sent::Wait,
            // Short of memory for a moment: the reply stays queued and is
            // sent when epoll reports the socket writable again, a few
            // times at most (a busy loop otherwise).
            Errno::ENOMEM | Errno::ENOBUFS if self.send_retries < SEND_RETRIES => {
                self.send_retries += 1;
                debug!(
                    "connection {key}: {}; the reply will be sent again",
                    e.errno
                );
                Sent::Wait
            }
            _ => {
                debug!("connection {key}: {}; dropping its replies", e.errno);
                self.outbox.clear();
                self.dead = true;
                // A peer that is still there (the send failed for another
                // reason than its hang-up) must not wait for a reply that
                // will never come: it reads end-of-file. Requests it
                // already sent are still carried out.
                let _ = luo_sys::shutdown_write(self.fd.as_fd());
                Sent::Failed
            }
        }
    }
}

/// Most times a reply is sent again after `ENOMEM` or `ENOBUFS` before the
/// connection is given up as for any other send failure.
const SEND_RETRIES: u8 = 8;

/// A running agent: a bound, listening socket and the sessions it keeps.
///
/// [`Agent::bind`] returns once the socket accepts connections;
/// [`Agent::serve`] (or repeated [`Agent::poll`]) answers them.
#[derive(Debug)]
pub struct Agent {
    socket: PathBuf,
    /// `(st_dev, st_ino)` of the socket file we created, so that dropping the
    /// agent removes that file and not a successor's.
    socket_id: Option<(u64, u64)>,
    backend: Backend,
    /// The kernel backend's device and kernel sessions.
    kernel: Option<kernel::Shared>,
    euid: u32,
    listener: OwnedFd,
    epoll: Epoll,
    luo: Luo,
    conns: HashMap<u64, Conn>,
    next_key: u64,
    /// Set while the listener rests after `EMFILE`/`ENFILE`.
    paused_until: Option<Instant>,
    /// Open agent connections per uid, and the most one uid may have.
    conns_per_uid: HashMap<u32, u64>,
    max_conns_per_uid: u64,
    /// Connections of [`Kind::Refused`] open now.
    refused: usize,
    /// SIGTERM and SIGINT, once [`Agent::stop_on_signals`] asked for them.
    signals: Option<luo_sys::SignalFd>,
    /// The signal that asked the agent to stop.
    stop: Option<i32>,
    events: Vec<(u64, u32)>,
    /// Who holds the emulated `/dev/liveupdate` (`uapi.rs`).
    devices: uapi::Devices,
    /// Copies of the custody descriptors outside the agent (keeper or
    /// systemd), so that a crash loses nothing; `None` with `--keeper off`.
    mirror: Option<mirror::Mirror>,
    /// The receive buffer, reused from one request to the next; taken while
    /// a request is carried out.
    rbuf: Option<RecvBuf>,
}

fn is_transport_error(e: Errno) -> bool {
    matches!(e, Errno::EMSGSIZE | Errno::EINVAL | Errno::EPROTONOSUPPORT)
}

/// Quotes a session name for a log line (names may hold any character).
pub(crate) fn quoted(name: &str) -> String {
    format!("'{}'", name.escape_debug())
}

impl Agent {
    /// The path of the listening socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The backend in use (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connections open now: agent connections and session handles.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The session model, read-only (for tests and diagnostics).
    pub fn luo(&self) -> &Luo {
        &self.luo
    }

    /// Makes SIGTERM and SIGINT stop [`Agent::serve`] cleanly instead of
    /// killing the process: they are blocked in the calling thread and read
    /// from a signalfd in the loop. Call it before starting other threads,
    /// which inherit the block (the `luod` binary has none).
    pub fn stop_on_signals(&mut self) -> Result<(), AgentError> {
        use luo_sys::signal::{SIGINT, SIGTERM};
        let s = luo_sys::SignalFd::new(&[SIGTERM, SIGINT])
            .map_err(|e| AgentError::sys("setting up the signalfd", e))?;
        if let Err(e) = self.epoll.add(s.as_fd(), SIGNALS, EPOLLIN) {
            // Not unkillable: the signals end the process again.
            drop(s);
            let _ = luo_sys::unblock_all_signals();
            return Err(AgentError::sys("watching the signalfd", e));
        }
        self.signals = Some(s);
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT (with [`Agent::stop_on_signals`]), or
    /// forever. Returns an error only when the loop itself fails (epoll).
    ///
    /// Stopping drops every session: the files luod held are closed, and the
    /// log says how many sessions and files that was.
    pub fn serve(&mut self) -> Result<(), AgentError> {
        self.notify_ready();
        while self.stop.is_none() {
            self.poll(None)?;
        }
        crate::store::notify("STOPPING=1");
        let sessions = self.luo.summaries();
        let files: usize = sessions.iter().map(|s| s.file_count).sum();
        let name = match self.stop {
            Some(luo_sys::signal::SIGINT) => "SIGINT",
            _ => "SIGTERM",
        };
        // Open sessions end with their owners' connections, as after a crash.
        let waiting = sessions
            .iter()
            .filter(|s| s.state != SessionState::Open)
            .count();
        match &self.mirror {
            _ if sessions.is_empty() => {
                info!("stopping on {name}; no sessions were held");
                if let Some(m) = &self.mirror {
                    m.sink.release();
                }
            }
            Some(m) => info!(
                "stopping on {name}: {waiting} handed-over sessions stay in the {}; the next luod takes them back ({} open sessions end with their owners' connections)",
                m.describe(),
                sessions.len() - waiting
            ),
            None => warn!(
                "stopping on {name}: {} sessions with {files} files are dropped (--keeper off: luod holds files only while it runs)",
                sessions.len()
            ),
        }
        Ok(())
    }

    /// Tells systemd (under `Type=notify`) that the agent is ready, and
    /// what it holds.
    fn notify_ready(&self) {
        let s = self.luo.summaries();
        let files: usize = s.iter().map(|x| x.file_count).sum();
        crate::store::notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=backend {}, epoch {}, {} sessions, {files} files; listening on {}",
            std::process::id(),
            self.backend,
            self.luo.epoch(),
            s.len(),
            self.socket.display()
        ));
    }

    /// One turn of the event loop: waits up to `timeout` (`None`: until
    /// something happens) and handles what is ready.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<(), AgentError> {
        self.maybe_resume_listener();
        let mut wait = timeout;
        if let Some(until) = self.paused_until {
            let rest = until.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(rest, |w| w.min(rest)));
        }
        // Round up, so that a short rest does not turn into a busy loop.
        let ms = wait.map_or(-1, |d| {
            i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let mut events = std::mem::take(&mut self.events);
        match self.epoll.wait(&mut events, MAX_EVENTS, ms) {
            Ok(()) => {}
            Err(Errno::EINTR) => {}
            Err(e) => {
                self.events = events;
                return Err(AgentError::sys("waiting for events", e));
            }
        }
        for &(key, ev) in &events {
            if key == LISTENER {
                self.accept_some();
            } else if key == SIGNALS {
                self.read_signals();
            } else {
                self.service(key, ev);
            }
        }
        self.events = events;
        self.maybe_resume_listener();
        Ok(())
    }

    fn read_signals(&mut self) {
        let Some(s) = &self.signals else {
            return;
        };
        loop {
            match s.read() {
                Ok(Some(sig)) => self.stop = Some(sig),
                Ok(None) => return,
                Err(e) => {
                    warn!("reading the signalfd failed: {e}");
                    return;
                }
            }
        }
    }

    fn maybe_resume_listener(&mut self) {
        let Some(until) = self.paused_until else {
            return;
        };
        if Instant::now() < until {
            return;
        }
        match self.epoll.add(self.listener.as_fd(), LISTENER, EPOLLIN) {
            Ok(()) => {
                self.paused_until = None;
                debug!("accepting connections again");
            }
            Err(e) => {
                warn!("could not watch the listening socket again ({e}); retrying shortly");
                self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
            }
        }
    }

    fn pause_listener(&mut self) {
        if self.paused_until.is_none() {
            let _ = self.epoll.delete(self.listener.as_fd());
        }
        self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
    }

    fn accept_some(&mut self) {
        if self.paused_until.is_some() {
            return;
        }
        for _ in 0..MAX_ACCEPT {
            match luo_sys::accept(self.listener.as_fd()) {
                Ok(fd) => self.add_agent_conn(fd),
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::EPROTO) => continue,
                // ECONNABORTED: the client gave up before we accepted it.
                Err(e) if std::io::Error::from(e).kind() == ErrorKind::ConnectionAborted => {
                    continue
                }
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    warn!(
                        "cannot accept connections: {e}; {} connections are open; pausing for {} ms (raise the descriptor limit with ulimit -n, or look for a client that leaks connections)",
                        self.conns.len(),
                        ACCEPT_BACKOFF.as_millis()
                    );
                    self.pause_listener();
                    return;
                }
                Err(e) => {
                    warn!(
                        "accept failed: {e}; pausing for {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    self.pause_listener();
                    return;
                }
            }
        }
    }

    fn add_agent_conn(&mut self, fd: OwnedFd) {
        let cred = match luo_sys::peer_cred(fd.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                debug!("dropping a connection whose credentials cannot be read: {e}");
                return;
            }
        };
        let open = self.conns_per_uid.get(&cred.uid).copied().unwrap_or(0);
        if cred.uid != 0 && open >= self.max_conns_per_uid {
            let why = format!(
                "uid {} has {open} connections to luod open, its quota (luod --quota-connections); close some",
                cred.uid
            );
            debug!(
                "refusing a connection from uid {} pid {}: {open} open, the quota",
                cred.uid, cred.pid
            );
            // Keep it long enough to answer its first request with the
            // reason, unless too many such connections are waiting already.
            if self.refused < MAX_REFUSED {
                let kind = Kind::Refused { uid: cred.uid, why };
                if self.add_conn(fd, kind).is_ok() {
                    self.refused += 1;
                }
            }
            return;
        }
        let kind = Kind::Agent {
            uid: cred.uid,
            pid: cred.pid,
        };
        if let Ok(key) = self.add_conn(fd, kind) {
            *self.conns_per_uid.entry(cred.uid).or_default() += 1;
            debug!("connection {key} from uid {} pid {}", cred.uid, cred.pid);
        }
    }

    /// Registers a non-blocking socket with epoll and the connection table.
    fn add_conn(&mut self, fd: OwnedFd, kind: Kind) -> Result<u64, Error> {
        let key = self.next_key;
        let interest = (EPOLLIN | EPOLLRDHUP) as u32;
        if let Err(e) = self.epoll.add(fd.as_fd(), key, interest as i32) {
            warn!("cannot watch a new connection: {e}");
            return Err(Error::new(
                e,
                "the agent cannot watch another socket; try again later",
            ));
        }
        self.next_key += 1;
        self.conns.insert(
            key,
            Conn {
                fd,
                kind,
                outbox: VecDeque::new(),
                interest,
                dead: false,
                send_retries: 0,
            },
        );
        Ok(key)
    }

    /// Creates a session handle: a socketpair whose agent end is watched and
    /// owns the luo handle that `make` returns; gives back the client's end.
    pub(crate) fn new_handle(
        &mut self,
        make: impl FnOnce(&mut Luo) -> luo_core::Result<SessionHandle>,
    ) -> Result<(OwnedFd, SessionHandle), Error> {
        let (ours, theirs) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).map_err(|e| {
            Error::new(
                e,
                format!(
                    "creating the session handle failed ({e}); the agent may be out of descriptors"
                ),
            )
        })?;
        luo_sys::set_nonblocking(ours.as_fd(), true)
            .map_err(|e| Error::new(e, "making the session handle non-blocking failed"))?;
        let handle = make(&mut self.luo)?;
        let (name, owner) = match (self.luo.name(handle), self.luo.owner(handle)) {
            (Ok(n), Ok(o)) => (String::from_utf8_lossy(n).into_owned(), o),
            _ => (String::new(), 0),
        };
        let kind = Kind::Handle {
            handle,
            name,
            owner,
        };
        if let Err(e) = self.add_conn(ours, kind) {
            let _ = self.luo.close(handle);
            return Err(e);
        }
        Ok((theirs, handle))
    }

    /// Handles readiness of a connection: sends what waits in its outbox,
    /// then, unless replies still wait, reads and answers one request. One
    /// per event: clients wait for each answer before they send again, so
    /// reading on until `EAGAIN` would cost a system call per request, and
    /// epoll (level-triggered) reports a connection with more to read at
    /// the next wait, which also lets busy connections take turns.
    fn service(&mut self, key: u64, ev: u32) {
        let hangup = ev & (EPOLLHUP | EPOLLRDHUP | EPOLLERR) as u32 != 0;
        self.flush(key);
        if self.answer_one(key, hangup) {
            self.update_interest(key);
        }
    }

    /// Reads and answers one request of connection `key`, unless replies
    /// wait in its outbox. False when the connection was dropped.
    fn answer_one(&mut self, key: u64, hangup: bool) -> bool {
        let Some(c) = self.conns.get(&key) else {
            return false;
        };
        if !c.outbox.is_empty() {
            return true;
        }
        let refused = matches!(c.kind, Kind::Refused { .. });
        let dead = c.dead;
        let mut buf = self.rbuf.take().unwrap_or_default();
        let got = luo_proto::recv(c.fd.as_fd(), &mut buf);
        let got = got.map(|d| {
            d.map(|d| {
                let reply = self.request(key, d);
                self.reply(key, reply);
            })
        });
        self.rbuf = Some(buf);
        match got {
            // Told why; done with it.
            Ok(Some(())) if refused => {
                self.drop_conn(key, None);
                return false;
            }
            Ok(Some(())) => {}
            // End of file, or an empty datagram. With a hang-up reported
            // (or the peer known gone) it is the end.
            Ok(None) if hangup || dead => {
                self.drop_conn(key, None);
                return false;
            }
            Ok(None) => self.reply(
                key,
                Err(Error::new(
                    Errno::EINVAL,
                    "empty message: every message is one JSON object",
                )),
            ),
            Err(e) if e.errno == Errno::EAGAIN => {}
            Err(e) if is_transport_error(e.errno) => {
                debug!("connection {key}: refused a message: {e}");
                self.reply(key, Err(e));
            }
            Err(e) if matches!(e.errno, Errno::ENOMEM | Errno::ENOBUFS) => {
                warn!("connection {key}: receiving failed: {e}; will retry");
            }
            Err(e) => {
                let why = format!("receiving failed: {e}");
                self.drop_conn(key, Some(&why));
                return false;
            }
        }
        true
    }

    /// Sends a reply at once when nothing waits before it, else queues it.
    fn reply(&mut self, key: u64, reply: Result<Reply, Error>) {
        let mut out = reply.unwrap_or_else(|e| Reply::refusal(&e));
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.dead {
            return;
        }
        if c.outbox.is_empty() {
            let fds = match out.borrow(&self.luo) {
                Ok(fds) => fds,
                // The lent files are retrieved just before: cannot happen.
                Err(e) => {
                    warn!("connection {key}: {e}");
                    out = Reply::refusal(&e);
                    Vec::new()
                }
            };
            let r = luo_proto::send(c.fd.as_fd(), &out.bytes, &fds);
            drop(fds);
            match c.sent(key, r) {
                // Sent: its own descriptors close here, lent ones stay.
                Sent::Done => c.send_retries = 0,
                Sent::Wait => c.outbox.push_back(out.owned(&self.luo)),
                Sent::Failed => {}
            }
            return;
        }
        c.outbox.push_back(out.owned(&self.luo));
        self.flush(key);
    }

    /// Sends queued replies until the socket is full.
    fn flush(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        while let Some(out) = c.outbox.front() {
            let fds: Vec<BorrowedFd<'_>> = out.fds.iter().map(AsFd::as_fd).collect();
            let r = luo_proto::send(c.fd.as_fd(), &out.bytes, &fds);
            drop(fds);
            match c.sent(key, r) {
                Sent::Done => {
                    // Sent: our copies of its descriptors close here.
                    c.outbox.pop_front();
                    c.send_retries = 0;
                }
                Sent::Wait | Sent::Failed => break,
            }
        }
    }

    fn update_interest(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        // While replies wait, only writability matters. Not EPOLLRDHUP: a
        // peer that shut down its writing side but does not read would make
        // it fire forever. A peer that is gone raises EPOLLHUP, which epoll
        // always reports; the send then fails and the connection is dropped.
        let want = if c.outbox.is_empty() {
            (EPOLLIN | EPOLLRDHUP) as u32
        } else {
            EPOLLOUT as u32
        };
        if want == c.interest {
            return;
        }
        match self.epoll.modify(c.fd.as_fd(), key, want as i32) {
            Ok(()) => c.interest = want,
            Err(e) => {
                let why = format!("cannot change what epoll watches: {e}");
                self.drop_conn(key, Some(&why));
            }
        }
    }

    /// Forgets a connection: its socket and queued descriptors close, and a
    /// session handle's luo handle is closed (the session reacts as to the
    /// last copy of a session fd closing). `why` is `None` for the normal
    /// end: the peer hung up.
    fn drop_conn(&mut self, key: u64, why: Option<&str>) {
        let Some(c) = self.conns.remove(&key) else {
            return;
        };
        let _ = self.epoll.delete(c.fd.as_fd());
        if let Some(why) = why {
            warn!("dropping connection {key}: {why}");
        }
        match c.kind {
            Kind::Agent { uid, pid } => {
                self.device_closed(key);
                if let Some(n) = self.conns_per_uid.get_mut(&uid) {
                    *n -= 1;
                    if *n == 0 {
                        self.conns_per_uid.remove(&uid);
                    }
                }
                debug!("connection {key} of uid {uid} pid {pid} closed")
            }
            Kind::Refused { uid, .. } => {
                self.refused -= 1;
                debug!("refused connection {key} of uid {uid} closed")
            }
            Kind::Handle {
                handle,
                name,
                owner,
            } => {
                self.close_handle(handle, &name, owner);
                self.flush_mirror();
            }
        }
    }

    /// Brings the mirror in line with what changed in the model since the
    /// last flush.
    pub(crate) fn flush_mirror(&mut self) {
        let changes = self.luo.take_changes();
        let Some(m) = &mut self.mirror else {
            return;
        };
        m.apply(&self.luo, &changes);
        m.replace_keeper(&self.luo, &self.socket);
    }

    fn close_handle(&mut self, h: SessionHandle, name: &str, owner: u32) {
        let before = self.luo.session_files(h, 0, 0);
        let implicit = self.luo.mode(h).is_ok_and(|m| m.finish_on_close);
        let _ = self.luo.close(h);
        let name = quoted(name);
        match before {
            Ok(s) if s.handles <= 1 => match s.state {
                SessionState::Open if s.persistent => info!(
                    "persistent session {name} of uid {owner}: its last handle closed; it stays open with its {} files",
                    s.file_count
                ),
                SessionState::Open => info!(
                    "session {name} of uid {owner} aborted: its last handle closed, {} files unpreserved",
                    s.file_count
                ),
                SessionState::Retrieved if implicit => info!(
                    "session {name} of uid {owner} finished implicitly: its handle closed before finish (the kernel's rule, for /dev/liveupdate sessions); files never retrieved were discarded"
                ),
                SessionState::Retrieved => info!(
                    "session {name} of uid {owner} returned to waiting: its handle closed before finish; its {} files stay in custody",
                    s.file_count
                ),
                SessionState::Finished => {
                    debug!("session {name} of uid {owner} is gone: finished, and its handle closed")
                }
                SessionState::Incoming => {
                    debug!("a handle of session {name} of uid {owner} closed")
                }
            },
            Ok(_) => debug!("a handle of session {name} of uid {owner} closed; others remain"),
            Err(_) => debug!(
                "a stale handle of session {name} of uid {owner} closed (the session crossed over)"
            ),
        }
    }
}
