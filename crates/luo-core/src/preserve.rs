//! Preserving a file: the kernel's checks in order, then each step
//! recorded so that a refusal undoes them all.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::error::err;
use crate::flb::Gen;
use crate::identity::{Holder, Identity, IndexKey, Refusal};
use crate::{
    show, Errno, Error, FileInfo, FileOpArgs, Luo, PreservedFile, Result, RetrieveStatus,
    SessionHandle, Side,
};

/// Steps a failed preserve undoes, newest first: the FLB references
/// taken, last to first, then the index entry. No allocation unless an FLB
/// is taken: a preserve is made once per file.
#[derive(Default)]
struct Undo {
    /// The entry of the descriptor with this number (still open: the
    /// custody descriptor is dropped only after the undo).
    index: Option<(IndexKey, std::os::fd::RawFd)>,
    flbs: Vec<(usize, Gen)>,
}

impl Luo {
    /// Preserves `fd` in the outgoing session under `token`. luo keeps the
    /// descriptor (its custody copy); the caller may close its own copies.
    ///
    /// Checks, in the kernel's order: `EINVAL` (not an outgoing session),
    /// `EEXIST` (token used in this session), `ENOSPC`
    /// ([`Limits::max_files_per_session`](crate::Limits::max_files_per_session)), `EBADF` (an `O_PATH` fd), `ENOENT`
    /// (no handler accepts the file, or the [`Luo::set_veto`] predicate
    /// refuses it), `EBUSY` (the file is already managed by
    /// any session), then the FLB and handler `preserve` errors. A refused
    /// preserve leaves nothing behind: no index entry, no FLB reference, and
    /// `fd` is closed.
    pub fn preserve(&mut self, h: SessionHandle, fd: OwnedFd, token: u64) -> Result<()> {
        self.preserve_or_return(h, fd, token).map_err(|(e, _)| e)
    }

    /// As [`Luo::preserve`], but a refused preserve hands `fd` back, so
    /// that the caller can try again once something that may have changed
    /// the answer (`EBUSY`: another session let go of the file; `EDQUOT`)
    /// is done, without asking its client for the file again.
    pub fn preserve_or_return(
        &mut self,
        h: SessionHandle,
        fd: OwnedFd,
        token: u64,
    ) -> std::result::Result<(), (Error, OwnedFd)> {
        let key = match self.session_checks(h, token) {
            Ok(key) => key,
            Err(e) => return Err((e, fd)),
        };
        let mut undo = Undo::default();
        let mut slot = Some(fd);
        match self.preserve_steps(key, &mut slot, token, &mut undo) {
            Ok(file) => {
                let s = self.sessions.get_mut(&key).expect("session");
                let owner = s.owner;
                let pinned = file.pinned;
                s.tokens.insert(token, s.files.len());
                s.files.push(file);
                let u = self.usage_mut(owner);
                u.files += 1;
                u.pinned_bytes += pinned;
                self.changed(key).added.push(token);
                Ok(())
            }
            Err(e) => {
                for (i, g) in undo.flbs.into_iter().rev() {
                    self.flbs[i].put_outgoing(g);
                }
                if let Some((id, fd)) = undo.index {
                    self.index.remove(id, fd);
                }
                Err((e, slot.expect("kept until the file is preserved")))
            }
        }
    }

