//! The whole model as plain data, for an agent that hands itself over to a
//! new binary in the same process (an in-place upgrade): every session, file
//! and handle, with the custody descriptors listed separately so that the
//! agent can keep them open across `exec` and give them back.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use foldhash::{HashMap, HashMapExt};

use crate::error::err;
use crate::identity::{Holder, Identity, IndexKey, Refusal};
use crate::{
    Errno, HandleEntry, Luo, NameKey, PreservedFile, Result, RetrieveStatus, Session, Side,
};

/// A session's side, as in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapSide {
    /// Outgoing (open).
    Outgoing,
    /// Incoming; `true` once finished.
    Incoming(bool),
}

/// One preserved file. Its custody descriptor is `fds[fd]` of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapFile {
    /// Its token.
    pub token: u64,
    /// Its handler: an index into [`Snapshot::handlers`].
    pub handler: usize,
    /// Its identity; also how the agent checks that a descriptor it got
    /// back is the right file (`st_dev`, `st_ino`).
    pub identity: Identity,
    /// The handler's serialized data.
    pub data: u64,
    /// Whether it is in the identity index.
    pub indexed: bool,
    /// Its retrieve status.
    pub retrieve: RetrieveStatus,
    /// Bytes counted against its owner's quota.
    pub pinned: u64,
    /// Index of its custody descriptor in the snapshot's descriptor list.
    pub fd: usize,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapSession {
    /// Its key (what handlers see as `FileOpArgs::session`).
    pub key: u64,
    /// Its name.
    pub name: Vec<u8>,
    /// Its owner.
    pub owner: u32,
    /// Its side.
    pub side: SnapSide,
    /// Its live handles.
    pub handles: Vec<u64>,
    /// Its mode.
    pub mode: crate::SessionMode,
    /// Its files in preservation order.
    pub files: Vec<SnapFile>,
}

/// The model as plain data (FLB state is not part of it: a model with FLBs
/// cannot be snapshotted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The epoch.
    pub epoch: u64,
    /// The next session key.
    pub next_key: u64,
    /// The next handle number.
    pub next_handle: u64,
    /// The compatible strings files name by index.
    pub handlers: Vec<String>,
    /// Every session, in creation order.
    pub sessions: Vec<SnapSession>,
    /// Every handle: `(handle, session key, live)`.
    pub handles: Vec<(u64, u64, bool)>,
}

impl Luo {
    /// The model as plain data, and its custody descriptors (`SnapFile::fd`
    /// indexes them). `EOPNOTSUPP` when FLBs are registered: their state is
    /// not carried.
    pub fn snapshot(&self) -> Result<(Snapshot, Vec<BorrowedFd<'_>>)> {
        if !self.flbs.is_empty() {
            return err(
                Errno::EOPNOTSUPP,
                "a model with FLBs cannot be snapshotted (their state is not carried)",
            );
        }
        let mut fds = Vec::with_capacity(self.custody_count());
        let sessions = self
            .sessions
            .iter()
            .map(|(&key, s)| SnapSession {
                key,
                name: s.name.clone(),
                owner: s.owner,
                side: match s.side {
                    Side::Outgoing => SnapSide::Outgoing,
                    Side::Incoming { finished } => SnapSide::Incoming(finished),
                },
                handles: s.handles.clone(),
                mode: s.mode,
                files: s
                    .files
                    .iter()
                    .map(|f| {
                        fds.push(f.custody.as_fd());
                        SnapFile {
                            token: f.token,
                            handler: f.handler,
                            identity: self.index.identity(f.key),
                            data: f.data,
                            indexed: f.indexed,
                            retrieve: f.retrieve,
                            pinned: f.pinned,
                            fd: fds.len() - 1,
                        }
                    })
                    .collect(),
            })
            .collect();
        let mut handles: Vec<(u64, u64, bool)> = self
            .handles
            .iter()
            .map(|(&h, e)| (h, e.session, e.live))
            .collect();
        handles.sort_unstable();
        Ok((
            Snapshot {
                epoch: self.epoch,
                next_key: self.next_key,
                next_handle: self.next_handle,
                handlers: self
                    .handlers
                    .iter()
                    .map(|h| h.compatible().to_string())
                    .collect(),
                sessions,
                handles,
            },
            fds,
        ))
    }

