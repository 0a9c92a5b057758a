//! The requests of `docs/protocol.md`, on both kinds of socket: one
//! exhaustive `match` per kind of socket, one method per op.

use std::os::fd::OwnedFd;

use luo_core::{Retrieval, SessionHandle, SessionState};
use luo_proto::ops::{
    self, AbortSession, AgentRequest, CreateSession, Done, Epoch, Fetch, FinishSession,
    HandleRequest, HandoverSession, Info, InfoPage, ListSessions, PersistSession, Preserve,
    Preserved, Retrieve, RetrieveSession, SessionName, SessionPage, Show, Unpreserve,
};
use luo_proto::types::{page_details, page_summaries, Status, PAGE_WINDOW};
use luo_proto::{Call, Datagram, Errno, Error};
use tracing::{debug, info};

use super::{quoted, Agent, Kind, Reply};

/// Most tokens in one `preserve` or `retrieve` (one descriptor each).
const MAX_TOKENS: usize = luo_proto::MAX_FDS;

fn einval(msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(Errno::EINVAL, msg)
}

/// The successful reply to `C`: its results and descriptors.
pub(super) fn reply<C: Call>(body: C::Reply, fds: Vec<OwnedFd>) -> Result<Reply, Error> {
    Reply::encode(&body, fds)
}

/// Refuses descriptors sent with a request that takes none (they are closed
/// when dropped).
fn no_fds(op: &str, fds: &[OwnedFd]) -> Result<(), Error> {
    if fds.is_empty() {
        return Ok(());
    }
    Err(einval(format!(
        "'{op}' takes no descriptors, but {} came with it; they were closed",
        fds.len()
    )))
}

/// A session name: 1 to 63 bytes without NUL, as `create_session` takes.
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > luo_core::MAX_SESSION_NAME || name.contains('\0') {
        return Err(einval(format!(
            "\"name\" must be 1 to {} bytes without NUL; {} is {} bytes",
            luo_core::MAX_SESSION_NAME,
            ops::clip(name),
            name.len()
        )));
    }
    Ok(())
}

/// The owner a by-name request acts on: the caller's uid, or `owner` when
/// the caller is root or names itself.
fn owner_of(caller: u32, owner: Option<u32>, what: &str) -> Result<u32, Error> {
    let Some(o) = owner else {
        return Ok(caller);
    };
    if caller == 0 || o == caller {
        return Ok(o);
    }
    Err(Error::new(
        Errno::EPERM,
        format!("only uid {o} or root may {what} uid {o}'s sessions; you are uid {caller}"),
    ))
}

fn check_tokens(tokens: &[u64], op: &str) -> Result<(), Error> {
    if tokens.is_empty() || tokens.len() > MAX_TOKENS {
        return Err(einval(format!(
            "'{op}' takes 1 to {MAX_TOKENS} tokens, not {}; split larger batches",
            tokens.len()
        )));
    }
    Ok(())
}

impl Agent {
    /// Answers one request received on connection `key`.
    pub(super) fn request(&mut self, key: u64, d: Datagram<'_>) -> Result<Reply, Error> {
        // The store follows what the request changed before the client
        // hears the answer.
        let r = self.request_inner(key, d);
        self.flush_mirror();
        r
    }

    fn request_inner(&mut self, key: u64, d: Datagram<'_>) -> Result<Reply, Error> {
        let Some(c) = self.conns.get(&key) else {
            return Err(Error::new(Errno::EBADF, "connection gone"));
        };
        match &c.kind {
            &Kind::Agent { uid, .. } => {
                let (req, fds) = d.request::<AgentRequest>()?;
                debug!("connection {key}: {}", req.op());
                self.agent_request(key, uid, req, fds)
            }
            &Kind::Handle { handle, .. } => {
                let (req, fds) = d.request::<HandleRequest>()?;
                debug!("connection {key}: {}", req.op());
                self.handle_request(key, handle, req, fds)
            }
            Kind::Refused { why, .. } => Err(Error::new(Errno::EDQUOT, why.clone())),
        }
    }

