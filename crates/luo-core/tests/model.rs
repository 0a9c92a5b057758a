//! Model-based property test of [`Luo`].
//!
//! Random sequences of operations run both against the implementation and
//! against a small reference model written from the documented rules (the doc
//! comments of `luo_core`, and `kernel-luo.md` sections 2.6-2.10, 3, 4 and 5).
//! After every step:
//!
//! - each operation's result (`Ok` or the exact errno) must be the model's;
//! - the handler and FLB callback log must be exactly the one the model
//!   predicts (order included), so a refused operation provably called nothing
//!   it should not have, and each FLB lifecycle is preserved exactly on 0→1
//!   and torn down exactly once, when its last reference is gone;
//! - `sessions()`, `flb_status()`, `flb_outgoing()`, `epoch()`,
//!   `custody_count()`, the identity index (its size, and who holds every pool
//!   file) and the process's open descriptor count must equal the model's, so a
//!   failed operation left nothing behind: no index entry, no FLB reference, no
//!   descriptor.
//!
//! The test counts the process's descriptors, so it is the only `#[test]` in
//! this binary: nextest runs it in its own process, and `cargo test` has no
//! other test to run beside it on another thread.
//!
//! Replay one seed with `LUO_MODEL_SEED=<n>`; `LUO_MODEL_SEEDS` and
//! `LUO_MODEL_STEPS` change how many seeds run and how long each sequence is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

use luo_core::handler::{MemfdHandler, UserspaceHandler, UserspaceKind};
use luo_core::testing::{Faults, FaultyHandler, Op, TestFlb};
use luo_core::{
    Errno, FileStatus, FlbId, FlbStatus, HandlerId, Holder, Identity, IdentityKind, IndexMode,
    Limits, Luo, Retrieval, RetrieveStatus, SessionHandle, SessionInfo, SessionState, Usage,
};

mod common;

use common::open_fds;

const DEFAULT_SEEDS: u64 = 500;
const DEFAULT_STEPS: usize = 100;
const N_MEMFD: usize = 3;
const N_EVENTFD: usize = 3;
/// Tokens are drawn from `0..N_TOKENS`, so that they collide.
const N_TOKENS: u64 = 5;
/// Most retrieved descriptors the test keeps open at once.
const MAX_HELD: usize = 6;
/// `TestFlb::new(n)` has data `FLB_BASE + n`.
const FLB_BASE: u64 = 0xFEED_F00D_CAFE_BEE0;
/// Handler 0 is memfd, handler 1 is eventfd (registration order).
const HANDLER_NAMES: [&str; 2] = ["memfd-v2", "luo-eventfd-v1"];
/// What those handlers call their files.
const TYPE_NAMES: [&str; 2] = ["memfd", "eventfd"];
/// Session names: three valid short ones that collide often, then the empty
/// name, 64 bytes (too long), 63 bytes (the longest valid) and one with a NUL.
const NAMES: [&[u8]; 7] = [b"a", b"b", b"c", b"", &[b'x'; 64], &[b'y'; 63], b"a\0b"];
/// Errnos for injected faults: none of them is one luo produces by itself.
const ERRNOS: [Errno; 4] = [Errno::EIO, Errno::ENOMEM, Errno::EFBIG, Errno::EAGAIN];

// ---------------------------------------------------------------------------
// PRNG (splitmix64)

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x0123_4567_89AB_CDEF)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pct(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

// ---------------------------------------------------------------------------
// The pool of real files

/// A file of the pool. A memfd is identified by its inode, so any descriptor
/// of it (a dup, a re-open) is the same pool file; an eventfd by its open file
/// description, so only dups of it are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolId {
    Memfd(usize),
    Eventfd(usize),
}

impl PoolId {
    fn handler(self) -> usize {
        match self {
            PoolId::Memfd(_) => 0,
            PoolId::Eventfd(_) => 1,
        }
    }
    fn index(self) -> usize {
        match self {
            PoolId::Memfd(i) => i,
            PoolId::Eventfd(i) => N_MEMFD + i,
        }
    }
    fn all() -> impl Iterator<Item = PoolId> {
        (0..N_MEMFD)
            .map(PoolId::Memfd)
            .chain((0..N_EVENTFD).map(PoolId::Eventfd))
    }
}

struct Pool {
    memfds: Vec<OwnedFd>,
    eventfds: Vec<OwnedFd>,
    /// Identity and size of each pool file, by `PoolId::index`.
    stats: Vec<(Identity, u64)>,
}

impl Pool {
    fn new() -> Pool {
        let memfds: Vec<OwnedFd> = (0..N_MEMFD)
            .map(|i| {
                let m = luo_sys::memfd_create(&format!("model-{i}"), 0).unwrap();
                // Distinct sizes, so that FileStatus::size tells them apart.
                std::fs::File::from(m.try_clone().unwrap())
                    .set_len(4096 * i as u64 + 7)
                    .unwrap();
                m
            })
            .collect();
        let eventfds = (0..N_EVENTFD)
            .map(|_| luo_sys::eventfd(0).unwrap())
            .collect();
        let mut pool = Pool {
            memfds,
            eventfds,
            stats: Vec::new(),
        };
        for p in PoolId::all() {
            let st = luo_sys::fstat(pool.fd(p).as_fd()).unwrap();
            let kind = match p {
                PoolId::Memfd(_) => IdentityKind::Inode,
                PoolId::Eventfd(_) => IdentityKind::OpenFile,
            };
            pool.stats.push((Identity::new(&st, kind), st.size));
        }
        pool
    }
    fn fd(&self, p: PoolId) -> &OwnedFd {
        match p {
            PoolId::Memfd(i) => &self.memfds[i],
            PoolId::Eventfd(i) => &self.eventfds[i],
        }
    }
    fn identity(&self, p: PoolId) -> Identity {
        self.stats[p.index()].0
    }
    fn size(&self, p: PoolId) -> u64 {
        self.stats[p.index()].1
    }
}

/// A retrieved descriptor the test keeps open.
struct Held {
    fd: OwnedFd,
    pool: PoolId,
    /// Whether it is the pool's own open file description.
    pool_ofd: bool,
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Clone, Copy, PartialEq, Eq)]
struct Name(&'static [u8]);

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() > 8 {
            write!(f, "{:?}x{}", self.0[0] as char, self.0.len())
        } else {
            write!(f, "{:?}", String::from_utf8_lossy(self.0))
        }
    }
}

/// Where the descriptor given to `preserve` comes from.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// A dup of a pool file (same open file description).
    Pool(PoolId),
    /// A re-open of pool memfd `i` through `/proc/self/fd/N`: a new open file
    /// description of the same inode.
    Reopen(usize),
    /// A dup of the i-th held (retrieved) descriptor.
    Held(usize),
    /// An `O_PATH` descriptor of pool memfd `i` (`EBADF`).
    OPath(usize),
    /// A pipe's read end (no handler in this setup: `ENOENT`).
    Pipe,
    /// `/dev/null` (no handler: `ENOENT`).
    DevNull,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Create {
        owner: u32,
        name: Name,
    },
    Dup(u64),
    Close(u64),
    Preserve {
        h: u64,
        src: Src,
        token: u64,
    },
    Handover(u64),
    Update,
    RetrieveSession {
        owner: u32,
        name: Name,
    },
    RetrieveFd {
        h: u64,
        token: u64,
        keep: bool,
    },
    Finish(u64),
    /// `session`, `name` and `owner` of a handle.
    Query(u64),
    DropHeld(usize),
    FlbIncoming(usize),
    FlbOutgoing(usize),
    Fail {
        op: Op,
        token: Option<u64>,
        errno: Errno,
    },
    Clear(Op),
    ClearAll,
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create_session",
            Action::Dup(_) => "dup",
            Action::Close(_) => "close",
            Action::Preserve { .. } => "preserve",
            Action::Handover(_) => "handover",
            Action::Update => "update",
            Action::RetrieveSession { .. } => "retrieve_session",
            Action::RetrieveFd { .. } => "retrieve_fd",
            Action::Finish(_) => "finish",
            Action::Query(_) => "query",
            Action::DropHeld(_) => "drop_held",
            Action::FlbIncoming(_) => "flb_incoming",
            Action::FlbOutgoing(_) => "flb_outgoing",
            Action::Fail { .. } | Action::Clear(_) | Action::ClearAll => "fault",
        }
    }
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Out,
    In { finished: bool },
}

