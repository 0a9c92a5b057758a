//! The identity index: which files are managed by some session right now.
//!
//! One index spans every session. A file enters it when it is preserved and
//! leaves it when it is unpreserved (its outgoing session aborted); a file that
//! is retrieved stays in it until its session is finished. A second preserve of
//! a file that is in the index fails with `EBUSY`, in any session.
//!
//! Each handler chooses what "the same file" means ([`IdentityKind`]):
//!
//! - [`IdentityKind::OpenFile`], the default: the open file description. A
//!   `dup`, a fork copy or an SCM_RIGHTS copy is the same file; two eventfds are
//!   not, although they share the one anonymous inode.
//! - [`IdentityKind::Inode`], for memfd: the inode, so that a re-open through
//!   `/proc/self/fd/N` (a new open file description on the same pages) is caught.
//!
//! Files are bucketed by `(st_dev, st_ino)`. A bucket holding an inode identity
//! admits nothing else. Inside a bucket, open file descriptions are kept in a
//! balanced tree ordered by `kcmp(KCMP_FILE)`, so the eventfd bucket, which
//! holds every preserved eventfd of the system, costs O(log n) `kcmp` calls per
//! insert, lookup and remove, never a scan. An inode with one managed open
//! file (a socket: the usual case) holds it without a tree and
//! compares nothing: `kcmp` runs only when a second file arrives with the
//! same `(st_dev, st_ino)`. Entries are removed by their custody
//! descriptor's number, which is unique while it is open; when a session
//! leaves, its entries leave together ([`IdentityIndex::remove_all`]), and a
//! large bucket is then rebuilt without comparisons.
//!
//! Where `kcmp` is unavailable (`ENOSYS`, or `EPERM` under seccomp), the index
//! falls back to inode identity for everything, conservatively: a file whose
//! inode already has a managed file is refused with `EBUSY`, so two distinct
//! eventfds can no longer both be preserved, but no file is ever managed twice.
//!
//! Eventfds, where the kernel shows their id (`eventfd-id:` in
//! `/proc/self/fdinfo/N`, Linux 5.2 and later), are keyed by that id
//! instead ([`IndexKey::Eventfd`]): an id names one eventfd context, which
//! has exactly one open file description, so each eventfd is alone in its
//! bucket and nothing is compared. Whether the kernel shows it is probed
//! once, on an eventfd of the index's own, when the index is made; from
//! then on every eventfd is keyed by id (a failure to read one is an error,
//! never a fall back to the shared inode), or, without it, none is. The id
//! is never serialized: whatever rebuilds an index reads it again
//! ([`IdentityIndex::key`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use luo_sys::{Errno, EventfdInfo, FdinfoDir, FileStat};

use crate::tree::Tree;

/// What identifies a file for the "managed by at most one session" rule
/// (on luod's wire: `open-file`, `inode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum IdentityKind {
    /// The open file description (the kernel's default, `struct file *`).
    OpenFile,
    /// The inode (the kernel's memfd `get_id`).
    Inode,
}

/// A file's identity: its inode, and whether the open file description counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Identity {
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
    /// What the handler chose (on the wire, `identity`).
    #[cfg_attr(feature = "serde", serde(rename = "identity"))]
    pub kind: IdentityKind,
}

impl IdentityKind {
    /// Its word on luod's wire and in `luoctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::OpenFile => "open-file",
            IdentityKind::Inode => "inode",
        }
    }
}

impl Identity {
    /// The identity of a file with `stat`, as chosen by a handler.
    pub fn new(stat: &FileStat, kind: IdentityKind) -> Identity {
        Identity {
            dev: stat.dev,
            ino: stat.ino,
            kind,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            IdentityKind::OpenFile => write!(f, "file@{:x}:{}", self.dev, self.ino),
            IdentityKind::Inode => write!(f, "inode@{:x}:{}", self.dev, self.ino),
        }
    }
}

/// Where the index files a managed file. In memory only: never on the wire
/// or in a snapshot, whose [`Identity`] is the same as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKey {
    /// By its identity: its inode's bucket.
    Identity(Identity),
    /// An eventfd, by its kernel id: alone in its bucket, never compared.
    Eventfd(u64),
}