    fn agent_request(
        &mut self,
        key: u64,
        uid: u32,
        req: AgentRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        // The requests of the emulation and `kexec` check their own.
        if !matches!(
            req,
            AgentRequest::Kexec(_) | AgentRequest::Ioctl(_) | AgentRequest::OpenDevice(_)
        ) {
            no_fds(req.op(), &fds)?;
        }
        match req {
            AgentRequest::CreateSession(r) => self.create_session(key, uid, r),
            AgentRequest::RetrieveSession(r) => self.retrieve_session(key, uid, r),
            AgentRequest::PersistSession(r) => self.persist_session(uid, r),
            AgentRequest::HandoverSession(r) => self.handover_by_name(uid, r),
            AgentRequest::FinishSession(r) => self.finish_by_name(uid, r),
            AgentRequest::Update(_) => self.update(uid),
            AgentRequest::GetStatus(_) => reply::<ops::GetStatus>(self.status(uid), vec![]),
            AgentRequest::ListSessions(r) => self.list_sessions(uid, r),
            AgentRequest::Show(r) => self.show(uid, r),
            AgentRequest::Kexec(r) => self.kexec(uid, r, fds),
            AgentRequest::Upgrade(r) => Err(self.upgrade(key, uid, r)),
            AgentRequest::OpenDevice(r) => self.open_device(key, uid, r, fds),
            AgentRequest::Ioctl(r) => self.device_ioctl(key, uid, r, fds),
            AgentRequest::AbortSession(r) => self.abort_by_name(uid, r),
        }
    }

    fn handle_request(
        &mut self,
        key: u64,
        h: SessionHandle,
        req: HandleRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        if !matches!(req, HandleRequest::Preserve(_) | HandleRequest::Ioctl(_)) {
            no_fds(req.op(), &fds)?;
        }
        match req {
            HandleRequest::Name(_) => {
                let name = self.luo.name(h)?;
                let name = String::from_utf8_lossy(name).into_owned();
                reply::<ops::Name>(SessionName { name }, vec![])
            }
            HandleRequest::Info(r) => self.info(h, r),
            HandleRequest::Preserve(r) => self.preserve(key, h, r, fds),
            HandleRequest::Retrieve(r) => self.retrieve(h, r),
            HandleRequest::Unpreserve(r) => self.unpreserve(h, r),
            HandleRequest::Fetch(r) => self.fetch(h, r),
            HandleRequest::Handover(_) => {
                let (name, owner) = self.handle_names(h)?;
                let files = self.luo.file_count(h).unwrap_or(0);
                self.luo.handover(h)?;
                self.log_handover(&name, owner, files);
                reply::<ops::Handover>(Done {}, vec![])
            }
            HandleRequest::Finish(_) => {
                let (name, owner) = self.handle_names(h)?;
                self.luo.finish(h)?;
                info!("session {} of uid {owner} finished", quoted(&name));
                reply::<ops::Finish>(Done {}, vec![])
            }
            HandleRequest::Ioctl(r) => self.session_ioctl(key, h, r, fds),
        }
    }

    fn create_session(&mut self, key: u64, uid: u32, r: CreateSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let name = r.name.as_bytes();
        let (fd, _) = match self.new_handle(|luo| luo.create_session(uid, name)) {
            // The session's last handle may have closed just before this
            // request, with its hang-up not yet seen: see it, then retry.
            Err(e) if e.errno == Errno::EEXIST && self.settle_hangups(key) => {
                self.new_handle(|luo| luo.create_session(uid, name))?
            }
            made => made?,
        };
        info!("session {} of uid {uid} created", quoted(&r.name));
        reply::<CreateSession>(Done {}, vec![fd])
    }