const FINISHED: Side = Side::In { finished: true };
const UNFINISHED: Side = Side::In { finished: false };

#[derive(Debug, Clone)]
struct MFile {
    token: u64,
    pool: PoolId,
    pool_ofd: bool,
    /// `(FLB index, lifecycle id)` for every FLB of the file's handler.
    flbs: Vec<(usize, u64)>,
    retrieve: RetrieveStatus,
}

#[derive(Debug)]
struct MSession {
    name: Vec<u8>,
    owner: u32,
    side: Side,
    files: Vec<MFile>,
    /// Live handles, oldest first.
    handles: Vec<u64>,
}

/// One FLB lifecycle, from `preserve` to its single teardown. Reference
/// counts are not stored: they are the number of files that point at it.
#[derive(Debug)]
struct MLc {
    id: u64,
    /// Whether any of its files crossed (teardown: finish, not unpreserve).
    crossed: bool,
    /// The retrieve result, once asked for (sticky).
    obj: Option<Result<u64, Errno>>,
}

#[derive(Debug)]
struct MFlb {
    n: u64,
    /// The lifecycle new preserves join, while outgoing files hold it.
    out: Option<u64>,
    /// Live lifecycles, oldest first.
    lcs: Vec<MLc>,
}

impl MFlb {
    fn data(&self) -> u64 {
        FLB_BASE + self.n
    }
}

/// What the model knows of a descriptor given to `preserve`.
#[derive(Debug, Clone, Copy)]
enum MSrc {
    File { pool: PoolId, pool_ofd: bool },
    OPath,
    NoHandler,
}

struct Model {
    limits: Limits,
    /// By creation key: `sessions()` lists them in creation order.
    sessions: BTreeMap<u64, MSession>,
    /// Every handle not yet closed: `(session key, live)`.
    handles: BTreeMap<u64, (u64, bool)>,
    next_key: u64,
    next_handle: u64,
    epoch: u64,
    flbs: Vec<MFlb>,
    /// FLB indexes of each handler, in FLB registration order.
    handler_flbs: [Vec<usize>; 2],
    next_lc: u64,
    faults: HashMap<Op, (Option<u64>, Errno)>,
    /// Without kcmp every eventfd counts as the same file.
    inode_fallback: bool,
    /// Callbacks expected during the current step.
    log: Vec<(Op, u64)>,
}

type R<T> = Result<T, Errno>;

impl Model {
    fn new(limits: Limits, flb_links: &[Vec<usize>], inode_fallback: bool) -> Model {
        let mut handler_flbs = [Vec::new(), Vec::new()];
        for (fi, links) in flb_links.iter().enumerate() {
            for &h in links {
                handler_flbs[h].push(fi);
            }
        }
        Model {
            limits,
            sessions: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_key: 1,
            next_handle: 1,
            epoch: 1,
            flbs: (0..flb_links.len() as u64)
                .map(|n| MFlb {
                    n,
                    out: None,
                    lcs: Vec::new(),
                })
                .collect(),
            handler_flbs,
            next_lc: 1,
            faults: HashMap::new(),
            inode_fallback,
            log: Vec::new(),
        }
    }

    // --- helpers ---

    fn fault(&self, op: Op, token: u64) -> Option<Errno> {
        match self.faults.get(&op) {
            Some(&(None, e)) => Some(e),
            Some(&(Some(t), e)) if t == token => Some(e),
            _ => None,
        }
    }

    /// A callback runs: it is logged, and fails if a fault says so.
    fn hit(&mut self, op: Op, token: u64) -> Option<Errno> {
        self.log.push((op, token));
        self.fault(op, token)
    }

    fn live(&self, h: u64) -> R<u64> {
        match self.handles.get(&h) {
            None => Err(Errno::EBADF),
            Some(&(_, false)) => Err(Errno::ESTALE),
            Some(&(k, true)) => Ok(k),
        }
    }

