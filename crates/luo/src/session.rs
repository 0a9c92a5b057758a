//! A session handle.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use luo_proto::ops::{Fetch, Finish, Handover, Info, Name, Preserve, Retrieve, Unpreserve};
use luo_proto::types::{merge_details, SessionInfo};
use luo_proto::{RecvBuf, MAX_FDS};

use crate::wire;
use crate::Result;

/// A handle on one session: a file descriptor, like the kernel's session
/// fd, given by [`Client::create_session`](crate::Client::create_session) and
/// [`Client::retrieve_session`](crate::Client::retrieve_session).
///
/// Holding the handle is the permission to use the session. It can be
/// duplicated ([`Session::try_clone`]), inherited across `exec`, or passed
/// to another process over `SCM_RIGHTS` and adopted there with
/// [`Session::from`]`(OwnedFd)`. When the last copy anywhere is closed, the
/// agent closes the session: an outgoing session is aborted (every file let
/// go), and a retrieved session that was not finished goes back to waiting
/// with its files still in custody. A persistent session
/// ([`Client::persist_session`](crate::Client::persist_session)) stays open
/// with its files.
///
/// Once the session has crossed ([`Session::handover`] or
/// [`Client::update`](crate::Client::update)), the handle is stale and every
/// request on it fails with `ESTALE`.
///
/// A `Session` is `Send` and `Sync`: requests from several threads, and on
/// copies made with [`Session::try_clone`], are serialised. Two *processes*
/// sharing a handle must not have requests outstanding on it at the same
/// time.
///
/// ```no_run
///
/// let luo = luo::Client::connect()?;
/// let session = luo.create_session("kv")?;
/// let memfd = luo::memfd_create("state").expect("memfd");
/// session.preserve(1, &memfd)?;
/// session.handover()?;
/// # Ok::<(), luo::Error>(())
/// ```
pub struct Session {
    fd: OwnedFd,
    /// Held for one request and its reply, by every copy; the receive
    /// buffer comes with it.
    lock: Arc<Mutex<RecvBuf>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl Session {
    fn line(&self) -> wire::Line<'_> {
        wire::Line {
            sock: self.fd.as_fd(),
            lock: &self.lock,
        }
    }

