//! Crossing to the incoming side and back out: handover, update, retrieve
//! (of a session and of its files) and finish.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::error::err;
use crate::identity::{Holder, IndexKey};
use crate::{
    show, Errno, Error, IdentityKind, Luo, PreservedFile, Result, RetrieveStatus, SessionHandle,
    SessionMode, Side,
};

/// What [`Luo::retrieve_custody`] hands out.
#[derive(Debug)]
pub enum Retrieval {
    /// The custody descriptor itself, to borrow with [`Luo::custody_fd`].
    Custody,
    /// A descriptor of its own (a handler with its own retrieve).
    Fd(OwnedFd),
}

impl Luo {
    pub(crate) fn freeze(&mut self, keys: &[u64]) -> Result<()> {
        let mut done: Vec<(u64, usize, u64)> = Vec::new();
        for &key in keys {
            let s = self.sessions.get_mut(&key).expect("session");
            let owner = s.owner;
            for (i, f) in s.files.iter_mut().enumerate() {
                let h = &self.handlers[f.handler];
                let mut args = f.args(key, owner);
                match h.freeze(&mut args) {
                    Ok(()) => {
                        done.push((key, i, f.data));
                        f.data = args.serialized_data;
                    }
                    Err(e) => {
                        let what = format!(
                            "freeze of token {} in session '{}' failed; nothing was changed",
                            f.token,
                            show(&s.name)
                        );
                        self.unfreeze(done);
                        return err(e, what);
                    }
                }
            }
        }
        Ok(())
    }

    /// Unfreezes what froze, newest first, restoring each file's data.
    pub(crate) fn unfreeze(&mut self, done: Vec<(u64, usize, u64)>) {
        for (key, i, before) in done.into_iter().rev() {
            let s = self.sessions.get_mut(&key).expect("session");
            let owner = s.owner;
            let f = &mut s.files[i];
            let args = f.args(key, owner);
            self.handlers[f.handler].unfreeze(&args);
            f.data = before;
        }
    }

    /// Moves the FLB references of every file of the outgoing sessions `keys`
    /// to the incoming side.
    pub(crate) fn cross_flbs(&mut self, keys: &[u64]) {
        for key in keys {
            for f in &self.sessions[key].files {
                for &(fi, g) in &f.flb_refs {
                    self.flbs[fi].cross(g);
                }
            }
        }
    }