    fn new_handle(&mut self, key: u64) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(h, (key, true));
        self.sessions.get_mut(&key).unwrap().handles.push(h);
        h
    }

    fn stale_handles(&mut self, key: u64) {
        let hs = std::mem::take(&mut self.sessions.get_mut(&key).unwrap().handles);
        for h in hs {
            if let Some(e) = self.handles.get_mut(&h) {
                e.1 = false;
            }
        }
    }

    fn remove_session(&mut self, key: u64) {
        self.stale_handles(key);
        self.sessions.remove(&key);
    }

    /// The session of `owner` named `name` on the incoming (or outgoing) side.
    fn find(&self, owner: u32, name: &[u8], incoming: bool) -> Option<u64> {
        let mut it = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.owner == owner && s.name == name && (s.side != Side::Out) == incoming
            })
            .map(|(k, _)| *k);
        let first = it.next();
        assert!(
            it.next().is_none(),
            "model: two sessions of one name on one side"
        );
        first
    }

    fn files(&self) -> impl Iterator<Item = (u64, &MFile)> {
        self.sessions
            .iter()
            .flat_map(|(k, s)| s.files.iter().map(move |f| (*k, f)))
    }

    fn file_count(&self) -> usize {
        self.files().count()
    }

    fn conflicts(&self, a: PoolId, b: PoolId) -> bool {
        a == b
            || (self.inode_fallback && matches!((a, b), (PoolId::Eventfd(_), PoolId::Eventfd(_))))
    }

    /// Who manages pool file `p` (every file in custody is managed: from
    /// preserve until abort, and from retrieve until finish).
    fn holder(&self, p: PoolId) -> Option<Holder> {
        self.files()
            .find(|(_, f)| self.conflicts(f.pool, p))
            .map(|(session, f)| Holder {
                session,
                token: f.token,
            })
    }

    /// References on FLB lifecycle `(fi, lc)` held by files in sessions.
    fn refs(&self, fi: usize, lc: u64) -> usize {
        self.files()
            .filter(|(_, f)| f.flbs.contains(&(fi, lc)))
            .count()
    }

    /// References on `(fi, lc)` held by files of outgoing (`out`) or incoming
    /// sessions.
    fn side_refs(&self, fi: usize, lc: u64, out: bool) -> usize {
        self.sessions
            .values()
            .filter(|s| (s.side == Side::Out) == out)
            .flat_map(|s| s.files.iter())
            .filter(|f| f.flbs.contains(&(fi, lc)))
            .count()
    }

    // --- FLBs ---

    fn flb_get_outgoing(&mut self, fi: usize) -> R<u64> {
        if let Some(lc) = self.flbs[fi].out {
            return Ok(lc);
        }
        // 0 → 1: the FLB is preserved.
        let d = self.flbs[fi].data();
        if let Some(e) = self.hit(Op::FlbPreserve, d) {
            return Err(e);
        }
        let lc = self.next_lc;
        self.next_lc += 1;
        self.flbs[fi].out = Some(lc);
        self.flbs[fi].lcs.push(MLc {
            id: lc,
            crossed: false,
            obj: None,
        });
        Ok(lc)
    }

    fn flb_retrieve(&mut self, fi: usize, pos: usize) -> Result<u64, Errno> {
        let d = self.flbs[fi].data();
        if let Some(r) = self.flbs[fi].lcs[pos].obj {
            return r;
        }
        let r = match self.hit(Op::FlbRetrieve, d) {
            Some(e) => Err(e),
            None => Ok(d | 1),
        };
        self.flbs[fi].lcs[pos].obj = Some(r);
        r
    }

    /// A reference on `(fi, lc)` was dropped; `pending` references are held
    /// by files no longer in a session but not yet put. The lifecycle ends
    /// once, when no reference of either side is left: finished (retrieved
    /// first if nobody asked) if any file crossed, unpreserved otherwise.
    fn flb_put(&mut self, fi: usize, lc: u64, pending: usize, outgoing: bool) {
        let out_pending = if outgoing { pending } else { 0 };
        if self.flbs[fi].out == Some(lc) && self.side_refs(fi, lc, true) + out_pending == 0 {
            self.flbs[fi].out = None;
        }
        if self.refs(fi, lc) + pending > 0 {
            return;
        }
        let d = self.flbs[fi].data();
        let pos = self.flbs[fi]
            .lcs
            .iter()
            .position(|x| x.id == lc)
            .expect("model: live lifecycle");
        if self.flbs[fi].lcs[pos].crossed {
            let r = self.flb_retrieve(fi, pos);
            if let Ok(o) = r {
                self.log.push((Op::FlbFinish, o));
            }
        } else {
            self.log.push((Op::FlbUnpreserve, d));
        }
        self.flbs[fi].lcs.remove(pos);
    }

    /// The files of the outgoing sessions `keys` cross to the incoming side:
    /// their references move with them; the lifecycle stays the same.
    fn cross(&mut self, keys: &[u64]) {
        for fi in 0..self.flbs.len() {
            for k in keys {
                for f in &self.sessions[k].files {
                    for &(x, lc) in &f.flbs {
                        if x == fi {
                            let l = self.flbs[fi].lcs.iter_mut().find(|l| l.id == lc);
                            l.expect("model: live lifecycle").crossed = true;
                        }
                    }
                }
            }
            if let Some(lc) = self.flbs[fi].out {
                let staying: usize = self
                    .sessions
                    .iter()
                    .filter(|(k, s)| s.side == Side::Out && !keys.contains(k))
                    .flat_map(|(_, s)| s.files.iter())
                    .filter(|f| f.flbs.contains(&(fi, lc)))
                    .count();
                if staying == 0 {
                    self.flbs[fi].out = None;
                }
            }
        }
    }

    fn flb_status(&self) -> Vec<FlbStatus> {
        (0..self.flbs.len())
            .map(|fi| {
                let f = &self.flbs[fi];
                FlbStatus {
                    compatible: format!("liveupdate-test-flb-v{}", f.n),
                    outgoing_refs: f.lcs.iter().map(|l| self.side_refs(fi, l.id, true)).sum(),
                    incoming_refs: f
                        .lcs
                        .iter()
                        .map(|l| self.side_refs(fi, l.id, false))
                        .filter(|&n| n > 0)
                        .collect(),
                }
            })
            .collect()
    }

    fn flb_outgoing(&self, fi: usize) -> R<u64> {
        let f = self.flbs.get(fi).ok_or(Errno::EINVAL)?;
        f.out.map(|_| f.data()).ok_or(Errno::ENOENT)
    }

    fn flb_incoming(&mut self, fi: usize) -> R<u64> {
        let f = self.flbs.get(fi).ok_or(Errno::EINVAL)?;
        let pos = f
            .lcs
            .iter()
            .position(|l| self.side_refs(fi, l.id, false) > 0)
            .ok_or(Errno::ENODATA)?;
        self.flb_retrieve(fi, pos)
    }

    // --- operations ---

    fn create(&mut self, owner: u32, name: &[u8]) -> R<u64> {
        if name.is_empty() || name.len() > 63 || name.contains(&0) {
            return Err(Errno::EINVAL);
        }
        let outgoing = self
            .sessions
            .values()
            .filter(|s| s.side == Side::Out)
            .count();
        if outgoing >= self.limits.max_sessions {
            return Err(Errno::ENOSPC);
        }
        if self.find(owner, name, false).is_some() {
            return Err(Errno::EEXIST);
        }
        let key = self.next_key;
        self.next_key += 1;
        self.sessions.insert(
            key,
            MSession {
                name: name.to_vec(),
                owner,
                side: Side::Out,
                files: Vec::new(),
                handles: Vec::new(),
            },
        );
        Ok(self.new_handle(key))
    }

    fn dup(&mut self, h: u64) -> R<u64> {
        let key = self.live(h)?;
        Ok(self.new_handle(key))
    }

    fn query(&self, h: u64, pool: &Pool) -> R<SessionInfo> {
        let key = self.live(h)?;
        Ok(self.info(&self.sessions[&key], pool))
    }

    fn preserve(&mut self, h: u64, src: MSrc, token: u64) -> R<()> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        if s.side != Side::Out {
            return Err(Errno::EINVAL);
        }
        if s.files.iter().any(|f| f.token == token) {
            return Err(Errno::EEXIST);
        }
        if s.files.len() >= self.limits.max_files_per_session {
            return Err(Errno::ENOSPC);
        }
        let (pool, pool_ofd) = match src {
            MSrc::OPath => return Err(Errno::EBADF),
            MSrc::NoHandler => return Err(Errno::ENOENT),
            MSrc::File { pool, pool_ofd } => (pool, pool_ofd),
        };
        // The first handler whose type matches is asked (and may decline);
        // a decline is asked once more before "no handler" (a check's
        // system call may have failed for want of a resource).
        if self.hit(Op::CanPreserve, 0).is_some() && self.hit(Op::CanPreserve, 0).is_some() {
            return Err(Errno::ENOENT);
        }
        if self.holder(pool).is_some() {
            return Err(Errno::EBUSY);
        }
        let mut taken: Vec<(usize, u64)> = Vec::new();
        let mut failed = None;
        for fi in self.handler_flbs[pool.handler()].clone() {
            match self.flb_get_outgoing(fi) {
                Ok(lc) => taken.push((fi, lc)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            failed = self.hit(Op::Preserve, token);
        }
        if let Some(e) = failed {
            // Undo, newest first: FLB references, then the index entry.
            for &(fi, lc) in taken.iter().rev() {
                self.flb_put(fi, lc, 0, true);
            }
            return Err(e);
        }
        self.sessions.get_mut(&key).unwrap().files.push(MFile {
            token,
            pool,
            pool_ofd,
            flbs: taken,
            retrieve: RetrieveStatus::NotRetrieved,
        });
        Ok(())
    }

    /// `EEXIST` when one of `keys` has the name of an unfinished incoming session.
    fn check_incoming_free(&self, keys: &[u64]) -> R<()> {
        for k in keys {
            let s = &self.sessions[k];
            if let Some(ik) = self.find(s.owner, &s.name, true) {
                if self.sessions[&ik].side != FINISHED {
                    return Err(Errno::EEXIST);
                }
            }
        }
        Ok(())
    }

    /// Freezes every file of `keys`, first to last; on failure unfreezes
    /// what froze, newest first.
    fn freeze(&mut self, keys: &[u64]) -> R<()> {
        let tokens: Vec<u64> = keys
            .iter()
            .flat_map(|k| self.sessions[k].files.iter().map(|f| f.token))
            .collect();
        let mut done = Vec::new();
        for t in tokens {
            if let Some(e) = self.hit(Op::Freeze, t) {
                for &d in done.iter().rev() {
                    self.log.push((Op::Unfreeze, d));
                }
                return Err(e);
            }
            done.push(t);
        }
        Ok(())
    }

    fn make_incoming(&mut self, key: u64) {
        self.stale_handles(key);
        let s = &self.sessions[&key];
        let old = self.find(s.owner, &s.name.clone(), true);
        self.sessions.get_mut(&key).unwrap().side = UNFINISHED;
        if let Some(old) = old {
            assert_eq!(self.sessions[&old].side, FINISHED, "model: displaced");
            self.remove_session(old);
        }
    }

    fn handover(&mut self, h: u64) -> R<()> {
        let key = self.live(h)?;
        if self.sessions[&key].side != Side::Out {
            return Err(Errno::EINVAL);
        }
        self.check_incoming_free(&[key])?;
        self.freeze(&[key])?;
        self.cross(&[key]);
        self.make_incoming(key);
        Ok(())
    }

    fn update(&mut self) -> R<u64> {
        let out: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Out)
            .map(|(k, _)| *k)
            .collect();
        self.check_incoming_free(&out)?;
        self.freeze(&out)?;
        self.cross(&out);
        let inc: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side != Side::Out)
            .map(|(k, _)| *k)
            .collect();
        for k in inc {
            if self.sessions[&k].side == FINISHED {
                self.remove_session(k);
            } else {
                self.stale_handles(k);
            }
        }
        for k in out {
            self.make_incoming(k);
        }
        self.epoch += 1;
        Ok(self.epoch)
    }

    fn retrieve_session(&mut self, owner: u32, name: &[u8]) -> R<u64> {
        let key = self.find(owner, name, true).ok_or(Errno::ENOENT)?;
        let s = &self.sessions[&key];
        if !s.handles.is_empty() || s.side == FINISHED {
            return Err(Errno::EINVAL);
        }
        Ok(self.new_handle(key))
    }

    /// The pool file retrieved and whether it is the pool's open file.
    fn retrieve_fd(&mut self, h: u64, token: u64) -> R<(PoolId, bool)> {
        let key = self.live(h)?;
        if self.sessions[&key].side == Side::Out {
            return Err(Errno::EINVAL);
        }
        let i = self.sessions[&key]
            .files
            .iter()
            .position(|f| f.token == token)
            .ok_or(Errno::ENOENT)?;
        let f = &self.sessions[&key].files[i];
        let ok = (f.pool, f.pool_ofd);
        match f.retrieve {
            RetrieveStatus::Failed(e) => Err(e),
            RetrieveStatus::Retrieved => Ok(ok),
            RetrieveStatus::NotRetrieved => {
                let r = self.hit(Op::Retrieve, token);
                let f = &mut self.sessions.get_mut(&key).unwrap().files[i];
                match r {
                    Some(e) => {
                        f.retrieve = RetrieveStatus::Failed(e);
                        Err(e)
                    }
                    None => {
                        f.retrieve = RetrieveStatus::Retrieved;
                        Ok(ok)
                    }
                }
            }
        }
    }

    fn finish(&mut self, h: u64) -> R<()> {
        let key = self.live(h)?;
        match self.sessions[&key].side {
            Side::Out => return Err(Errno::EINVAL),
            FINISHED => return Ok(()),
            _ => {}
        }
        let tokens: Vec<u64> = self.sessions[&key].files.iter().map(|f| f.token).collect();
        for t in tokens {
            if self.hit(Op::CanFinish, t).is_some() {
                return Err(Errno::EBUSY);
            }
        }
        let s = self.sessions.get_mut(&key).unwrap();
        s.side = FINISHED;
        let files = std::mem::take(&mut s.files);
        for i in (0..files.len()).rev() {
            self.log.push((Op::Finish, files[i].token));
            for &(fi, lc) in files[i].flbs.iter().rev() {
                let pending = files[..i]
                    .iter()
                    .filter(|f| f.flbs.contains(&(fi, lc)))
                    .count();
                self.flb_put(fi, lc, pending, false);
            }
        }
        Ok(())
    }

    fn close(&mut self, h: u64) -> R<()> {
        let (key, live) = self.handles.remove(&h).ok_or(Errno::EBADF)?;
        if !live {
            return Ok(());
        }
        let s = self.sessions.get_mut(&key).unwrap();
        s.handles.retain(|&x| x != h);
        if !s.handles.is_empty() {
            return Ok(());
        }
        match s.side {
            Side::Out => self.abort(key),
            FINISHED => self.remove_session(key),
            _ => {} // back to the incoming list, custody kept
        }
        Ok(())
    }

    /// Every file unpreserved, last to first; the session is gone.
    fn abort(&mut self, key: u64) {
        let files = std::mem::take(&mut self.sessions.get_mut(&key).unwrap().files);
        for i in (0..files.len()).rev() {
            self.log.push((Op::Unpreserve, files[i].token));
            for &(fi, lc) in files[i].flbs.iter().rev() {
                let pending = files[..i]
                    .iter()
                    .filter(|f| f.flbs.contains(&(fi, lc)))
                    .count();
                self.flb_put(fi, lc, pending, true);
            }
        }
        self.remove_session(key);
    }

    // --- observable state ---

    fn info(&self, s: &MSession, pool: &Pool) -> SessionInfo {
        let state = match s.side {
            Side::Out => SessionState::Open,
            FINISHED => SessionState::Finished,
            _ if s.handles.is_empty() => SessionState::Incoming,
            _ => SessionState::Retrieved,
        };
        let files: Vec<FileStatus> = s
            .files
            .iter()
            .map(|f| FileStatus {
                token: f.token,
                handler: HANDLER_NAMES[f.pool.handler()].to_string(),
                kind: TYPE_NAMES[f.pool.handler()].to_string(),
                kexec_safe: f.pool.handler() == 0,
                identity: pool.identity(f.pool),
                managed: true,
                retrieve: f.retrieve,
                size: pool.size(f.pool),
                pinned: if f.pool.handler() == 0 {
                    pool.size(f.pool)
                } else {
                    0
                },
            })
            .collect();
        SessionInfo {
            name: s.name.clone(),
            owner: s.owner,
            state,
            handles: s.handles.len(),
            file_count: files.len(),
            pinned_bytes: files.iter().map(|f| f.pinned).sum(),
            kexec_safe: files.iter().all(|f| f.kexec_safe),
            persistent: false,
            files,
        }
    }

    fn infos(&self, pool: &Pool) -> Vec<SessionInfo> {
        self.sessions.values().map(|s| self.info(s, pool)).collect()
    }
}