/// The bucket `st_dev` of eventfds keyed by id: no device has it (the
/// kernel's `dev_t` has 32 bits).
const EVENTFD_DEV: u64 = u64::MAX;

/// Eventfds keyed by id: their shared inode, and where to read their ids.
#[derive(Debug)]
struct EventfdIds {
    dev: u64,
    ino: u64,
    fdinfo: FdinfoDir,
}

impl EventfdIds {
    /// `Some` when an eventfd of our own shows its id.
    fn probe() -> Option<EventfdIds> {
        let fdinfo = FdinfoDir::open().ok()?;
        let ev = luo_sys::eventfd(0).ok()?;
        let st = luo_sys::fstat(ev.as_fd()).ok()?;
        match fdinfo.eventfd(ev.as_fd()) {
            Ok(Some(EventfdInfo { id: Some(_) })) => Some(EventfdIds {
                dev: st.dev,
                ino: st.ino,
                fdinfo,
            }),
            _ => None,
        }
    }
}

/// Orders open file descriptions. The real one is [`Kcmp`]; tests substitute
/// others to exercise the fallback.
pub trait FileOrder: fmt::Debug + Send {
    /// How descriptor `a` orders against `b`; `Equal` means the same open
    /// file description. Both are open in this process.
    fn compare(&self, a: RawFd, b: RawFd) -> Result<Ordering, Errno>;

    /// Whether `a` and `b` are the same open file description, for when
    /// [`FileOrder::compare`] is unavailable: `F_DUPFD_QUERY`.
    fn same(&self, a: RawFd, b: RawFd) -> Result<bool, Errno> {
        luo_sys::same_file_raw(a, b)
    }

    /// Whether the index may key eventfds by their kernel id (when the
    /// kernel shows it), so that they are never compared. The real order
    /// does; by default an order a test substitutes does not, and every
    /// eventfd goes through it as on a kernel without the id.
    fn eventfd_ids(&self) -> bool {
        false
    }
}

/// `kcmp(KCMP_FILE)` on this process's descriptors.
#[derive(Debug, Default, Clone, Copy)]
pub struct Kcmp;

impl FileOrder for Kcmp {
    fn compare(&self, a: RawFd, b: RawFd) -> Result<Ordering, Errno> {
        luo_sys::kcmp_raw(a, b)
    }
    fn eventfd_ids(&self) -> bool {
        true
    }
}

/// How the index tells open file descriptions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    /// `kcmp(KCMP_FILE)` works: open-file identity is exact.
    Kcmp,
    /// `kcmp` is unavailable (its errno; a kernel without
    /// `CONFIG_CHECKPOINT_RESTORE`) but `F_DUPFD_QUERY` works: open-file
    /// identity is exact, found by a linear walk of the files of one inode.
    DupfdQuery(Errno),
    /// Neither works: every identity is treated as inode identity.
    InodeFallback(Errno),
}

/// Who holds an index entry: a session key and a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The session's internal key.
    pub session: u64,
    /// The file's token within that session.
    pub token: u64,
}

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The file is already managed (the holder, where known).
    Busy(Option<Holder>),
    /// The comparison itself failed with an unexpected errno.
    Error(Errno),
}

/// A managed open file. The index keeps its descriptor's number, not a
/// descriptor: the model removes an entry before it closes the custody
/// descriptor behind it (a closed number would compare as `EBADF`).
#[derive(Debug)]
struct Entry {
    fd: RawFd,
    holder: Holder,
}

#[derive(Debug)]
enum Bucket {
    Inode(Holder),
    /// One open file: most inodes have one (every socket does), so it
    /// is kept here without a tree node, and is inserted and removed
    /// without a comparison.
    /// (Its descriptor's number and holder side by side, not an [`Entry`]:
    /// the number then shares a word with the tag, and a bucket stays 24
    /// bytes, as small as before this variant.)
    One(RawFd, Holder),
    Files(Tree<Entry>),
}