    /// One descriptor per token, asked for with `request` in messages of at
    /// most [`MAX_FDS`] tokens; the descriptors of earlier messages are
    /// closed if a later one is refused.
    fn fds_of<C: luo_proto::Call>(
        &self,
        tokens: &[u64],
        request: impl Fn(Vec<u64>) -> C,
    ) -> Result<Vec<OwnedFd>> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(MAX_FDS) {
            let (_, fds) = self
                .line()
                .call_with(&request(chunk.to_vec()), &[], chunk.len())?;
            out.extend(fds);
        }
        Ok(out)
    }

    /// The session's name.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// assert_eq!(session.name()?, "kv");
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ESTALE` once the session has crossed.
    pub fn name(&self) -> Result<String> {
        Ok(self.line().call(&Name {})?.name)
    }

    /// The session's detail: state, handles, and its files.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.retrieve_session("kv")?;
    /// for f in session.info()?.files {
    ///     println!("token {}: {} ({})", f.token, f.kind, f.handler);
    /// }
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `ESTALE` once the session has crossed.
    pub fn info(&self) -> Result<SessionInfo> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let page = self.line().call(&Info { start: Some(start) })?;
            merge_details(&mut all, vec![page.session])?;
            match page.next {
                Some(n) => start = n,
                None => return all.pop().ok_or_else(|| wire::unexpected("no session")),
            }
        }
    }

    /// Preserves the file `fd` refers to under `token`, which the next
    /// process will use to retrieve it. The agent keeps its own reference:
    /// the caller may close `fd` afterwards.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:8080").expect("bind");
    /// session.preserve(7, &listener)?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's, in its order: `EINVAL` the session is not outgoing,
    /// `EEXIST` the token is in use, `ENOSPC` the session is full, `EBADF`
    /// an `O_PATH` descriptor, `ENOENT` no handler for this kind of file,
    /// `EDQUOT` over quota, `EBUSY` the file is already in a session; then
    /// the handler's errno. `ESTALE` once the session has crossed.
    pub fn preserve(&self, token: u64, fd: impl AsFd) -> Result<()> {
        self.preserve_batch(&[(token, fd.as_fd())])
    }

    /// Preserves several files, each under its token, in order. The files
    /// travel in messages of at most [`luo_proto::MAX_FDS`] (253)
    /// descriptors.
    ///
    /// Preserving stops at the first refusal, and **the files before it stay
    /// preserved**: the error's [`token`](crate::Error::token) names the
    /// first file that was not preserved, and neither it nor any file after
    /// it in `files` was. To retry, fix the cause and preserve from that
    /// token on (or drop the session to abort it).
    ///
    /// An empty batch does nothing.
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    ///
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// let shards: Vec<_> = (0..1000)
    ///     .map(|i| luo::memfd_create(&format!("shard-{i}")).expect("memfd"))
    ///     .collect();
    /// let batch: Vec<_> = shards.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
    /// if let Err(e) = session.preserve_batch(&batch) {
    ///     eprintln!("stopped at token {:?}: {e}", e.token);
    /// }
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Session::preserve`], with `token` set.
    pub fn preserve_batch(&self, files: &[(u64, BorrowedFd<'_>)]) -> Result<()> {
        for chunk in files.chunks(MAX_FDS) {
            let tokens = chunk.iter().map(|&(t, _)| t).collect();
            let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|&(_, f)| f).collect();
            let n = match self.line().call_with(&Preserve { tokens }, &fds, 0) {
                Ok((r, _)) => r.preserved,
                Err(mut e) => {
                    // A refusal of the whole message (not of one file)
                    // names no token: none of this chunk was preserved.
                    e.token.get_or_insert(chunk[0].0);
                    return Err(e);
                }
            };
            if n != chunk.len() as u64 {
                let mut e =
                    wire::unexpected(format_args!("{n} files preserved of {} sent", chunk.len()));
                e.token = chunk.get(n as usize).map(|&(t, _)| t);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands the outgoing session over: it stops accepting files and waits
    /// for the next process to retrieve it by name. This handle, and every
    /// copy of it, is stale from now on.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// // ... preserve files ...
    /// session.handover()?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` the session is not outgoing, `EEXIST` an incoming session of
    /// the same name is unfinished, or the errno of a handler that refused
    /// to freeze (the session stays outgoing).
    pub fn handover(&self) -> Result<()> {
        self.line().call(&Handover {}).map(drop)
    }

    /// A new descriptor of the file preserved under `token` (of a retrieved
    /// session). A file may be retrieved any number of times; each call
    /// returns a new descriptor of the same open file.
    ///
    /// ```no_run
    /// use std::net::TcpListener;
    ///
    /// let luo = luo::Client::connect()?;
    /// let session = luo.retrieve_session("kv")?;
    /// let listener = TcpListener::from(session.retrieve_fd(7)?);
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` an outgoing session, `ENOENT` an unknown token, or the
    /// handler's errno. `ESTALE` once the session has crossed.
    pub fn retrieve_fd(&self, token: u64) -> Result<OwnedFd> {
        let mut fds = self.retrieve_batch(&[token])?;
        fds.pop().ok_or_else(|| wire::unexpected("no descriptor"))
    }

    /// Descriptors of the files preserved under `tokens`, in order. They are
    /// asked for in messages of at most 253; each message is all or nothing,
    /// and on any error the descriptors already received are closed and the
    /// error's [`token`](crate::Error::token) names the failing token (a
    /// retrieval can simply be repeated). An empty list returns an empty
    /// vector.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.retrieve_session("kv")?;
    /// let fds = session.retrieve_batch(&[1, 2, 3])?;
    /// assert_eq!(fds.len(), 3);
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Session::retrieve_fd`].
    pub fn retrieve_batch(&self, tokens: &[u64]) -> Result<Vec<OwnedFd>> {
        self.fds_of(tokens, |tokens| Retrieve { tokens })
    }

    /// Removes the files preserved under `tokens` from the outgoing session
    /// (persistent or not), in order: the agent lets go of each (its
    /// custody descriptor is closed, its quota released) and the file may
    /// be preserved again, in any session. The kernel has no such call: it
    /// is luo's. Tokens travel in messages of at most 253; unpreserving
    /// stops at the first refusal, the files before it stay unpreserved,
    /// and the error's [`token`](crate::Error::token) names the refused
    /// one. An empty list does nothing.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.persist_session("web")?;
    /// session.unpreserve(&[3])?; // the service closed that socket
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` a session that is not outgoing, `ENOENT` a token it does
    /// not hold. `ESTALE` once the session has crossed; `EOPNOTSUPP` from
    /// an agent without persistent sessions (luod 0.1.0).
    pub fn unpreserve(&self, tokens: &[u64]) -> Result<()> {
        for chunk in tokens.chunks(MAX_FDS) {
            let tokens = chunk.to_vec();
            self.line()
                .call_with(&Unpreserve { tokens }, &[], 0)
                .map_err(|mut e| {
                    // A refusal of the whole message names no token.
                    e.token.get_or_insert(chunk[0]);
                    e
                })?;
        }
        Ok(())
    }

    /// New descriptors of the files preserved under `tokens` in a
    /// persistent session ([`Client::persist_session`](crate::Client::persist_session)),
    /// in order, without retrieving them: each is a new descriptor of the
    /// open file the agent keeps, which stays preserved. They are asked
    /// for in messages of at most 253; each message is all or nothing, and
    /// on any error the descriptors already received are closed and the
    /// error's [`token`](crate::Error::token) names the failing token. An
    /// empty list returns an empty vector.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.persist_session("web")?;
    /// let fds = session.fetch(&[1, 2])?;
    /// assert_eq!(fds.len(), 2);
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` a session that is not persistent, `ENOENT` an unknown
    /// token. `ESTALE` once the session has crossed; `EOPNOTSUPP` from an
    /// agent without persistent sessions (luod 0.1.0).
    pub fn fetch(&self, tokens: &[u64]) -> Result<Vec<OwnedFd>> {
        self.fds_of(tokens, |tokens| Fetch { tokens })
    }

    /// Finishes the retrieved session: the agent lets go of every file (the
    /// descriptors this process retrieved stay open) and the session ends
    /// when its last handle is closed.
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
    /// `EINVAL` an outgoing session, `EBUSY` a handler cannot finish yet.
    pub fn finish(&self) -> Result<()> {
        self.line().call(&Finish {}).map(drop)
    }

    /// A second copy of the handle (`dup`): the same session, kept alive
    /// until both copies are closed. Requests on the two copies are
    /// serialised with each other.
    ///
    /// ```no_run
    /// let luo = luo::Client::connect()?;
    /// let session = luo.create_session("kv")?;
    /// let copy = session.try_clone().expect("dup");
    /// std::thread::spawn(move || copy.name()).join().unwrap()?;
    /// # Ok::<(), luo::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `dup`'s (`EMFILE` out of descriptors).
    pub fn try_clone(&self) -> std::io::Result<Session> {
        Ok(Session {
            fd: self.fd.try_clone()?,
            lock: Arc::clone(&self.lock),
        })
    }
}

impl AsFd for Session {
    /// The handle's descriptor, e.g. to pass to another process.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Session {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Adopts a session handle received from another process (`SCM_RIGHTS`) or
/// inherited across `exec`.
///
/// ```no_run
/// use std::os::fd::OwnedFd;
///
/// # let inherited: OwnedFd = luo::memfd_create("x").unwrap();
/// // e.g. a handle the parent left open at a known descriptor number
/// let session = luo::Session::from(inherited);
/// println!("inherited session {}", session.name()?);
/// # Ok::<(), luo::Error>(())
/// ```
impl From<OwnedFd> for Session {
    fn from(fd: OwnedFd) -> Session {
        Session {
            fd,
            lock: Arc::new(Mutex::new(RecvBuf::default())),
        }
    }
}

/// Gives up the handle as a plain descriptor, e.g. to keep it open across
/// `exec` or to send it to another process.
///
/// ```no_run
/// use std::os::fd::OwnedFd;
///
/// let luo = luo::Client::connect()?;
/// let fd: OwnedFd = luo.create_session("kv")?.into();
/// # Ok::<(), luo::Error>(())
/// ```
impl From<Session> for OwnedFd {
    fn from(s: Session) -> OwnedFd {
        s.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, Errno};
    use luo_proto::{encode_refusal, encode_reply, recv, send, Value};
    use serde_json::json;
    use std::thread;

    fn tokens(req: &Value) -> Vec<u64> {
        serde_json::from_value(req["tokens"].clone()).unwrap()
    }

    fn ok_reply(v: Value) -> Vec<u8> {
        encode_reply(&v, 0).unwrap()
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap()
    }

    /// A fake agent on `fd` answering each request with `answer`.
    fn agent(
        fd: OwnedFd,
        mut answer: impl FnMut(&Value, Vec<OwnedFd>) -> Option<(Vec<u8>, Vec<OwnedFd>)> + Send + 'static,
    ) -> thread::JoinHandle<Vec<Value>> {
        thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = RecvBuf::default();
            while let Ok(Some(m)) = recv(fd.as_fd(), &mut buf) {
                let body: Value = serde_json::from_slice(m.bytes).unwrap();
                seen.push(body.clone());
                match answer(&body, m.fds) {
                    Some((reply, fds)) => {
                        // Replies carrying fds say so, as the agent's do.
                        let reply = if fds.is_empty() {
                            reply
                        } else {
                            let mut v: Value = serde_json::from_slice(&reply).unwrap();
                            v["fds"] = fds.len().into();
                            serde_json::to_vec(&v).unwrap()
                        };
                        let b: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                        send(fd.as_fd(), &reply, &b).unwrap();
                    }
                    None => break,
                }
            }
            seen
        })
    }

    fn refusal(errno: Errno, msg: &'static str, token: Option<u64>) -> Vec<u8> {
        let mut e = luo_proto::Error::new(errno, msg);
        e.token = token;
        encode_refusal(&e)
    }

    #[test]
    fn preserve_batch_splits_by_253_and_stops_at_the_refused_token() {
        let (a, b) = pair();
        let session = Session::from(a);
        let fake = agent(b, |req, fds| {
            let tokens = tokens(req);
            assert_eq!(tokens.len(), fds.len());
            // Refuse token 300 (in the second message), keep those before.
            match tokens.iter().position(|&t| t == 300) {
                Some(_) => Some((refusal(Errno::EBUSY, "busy", Some(300)), vec![])),
                None => Some((ok_reply(json!({"preserved": tokens.len()})), vec![])),
            }
        });
        let memfds: Vec<OwnedFd> = (0..600).map(|_| luo_sys::eventfd(0).unwrap()).collect();
        let batch: Vec<(u64, BorrowedFd<'_>)> = memfds
            .iter()
            .zip(1..)
            .map(|(f, t)| (t, f.as_fd()))
            .collect();
        let e = session.preserve_batch(&batch).unwrap_err();
        assert_eq!((e.errno, e.token), (Errno::EBUSY, Some(300)));
        drop(session);
        let seen = fake.join().unwrap();
        // Two messages, the first of 253; the third was never sent.
        assert_eq!(seen.len(), 2);
        assert_eq!(tokens(&seen[0]).len(), MAX_FDS);
        assert_eq!(tokens(&seen[1])[0], 254);
    }

    #[test]
    fn a_reply_with_the_wrong_number_of_fds_is_eproto() {
        let (a, b) = pair();
        let session = Session::from(a);
        let fake = agent(b, |req, _| {
            let n = tokens(req).len();
            // One descriptor too many.
            let fds = (0..=n).map(|_| luo_sys::eventfd(0).unwrap()).collect();
            Some((ok_reply(json!({})), fds))
        });
        let e = session.retrieve_batch(&[1, 2]).unwrap_err();
        assert_eq!(e.errno, Errno::EPROTO);
        assert!(e.message.contains("3 descriptors where 2"), "{e}");
        assert_eq!(session.retrieve_batch(&[]).unwrap().len(), 0);
        drop(session);
        fake.join().unwrap();
    }

    #[test]
    fn refusals_and_results_come_back_typed() {
        let (a, b) = pair();
        let session = Session::from(a);
        let fake = agent(b, |req, _| {
            Some(match req.get("op").and_then(Value::as_str) {
                Some("name") => (ok_reply(json!({"name": "kv"})), vec![]),
                Some("retrieve") => (
                    refusal(Errno::ENOENT, "no file with token 9", Some(9)),
                    vec![],
                ),
                Some("finish") => (ok_reply(json!({})), vec![]),
                _ => (refusal(Errno::ESTALE, "stale", None), vec![]),
            })
        });
        assert_eq!(session.name().unwrap(), "kv");
        let e = session.retrieve_fd(9).unwrap_err();
        assert_eq!((e.errno, e.token), (Errno::ENOENT, Some(9)));
        session.finish().unwrap();
        assert_eq!(session.handover().unwrap_err().errno, Errno::ESTALE);
        // Copies share the handle and the lock.
        let copy = session.try_clone().unwrap();
        assert_ne!(copy.as_raw_fd(), session.as_raw_fd());
        let t = thread::spawn(move || copy.name().unwrap());
        assert_eq!(session.name().unwrap(), "kv");
        assert_eq!(t.join().unwrap(), "kv");
        drop(session);
        fake.join().unwrap();
    }

    #[test]
    fn agent_hang_up_is_econnreset() {
        let (a, b) = pair();
        let client = Client::from_parts(a, "/nowhere".into());
        let fake = agent(b, |_, _| None);
        let e = client.status().unwrap_err();
        assert_eq!(e.errno, Errno::ECONNRESET);
        assert_eq!(e.message, "luod closed the connection (did it exit?)");
        fake.join().unwrap();
        // The peer is gone entirely now: sending fails the same way.
        assert_eq!(client.update().unwrap_err().errno, Errno::ECONNRESET);
    }

    #[test]
    fn create_session_returns_the_handle_and_a_malformed_status_is_eproto() {
        let (a, b) = pair();
        let client = Client::from_parts(a, "/nowhere".into());
        let fake = agent(b, |req, _| {
            Some(match req.get("op").and_then(Value::as_str) {
                Some("create_session") => {
                    let (mine, theirs) = pair();
                    std::mem::forget(mine); // keep the handle's peer alive
                    (ok_reply(json!({})), vec![theirs])
                }
                Some("update") => (ok_reply(json!({"epoch": 5})), vec![]),
                _ => (ok_reply(json!({"agent": "luod"})), vec![]),
            })
        });
        let s = client.create_session("kv").unwrap();
        assert!(s.as_raw_fd() >= 0);
        assert_eq!(client.update().unwrap(), 5);
        assert_eq!(client.status().unwrap_err().errno, Errno::EPROTO);
        assert_eq!(
            client
                .raw_request(&json!({"op": "sessions"}))
                .unwrap()
                .get("agent"),
            Some(&Value::from("luod"))
        );
        // A raw request whose reply carries a descriptor is refused.
        let e = client
            .raw_request(&json!({"op": "create_session"}))
            .unwrap_err();
        assert_eq!(e.errno, Errno::EPROTO);
        drop(client);
        fake.join().unwrap();
    }

    #[test]
    fn session_and_client_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Session>();
        check::<Client>();
    }

    #[test]
    fn owned_fd_round_trip() {
        let (a, _b) = pair();
        let raw = a.as_raw_fd();
        let s = Session::from(a);
        assert_eq!(s.as_fd().as_raw_fd(), raw);
        assert!(format!("{s:?}").contains(&raw.to_string()));
        let back: OwnedFd = s.into();
        assert_eq!(back.as_raw_fd(), raw);
    }
}