    pub(crate) fn check_incoming_free(&self, keys: &[u64]) -> Result<()> {
        for key in keys {
            let s = &self.sessions[key];
            if let Some(k) = self.incoming.get(&(s.owner, s.name.clone())) {
                if self.sessions[k].side != (Side::Incoming { finished: true }) {
                    return err(
                        Errno::EEXIST,
                        format!(
                            "an incoming session named '{}' is still waiting to be retrieved and finished",
                            show(&s.name)
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Makes an outgoing session incoming (its handles go stale).
    pub(crate) fn make_incoming(&mut self, key: u64) {
        self.stale_handles(key);
        let s = self.sessions.get_mut(&key).expect("session");
        s.side = Side::Incoming { finished: false };
        // Whoever retrieves it next chooses its mode.
        let mode = std::mem::take(&mut s.mode);
        let nk = (s.owner, s.name.clone());
        let c = self.changed(key);
        c.state = true;
        c.mode |= mode != SessionMode::default();
        self.outgoing.remove(&nk);
        if let Some(old) = self.incoming.insert(nk, key) {
            // Only a finished session can be displaced (check_incoming_free).
            self.remove_session(old);
        }
    }

    /// Hands one outgoing session over: its files are frozen (first to last)
    /// and it becomes incoming now, without an epoch change. This is how a
    /// service restarts without a reboot. Its handles go stale.
    ///
    /// `EINVAL` on a session that is not outgoing; `EEXIST` when an incoming
    /// session of the same name and owner is still unfinished. If a freeze
    /// fails, every file already frozen is unfrozen in reverse order, nothing
    /// changes, and the freeze's errno is returned.
    pub fn handover(&mut self, h: SessionHandle) -> Result<()> {
        let key = self.live(h)?;
        if self.sessions[&key].side != Side::Outgoing {
            return err(Errno::EINVAL, "only an outgoing session can be handed over");
        }
        self.check_incoming_free(&[key])?;
        self.freeze(&[key])?;
        self.cross_flbs(&[key]);
        self.make_incoming(key);
        Ok(())
    }

    /// A global update: every outgoing session is frozen, in creation order,
    /// and crosses to the incoming list of the next epoch. Incoming sessions
    /// that are not finished are carried to the next epoch (held ones are
    /// released, as if their holders had died); finished ones are dropped.
    /// Every handle of the current epoch goes stale. Returns the new epoch.
    ///
    /// `EEXIST` (before anything is frozen) when an outgoing session's name
    /// equals that of an unfinished incoming session of the same owner. If any
    /// freeze fails, everything already frozen is unfrozen in reverse order,
    /// nothing changes, and the freeze's errno is returned.
    pub fn update(&mut self) -> Result<u64> {
        let out: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Outgoing)
            .map(|(k, _)| *k)
            .collect();
        self.check_incoming_free(&out)?;
        self.freeze(&out)?;
        self.cross_flbs(&out);
        let inc: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side != Side::Outgoing)
            .map(|(k, _)| *k)
            .collect();
        for key in inc {
            if self.sessions[&key].side == (Side::Incoming { finished: true }) {
                self.remove_session(key);
            } else {
                self.stale_handles(key);
            }
        }
        for key in out {
            self.make_incoming(key);
        }
        self.epoch += 1;
        self.changed_epoch();
        Ok(self.epoch)
    }

    /// Takes hold of the incoming session `name` of `owner`; returns a handle.
    ///
    /// `ENOENT` when there is no such incoming session; `EINVAL` when it is
    /// already held (retrieved and not released) or finished.
    pub fn retrieve_session(&mut self, owner: u32, name: &[u8]) -> Result<SessionHandle> {
        let Some(&key) = self.incoming.get(&(owner, name.to_vec())) else {
            return err(
                Errno::ENOENT,
                format!("no incoming session named '{}'", show(name)),
            );
        };
        let s = &self.sessions[&key];
        if !s.handles.is_empty() || s.side == (Side::Incoming { finished: true }) {
            return err(
                Errno::EINVAL,
                format!("incoming session '{}' is already retrieved", show(name)),
            );
        }
        self.changed(key).state = true;
        Ok(self.new_handle(key))
    }

    /// Retrieves the file preserved under `token`. Any order, any number of
    /// times: every call returns a new descriptor of the same open file.
    ///
    /// `EINVAL` on an outgoing session; `ENOENT` for an unknown token (or after
    /// finish); a failed retrieve is sticky: the same errno every time, without
    /// calling the handler again.
    pub fn retrieve_fd(&mut self, h: SessionHandle, token: u64) -> Result<OwnedFd> {
        match self.retrieve_inner(h, token, false)? {
            Retrieval::Fd(fd) => Ok(fd),
            Retrieval::Custody => unreachable!("a copy was asked for"),
        }
    }

    /// Retrieves the file preserved under `token` as [`Luo::retrieve_fd`]
    /// does (same errors, same status and change log), but without a copy
    /// of the custody descriptor where the custody descriptor is what would
    /// be copied: [`Retrieval::Custody`] then says to borrow it with
    /// [`Luo::custody_fd`]. A handler with its own retrieve still gives
    /// [`Retrieval::Fd`] the first time.
    pub fn retrieve_custody(&mut self, h: SessionHandle, token: u64) -> Result<Retrieval> {
        self.retrieve_inner(h, token, true)
    }

    /// The custody descriptor of the retrieved file `token`, borrowed: the
    /// same open file a retrieve of it hands out. Valid while the model is
    /// not changed (a finish or a close closes it).
    ///
    /// `ENOENT` for an unknown token; `EINVAL` for a file not retrieved.
    pub fn custody_fd(&self, h: SessionHandle, token: u64) -> Result<BorrowedFd<'_>> {
        Ok(self.retrieved_fds(h, &[token])?[0])
    }

    /// [`Luo::custody_fd`] of each of `tokens`, in order, the session
    /// looked up once; the error of the first that fails names its token.
    pub fn retrieved_fds(&self, h: SessionHandle, tokens: &[u64]) -> Result<Vec<BorrowedFd<'_>>> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        let one = |token: u64| -> Result<BorrowedFd<'_>> {
            let Some(&i) = s.tokens.get(&token) else {
                return err(
                    Errno::ENOENT,
                    format!("session '{}' has no file with token {token}", show(&s.name)),
                );
            };
            let f = &s.files[i];
            if f.retrieve != RetrieveStatus::Retrieved {
                return err(
                    Errno::EINVAL,
                    format!("token {token} is not retrieved; only a retrieved file is handed out"),
                );
            }
            Ok(f.custody.as_fd())
        };
        tokens
            .iter()
            .map(|&t| one(t).map_err(|e| e.with_token(t)))
            .collect()
    }

    fn retrieve_inner(&mut self, h: SessionHandle, token: u64, lend: bool) -> Result<Retrieval> {
        let key = self.live(h)?;
        let s = self.sessions.get_mut(&key).expect("session");
        if s.side == Side::Outgoing {
            return err(
                Errno::EINVAL,
                "files can be retrieved only from an incoming session",
            );
        }
        let Some(&i) = s.tokens.get(&token) else {
            return err(
                Errno::ENOENT,
                format!("session '{}' has no file with token {token}", show(&s.name)),
            );
        };
        let owner = s.owner;
        let f = &mut s.files[i];
        let what = |f: &PreservedFile| format!("retrieve of token {} failed", f.token);
        let copy = |f: &PreservedFile| {
            f.custody
                .as_fd()
                .try_clone_to_owned()
                .map(Retrieval::Fd)
                .map_err(|e| Error::new(e.into(), "duplicating the retrieved file failed"))
        };
        match f.retrieve {
            RetrieveStatus::Failed(e) => return err(e, what(f)),
            // The custody descriptor is the retrieved file.
            RetrieveStatus::Retrieved if lend => return Ok(Retrieval::Custody),
            RetrieveStatus::Retrieved => return copy(f),
            RetrieveStatus::NotRetrieved => {}
        }
        // A handler whose retrieve is the default: the model's own copy of
        // the custody file, which stays in custody and in the index as it is.
        if self.handlers[f.handler].retrieves_custody() {
            // The copy first: failing (EMFILE) leaves the file as it was.
            let out = if lend { Retrieval::Custody } else { copy(f)? };
            f.retrieve = RetrieveStatus::Retrieved;
            self.changed(key).retrieved.push(token);
            return Ok(out);
        }
        let new = match self.handlers[f.handler].retrieve(&f.args(key, owner)) {
            Ok(fd) => fd,
            Err(e) => {
                f.retrieve = RetrieveStatus::Failed(e);
                let r = err(e, what(f));
                self.changed(key).retrieved.push(token);
                return r;
            }
        };
        // The new file is keyed as a preserve keys it. Reading an eventfd's
        // id can fail (EMFILE): the retrieve then fails, not sticky, before
        // anything changed, rather than leave the file out of the index.
        let identity = self.index.identity(f.key);
        let new_key = match self.index.key(identity, new.as_fd()) {
            Ok(k) => k,
            Err(e) => {
                return err(
                    e,
                    format!(
                        "retrieve of token {}: reading the retrieved eventfd's id failed ({e:?})",
                        f.token
                    ),
                )
            }
        };
        // A handler that gives back the custody file itself (a dup of the
        // same open file, as the userspace handlers do) changes nothing the
        // index knows: one kcmp (or an eventfd's id) instead of a remove and
        // an insert, which cost O(log n) kcmp calls each for open-file
        // identities.
        let same = match (f.key, new_key) {
            (IndexKey::Eventfd(a), IndexKey::Eventfd(b)) => a == b,
            (IndexKey::Identity(i), IndexKey::Identity(_)) => {
                i.kind == IdentityKind::OpenFile
                    && luo_sys::kcmp_file(new.as_fd(), f.custody.as_fd())
                        == Ok(std::cmp::Ordering::Equal)
            }
            _ => false,
        };
        if f.indexed && same {
            f.retrieve = RetrieveStatus::Retrieved;
            self.changed(key).retrieved.push(token);
            return Ok(Retrieval::Fd(new));
        }
        let new: OwnedFd = new;
        // Hand out a copy first: failing here (EMFILE) retries cleanly.
        let out = new
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::new(e.into(), "duplicating the retrieved file failed"))?;
        // The retrieved file replaces the custody copy, so luo holds one
        // descriptor per file, and it is managed until finish.
        if f.indexed {
            self.index.remove(f.key, f.custody.as_raw_fd());
        }
        f.key = new_key;
        f.custody = new;
        f.retrieve = RetrieveStatus::Retrieved;
        let holder = Holder {
            session: key,
            token,
        };
        // As in the kernel, a conflict here cannot fail the retrieve.
        f.indexed = self.index.insert(f.key, f.custody.as_fd(), holder).is_ok();
        self.changed(key).retrieved.push(token);
        Ok(Retrieval::Fd(out))
    }

    /// Finishes a retrieved incoming session: every handler's `can_finish` is
    /// asked first (any `false` refuses with `EBUSY` and nothing changes), then
    /// every file, last to first, is finished and leaves custody and the
    /// identity index; files never retrieved are discarded. A second finish is
    /// a no-op. The session disappears when its last handle closes.
    ///
    /// `EINVAL` on an outgoing session.
    pub fn finish(&mut self, h: SessionHandle) -> Result<()> {
        let key = self.live(h)?;
        let s = self.sessions.get_mut(&key).expect("session");
        match s.side {
            Side::Outgoing => {
                return err(Errno::EINVAL, "only an incoming session can be finished")
            }
            Side::Incoming { finished: true } => return Ok(()),
            Side::Incoming { finished: false } => {}
        }
        for f in &s.files {
            let args = f.args(key, s.owner);
            if !self.handlers[f.handler].can_finish(&args) {
                return err(
                    Errno::EBUSY,
                    format!(
                        "handler {:?} cannot finish token {} yet; nothing was finished",
                        self.handlers[f.handler].compatible(),
                        f.token
                    ),
                );
            }
        }
        s.side = Side::Incoming { finished: true };
        s.tokens.clear();
        let owner = s.owner;
        let files = std::mem::take(&mut s.files);
        let c = self.changed(key);
        c.state = true;
        c.removed.extend(files.iter().rev().map(|f| f.token));
        // Out of the index together, while the custody descriptors are open.
        let indexed: Vec<_> = files
            .iter()
            .filter(|f| f.indexed)
            .map(|f| (f.key, f.custody.as_raw_fd()))
            .collect();
        self.index.remove_all(&indexed);
        for f in files.into_iter().rev() {
            self.release_file(owner, f.pinned);
            let args = f.args(key, owner);
            self.handlers[f.handler].finish(&args);
            for &(fi, g) in f.flb_refs.iter().rev() {
                self.flbs[fi].put_incoming(g);
            }
        }
        Ok(())
    }
}