/// The global identity index. See the module documentation.
#[derive(Debug)]
pub struct IdentityIndex {
    /// A B-tree, not a hash map: no half-empty table at the sizes luo
    /// reaches (a hash map at 16,000 entries has 32,768 slots), so about
    /// half the memory per file, for a few more comparisons of two `u64`.
    buckets: BTreeMap<(u64, u64), Bucket>,
    len: usize,
    order: Box<dyn FileOrder>,
    mode: IndexMode,
    /// Set when eventfds are keyed by id (decided once, in `new`).
    eventfds: Option<EventfdIds>,
    /// Entries keyed by an eventfd id.
    by_id: usize,
}

fn unavailable(e: Errno) -> bool {
    e == Errno::ENOSYS || e == Errno::EPERM
}

impl IdentityIndex {
    /// An empty index using `order`. The order is probed once on a pipe: if it
    /// fails with `ENOSYS` or `EPERM` the index runs in
    /// [`IndexMode::DupfdQuery`] when `F_DUPFD_QUERY` tells the pipe's ends
    /// apart, else in [`IndexMode::InodeFallback`]. Where the order allows
    /// it ([`FileOrder::eventfd_ids`]), an eventfd of its own then tells
    /// whether the kernel shows eventfd ids.
    pub fn new(order: Box<dyn FileOrder>) -> IdentityIndex {
        let mode = match luo_sys::pipe() {
            Ok((r, w)) => match order.compare(r.as_raw_fd(), r.as_raw_fd()) {
                Err(e) if unavailable(e) => {
                    let works = order.same(r.as_raw_fd(), r.as_raw_fd()) == Ok(true)
                        && order.same(r.as_raw_fd(), w.as_raw_fd()) == Ok(false);
                    if works {
                        IndexMode::DupfdQuery(e)
                    } else {
                        IndexMode::InodeFallback(e)
                    }
                }
                _ => IndexMode::Kcmp,
            },
            Err(_) => IndexMode::Kcmp,
        };
        let eventfds = if order.eventfd_ids() {
            EventfdIds::probe()
        } else {
            None
        };
        IdentityIndex {
            buckets: BTreeMap::new(),
            len: 0,
            order,
            mode,
            eventfds,
            by_id: 0,
        }
    }

    /// How open file descriptions are told apart.
    pub fn mode(&self) -> IndexMode {
        self.mode
    }

    /// True when eventfds are keyed by their kernel id, never compared.
    pub fn eventfd_ids(&self) -> bool {
        self.eventfds.is_some()
    }

    /// Where eventfds' ids are read, when they are keyed by id.
    pub(crate) fn fdinfo(&self) -> Option<&FdinfoDir> {
        self.eventfds.as_ref().map(|e| &e.fdinfo)
    }

    /// The key the file `fd` with `identity` is filed under: its eventfd id
    /// when eventfds are keyed by id and it is one (read from its fdinfo;
    /// a failed read is the error), else its identity. The one rule for
    /// every insert, whatever rebuilds the index.
    pub fn key(&self, identity: Identity, fd: BorrowedFd<'_>) -> Result<IndexKey, Errno> {
        self.key_with(identity, |dir| dir.eventfd(fd))
    }

    /// [`IdentityIndex::key`] with what the file's fdinfo says, read by
    /// `read` (a preserve's handlers may have read it already).
    pub(crate) fn key_with(
        &self,
        identity: Identity,
        read: impl FnOnce(&FdinfoDir) -> Result<Option<EventfdInfo>, Errno>,
    ) -> Result<IndexKey, Errno> {
        let plain = Ok(IndexKey::Identity(identity));
        let Some(ev) = &self.eventfds else {
            return plain;
        };
        // Every eventfd is on the one anonymous inode, with other
        // anonymous files (timerfd, signalfd, ...).
        if identity.kind != IdentityKind::OpenFile
            || (identity.dev, identity.ino) != (ev.dev, ev.ino)
        {
            return plain;
        }
        match read(&ev.fdinfo)? {
            Some(EventfdInfo { id: Some(id) }) => Ok(IndexKey::Eventfd(id)),
            // Not on the kernel that showed it at the probe.
            Some(EventfdInfo { id: None }) => Err(Errno::EIO),
            None => plain,
        }
    }