// ---------------------------------------------------------------------------
// Generating operations

#[derive(Clone, Copy)]
enum Want {
    Out,
    In,
    Any,
}

fn pick_handle(rng: &mut Rng, m: &Model, want: Want) -> u64 {
    let r = rng.below(100);
    if r < 80 {
        let live: Vec<u64> = m
            .handles
            .iter()
            .filter(|(_, &(k, live))| {
                live && match want {
                    Want::Out => m.sessions[&k].side == Side::Out,
                    Want::In => m.sessions[&k].side != Side::Out,
                    Want::Any => true,
                }
            })
            .map(|(h, _)| *h)
            .collect();
        if !live.is_empty() {
            return rng.pick(&live);
        }
    }
    if r < 94 && m.next_handle > 1 {
        // Any handle ever issued: live, stale or closed.
        return 1 + rng.below(m.next_handle as usize - 1) as u64;
    }
    rng.pick(&[0, m.next_handle + 7, u64::MAX])
}

fn gen_name(rng: &mut Rng) -> Name {
    if rng.pct(80) {
        Name(NAMES[rng.below(3)])
    } else {
        Name(rng.pick(&NAMES))
    }
}

fn static_name(name: &[u8]) -> Name {
    Name(NAMES.iter().copied().find(|n| *n == name).unwrap())
}

fn gen_src(rng: &mut Rng, held: usize) -> Src {
    let r = rng.below(100);
    match r {
        0..=14 => Src::Reopen(rng.below(N_MEMFD)),
        15..=34 if held > 0 => Src::Held(rng.below(held)),
        35..=40 => Src::OPath(rng.below(N_MEMFD)),
        41..=45 => Src::Pipe,
        46..=50 => Src::DevNull,
        _ => Src::Pool(if rng.pct(50) {
            PoolId::Memfd(rng.below(N_MEMFD))
        } else {
            PoolId::Eventfd(rng.below(N_EVENTFD))
        }),
    }
}

