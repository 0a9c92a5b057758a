//! luo's additions for persistent sessions: one file out of an outgoing
//! session ([`Luo::unpreserve`]), and a copy of a persistent session's
//! file without retrieving it ([`Luo::fetch`]). The kernel has neither.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::error::err;
use crate::{show, Errno, Error, Luo, Result, SessionHandle, Side};

impl Luo {
    /// Removes the file preserved under `token` from an outgoing session
    /// (persistent or not), as an abort would for each file: the handler's
    /// `unpreserve`, its FLB references dropped, its identity index entry
    /// removed (the file can be preserved again), its quota released and
    /// the custody descriptor closed. The other files keep their order.
    /// The kernel has no per-file unpreserve: a deviation.
    ///
    /// `EINVAL` on a session that is not outgoing; `ENOENT` for a token it
    /// does not hold.
    pub fn unpreserve(&mut self, h: SessionHandle, token: u64) -> Result<()> {
        let key = self.live(h)?;
        let s = self.sessions.get_mut(&key).expect("session");
        if s.side != Side::Outgoing {
            return err(
                Errno::EINVAL,
                "files can be unpreserved only from an outgoing session",
            );
        }
        let Some(i) = s.tokens.remove(&token) else {
            return err(
                Errno::ENOENT,
                format!("session '{}' has no file with token {token}", show(&s.name)),
            );
        };
        let f = s.files.remove(i);
        for j in s.tokens.values_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        let owner = s.owner;
        self.release_file(owner, f.pinned);
        let args = f.args(key, owner);
        self.handlers[f.handler].unpreserve(&args);
        for &(fi, g) in f.flb_refs.iter().rev() {
            self.flbs[fi].put_outgoing(g);
        }
        if f.indexed {
            self.index.remove(f.key, f.custody.as_raw_fd());
        }
        self.changed(key).removed.push(token);
        // `f` is dropped here: the custody descriptor is closed.
        Ok(())
    }

    /// A new descriptor of the file preserved under `token` in a
    /// persistent session (a `dup` of its custody descriptor: the same
    /// open file). Nothing changes: the file stays preserved, its retrieve
    /// status untouched. The kernel has no such call: a deviation, for
    /// a supervisor that hands a service the files it keeps.
    ///
    /// `EINVAL` on a session that is not persistent (and open);
    /// `ENOENT` for a token it does not hold.
    pub fn fetch(&self, h: SessionHandle, token: u64) -> Result<OwnedFd> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        if s.side != Side::Outgoing || !s.mode.persist {
            return err(
                Errno::EINVAL,
                "files can be fetched only from a persistent open session",
            );
        }
        let Some(&i) = s.tokens.get(&token) else {
            return err(
                Errno::ENOENT,
                format!("session '{}' has no file with token {token}", show(&s.name)),
            );
        };
        s.files[i]
            .custody
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::new(e.into(), "duplicating the preserved file failed"))
    }
}