    fn persist_session(&mut self, uid: u32, r: PersistSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        // Headers only: no fstat per file.
        let existed = self
            .luo
            .find_files(uid, r.name.as_bytes(), 0, 0)
            .iter()
            .any(|s| s.state == SessionState::Open);
        let (fd, h) = self.new_handle(|luo| luo.persist_session(uid, r.name.as_bytes()))?;
        if existed {
            let files = self.luo.file_count(h).unwrap_or(0);
            info!(
                "persistent session {} of uid {uid} reopened ({files} files)",
                quoted(&r.name)
            );
        } else {
            info!(
                "persistent session {} of uid {uid} created",
                quoted(&r.name)
            );
        }
        reply::<PersistSession>(Done {}, vec![fd])
    }

    fn retrieve_session(&mut self, key: u64, uid: u32, r: RetrieveSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let owner = owner_of(uid, r.owner, "retrieve")?;
        let name = r.name.as_bytes();
        let (fd, h) = match self.new_handle(|luo| luo.retrieve_session(owner, name)) {
            // Held by a handle whose close luod has not seen yet (a client
            // that closes its session fd and retrieves again at once): see
            // the hang-up, then retry, as the kernel's close is synchronous.
            Err(e) if e.errno == Errno::EINVAL && self.settle_hangups(key) => {
                self.new_handle(|luo| luo.retrieve_session(owner, name))?
            }
            made => made?,
        };
        let files = self.luo.file_count(h).unwrap_or(0);
        info!(
            "session {} of uid {owner} retrieved by uid {uid} ({files} files)",
            quoted(&r.name)
        );
        reply::<RetrieveSession>(Done {}, vec![fd])
    }

    fn handover_by_name(&mut self, uid: u32, r: HandoverSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let owner = owner_of(uid, r.owner, "hand over")?;
        let h = self.luo.open_outgoing(owner, r.name.as_bytes())?;
        let files = self.luo.file_count(h).unwrap_or(0);
        let res = self.luo.handover(h);
        // After a handover the handle is stale and closing it only
        // forgets it; after a refusal the creator's handle remains.
        let _ = self.luo.close(h);
        res?;
        self.log_handover(&r.name, owner, files);
        reply::<HandoverSession>(Done {}, vec![])
    }

    fn finish_by_name(&mut self, uid: u32, r: FinishSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let owner = owner_of(uid, r.owner, "finish")?;
        let h = self
            .luo
            .retrieve_session(owner, r.name.as_bytes())
            .map_err(|e| {
                let mut e = e;
                if e.errno == Errno::EINVAL {
                    e.message = format!(
                        "{}; the process holding it must finish it or close its handle",
                        e.message
                    )
                    .into();
                }
                e
            })?;
        let unretrieved = self.luo.session(h).map_or(0, |s| {
            s.files
                .iter()
                .filter(|f| f.retrieve != luo_core::RetrieveStatus::Retrieved)
                .count()
        });
        let res = self.luo.finish(h);
        // Finished: closing removes it. Refused: it goes back to waiting.
        let _ = self.luo.close(h);
        res?;
        info!(
            "session {} of uid {owner} finished by name by uid {uid}; {unretrieved} files never retrieved were discarded",
            quoted(&r.name)
        );
        reply::<FinishSession>(Done {}, vec![])
    }