    /// Rebuilds an empty model (handlers registered, no sessions) from
    /// `snap`, taking ownership of `fds` (`SnapFile::fd` indexes them).
    /// Usage is recounted and the identity index rebuilt. On an error the
    /// model is left half built and must be dropped.
    ///
    /// `EINVAL` when the model is not empty or the snapshot is inconsistent
    /// (a descriptor missing or used twice, a handle or name twice, a file
    /// managed twice); `ENOENT` for a handler this model does not have.
    pub fn restore(&mut self, snap: Snapshot, fds: Vec<OwnedFd>) -> Result<()> {
        if !self.sessions.is_empty() || !self.handles.is_empty() {
            return err(Errno::EINVAL, "restore needs an empty model");
        }
        // The snapshot's handler indexes, as this model's.
        let mut map = Vec::with_capacity(snap.handlers.len());
        for c in &snap.handlers {
            map.push(self.handlers.iter().position(|h| h.compatible() == c));
        }
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut sessions = std::collections::BTreeMap::new();
        let mut outgoing: HashMap<NameKey, u64> = HashMap::new();
        let mut incoming: HashMap<NameKey, u64> = HashMap::new();
        let mut usage: HashMap<u32, crate::Usage> = HashMap::new();
        for s in snap.sessions {
            let side = match s.side {
                SnapSide::Outgoing => Side::Outgoing,
                SnapSide::Incoming(finished) => Side::Incoming { finished },
            };
            let nk = (s.owner, s.name.clone());
            let list = if side == Side::Outgoing {
                &mut outgoing
            } else {
                &mut incoming
            };
            // A finished session is no longer listed by name.
            if side != (Side::Incoming { finished: true }) && list.insert(nk, s.key).is_some() {
                return err(
                    Errno::EINVAL,
                    "two sessions of one owner share a name and side",
                );
            }
            let u = usage.entry(s.owner).or_default();
            u.sessions += 1;
            let mut files = Vec::with_capacity(s.files.len());
            let mut tokens = HashMap::with_capacity(s.files.len());
            for f in s.files {
                let Some(hi) = map.get(f.handler).copied().flatten() else {
                    let name = snap.handlers.get(f.handler).map_or("?", String::as_str);
                    return err(
                        Errno::ENOENT,
                        format!("no handler {name:?} to take over token {}", f.token),
                    );
                };
                let custody = fds.get_mut(f.fd).and_then(Option::take).ok_or_else(|| {
                    crate::Error::new(
                        Errno::EINVAL,
                        format!("descriptor {} is missing or used twice", f.fd),
                    )
                })?;
                // Keyed as a preserve keys it (an eventfd's id is read
                // again: a snapshot does not carry it).
                let key = if f.indexed {
                    self.index.key(f.identity, custody.as_fd()).map_err(|e| {
                        crate::Error::new(
                            e,
                            format!("token {}: reading its eventfd id failed ({e:?})", f.token),
                        )
                    })?
                } else {
                    IndexKey::Identity(f.identity)
                };
                if f.indexed {
                    let holder = Holder {
                        session: s.key,
                        token: f.token,
                    };
                    match self.index.insert(key, custody.as_fd(), holder) {
                        Ok(()) => {}
                        Err(Refusal::Busy(_)) => {
                            return err(
                                Errno::EINVAL,
                                format!("token {} is managed twice", f.token),
                            )
                        }
                        Err(Refusal::Error(e)) => {
                            return err(e, "comparing open files failed");
                        }
                    }
                }
                if tokens.insert(f.token, files.len()).is_some() {
                    return err(Errno::EINVAL, format!("token {} is used twice", f.token));
                }
                let u = usage.entry(s.owner).or_default();
                u.files += 1;
                u.pinned_bytes += f.pinned;
                files.push(PreservedFile {
                    token: f.token,
                    handler: hi,
                    key,
                    custody,
                    data: f.data,
                    flb_refs: Box::default(),
                    indexed: f.indexed,
                    retrieve: f.retrieve,
                    pinned: f.pinned,
                });
            }
            sessions.insert(
                s.key,
                Session {
                    name: s.name,
                    owner: s.owner,
                    side,
                    files,
                    tokens,
                    handles: s.handles,
                    mode: s.mode,
                },
            );
        }
        let mut handles = HashMap::with_capacity(snap.handles.len());
        for (h, session, live) in snap.handles {
            // A stale handle may outlive its session (aborted by name, or
            // dropped by an update): it only answers ESTALE until closed.
            if (live && !sessions.contains_key(&session))
                || handles.insert(h, HandleEntry { session, live }).is_some()
            {
                return err(Errno::EINVAL, format!("handle {h} is inconsistent"));
            }
        }
        self.sessions = sessions;
        self.outgoing = outgoing;
        self.incoming = incoming;
        self.handles = handles;
        self.usage = usage;
        self.epoch = snap.epoch;
        self.next_key = snap.next_key;
        self.next_handle = snap.next_handle;
        // Everything is new to whoever follows the changes.
        let mut changes = crate::Changes {
            epoch: true,
            ..crate::Changes::default()
        };
        for (&key, s) in &self.sessions {
            changes.sessions.insert(
                key,
                crate::SessionChange {
                    created: true,
                    handles: !s.handles.is_empty(),
                    added: s.files.iter().map(|f| f.token).collect(),
                    ..crate::SessionChange::default()
                },
            );
        }
        self.changes = changes;
        Ok(())
    }
}
