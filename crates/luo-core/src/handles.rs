//! Sessions and their handles: create, open, dup, close (and what the
//! last close does: abort, release, remove), and per-handle accessors.

use std::os::fd::AsRawFd;

use foldhash::{HashMap, HashMapExt};

use crate::error::err;
use crate::{
    show, Errno, HandleEntry, Luo, Result, Session, SessionHandle, SessionMode, SessionState, Side,
    MAX_SESSION_NAME,
};

fn validate_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return err(Errno::EINVAL, "session name is empty");
    }
    if name.len() > MAX_SESSION_NAME {
        return err(
            Errno::EINVAL,
            format!(
                "session name is {} bytes; the limit is {MAX_SESSION_NAME}",
                name.len()
            ),
        );
    }
    if name.contains(&0) {
        return err(Errno::EINVAL, "session name contains a NUL byte");
    }
    Ok(())
}

impl Luo {
    pub(crate) fn new_handle(&mut self, session: u64) -> SessionHandle {
        let h = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            h,
            HandleEntry {
                session,
                live: true,
            },
        );
        self.sessions
            .get_mut(&session)
            .expect("session")
            .handles
            .push(h);
        self.changed(session).handles = true;
        SessionHandle(h)
    }

    pub(crate) fn live(&self, h: SessionHandle) -> Result<u64> {
        match self.handles.get(&h.0) {
            None => err(Errno::EBADF, format!("no session handle {}", h.0)),
            Some(e) if !e.live => err(
                Errno::ESTALE,
                "the session handle is stale: its session crossed to the incoming side or was aborted",
            ),
            Some(e) => Ok(e.session),
        }
    }

    pub(crate) fn stale_handles(&mut self, key: u64) {
        let s = self.sessions.get_mut(&key).expect("session");
        if s.handles.is_empty() {
            return;
        }
        // A retrieved session without handles is waiting again.
        let released = s.side == (Side::Incoming { finished: false });
        for h in s.handles.drain(..) {
            if let Some(e) = self.handles.get_mut(&h) {
                e.live = false;
            }
        }
        let c = self.changed(key);
        c.handles = true;
        c.state |= released;
    }

    /// Creates an outgoing session named `name` for `owner`; returns its first
    /// handle.
    ///
    /// `EINVAL` for a name that is empty, longer than 63 bytes or contains a
    /// NUL; `ENOSPC` at [`Limits::max_sessions`](crate::Limits::max_sessions) outgoing sessions; `EEXIST`
    /// when `owner` already has an outgoing session of that name (an incoming
    /// session of the same name does not count). Checked in that order, as
    /// the kernel does.
    pub fn create_session(&mut self, owner: u32, name: &[u8]) -> Result<SessionHandle> {
        validate_name(name)?;
        if self.outgoing.len() >= self.limits.max_sessions {
            return err(
                Errno::ENOSPC,
                format!(
                    "{} outgoing sessions already exist (the limit)",
                    self.outgoing.len()
                ),
            );
        }
        let nk = (owner, name.to_vec());
        if self.outgoing.contains_key(&nk) {
            return err(
                Errno::EEXIST,
                format!("an outgoing session named '{}' already exists", show(name)),
            );
        }
        let used = self.usage(owner).sessions;
        if owner != 0 && used >= self.quota.sessions {
            return err(
                Errno::EDQUOT,
                format!(
                    "uid {owner} has {used} sessions, its quota of sessions (luod --quota-sessions)"
                ),
            );
        }
        self.usage_mut(owner).sessions += 1;
        let key = self.next_key;
        self.next_key += 1;
        self.sessions.insert(
            key,
            Session {
                name: name.to_vec(),
                owner,
                side: Side::Outgoing,
                files: Vec::new(),
                tokens: HashMap::new(),
                handles: Vec::new(),
                mode: SessionMode::default(),
            },
        );
        self.outgoing.insert(nk, key);
        self.changed(key).created = true;
        Ok(self.new_handle(key))
    }

    /// Opens the persistent outgoing session `name` of `owner` (a new
    /// handle), or creates it persistent when `owner` has no outgoing
    /// session of that name ([`SessionMode::persist`]): closing its last
    /// handle leaves it open with every file, so a supervisor that dies
    /// loses nothing and reopens it by name.
    ///
    /// `EINVAL` for a bad name (as [`Luo::create_session`]); `EEXIST` when
    /// `owner` has an outgoing session of that name that is not
    /// persistent; creating one fails as [`Luo::create_session`] does
    /// (`ENOSPC`, `EDQUOT`).
    pub fn persist_session(&mut self, owner: u32, name: &[u8]) -> Result<SessionHandle> {
        validate_name(name)?;
        if let Some(&key) = self.outgoing.get(&(owner, name.to_vec())) {
            if !self.sessions[&key].mode.persist {
                return err(
                    Errno::EEXIST,
                    format!(
                        "an outgoing session named '{}' already exists and is not persistent",
                        show(name)
                    ),
                );
            }
            return Ok(self.new_handle(key));
        }
        let h = self.create_session(owner, name)?;
        let key = self.live(h)?;
        // New: the change log's `created` covers its mode.
        self.sessions.get_mut(&key).expect("session").mode.persist = true;
        Ok(h)
    }

    /// A new handle on the outgoing session `name` of `owner`, for acting on
    /// it by name (the agent's `handover NAME`). `ENOENT` when there is none.
    pub fn open_outgoing(&mut self, owner: u32, name: &[u8]) -> Result<SessionHandle> {
        let Some(&key) = self.outgoing.get(&(owner, name.to_vec())) else {
            return err(
                Errno::ENOENT,
                format!("no outgoing session named '{}'", show(name)),
            );
        };
        Ok(self.new_handle(key))
    }

    /// A second handle on the same session (like `dup` of a session fd).
    pub fn dup(&mut self, h: SessionHandle) -> Result<SessionHandle> {
        let key = self.live(h)?;
        Ok(self.new_handle(key))
    }

    /// The session's name (like `LIVEUPDATE_SESSION_GET_NAME`).
    pub fn name(&self, h: SessionHandle) -> Result<&[u8]> {
        let key = self.live(h)?;
        Ok(&self.sessions[&key].name)
    }

    /// How many files the session holds (cheap: no `fstat`, unlike
    /// [`Luo::session`]).
    pub fn file_count(&self, h: SessionHandle) -> Result<usize> {
        let key = self.live(h)?;
        Ok(self.sessions[&key].files.len())
    }

    /// The session's owner.
    pub fn owner(&self, h: SessionHandle) -> Result<u32> {
        let key = self.live(h)?;
        Ok(self.sessions[&key].owner)
    }

    /// Sets the session's [`SessionMode`] (its `persist` too). It lasts
    /// until the session crosses over (handover or update), when it returns
    /// to the default.
    pub fn set_mode(&mut self, h: SessionHandle, mode: SessionMode) -> Result<()> {
        let key = self.live(h)?;
        let s = self.sessions.get_mut(&key).expect("session");
        if s.mode != mode {
            s.mode = mode;
            self.changed(key).mode = true;
        }
        Ok(())
    }

    /// The session's [`SessionMode`].
    pub fn mode(&self, h: SessionHandle) -> Result<SessionMode> {
        let key = self.live(h)?;
        Ok(self.sessions[&key].mode)
    }

    /// Whether closing `h` finishes its session implicitly: the last live
    /// handle of a retrieved, unfinished session in `finish_on_close` mode.
    pub(crate) fn finishes_on_close(&self, h: SessionHandle) -> bool {
        let Ok(key) = self.live(h) else {
            return false;
        };
        let s = &self.sessions[&key];
        s.mode.finish_on_close
            && s.handles.len() == 1
            && s.side == (Side::Incoming { finished: false })
    }

    pub(crate) fn remove_session(&mut self, key: u64) {
        self.stale_handles(key);
        let s = self.sessions.remove(&key).expect("session");
        self.usage_mut(s.owner).sessions -= 1;
        let nk = (s.owner, s.name);
        let list = match s.side {
            Side::Outgoing => &mut self.outgoing,
            Side::Incoming { .. } => &mut self.incoming,
        };
        if list.get(&nk) == Some(&key) {
            list.remove(&nk);
        }
        self.changed_gone(key);
    }

    /// Closes a handle. When it was the last handle of its session:
    ///
    /// - an outgoing session is aborted: every file is unpreserved, last to
    ///   first, and the session is gone; unless it is persistent
    ///   ([`SessionMode::persist`]): then it stays open with every file;
    /// - a retrieved session that was not finished returns to the incoming
    ///   list with every file still in custody (the kernel would finish it
    ///   implicitly and discard unretrieved files: a deliberate deviation),
    ///   unless its [`SessionMode::finish_on_close`] is set: then it is
    ///   finished, as by the kernel, and gone;
    /// - a finished session is gone.
    ///
    /// Closing a stale handle just forgets it. `EBADF` for an unknown handle.
    pub fn close(&mut self, h: SessionHandle) -> Result<()> {
        if self.finishes_on_close(h) {
            // A refusal (a handler's can_finish) leaves it waiting, as natively.
            let _ = self.finish(h);
        }
        let Some(e) = self.handles.remove(&h.0) else {
            return err(Errno::EBADF, format!("no session handle {}", h.0));
        };
        if !e.live {
            return Ok(());
        }
        let s = self.sessions.get_mut(&e.session).expect("session");
        s.handles.retain(|x| *x != h.0);
        let (side, last, persist) = (s.side, s.handles.is_empty(), s.mode.persist);
        self.changed(e.session).handles = true;
        if !last {
            return Ok(());
        }
        match side {
            Side::Outgoing if persist => {}
            Side::Outgoing => self.abort(e.session),
            Side::Incoming { finished: true } => self.remove_session(e.session),
            // Retrieved, and now waiting again.
            Side::Incoming { finished: false } => self.changed(e.session).state = true,
        }
        Ok(())
    }

    /// Aborts `owner`'s session `name` by name (luod's `abort`), whoever
    /// holds it. Returns its state before and how many files it held.
    ///
    /// - An open (outgoing) session, persistent or not, is aborted as on
    ///   the last close of its handle: every file is unpreserved, last to
    ///   first, the session is gone and its handles are stale (`ESTALE`).
    /// - A waiting incoming session is finished as by
    ///   [`Luo::finish`], which discards the files nobody retrieved.
    ///
    /// `ENOENT` when `owner` has no session of that name (outgoing first,
    /// then incoming); `EBUSY` for a retrieved or finished session that a
    /// handle still holds (the process holding it finishes it or closes
    /// it), or when a handler cannot finish a file yet. Both sides are
    /// recorded in the change log as the session gone.
    pub fn abort_session(&mut self, owner: u32, name: &[u8]) -> Result<(SessionState, usize)> {
        let nk = (owner, name.to_vec());
        if let Some(&key) = self.outgoing.get(&nk) {
            let files = self.sessions[&key].files.len();
            self.abort(key);
            return Ok((SessionState::Open, files));
        }
        let Some(&key) = self.incoming.get(&nk) else {
            return err(
                Errno::ENOENT,
                format!("uid {owner} has no session named '{}'", show(name)),
            );
        };
        let s = &self.sessions[&key];
        if !s.handles.is_empty() || s.side == (Side::Incoming { finished: true }) {
            return err(
                Errno::EBUSY,
                format!(
                    "incoming session '{}' is retrieved: the process holding it must finish it or close its handle",
                    show(name)
                ),
            );
        }
        let files = s.files.len();
        let h = self.new_handle(key);
        let res = self.finish(h);
        // Finished: closing removes it. Refused: it goes back to waiting.
        let _ = self.close(h);
        res?;
        Ok((SessionState::Incoming, files))
    }

    pub(crate) fn abort(&mut self, key: u64) {
        let s = self.sessions.get_mut(&key).expect("session");
        let owner = s.owner;
        let files = std::mem::take(&mut s.files);
        let indexed: Vec<_> = files
            .iter()
            .map(|f| (f.key, f.custody.as_raw_fd()))
            .collect();
        self.index.remove_all(&indexed);
        for f in files.into_iter().rev() {
            self.release_file(owner, f.pinned);
            let args = f.args(key, owner);
            self.handlers[f.handler].unpreserve(&args);
            for &(fi, g) in f.flb_refs.iter().rev() {
                self.flbs[fi].put_outgoing(g);
            }
        }
        self.remove_session(key);
    }
}