    fn abort_by_name(&mut self, uid: u32, r: AbortSession) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let owner = owner_of(uid, r.owner, "abort")?;
        // On the kernel backend the memfd handler's unpreserve and finish
        // release the files from their kernel sessions (a part left empty
        // is closed, which unpreserves it in the kernel).
        let (state, files) = self.luo.abort_session(owner, r.name.as_bytes())?;
        if state == SessionState::Open {
            info!(
                "session {} of uid {owner} aborted by uid {uid}: {files} files unpreserved",
                quoted(&r.name)
            );
        } else {
            info!(
                "waiting session {} of uid {owner} aborted by uid {uid}: {files} files discarded",
                quoted(&r.name)
            );
        }
        reply::<AbortSession>(Done {}, vec![])
    }

    fn update(&mut self, uid: u32) -> Result<Reply, Error> {
        if uid != 0 && uid != self.euid {
            return Err(Error::new(
                Errno::EPERM,
                format!(
                    "only root or uid {} (the agent's) may update: it hands over every uid's sessions; you are uid {uid}",
                    self.euid
                ),
            ));
        }
        let epoch = self.luo.update()?;
        info!("update by uid {uid}: every outgoing session crossed over; epoch {epoch}");
        reply::<ops::Update>(Epoch { epoch }, vec![])
    }

    fn list_sessions(&mut self, uid: u32, r: ListSessions) -> Result<Reply, Error> {
        let start = r.start.unwrap_or(0) as usize;
        let mut all = self.luo.summaries();
        all.retain(|s| uid == 0 || s.owner == uid);
        let (sessions, next) = page_summaries(&all, start);
        reply::<ListSessions>(SessionPage { sessions, next }, vec![])
    }

    fn show(&mut self, uid: u32, r: Show) -> Result<Reply, Error> {
        check_name(&r.name)?;
        let owner = owner_of(uid, r.owner, "show")?;
        let start = r.start.unwrap_or(0) as usize;
        let all = self
            .luo
            .find_files(owner, r.name.as_bytes(), start, PAGE_WINDOW);
        if all.is_empty() {
            return Err(Error::new(
                Errno::ENOENT,
                format!("uid {owner} has no session named {}", quoted(&r.name)),
            ));
        }
        let (sessions, next) = page_details(&all, start);
        reply::<Show>(SessionPage { sessions, next }, vec![])
    }

    fn info(&mut self, h: SessionHandle, r: Info) -> Result<Reply, Error> {
        let start = r.start.unwrap_or(0) as usize;
        let s = self.luo.session_files(h, start, PAGE_WINDOW)?;
        let (mut list, next) = page_details(&[s], start);
        let session = list
            .pop()
            .ok_or_else(|| Error::new(Errno::EIO, "the session vanished while listing it"))?;
        reply::<Info>(InfoPage { session, next }, vec![])
    }

    fn preserve(
        &mut self,
        key: u64,
        h: SessionHandle,
        r: Preserve,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        check_tokens(&r.tokens, "preserve")?;
        if r.tokens.len() != fds.len() {
            return Err(einval(format!(
                "'preserve' needs one descriptor per token: {} tokens, {} descriptors; they were closed",
                r.tokens.len(),
                fds.len()
            )));
        }
        let mut done = 0u64;
        // Dropping the iterator at an error closes the descriptors from the
        // refused one on.
        for (token, fd) in r.tokens.iter().copied().zip(fds) {
            if let Err(e) = self.preserve_seeing_closes(key, h, fd, token) {
                let mut e = e;
                if done > 0 {
                    e.message = format!(
                        "{} (the {done} files before it in this request were preserved; the rest were not)",
                        e.message
                    )
                    .into();
                }
                return Err(e.with_token(token));
            }
            done += 1;
        }
        reply::<Preserve>(Preserved { preserved: done }, vec![])
    }

    fn retrieve(&mut self, h: SessionHandle, r: Retrieve) -> Result<Reply, Error> {
        check_tokens(&r.tokens, "retrieve")?;
        let mut got = Vec::with_capacity(r.tokens.len());
        for &token in &r.tokens {
            // All or nothing: on an error what was retrieved is closed.
            let g = self
                .luo
                .retrieve_custody(h, token)
                .map_err(|e| e.with_token(token))?;
            got.push(g);
        }
        // The custody descriptors themselves go out (borrowed, see
        // `Reply::lending`), unless a handler with its own retrieve gave a
        // descriptor of its own: then the reply owns all, as it always did.
        if got.iter().all(|g| matches!(g, Retrieval::Custody)) {
            return Reply::lending(&Done {}, h, r.tokens);
        }
        let mut fds = Vec::with_capacity(got.len());
        for (g, &token) in got.into_iter().zip(&r.tokens) {
            fds.push(match g {
                Retrieval::Fd(fd) => fd,
                Retrieval::Custody => self
                    .luo
                    .custody_fd(h, token)?
                    .try_clone_to_owned()
                    .map_err(|e| {
                        Error::new(e.into(), "duplicating the retrieved file failed")
                            .with_token(token)
                    })?,
            });
        }
        reply::<Retrieve>(Done {}, fds)
    }

    fn unpreserve(&mut self, h: SessionHandle, r: Unpreserve) -> Result<Reply, Error> {
        check_tokens(&r.tokens, "unpreserve")?;
        let mut done = 0usize;
        for &token in &r.tokens {
            if let Err(e) = self.luo.unpreserve(h, token) {
                let mut e = e;
                if done > 0 {
                    e.message = format!(
                        "{} (the {done} files before it in this request were unpreserved; the rest were not)",
                        e.message
                    )
                    .into();
                }
                return Err(e.with_token(token));
            }
            done += 1;
        }
        let (name, owner) = self.handle_names(h)?;
        info!(
            "session {} of uid {owner}: {done} files unpreserved",
            quoted(&name)
        );
        reply::<Unpreserve>(Done {}, vec![])
    }

    fn fetch(&mut self, h: SessionHandle, r: Fetch) -> Result<Reply, Error> {
        check_tokens(&r.tokens, "fetch")?;
        let mut fds = Vec::with_capacity(r.tokens.len());
        for &token in &r.tokens {
            // All or nothing: on an error what was fetched is closed.
            let fd = self.luo.fetch(h, token).map_err(|e| e.with_token(token))?;
            fds.push(fd);
        }
        reply::<Fetch>(Done {}, fds)
    }

    fn log_handover(&self, name: &str, owner: u32, files: usize) {
        info!(
            "session {} of uid {owner} handed over ({files} files)",
            quoted(name)
        );
    }

    fn handle_names(&self, h: SessionHandle) -> Result<(String, u32), Error> {
        let name = self.luo.name(h)?;
        let owner = self.luo.owner(h)?;
        Ok((String::from_utf8_lossy(name).into_owned(), owner))
    }

    fn status(&self, uid: u32) -> Status {
        let mut st = Status {
            agent: format!("luod {}", env!("CARGO_PKG_VERSION")),
            protocol: luo_proto::VERSION,
            backend: self.backend.as_str().to_string(),
            pid: std::process::id(),
            uid,
            epoch: self.luo.epoch(),
            outgoing: 0,
            incoming: 0,
            files: 0,
            pinned_bytes: 0,
            connections: self.conns.len() as u64,
            open_fds: luo_sys::open_fd_count().map_or(0, |n| n as u64),
            nofile_soft: 0,
            nofile_hard: 0,
            quota: self.luo.quota(),
            usage: self.luo.usage(uid),
            store: self
                .mirror
                .as_ref()
                .map_or_else(|| "none".to_string(), |m| m.describe()),
            keeper: None,
        };
        if let Some(crate::store::Sink::Keeper { pid, origin, .. }) =
            self.mirror.as_ref().map(|m| &m.sink)
        {
            let counted = self
                .mirror
                .as_ref()
                .and_then(|m| m.sink.count(crate::store::KEEPER_ASK_MS));
            st.keeper = Some(luo_proto::types::KeeperStatus {
                pid: *pid,
                origin: origin.as_str().to_string(),
                entries: counted.as_ref().map(|c| c.entries),
                files: counted.as_ref().and_then(|c| c.files),
                sessions: counted.as_ref().and_then(|c| c.sessions),
            });
        }
        if let Ok((soft, hard)) = luo_sys::nofile_limit() {
            st.nofile_soft = soft;
            st.nofile_hard = hard;
        }
        for s in self.luo.summaries() {
            if uid != 0 && s.owner != uid {
                continue;
            }
            if s.state == SessionState::Open {
                st.outgoing += 1;
            } else {
                st.incoming += 1;
            }
            st.files += s.file_count as u64;
            st.pinned_bytes += s.pinned_bytes;
        }
        st
    }
}