fn gen_fault(rng: &mut Rng, m: &Model) -> Action {
    let ops = [
        Op::Preserve,
        Op::Preserve,
        Op::Freeze,
        Op::Freeze,
        Op::Retrieve,
        Op::Retrieve,
        Op::CanFinish,
        Op::CanFinish,
        Op::FlbPreserve,
        Op::FlbPreserve,
        Op::FlbRetrieve,
        Op::FlbRetrieve,
        Op::CanPreserve,
    ];
    let op = rng.pick(&ops);
    let r = rng.below(100);
    if r < 4 {
        return Action::ClearAll;
    }
    if r < 50 {
        return Action::Clear(op);
    }
    let errno = rng.pick(&ERRNOS);
    let token = if r < 68 || op == Op::CanPreserve {
        None
    } else if matches!(op, Op::FlbPreserve | Op::FlbRetrieve) {
        Some(m.flbs[rng.below(m.flbs.len())].data())
    } else {
        Some(rng.below(N_TOKENS as usize) as u64)
    };
    Action::Fail { op, token, errno }
}

fn gen_action(rng: &mut Rng, m: &Model, held: usize) -> Action {
    let nflb = m.flbs.len();
    let live_on = |want_out: bool| {
        m.handles
            .values()
            .any(|&(k, live)| live && (m.sessions[&k].side == Side::Out) == want_out)
    };
    let mut r = rng.below(100);
    // Without a live handle of the side an operation wants, mostly make one
    // first (create, or retrieve a session) rather than hit EBADF/ESTALE.
    if (23..=52).contains(&r) && !live_on(true) && rng.pct(60) {
        r = 0;
    }
    if (64..=80).contains(&r) && !live_on(false) && rng.pct(60) {
        r = 56;
    }
    match r {
        0..=10 => Action::Create {
            owner: rng.below(2) as u32,
            name: gen_name(rng),
        },
        11..=13 => Action::Dup(pick_handle(rng, m, Want::Any)),
        14..=22 => Action::Close(pick_handle(rng, m, Want::Any)),
        23..=46 => Action::Preserve {
            h: pick_handle(rng, m, Want::Out),
            src: gen_src(rng, held),
            token: rng.below(N_TOKENS as usize) as u64,
        },
        47..=52 => Action::Handover(pick_handle(rng, m, Want::Out)),
        53..=55 => Action::Update,
        56..=63 => {
            let incoming: Vec<(u32, Name)> = m
                .sessions
                .values()
                .filter(|s| s.side != Side::Out)
                .map(|s| (s.owner, static_name(&s.name)))
                .collect();
            let (owner, name) = if !incoming.is_empty() && rng.pct(70) {
                rng.pick(&incoming)
            } else {
                (rng.below(2) as u32, gen_name(rng))
            };
            Action::RetrieveSession { owner, name }
        }
        64..=74 => {
            let h = pick_handle(rng, m, Want::In);
            let tokens: Vec<u64> = m
                .live(h)
                .map(|k| m.sessions[&k].files.iter().map(|f| f.token).collect())
                .unwrap_or_default();
            let token = if !tokens.is_empty() && rng.pct(80) {
                rng.pick(&tokens)
            } else {
                rng.below(N_TOKENS as usize) as u64
            };
            Action::RetrieveFd {
                h,
                token,
                keep: rng.pct(50),
            }
        }
        75..=80 => Action::Finish(pick_handle(rng, m, Want::In)),
        81..=83 => Action::Query(pick_handle(rng, m, Want::Any)),
        84..=86 => Action::DropHeld(rng.below(held.max(1))),
        87..=88 => Action::FlbIncoming(rng.below(nflb + 1)),
        89 => Action::FlbOutgoing(rng.below(nflb + 1)),
        _ => gen_fault(rng, m),
    }
}

/// Drives the model (and so the implementation) to an empty state.
fn teardown_action(m: &Model) -> Option<Action> {
    if let Some(s) = m
        .sessions
        .values()
        .find(|s| s.side == UNFINISHED && s.handles.is_empty())
    {
        return Some(Action::RetrieveSession {
            owner: s.owner,
            name: static_name(&s.name),
        });
    }
    if let Some((h, _)) = m
        .handles
        .iter()
        .find(|(_, &(k, live))| live && m.sessions[&k].side == UNFINISHED)
    {
        return Some(Action::Finish(*h));
    }
    m.handles.keys().next().map(|&h| Action::Close(h))
}

// ---------------------------------------------------------------------------
// Running and checking

struct World {
    luo: Luo,
    faults: Faults,
    model: Model,
    pool: Pool,
    held: Vec<Held>,
    /// Open descriptors with nothing in custody and nothing held.
    base_fds: usize,
}

fn same<T: PartialEq + fmt::Debug>(what: impl fmt::Display, got: &T, exp: &T) {
    assert!(
        got == exp,
        "{what}:\n  implementation: {got:?}\n  model:          {exp:?}"
    );
}

fn errno<T>(r: luo_core::Result<T>) -> R<T> {
    r.map_err(|e| e.errno)
}

fn show<T>(r: &R<T>) -> String {
    match r {
        Ok(_) => "Ok".to_string(),
        Err(e) => e.name().map_or_else(|| e.0.to_string(), str::to_string),
    }
}

/// A callback log with FLB data in hex.
fn show_log(log: &[(Op, u64)]) -> Vec<String> {
    log.iter()
        .map(|&(op, x)| match op {
            Op::FlbPreserve | Op::FlbUnpreserve | Op::FlbRetrieve | Op::FlbFinish => {
                format!("{op:?}({x:#x})")
            }
            _ => format!("{op:?}({x})"),
        })
        .collect()
}

/// Makes the descriptor to preserve, and what the model knows of it.
fn make_fd(pool: &Pool, held: &[Held], src: Src) -> (OwnedFd, MSrc) {
    match src {
        Src::Pool(p) => (
            pool.fd(p).try_clone().unwrap(),
            MSrc::File {
                pool: p,
                pool_ofd: true,
            },
        ),
        Src::Reopen(i) => {
            let path = luo_sys::reopen_path(pool.memfds[i].as_fd());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            (
                OwnedFd::from(f),
                MSrc::File {
                    pool: PoolId::Memfd(i),
                    pool_ofd: false,
                },
            )
        }
        Src::Held(i) => {
            let h = &held[i];
            (
                h.fd.try_clone().unwrap(),
                MSrc::File {
                    pool: h.pool,
                    pool_ofd: h.pool_ofd,
                },
            )
        }
        Src::OPath(i) => {
            let path = luo_sys::reopen_path(pool.memfds[i].as_fd());
            (luo_sys::open_path(&path).unwrap(), MSrc::OPath)
        }
        Src::Pipe => {
            let (r, _w) = luo_sys::pipe().unwrap();
            (r, MSrc::NoHandler)
        }
        Src::DevNull => (
            OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
            MSrc::NoHandler,
        ),
    }
}

/// A retrieved descriptor is the preserved file: the same inode, and for an
/// open-file identity (or a dup of the pool's memfd) the same open file.
fn check_same_file(pool: &Pool, fd: &OwnedFd, p: PoolId, pool_ofd: bool) {
    let st = luo_sys::fstat(fd.as_fd()).unwrap();
    let id = pool.identity(p);
    same(
        format!("retrieved file of {p:?}: (dev, ino)"),
        &(st.dev, st.ino),
        &(id.dev, id.ino),
    );
    if let Ok(ord) = luo_sys::kcmp_file(fd.as_fd(), pool.fd(p).as_fd()) {
        same(
            format!("retrieved file of {p:?}: same open file as the pool's"),
            &(ord == std::cmp::Ordering::Equal),
            &pool_ofd,
        );
    }
}