    /// The session's own checks, in the kernel's order (`EINVAL`,
    /// `EEXIST`, `ENOSPC`): the key of the session behind `h`.
    fn session_checks(&self, h: SessionHandle, token: u64) -> Result<u64> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        if s.side != Side::Outgoing {
            return err(
                Errno::EINVAL,
                "files can be preserved only in an outgoing session",
            );
        }
        if s.tokens.contains_key(&token) {
            return err(
                Errno::EEXIST,
                format!(
                    "token {token} is already used in session '{}'",
                    show(&s.name)
                ),
            );
        }
        if s.files.len() >= self.limits.max_files_per_session {
            return err(
                Errno::ENOSPC,
                format!(
                    "session '{}' holds {} files (the limit)",
                    show(&s.name),
                    s.files.len()
                ),
            );
        }
        Ok(key)
    }

    /// The steps past the session's own checks. `slot` holds the file
    /// until it is preserved; a refusal leaves it there.
    fn preserve_steps(
        &mut self,
        key: u64,
        slot: &mut Option<OwnedFd>,
        token: u64,
        undo: &mut Undo,
    ) -> Result<PreservedFile> {
        let fd = slot.as_ref().expect("the file to preserve");
        // EBADF, as the kernel's fget says, when the descriptor is not a
        // usable file; any other failure (ENOMEM, ...) is the system's, not
        // the file's, and keeps its errno so that it can be told apart.
        let bad = |e: Errno| match e {
            Errno::EBADF => Error::new(e, format!("token {token}: not a usable file ({e:?})")),
            _ => Error::new(
                e,
                format!("token {token}: inspecting the file failed ({e:?})"),
            ),
        };
        let o_path = || {
            err(
                Errno::EBADF,
                format!("token {token}: an O_PATH descriptor holds no file"),
            )
        };
        // fstat works on an O_PATH descriptor; a socket's first getsockopt
        // does not (the kernel's fdget skips O_PATH files: EBADF), which
        // spares a socket the F_GETFL every other file needs.
        let stat = luo_sys::fstat(fd.as_fd()).map_err(bad)?;
        let probe = crate::handler::FileProbe::default();
        let info = FileInfo::new(fd.as_fd(), stat, &probe, self.index.fdinfo());
        if stat.is_socket() {
            if info.socket_domain() == Err(Errno::EBADF) {
                return o_path();
            }
        } else if luo_sys::is_o_path(fd.as_fd()).map_err(bad)? {
            return o_path();
        }
        if let Some(why) = self.veto.as_ref().and_then(|v| (v.0)(&info)) {
            return err(Errno::ENOENT, format!("token {token}: {why}"));
        }
        let kexec_safe_only = self.sessions[&key].mode.kexec_safe_only;
        let pick = || {
            self.handlers.iter().position(|h| {
                (!kexec_safe_only || h.descriptor().kexec_safe()) && h.can_preserve(&info)
            })
        };
        // The handlers' checks (fstatfs, getsockopt) say no when their
        // system call fails: before "no handler", once more, and then the
        // errno of a check that failed for want of a resource, so that a
        // passing shortage is not taken for a file nobody can keep.
        let Some(hi) = pick().or_else(pick) else {
            // Whether an anonymous file is an eventfd is its fdinfo's to
            // say: unread, the preserve fails with why.
            if let Some(e) = probe.fdinfo_failed() {
                return err(
                    e,
                    format!(
                        "token {token}: reading /proc/self/fdinfo/{} to tell an eventfd failed ({e:?})",
                        fd.as_raw_fd()
                    ),
                );
            }
            if let Some(e) = failed_check(&info) {
                return err(
                    e,
                    format!("token {token}: inspecting the file failed ({e:?})"),
                );
            }
            return err(
                Errno::ENOENT,
                format!("token {token}: no handler can preserve this kind of file"),
            );
        };
        let handler = &self.handlers[hi];
        let pinned = if handler.descriptor().pins_memory {
            stat.size
        } else {
            0
        };
        let owner = self.sessions[&key].owner;
        let u = self.usage(owner);
        if owner != 0 && u.files >= self.quota.files {
            return err(
                Errno::EDQUOT,
                format!(
                    "token {token}: uid {owner} has {} files preserved, its quota of files (luod --quota-files)",
                    u.files
                ),
            );
        }
        if owner != 0 && u.pinned_bytes.saturating_add(pinned) > self.quota.pinned_bytes {
            return err(
                Errno::EDQUOT,
                format!(
                    "token {token}: {pinned} more bytes of memfd would exceed uid {owner}'s quota of {} pinned bytes ({} in use; luod --quota-bytes)",
                    self.quota.pinned_bytes, u.pinned_bytes
                ),
            );
        }
        let identity = Identity::new(&stat, handler.identity(&info));
        // Keyed by the one rule (an eventfd by its id, read once for the
        // handlers' check and the key alike).
        let ikey = self
            .index
            .key_with(identity, |dir| info.eventfd_info(dir))
            .map_err(|e| {
                Error::new(
                    e,
                    format!("token {token}: reading the eventfd's id failed ({e:?})"),
                )
            })?;
        let holder = Holder {
            session: key,
            token,
        };
        match self.index.insert(ikey, fd.as_fd(), holder) {
            Ok(()) => undo.index = Some((ikey, fd.as_raw_fd())),
            Err(Refusal::Busy(by)) => {
                let by = by
                    .and_then(|h| self.sessions.get(&h.session).map(|s| (s, h.token)))
                    .map(|(s, t)| format!(" (session '{}', token {t})", show(&s.name)))
                    .unwrap_or_default();
                return err(
                    Errno::EBUSY,
                    format!("token {token}: the file is already managed by a session{by}"),
                );
            }
            Err(Refusal::Error(e)) => {
                return err(e, format!("token {token}: comparing open files failed"));
            }
        }
        let mut flb_refs = Vec::new();
        for &fi in &self.handler_flbs[hi] {
            let g = self.flbs[fi].get_outgoing().map_err(|e| {
                Error::new(
                    e,
                    format!(
                        "token {token}: FLB {:?} preserve failed",
                        self.flbs[fi].flb.compatible()
                    ),
                )
            })?;
            undo.flbs.push((fi, g));
            flb_refs.push((fi, g));
        }
        let args = FileOpArgs {
            session: key,
            owner,
            token,
            file: fd.as_fd(),
            serialized_data: 0,
            retrieve_status: RetrieveStatus::NotRetrieved,
        };
        let data = self.handlers[hi].preserve(&args).map_err(|e| {
            Error::new(
                e,
                format!(
                    "token {token}: handler {:?} preserve failed",
                    self.handlers[hi].compatible()
                ),
            )
        })?;
        Ok(PreservedFile {
            token,
            handler: hi,
            key: ikey,
            custody: slot.take().expect("the file to preserve"),
            data,
            flb_refs: flb_refs.into_boxed_slice(),
            indexed: true,
            retrieve: RetrieveStatus::NotRetrieved,
            pinned,
        })
    }
}

/// The errno of a handler check's system call that fails for want of a
/// resource on `file` (see `preserve_steps`), if one does.
fn failed_check(file: &FileInfo<'_>) -> Option<Errno> {
    let failed = if file.stat.is_socket() {
        luo_sys::socket_kind(file.fd).err()
    } else {
        luo_sys::fstatfs_type(file.fd).err()
    };
    failed.filter(|e| {
        matches!(
            *e,
            Errno::ENOMEM
                | Errno::EMFILE
                | Errno::ENFILE
                | Errno::ENOBUFS
                | Errno::EAGAIN
                | Errno::EINTR
        )
    })
}
