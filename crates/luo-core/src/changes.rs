//! What each call changed: the model keeps a log of the sessions and files
//! its mutating calls touched, so that an agent that mirrors it elsewhere
//! (luod's crash-safety store) can follow with work proportional to the
//! change, and cannot forget a call that changed something.
//!
//! ```
//! use std::os::fd::AsFd;
//! use luo_core::Luo;
//!
//! let mut luo = Luo::with_default_handlers();
//! let s = luo.create_session(0, b"db").unwrap();
//! let key = luo.session_key(s).unwrap();
//! luo.take_changes(); // what the mirror has seen so far
//! let memfd = luo_sys::memfd_create("data", 0).unwrap();
//! luo.preserve(s, memfd.as_fd().try_clone_to_owned().unwrap(), 7).unwrap();
//! let c = luo.take_changes();
//! assert_eq!(c.sessions[&key].added, [7]);
//! assert!(luo.take_changes().is_empty());
//! ```

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::Luo;

/// What changed in one session since the last [`Luo::take_changes`].
///
/// Only what succeeded is recorded: a refused call changes nothing and
/// records nothing. FLB state is not part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChange {
    /// The session was created (or restored from a snapshot) since the last
    /// take: everything about it is new, and its files are in `added`.
    pub created: bool,
    /// The session left the model (aborted, closed after its finish,
    /// displaced or dropped by an update). Every other field is then empty:
    /// whatever it held left with it. A session created and gone between
    /// two takes is not reported at all.
    pub gone: bool,
    /// Its [`SessionState`](crate::SessionState) changed: it crossed to the
    /// incoming side, was retrieved, returned to waiting, or was finished.
    pub state: bool,
    /// Its number of live handles changed.
    pub handles: bool,
    /// Its [`SessionMode`](crate::SessionMode) changed.
    pub mode: bool,
    /// Tokens preserved, in preservation order.
    pub added: Vec<u64>,
    /// Tokens that left custody while the session stayed (its finish, or
    /// [`Luo::unpreserve`](crate::Luo::unpreserve)), in the order they left.
    pub removed: Vec<u64>,
    /// Tokens whose retrieve status changed (retrieved, or failed), in
    /// order; the retrieved file may have replaced the custody descriptor.
    pub retrieved: Vec<u64>,
}

/// Everything that changed since the last [`Luo::take_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The epoch changed ([`Luo::update`], [`Luo::set_epoch`]).
    pub epoch: bool,
    /// Per session key (the number handlers see as
    /// [`FileOpArgs::session`](crate::FileOpArgs::session)), in key order,
    /// which is creation order.
    pub sessions: BTreeMap<u64, SessionChange>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.epoch && self.sessions.is_empty()
    }
}

impl Luo {
    /// Takes what changed since the last call (or since the model was
    /// created), and starts a new log. Every mutating call records into it;
    /// the log holds at most one entry per session that exists or existed
    /// at the last take, and each entry only what changed, so a caller that
    /// never takes it keeps no more than the model itself holds.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The change entry of session `key`, for recording.
    pub(crate) fn changed(&mut self, key: u64) -> &mut SessionChange {
        self.changes.sessions.entry(key).or_default()
    }

    /// Records that session `key` left the model.
    pub(crate) fn changed_gone(&mut self, key: u64) {
        match self.changes.sessions.entry(key) {
            Entry::Occupied(e) if e.get().created => {
                e.remove();
            }
            e => {
                *e.or_default() = SessionChange {
                    gone: true,
                    ..SessionChange::default()
                }
            }
        }
    }

    /// Records an epoch change.
    pub(crate) fn changed_epoch(&mut self) {
        self.changes.epoch = true;
    }
}