/// Runs one action on both sides and compares the results; returns the
/// outcome ("Ok" or an errno name).
fn step(w: &mut World, a: Action) -> String {
    let m = &mut w.model;
    match a {
        Action::Create { owner, name } => {
            let exp = m.create(owner, name.0);
            let got = errno(w.luo.create_session(owner, name.0)).map(|h| h.0);
            same("create_session", &got, &exp);
            show(&got)
        }
        Action::Dup(h) => {
            let exp = m.dup(h);
            let got = errno(w.luo.dup(SessionHandle(h))).map(|h| h.0);
            same("dup", &got, &exp);
            show(&got)
        }
        Action::Close(h) => {
            let exp = m.close(h);
            let got = errno(w.luo.close(SessionHandle(h)));
            same("close", &got, &exp);
            show(&got)
        }
        Action::Preserve { h, src, token } => {
            let (fd, msrc) = make_fd(&w.pool, &w.held, src);
            let exp = m.preserve(h, msrc, token);
            let got = errno(w.luo.preserve(SessionHandle(h), fd, token));
            same("preserve", &got, &exp);
            show(&got)
        }
        Action::Handover(h) => {
            let exp = m.handover(h);
            let got = errno(w.luo.handover(SessionHandle(h)));
            same("handover", &got, &exp);
            show(&got)
        }
        Action::Update => {
            let exp = m.update();
            let got = errno(w.luo.update());
            same("update", &got, &exp);
            show(&got)
        }
        Action::RetrieveSession { owner, name } => {
            let exp = m.retrieve_session(owner, name.0);
            let got = errno(w.luo.retrieve_session(owner, name.0)).map(|h| h.0);
            same("retrieve_session", &got, &exp);
            show(&got)
        }
        Action::RetrieveFd { h, token, keep } => {
            let exp = m.retrieve_fd(h, token);
            let h = SessionHandle(h);
            // Half the time as luod retrieves: the custody descriptor
            // borrowed where it is what would be copied.
            let got = if keep {
                errno(w.luo.retrieve_fd(h, token))
            } else {
                errno(w.luo.retrieve_custody(h, token)).map(|r| match r {
                    Retrieval::Fd(fd) => fd,
                    Retrieval::Custody => {
                        let lent = w.luo.custody_fd(h, token).expect("a retrieved file");
                        lent.try_clone_to_owned().unwrap()
                    }
                })
            };
            let out = show(&got);
            match (got, exp) {
                (Ok(fd), Ok((pool, pool_ofd))) => {
                    check_same_file(&w.pool, &fd, pool, pool_ofd);
                    if keep && w.held.len() < MAX_HELD {
                        w.held.push(Held { fd, pool, pool_ofd });
                    }
                }
                (got, exp) => same("retrieve_fd", &got.map(|_| ()), &exp.map(|_| ())),
            }
            out
        }
        Action::Finish(h) => {
            let exp = m.finish(h);
            let got = errno(w.luo.finish(SessionHandle(h)));
            same("finish", &got, &exp);
            show(&got)
        }
        Action::Query(h) => {
            let exp = m.query(h, &w.pool);
            let got = errno(w.luo.session(SessionHandle(h)));
            same("session", &got, &exp);
            let got_name = errno(w.luo.name(SessionHandle(h))).map(<[u8]>::to_vec);
            same(
                "name",
                &got_name,
                &exp.as_ref().map(|i| i.name.clone()).map_err(|e| *e),
            );
            let got_owner = errno(w.luo.owner(SessionHandle(h)));
            same(
                "owner",
                &got_owner,
                &exp.as_ref().map(|i| i.owner).map_err(|e| *e),
            );
            show(&got)
        }
        Action::DropHeld(i) => {
            if i < w.held.len() {
                w.held.swap_remove(i);
            }
            "Ok".to_string()
        }
        Action::FlbIncoming(fi) => {
            let exp = m.flb_incoming(fi);
            let got = errno(w.luo.flb_incoming(FlbId(fi)));
            same("flb_incoming", &got, &exp);
            show(&got)
        }
        Action::FlbOutgoing(fi) => {
            let exp = m.flb_outgoing(fi);
            let got = errno(w.luo.flb_outgoing(FlbId(fi)));
            same("flb_outgoing", &got, &exp);
            show(&got)
        }
        Action::Fail { op, token, errno } => {
            match token {
                None => w.faults.fail(op, errno),
                Some(t) => w.faults.fail_token(op, t, errno),
            }
            m.faults.insert(op, (token, errno));
            "Ok".to_string()
        }
        Action::Clear(op) => {
            w.faults.clear(op);
            m.faults.remove(&op);
            "Ok".to_string()
        }
        Action::ClearAll => {
            w.faults.clear_all();
            m.faults.clear();
            "Ok".to_string()
        }
    }
}

/// FLB callbacks against the observed reference counts, independently of the
/// model's lifecycles: preserve exactly on 0→1 of the outgoing references,
/// unpreserve only on 1→0, nothing at all while sessions cross (their
/// references move, none is lost), and no more finishes than lifecycles could
/// have ended.
fn check_flb_transitions(
    m: &Model,
    a: Action,
    pre: &[FlbStatus],
    post: &[FlbStatus],
    log: &[(Op, u64)],
) {
    let crossing = matches!(a, Action::Handover(_) | Action::Update);
    let count = |op: Op, d: u64| log.iter().filter(|&&(o, x)| o == op && x == d).count();
    let finishes = log.iter().filter(|(o, _)| *o == Op::FlbFinish).count();
    let mut ended = 0;
    for (fi, f) in m.flbs.iter().enumerate() {
        let d = f.data();
        let p = if m.fault(Op::FlbPreserve, d).is_none() {
            count(Op::FlbPreserve, d)
        } else {
            0
        };
        let u = count(Op::FlbUnpreserve, d);
        let (was, now) = (pre[fi].outgoing_refs, post[fi].outgoing_refs);
        let (inc_was, inc_now) = (&pre[fi].incoming_refs, &post[fi].incoming_refs);
        if crossing {
            same(
                format!("FLB {fi}: preserve/unpreserve while crossing"),
                &(p, u),
                &(0, 0),
            );
            same(
                format!("FLB {fi}: references are conserved while crossing"),
                &(now + inc_now.iter().sum::<usize>()),
                &(was + inc_was.iter().sum::<usize>()),
            );
            assert!(
                inc_now.len() >= inc_was.len(),
                "FLB {fi}: a lifecycle ended while crossing"
            );
        } else {
            assert!(
                p <= 1 && u <= 1,
                "FLB {fi}: {p} preserves, {u} unpreserves in one step"
            );
            // 1 -> 0 without an unpreserve: a lifecycle that crossed, whose
            // outgoing rest was aborted (its teardown is a finish).
            let net = p as isize - u as isize;
            let expected = (now > 0) as isize - (was > 0) as isize;
            assert!(
                net == expected || (expected == -1 && net == 0 && u == 0),
                "FLB {fi}: {p} preserves, {u} unpreserves while outgoing refs go {was} -> {now}"
            );
            if p == 1 {
                same(format!("FLB {fi}: refs before a preserve"), &was, &0);
            }
            if u == 1 {
                same(format!("FLB {fi}: refs after an unpreserve"), &now, &0);
            }
            assert!(
                inc_now.len() <= inc_was.len(),
                "FLB {fi}: an incoming lifecycle appeared"
            );
            // A lifecycle that crossed ends with a finish, either when its
            // incoming side ends or when its outgoing rest is aborted.
            ended += usize::from(was > 0 && now == 0 && u == 0);
            ended += inc_was.len() - inc_now.len();
        }
    }
    assert!(
        finishes <= ended,
        "{finishes} FLB finishes but {ended} lifecycles ended"
    );
}