    /// The identity of a file filed under `key`.
    pub fn identity(&self, key: IndexKey) -> Identity {
        match (key, &self.eventfds) {
            (IndexKey::Identity(i), _) => i,
            (IndexKey::Eventfd(_), Some(ev)) => Identity {
                dev: ev.dev,
                ino: ev.ino,
                kind: IdentityKind::OpenFile,
            },
            (IndexKey::Eventfd(_), None) => unreachable!("eventfd keys come from this index"),
        }
    }

    /// The anonymous inode's bucket, which an inode identity on it holds
    /// against every eventfd, as it did before eventfds had their own.
    fn anon_inode_held(&self) -> Option<Holder> {
        let ev = self.eventfds.as_ref()?;
        match self.buckets.get(&(ev.dev, ev.ino)) {
            Some(Bucket::Inode(h)) => Some(*h),
            _ => None,
        }
    }

    fn is_anon_inode(&self, identity: Identity) -> bool {
        self.eventfds
            .as_ref()
            .is_some_and(|ev| (identity.dev, identity.ino) == (ev.dev, ev.ino))
    }

    /// Number of managed files.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no file is managed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records `fd` (filed under `key`, from [`IdentityIndex::key`]) as
    /// managed by `holder`, or says who already manages it. On refusal the
    /// index is unchanged.
    pub fn insert(
        &mut self,
        key: IndexKey,
        fd: BorrowedFd<'_>,
        holder: Holder,
    ) -> Result<(), Refusal> {
        let raw = fd.as_raw_fd();
        let identity = match key {
            IndexKey::Identity(i) => i,
            IndexKey::Eventfd(id) => {
                // One id, one open file: the same key is the same file.
                if let Some(h) = self.anon_inode_held() {
                    return Err(Refusal::Busy(Some(h)));
                }
                match self.buckets.entry((EVENTFD_DEV, id)) {
                    std::collections::btree_map::Entry::Occupied(b) => {
                        let h = match b.get() {
                            Bucket::One(_, h) | Bucket::Inode(h) => Some(*h),
                            Bucket::Files(t) => t.iter().next().map(|e| e.holder),
                        };
                        return Err(Refusal::Busy(h));
                    }
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(Bucket::One(raw, holder));
                    }
                }
                self.by_id += 1;
                self.len += 1;
                return Ok(());
            }
        };
        if identity.kind == IdentityKind::Inode && self.by_id > 0 && self.is_anon_inode(identity) {
            return Err(Refusal::Busy(None));
        }
        let key = (identity.dev, identity.ino);
        let inode_only = identity.kind == IdentityKind::Inode
            || matches!(self.mode, IndexMode::InodeFallback(_));
        // One walk down the tree, whether the inode is new or not.
        let b = match self.buckets.entry(key) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(if identity.kind == IdentityKind::Inode {
                    Bucket::Inode(holder)
                } else {
                    Bucket::One(raw, holder)
                });
                self.len += 1;
                return Ok(());
            }
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        };
        match b {
            Bucket::Inode(h) => return Err(Refusal::Busy(Some(*h))),
            b @ Bucket::One(..) => {
                let &mut Bucket::One(fd, h) = b else {
                    unreachable!()
                };
                let e = Entry { fd, holder: h };
                if inode_only {
                    return Err(Refusal::Busy(Some(e.holder)));
                }
                let o = match self.mode {
                    // No order: append (a linear walk finds it again).
                    IndexMode::DupfdQuery(_) => match self.order.same(raw, e.fd) {
                        Ok(true) => Ordering::Equal,
                        Ok(false) => Ordering::Greater,
                        Err(x) => return Err(Refusal::Error(x)),
                    },
                    _ => match self.order.compare(raw, e.fd) {
                        Ok(o) => o,
                        Err(x) if unavailable(x) => return Err(Refusal::Busy(None)),
                        Err(x) => return Err(Refusal::Error(x)),
                    },
                };
                if o == Ordering::Equal {
                    return Err(Refusal::Busy(Some(e.holder)));
                }
                let mut t = Tree::default();
                let _ = t.insert(e, |_| Ok::<_, Errno>(Ordering::Equal));
                let _ = t.insert(Entry { fd: raw, holder }, |_| Ok::<_, Errno>(o));
                *b = Bucket::Files(t);
            }
            Bucket::Files(t) => {
                if inode_only {
                    return Err(Refusal::Busy(t.iter().next().map(|e| e.holder)));
                }
                let order = &self.order;
                let entry = Entry { fd: raw, holder };
                if let IndexMode::DupfdQuery(_) = self.mode {
                    for e in t.iter() {
                        match order.same(raw, e.fd) {
                            Ok(false) => {}
                            Ok(true) => return Err(Refusal::Busy(Some(e.holder))),
                            Err(x) => return Err(Refusal::Error(x)),
                        }
                    }
                    // No order: append (a linear walk finds it again).
                    let _ = t.insert(entry, |_| Ok::<_, Errno>(Ordering::Greater));
                    self.len += 1;
                    return Ok(());
                }
                match t.insert(entry, |e| order.compare(raw, e.fd)) {
                    Ok(Ok(())) => {}
                    Ok(Err((_, existing))) => return Err(Refusal::Busy(Some(existing.holder))),
                    // kcmp stopped working: conservatively, the inode is taken.
                    Err(e) if unavailable(e) => return Err(Refusal::Busy(None)),
                    Err(e) => return Err(Refusal::Error(e)),
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Who manages the file `fd` with `identity`, if anyone.
    pub fn holder(&self, identity: Identity, fd: BorrowedFd<'_>) -> Result<Option<Holder>, Errno> {
        let identity = match self.key(identity, fd)? {
            IndexKey::Identity(i) => i,
            IndexKey::Eventfd(id) => {
                return Ok(self
                    .anon_inode_held()
                    .or(match self.buckets.get(&(EVENTFD_DEV, id)) {
                        Some(Bucket::One(_, h)) => Some(*h),
                        _ => None,
                    }));
            }
        };
        if identity.kind == IdentityKind::Inode && self.by_id > 0 && self.is_anon_inode(identity) {
            let any = self.buckets.range((EVENTFD_DEV, 0)..).next();
            if let Some((_, Bucket::One(_, h))) = any {
                return Ok(Some(*h));
            }
        }
        match self.buckets.get(&(identity.dev, identity.ino)) {
            None => Ok(None),
            Some(Bucket::Inode(h)) => Ok(Some(*h)),
            Some(&Bucket::One(one, h)) => {
                let same = match self.mode {
                    _ if identity.kind == IdentityKind::Inode => true,
                    IndexMode::InodeFallback(_) => true,
                    IndexMode::DupfdQuery(_) => self.order.same(fd.as_raw_fd(), one)?,
                    IndexMode::Kcmp => self.order.compare(fd.as_raw_fd(), one)? == Ordering::Equal,
                };
                Ok(same.then_some(h))
            }
            Some(Bucket::Files(t)) => {
                if identity.kind == IdentityKind::Inode
                    || matches!(self.mode, IndexMode::InodeFallback(_))
                {
                    return Ok(t.iter().next().map(|e| e.holder));
                }
                if let IndexMode::DupfdQuery(_) = self.mode {
                    for e in t.iter() {
                        if self.order.same(fd.as_raw_fd(), e.fd)? {
                            return Ok(Some(e.holder));
                        }
                    }
                    return Ok(None);
                }
                Ok(t.find(|e| self.order.compare(fd.as_raw_fd(), e.fd))?
                    .map(|e| e.holder))
            }
        }
    }

    /// Forgets the entry that `insert(key, fd, _)` made. Removing an entry
    /// that is not there is a no-op.
    pub fn remove(&mut self, key: IndexKey, raw: RawFd) {
        let key = match key {
            IndexKey::Identity(i) => (i.dev, i.ino),
            IndexKey::Eventfd(id) => {
                let k = (EVENTFD_DEV, id);
                if matches!(self.buckets.get(&k), Some(&Bucket::One(one, _)) if one == raw) {
                    self.buckets.remove(&k);
                    self.by_id -= 1;
                    self.len -= 1;
                }
                return;
            }
        };
        let removed = match self.buckets.get_mut(&key) {
            None => false,
            Some(Bucket::Inode(_)) => {
                self.buckets.remove(&key);
                true
            }
            // The number is the entry's own: no comparison needed.
            Some(&mut Bucket::One(one, _)) => {
                let hit = one == raw;
                if hit {
                    self.buckets.remove(&key);
                }
                hit
            }
            Some(Bucket::Files(t)) => {
                let order = &self.order;
                let ordered = self.mode == IndexMode::Kcmp;
                let found = if ordered {
                    t.remove(|e| order.compare(raw, e.fd))
                } else {
                    Ok(t.remove_where(|e| e.fd == raw))
                };
                let found = match found {
                    Ok(v) => v,
                    // Only if kcmp broke after the entry went in: find it by
                    // pointer, so that unpreserve never leaves an entry behind.
                    Err(_) => t.remove_where(|e| e.fd == raw),
                };
                if t.is_empty() {
                    self.buckets.remove(&key);
                }
                found.is_some()
            }
        };
        if removed {
            self.len -= 1;
        }
    }

    /// Forgets many entries at once, as [`IdentityIndex::remove`] each: a
    /// session's files leaving together. A bucket of open files that loses
    /// many of them is rebuilt from the entries it keeps, found by
    /// descriptor number, rather than searched by `kcmp` once per entry
    /// (the eventfd bucket, which every preserved eventfd shares).
    pub fn remove_all(&mut self, entries: &[(IndexKey, RawFd)]) {
        let mut by_bucket: BTreeMap<(u64, u64), Vec<RawFd>> = BTreeMap::new();
        for &(key, raw) in entries {
            let IndexKey::Identity(id) = key else {
                self.remove(key, raw);
                continue;
            };
            match self.buckets.get(&(id.dev, id.ino)) {
                Some(Bucket::Files(_)) => by_bucket.entry((id.dev, id.ino)).or_default().push(raw),
                _ => self.remove(key, raw),
            }
        }
        for (key, mut fds) in by_bucket {
            let Some(Bucket::Files(t)) = self.buckets.get_mut(&key) else {
                continue;
            };
            let n = t.len();
            // A search costs about log2(n) kcmp calls of 0.3-1 us each; the
            // rebuild a few ns per node kept.
            let depth = usize::BITS - n.leading_zeros();
            if self.mode == IndexMode::Kcmp && fds.len() * depth as usize * 16 < n {
                let id = |key: (u64, u64)| Identity {
                    dev: key.0,
                    ino: key.1,
                    kind: IdentityKind::OpenFile,
                };
                for raw in fds {
                    self.remove(IndexKey::Identity(id(key)), raw);
                }
                continue;
            }
            fds.sort_unstable();
            t.retain(|e| fds.binary_search(&e.fd).is_err());
            let gone = n - t.len();
            if t.is_empty() {
                self.buckets.remove(&key);
            }
            self.len -= gone;
        }
    }

    /// Number of managed files on the inode `(dev, ino)` (for diagnostics
    /// and tests: every preserved eventfd is on one inode, in one bucket
    /// unless keyed by id).
    pub fn bucket_len(&self, dev: u64, ino: u64) -> usize {
        let ids = if self.is_anon_inode(Identity {
            dev,
            ino,
            kind: IdentityKind::OpenFile,
        }) {
            self.by_id
        } else {
            0
        };
        ids + match self.buckets.get(&(dev, ino)) {
            None => 0,
            Some(Bucket::Inode(_) | Bucket::One(..)) => 1,
            Some(Bucket::Files(t)) => t.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every managed file has a bucket (or shares one): its size is memory
    /// per preserved file.
    #[test]
    fn a_bucket_is_three_words() {
        assert_eq!(std::mem::size_of::<Bucket>(), 24);
    }

    /// A preserved file keeps its key in place of its identity: no bigger.
    #[test]
    fn a_key_is_no_bigger_than_an_identity() {
        assert_eq!(
            std::mem::size_of::<IndexKey>(),
            std::mem::size_of::<Identity>()
        );
    }
}