/// Checks everything observable against the model; returns the step's
/// callback log.
fn check_state(w: &mut World, a: Action, pre: &[FlbStatus]) -> Vec<(Op, u64)> {
    let log = w.faults.take_log();
    let exp_log = std::mem::take(&mut w.model.log);
    if log != exp_log {
        same("callback log", &show_log(&log), &show_log(&exp_log));
    }
    let post = w.luo.flb_status();
    check_flb_transitions(&w.model, a, pre, &post, &log);
    same("flb_status", &post, &w.model.flb_status());
    for fi in 0..w.model.flbs.len() {
        same(
            format!("flb_outgoing({fi})"),
            &errno(w.luo.flb_outgoing(FlbId(fi))),
            &w.model.flb_outgoing(fi),
        );
    }
    let infos = w.model.infos(&w.pool);
    same("sessions", &w.luo.sessions(), &infos);
    let bare: Vec<SessionInfo> = infos
        .iter()
        .map(|s| SessionInfo {
            files: Vec::new(),
            ..s.clone()
        })
        .collect();
    same("summaries", &w.luo.summaries(), &bare);
    // Windows of the files of the sessions of one name (outgoing first).
    if let Some(first) = infos.first() {
        let mut named: Vec<&SessionInfo> = infos
            .iter()
            .filter(|s| s.owner == first.owner && s.name == first.name)
            .collect();
        // find_files lists the outgoing session first.
        named.sort_by_key(|s| s.state != SessionState::Open);
        let all: Vec<FileStatus> = named.iter().flat_map(|s| s.files.clone()).collect();
        for (start, len) in [(0, 1), (1, 2), (2, usize::MAX), (all.len(), 3)] {
            let got: Vec<FileStatus> = w
                .luo
                .find_files(first.owner, &first.name, start, len)
                .into_iter()
                .flat_map(|s| s.files)
                .collect();
            let end = start.saturating_add(len).min(all.len());
            let want = all[start.min(all.len())..end].to_vec();
            same(format!("find_files(.., {start}, {len})"), &got, &want);
        }
    }
    // Quota usage: every session of an owner counts, every file in custody,
    // and a memfd's size (which never changes here) as pinned bytes.
    let mut owners: Vec<u32> = infos.iter().map(|s| s.owner).collect();
    owners.extend([0, 1000, 1001]);
    for owner in owners {
        let mine = infos.iter().filter(|s| s.owner == owner);
        let files = mine.clone().flat_map(|s| &s.files);
        let want = Usage {
            sessions: mine.clone().count() as u64,
            files: files.clone().count() as u64,
            pinned_bytes: files
                .filter(|f| f.handler == HANDLER_NAMES[0])
                .map(|f| f.size)
                .sum(),
        };
        same(format!("usage({owner})"), &w.luo.usage(owner), &want);
    }
    same("epoch", &w.luo.epoch(), &w.model.epoch);
    let files = w.model.file_count();
    same("index().len()", &w.luo.index().len(), &files);
    same("custody_count()", &w.luo.custody_count(), &files);
    for p in PoolId::all() {
        let got = w
            .luo
            .index()
            .holder(w.pool.identity(p), w.pool.fd(p).as_fd());
        same(
            format!("index holder of {p:?}"),
            &got,
            &Ok(w.model.holder(p)),
        );
    }
    same(
        "open descriptors (base + custody + held)",
        &open_fds(),
        &(w.base_fds + files + w.held.len()),
    );
    log
}

/// The change log covers every session whose observable state changed in
/// the step, with the files it gained, lost and retrieved.
fn check_changes(before: &BTreeMap<u64, SessionInfo>, epoch_before: u64, w: &mut World) {
    let changes = w.luo.take_changes();
    let after: BTreeMap<u64, SessionInfo> = w.luo.sessions_keyed().into_iter().collect();
    if w.luo.epoch() != epoch_before {
        assert!(
            changes.epoch,
            "the epoch changed and the change log does not say so"
        );
    }
    let none = luo_core::SessionChange::default();
    let keys: std::collections::BTreeSet<u64> =
        before.keys().chain(after.keys()).copied().collect();
    for k in keys {
        let c = changes.sessions.get(&k).unwrap_or(&none);
        let tokens = |s: &SessionInfo| s.files.iter().map(|f| f.token).collect::<Vec<u64>>();
        match (before.get(&k), after.get(&k)) {
            (Some(_), None) => assert!(c.gone, "session {k} is gone: {changes:?}"),
            (None, Some(a)) => {
                assert!(c.created && !c.gone, "session {k} is new: {changes:?}");
                same(
                    format!("files added to new session {k}"),
                    &c.added,
                    &tokens(a),
                );
            }
            (Some(b), Some(a)) => {
                assert!(!c.gone && !c.created, "session {k} stayed: {changes:?}");
                if b.state != a.state {
                    assert!(c.state, "session {k}'s state changed: {changes:?}");
                }
                if b.handles != a.handles {
                    assert!(c.handles, "session {k}'s handles changed: {changes:?}");
                }
                let (tb, ta) = (tokens(b), tokens(a));
                let added: Vec<u64> = ta.iter().filter(|t| !tb.contains(t)).copied().collect();
                let mut removed: Vec<u64> =
                    tb.iter().filter(|t| !ta.contains(t)).copied().collect();
                let mut got_removed = c.removed.clone();
                removed.sort_unstable();
                got_removed.sort_unstable();
                same(format!("files added to session {k}"), &c.added, &added);
                same(
                    format!("files removed from session {k}"),
                    &got_removed,
                    &removed,
                );
                for fa in &a.files {
                    let changed = b
                        .files
                        .iter()
                        .find(|fb| fb.token == fa.token)
                        .is_some_and(|fb| fb.retrieve != fa.retrieve || fb.managed != fa.managed);
                    if changed {
                        assert!(
                            c.retrieved.contains(&fa.token),
                            "token {} of session {k} was retrieved: {changes:?}",
                            fa.token
                        );
                    }
                }
                if b != a {
                    assert!(
                        changes.sessions.contains_key(&k),
                        "session {k} changed: {changes:?}"
                    );
                }
            }
            (None, None) => assert!(
                !changes.sessions.contains_key(&k),
                "session {k} was born and gone in one step: {changes:?}"
            ),
        }
    }
}

fn run_step(
    w: &mut World,
    i: usize,
    a: Action,
    trail: &mut Vec<String>,
    stats: &mut BTreeMap<String, usize>,
) {
    trail.push(format!("#{i} {a:?}"));
    let pre = w.luo.flb_status();
    // Whether a retrieve_fd repeats an earlier (failed or successful) one.
    let retrieved_before = match a {
        Action::RetrieveFd { h, token, .. } => w
            .model
            .live(h)
            .ok()
            .and_then(|k| w.model.sessions[&k].files.iter().find(|f| f.token == token))
            .and_then(|f| match f.retrieve {
                RetrieveStatus::Failed(_) => Some("sticky"),
                RetrieveStatus::Retrieved => Some("again"),
                RetrieveStatus::NotRetrieved => None,
            }),
        _ => None,
    };
    let before: BTreeMap<u64, SessionInfo> = w.luo.sessions_keyed().into_iter().collect();
    let epoch_before = w.luo.epoch();
    let out = step(w, a);
    trail.last_mut().unwrap().push_str(&format!(" => {out}"));
    let log = check_state(w, a, &pre);
    check_changes(&before, epoch_before, w);
    let mut count = |k: String| *stats.entry(k).or_default() += 1;
    count(format!("{} {out}", a.kind()));
    // Injected errnos, whichever it was.
    let injected = ERRNOS.iter().any(|e| e.name() == Some(out.as_str()));
    if injected {
        count(format!("{} <fault>", a.kind()));
    }
    if let Some(again) = retrieved_before {
        let res = if injected { "<fault>" } else { out.as_str() };
        count(format!("retrieve_fd/{again} {res}"));
    }
    if let Action::Preserve { src, .. } = a {
        let kind = format!("{src:?}");
        count(format!(
            "preserve/{} {out}",
            &kind[..kind.find('(').unwrap_or(kind.len())]
        ));
    }
    for (op, _) in log {
        count(format!("callback {op:?}"));
    }
    for f in w.luo.flb_status() {
        if f.incoming_refs.len() + usize::from(f.outgoing_refs > 0) > 1 {
            count("flb: several lifecycles at once".to_string());
        }
    }
}

fn run_seed(seed: u64, steps: usize, trail: &mut Vec<String>, stats: &mut BTreeMap<String, usize>) {
    let mut rng = Rng::new(seed);
    let fds_at_start = open_fds();
    let pool = Pool::new();
    let faults = Faults::default();
    let limits = Limits {
        max_sessions: 2 + rng.below(3),
        max_files_per_session: 2 + rng.below(3),
    };
    let mut luo = Luo::new(limits);
    let memfd = FaultyHandler::new(MemfdHandler, faults.clone());
    let eventfd = FaultyHandler::new(UserspaceHandler(UserspaceKind::Eventfd), faults.clone());
    assert_eq!(luo.register_handler(Box::new(memfd)).unwrap(), HandlerId(0));
    assert_eq!(
        luo.register_handler(Box::new(eventfd)).unwrap(),
        HandlerId(1)
    );
    // One to three FLBs; the first is always linked to memfd.
    let mut flb_links: Vec<Vec<usize>> = Vec::new();
    for n in 0..1 + rng.below(3) {
        let links = match (n, rng.below(4)) {
            (0, 0 | 1) => vec![0],
            (0, _) => vec![0, 1],
            (_, 0) => vec![0],
            (_, 1) => vec![1],
            (_, 2) => vec![0, 1],
            _ => vec![1, 0],
        };
        let ids: Vec<HandlerId> = links.iter().map(|&h| HandlerId(h)).collect();
        luo.register_flb(Box::new(TestFlb::new(n as u64, faults.clone())), &ids)
            .unwrap();
        flb_links.push(links);
    }
    let inode_fallback = luo.index().mode() != IndexMode::Kcmp;
    trail.push(format!(
        "setup: {limits:?}, FLB handler links {flb_links:?}, index {:?}",
        luo.index().mode()
    ));
    let base_fds = open_fds();
    // The index keeps /proc/self/fdinfo open where it reads eventfd ids.
    let fdinfo_dir = usize::from(luo.index().eventfd_ids());
    same(
        "descriptors after setup",
        &base_fds,
        &(fds_at_start + N_MEMFD + N_EVENTFD + fdinfo_dir),
    );
    let mut w = World {
        luo,
        faults,
        model: Model::new(limits, &flb_links, inode_fallback),
        pool,
        held: Vec::new(),
        base_fds,
    };
    let pre = w.luo.flb_status();
    let _ = check_state(&mut w, Action::ClearAll, &pre);

    for i in 0..steps {
        let a = gen_action(&mut rng, &w.model, w.held.len());
        run_step(&mut w, i, a, trail, stats);
    }

    // Tear down through the same checked steps: everything must be released.
    let mut i = steps;
    run_step(&mut w, i, Action::ClearAll, trail, stats);
    while let Some(a) = teardown_action(&w.model) {
        i += 1;
        assert!(i < steps + 1000, "teardown does not converge");
        run_step(&mut w, i, a, trail, stats);
    }
    trail.push("teardown done".to_string());
    assert!(w.luo.sessions().is_empty(), "sessions left after teardown");
    assert!(
        w.luo.index().is_empty(),
        "index entries left after teardown"
    );
    for s in w.luo.flb_status() {
        assert!(
            s.outgoing_refs == 0 && s.incoming_refs.is_empty(),
            "FLB references left after teardown: {s:?}"
        );
    }
    let World {
        luo, held, pool, ..
    } = w;
    drop(held);
    drop(luo);
    same(
        "descriptors after dropping luo",
        &open_fds(),
        &(fds_at_start + N_MEMFD + N_EVENTFD),
    );
    drop(pool);
    same("descriptors at the end", &open_fds(), &fds_at_start);
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

/// Outcomes that the default run must reach at least once, so that the
/// property is not satisfied vacuously.
const MUST_REACH: &[&str] = &[
    "create_session Ok",
    "create_session EINVAL",
    "create_session ENOSPC",
    "create_session EEXIST",
    "dup Ok",
    "dup ESTALE",
    "dup EBADF",
    "close Ok",
    "close EBADF",
    "preserve Ok",
    "preserve EBADF",
    "preserve ESTALE",
    "preserve EINVAL",
    "preserve EEXIST",
    "preserve ENOSPC",
    "preserve ENOENT",
    "preserve EBUSY",
    "preserve <fault>",
    "handover Ok",
    "handover EINVAL",
    "handover EEXIST",
    "handover <fault>",
    "update Ok",
    "update EEXIST",
    "update <fault>",
    "retrieve_session Ok",
    "retrieve_session ENOENT",
    "retrieve_session EINVAL",
    "retrieve_fd Ok",
    "retrieve_fd EINVAL",
    "retrieve_fd ENOENT",
    "retrieve_fd <fault>",
    "finish Ok",
    "finish EINVAL",
    "finish EBUSY",
    "query Ok",
    "query ESTALE",
    "flb_incoming Ok",
    "flb_incoming ENODATA",
    "flb_incoming EINVAL",
    "flb_incoming <fault>",
    "flb_outgoing Ok",
    "flb_outgoing ENOENT",
    "preserve/Reopen Ok",
    "preserve/Reopen EBUSY",
    "preserve/Held Ok",
    "preserve/Held EBUSY",
    "preserve/Pool EBUSY",
    "preserve/OPath EBADF",
    "preserve/Pipe ENOENT",
    "preserve/DevNull ENOENT",
    "callback CanPreserve",
    "callback Unpreserve",
    "callback Unfreeze",
    "callback CanFinish",
    "callback Finish",
    "callback FlbPreserve",
    "callback FlbUnpreserve",
    "callback FlbRetrieve",
    "callback FlbFinish",
    "flb: several lifecycles at once",
    "retrieve_fd/sticky <fault>",
    "retrieve_fd/again Ok",
];

#[test]
fn random_sequences_match_the_model() {
    let steps = env_num("LUO_MODEL_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    let one = env_num("LUO_MODEL_SEED");
    let seeds: Vec<u64> = match one {
        Some(s) => vec![s],
        None => (0..env_num("LUO_MODEL_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let mut stats = BTreeMap::new();
    for &seed in &seeds {
        let mut trail = Vec::new();
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            run_seed(seed, steps, &mut trail, &mut stats)
        }));
        if let Err(e) = r {
            eprintln!(
                "\nmodel test failed: seed {seed}, at {}\nreplay: LUO_MODEL_SEED={seed} \
                 LUO_MODEL_STEPS={steps} cargo test -p luo-core --test model -- --nocapture\n\
                 operations:",
                trail.last().map_or("setup", String::as_str)
            );
            for line in &trail {
                eprintln!("  {line}");
            }
            panic::resume_unwind(e);
        }
    }
    println!("outcomes over {} seeds x {steps} steps:", seeds.len());
    for (k, n) in &stats {
        println!("  {k:28} {n}");
    }
    if one.is_none() && seeds.len() as u64 >= DEFAULT_SEEDS {
        let missing: Vec<&str> = MUST_REACH
            .iter()
            .copied()
            .filter(|k| !stats.contains_key(*k))
            .collect();
        assert!(missing.is_empty(), "outcomes never reached: {missing:?}");
    }
}
