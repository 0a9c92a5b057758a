//! The Live Update Orchestrator's session and file model, with the kernel's
//! semantics.
//!
//! [`Luo`] holds every session, preserved file, handler, FLB and the global
//! [identity index](identity). It is sans-IO: plain methods over plain state,
//! no sockets and no threads. The agent moves bytes and descriptors; this crate
//! decides what they mean.
//!
//! ```
//! use std::os::fd::AsFd;
//! use luo_core::{Luo, Errno};
//!
//! let mut luo = Luo::with_default_handlers();
//! let s = luo.create_session(0, b"db").unwrap();
//! let memfd = luo_sys::memfd_create("data", 0).unwrap();
//! luo.preserve(s, memfd.as_fd().try_clone_to_owned().unwrap(), 1).unwrap();
//! // The same memfd again, under another token: already managed.
//! let again = luo.preserve(s, memfd.as_fd().try_clone_to_owned().unwrap(), 2);
//! assert_eq!(again.unwrap_err().errno, Errno::EBUSY);
//!
//! luo.handover(s).unwrap();              // the old process is done
//! let s2 = luo.retrieve_session(0, b"db").unwrap();
//! let fd = luo.retrieve_fd(s2, 1).unwrap();
//! luo.finish(s2).unwrap();
//! luo.close(s2).unwrap();
//! assert!(luo.sessions().is_empty());
//! # drop(fd);
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

mod error;
pub mod flb;
pub mod handler;
pub mod identity;
pub mod snapshot;
pub mod testing;
mod tree;

pub use error::{Errno, Error, Result};
pub use flb::{Flb, FlbStatus};
pub use handler::{FileHandler, FileInfo, FileOpArgs, RetrieveStatus};
pub use identity::{FileOrder, Holder, Identity, IdentityIndex, IdentityKind, IndexMode, Kcmp};

use error::err;
use flb::{FlbSlot, Gen};
use identity::Refusal;

/// Longest session name in bytes (the kernel's 64-byte field less its NUL).
pub const MAX_SESSION_NAME: usize = 63;
/// Longest handler or FLB compatible string in bytes.
pub const MAX_COMPATIBLE: usize = 47;
/// Most FLBs that can be registered (the kernel's `LUO_FLB_MAX` on 4 KiB pages).
pub const MAX_FLBS: usize = 63;

/// Limits that fail with `ENOSPC`. The defaults are the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most outgoing sessions at once (kernel: 10,000 blocks of 51 = 510,000).
    pub max_sessions: usize,
    /// Most files in one session (kernel: 10,000 blocks of 63 = 630,000).
    pub max_files_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 510_000,
            max_files_per_session: 630_000,
        }
    }
}

/// Per-owner quotas that fail with `EDQUOT`. They bind every uid but root
/// (uid 0); `u64::MAX` means no limit, the default.
///
/// With the `clap` feature it is also a set of command-line options, as luod
/// takes them: `--quota-sessions N`, `--quota-files N`, `--quota-bytes SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Quota {
    /// Most sessions (outgoing and incoming) one owner may have.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-sessions",
            value_name = "N",
            default_value_t = u64::MAX,
            hide_default_value = true,
            help = "At most N sessions per uid (root is exempt)"
        )
    )]
    pub sessions: u64,
    /// Most preserved files one owner may have in custody.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-files",
            value_name = "N",
            default_value_t = u64::MAX,
            hide_default_value = true,
            help = "At most N preserved files per uid (root is exempt)"
        )
    )]
    pub files: u64,
    /// Most bytes of memfd (`st_size` when preserved) one owner may pin.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-bytes",
            value_name = "SIZE",
            default_value_t = u64::MAX,
            hide_default_value = true,
            value_parser = size_value,
            help = "At most SIZE bytes of memfd pinned per uid (root is exempt); \
                    SIZE is bytes or has a K, M, G or T suffix (powers of 1024)"
        )
    )]
    pub pinned_bytes: u64,
}

/// Parses a size: plain bytes, or a number with a `K`, `M`, `G` or `T`
/// suffix (powers of 1024, any case, optionally followed by `B` or `iB`).
/// `None` for anything else, or a size over `u64::MAX`.
///
/// ```
/// assert_eq!(luo_core::parse_size("4096"), Some(4096));
/// assert_eq!(luo_core::parse_size("1G"), Some(1 << 30));
/// assert_eq!(luo_core::parse_size("2MiB"), Some(2 << 20));
/// assert_eq!(luo_core::parse_size("1.5G"), None);
/// ```
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].to_ascii_uppercase();
    let (unit, tail) = match rest.chars().next() {
        None => return Some(n),
        Some('K') => (10, &rest[1..]),
        Some('M') => (20, &rest[1..]),
        Some('G') => (30, &rest[1..]),
        Some('T') => (40, &rest[1..]),
        Some('B') if rest == "B" => return Some(n),
        _ => return None,
    };
    if !matches!(tail, "" | "B" | "IB") {
        return None;
    }
    n.checked_mul(1u64 << unit)
}

/// [`parse_size`] as a command-line value parser.
#[cfg(feature = "clap")]
fn size_value(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).ok_or_else(|| "a size such as 1048576, 512K, 64M or 2G".to_string())
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            sessions: u64::MAX,
            files: u64::MAX,
            pinned_bytes: u64::MAX,
        }
    }
}

/// What one owner holds, as counted against its [`Quota`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sessions, outgoing and incoming, until they are gone.
    pub sessions: u64,
    /// Files in custody, until finished or unpreserved.
    pub files: u64,
    /// Bytes of memfd pinned by those files (sizes when preserved).
    pub pinned_bytes: u64,
}

/// A handle on a session, like a session fd: [`Luo::dup`] copies it, and the
/// session reacts when the last copy is [closed](Luo::close). After the
/// session crosses to the incoming side its old handles are stale (`ESTALE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(pub u64);

/// Index of a registered handler, in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub usize);

/// Index of a registered FLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlbId(pub usize);

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Outgoing: accepting files, to be handed over.
    Open,
    /// Incoming, waiting to be retrieved.
    Incoming,
    /// Incoming and held through a handle returned by `retrieve_session`.
    Retrieved,
    /// Finished; it disappears when its last handle closes.
    Finished,
}

/// How a session follows the kernel where luo's native API deliberately
/// does not: the `/dev/liveupdate` emulation sets this on the sessions it
/// creates and retrieves ([`Luo::set_mode`]). The default is the native API's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionMode {
    /// Closing the last handle of a retrieved, unfinished session finishes
    /// it (the kernel's implicit finish): files never retrieved are
    /// discarded and the session is gone. Natively it returns to waiting.
    pub finish_on_close: bool,
    /// Preserve accepts only files whose handler is kexec-safe, which are the
    /// kernel's file types (memfd); any other file is `ENOENT`, as on the
    /// kernel, at the same point in the check order.
    pub kexec_safe_only: bool,
}

/// Observable state of one preserved file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// The file's token.
    pub token: u64,
    /// The handler's compatible string.
    pub handler: String,
    /// Whether the handler's files survive kexec.
    pub kexec_safe: bool,
    /// The identity under which the file is managed.
    pub identity: Identity,
    /// Whether the file is in the identity index (managed) right now.
    pub managed: bool,
    /// Retrieve outcome so far.
    pub retrieve: RetrieveStatus,
    /// `st_size` of the custody file now.
    pub size: u64,
    /// Bytes it counts against its owner's pinned-bytes quota: a memfd's
    /// size when it was preserved, 0 for files that pin no memory.
    pub pinned: u64,
}

/// Observable state of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's name.
    pub name: Vec<u8>,
    /// The uid that owns it.
    pub owner: u32,
    /// Its state.
    pub state: SessionState,
    /// Live handles on it.
    pub handles: usize,
    /// How many files it holds.
    pub file_count: usize,
    /// Bytes its files count against the owner's quota ([`FileStatus::pinned`]).
    pub pinned_bytes: u64,
    /// Whether every file in it survives a kexec.
    pub kexec_safe: bool,
    /// Its files in preservation order: all of them, or the window asked
    /// for ([`Luo::session_files`], [`Luo::find_files`]; none for
    /// [`Luo::summaries`]).
    pub files: Vec<FileStatus>,
}

#[derive(Debug)]
struct PreservedFile {
    token: u64,
    handler: usize,
    identity: Identity,
    custody: OwnedFd,
    data: u64,
    /// Usually empty, and then no allocation (a boxed slice is two words,
    /// a `Vec` three: this is per file).
    flb_refs: Box<[(usize, Gen)]>,
    indexed: bool,
    retrieve: RetrieveStatus,
    pinned: u64,
}

impl PreservedFile {
    /// The callback arguments for this file of session `session` (its key)
    /// of `owner`.
    fn args(&self, session: u64, owner: u32) -> FileOpArgs<'_> {
        FileOpArgs {
            session,
            owner,
            token: self.token,
            file: self.custody.as_fd(),
            serialized_data: self.data,
            retrieve_status: self.retrieve,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Outgoing,
    Incoming { finished: bool },
}

#[derive(Debug)]
struct Session {
    name: Vec<u8>,
    owner: u32,
    side: Side,
    files: Vec<PreservedFile>,
    tokens: HashMap<u64, usize>,
    handles: Vec<u64>,
    mode: SessionMode,
}

#[derive(Debug, Clone, Copy)]
struct HandleEntry {
    session: u64,
    live: bool,
}

type NameKey = (u32, Vec<u8>);

/// Steps a failed preserve undoes, newest first.
enum Undo {
    /// The entry of the descriptor with this number (still open: the
    /// custody descriptor is dropped only after the undo).
    Index(Identity, std::os::fd::RawFd),
    Flb(usize, Gen),
}

/// The whole model: sessions, files, handlers, FLBs, the identity index and
/// the epoch. See the crate documentation.
#[derive(Debug)]
pub struct Luo {
    handlers: Vec<Box<dyn FileHandler>>,
    handler_flbs: Vec<Vec<usize>>,
    flbs: Vec<FlbSlot>,
    sessions: BTreeMap<u64, Session>,
    outgoing: HashMap<NameKey, u64>,
    incoming: HashMap<NameKey, u64>,
    handles: HashMap<u64, HandleEntry>,
    index: IdentityIndex,
    limits: Limits,
    quota: Quota,
    usage: HashMap<u32, Usage>,
    epoch: u64,
    next_key: u64,
    next_handle: u64,
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

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

fn validate_compatible(what: &str, c: &str) -> Result<()> {
    if c.is_empty() || c.len() > MAX_COMPATIBLE || c.contains('\0') {
        return err(
            Errno::EINVAL,
            format!(
                "{what} compatible string {c:?} must be 1 to {MAX_COMPATIBLE} bytes without NUL"
            ),
        );
    }
    Ok(())
}

impl Default for Luo {
    fn default() -> Self {
        Luo::with_default_handlers()
    }
}

impl Luo {
    /// An empty model with no handlers, default limits and `kcmp` ordering.
    pub fn new(limits: Limits) -> Luo {
        Luo::with_order(limits, Box::new(Kcmp))
    }

    /// An empty model whose identity index orders open files with `order`.
    pub fn with_order(limits: Limits, order: Box<dyn FileOrder>) -> Luo {
        Luo {
            handlers: Vec::new(),
            handler_flbs: Vec::new(),
            flbs: Vec::new(),
            sessions: BTreeMap::new(),
            outgoing: HashMap::new(),
            incoming: HashMap::new(),
            handles: HashMap::new(),
            index: IdentityIndex::new(order),
            limits,
            quota: Quota::default(),
            usage: HashMap::new(),
            epoch: 1,
            next_key: 1,
            next_handle: 1,
        }
    }

    /// A model with the built-in handlers ([`handler::default_handlers`]).
    pub fn with_default_handlers() -> Luo {
        let mut luo = Luo::new(Limits::default());
        for h in handler::default_handlers() {
            luo.register_handler(h)
                .expect("built-in handlers are valid");
        }
        luo
    }

    /// Registers a handler after the existing ones.
    ///
    /// `EINVAL` for a compatible string that is empty or longer than 47 bytes,
    /// `EEXIST` for one already registered.
    pub fn register_handler(&mut self, h: Box<dyn FileHandler>) -> Result<HandlerId> {
        validate_compatible("handler", h.compatible())?;
        if self
            .handlers
            .iter()
            .any(|x| x.compatible() == h.compatible())
        {
            return err(
                Errno::EEXIST,
                format!("a handler {:?} is already registered", h.compatible()),
            );
        }
        self.handlers.push(h);
        self.handler_flbs.push(Vec::new());
        Ok(HandlerId(self.handlers.len() - 1))
    }

    /// Registers an FLB and links it to `handlers`: every file those handlers
    /// preserve from now on depends on it.
    ///
    /// `EINVAL` for a bad compatible string or an unknown handler, `EEXIST`
    /// for a compatible string already registered, `ENOSPC` past 63 FLBs.
    pub fn register_flb(&mut self, flb: Box<dyn Flb>, handlers: &[HandlerId]) -> Result<FlbId> {
        validate_compatible("FLB", flb.compatible())?;
        if let Some(h) = handlers.iter().find(|h| h.0 >= self.handlers.len()) {
            return err(Errno::EINVAL, format!("no handler {} is registered", h.0));
        }
        if self
            .flbs
            .iter()
            .any(|s| s.flb.compatible() == flb.compatible())
        {
            return err(
                Errno::EEXIST,
                format!("an FLB {:?} is already registered", flb.compatible()),
            );
        }
        if self.flbs.len() >= MAX_FLBS {
            return err(
                Errno::ENOSPC,
                format!("at most {MAX_FLBS} FLBs can be registered"),
            );
        }
        let id = self.flbs.len();
        self.flbs.push(FlbSlot::new(flb));
        for h in handlers {
            self.handler_flbs[h.0].push(id);
        }
        Ok(FlbId(id))
    }

    /// The current epoch (1 when the model is created; +1 per [`Luo::update`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sets the epoch, for an agent that carries on from a previous one
    /// (after a kexec, the registry's epoch plus one).
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Sets the per-owner quota. Lowering it below what an owner holds takes
    /// nothing away; it refuses new sessions and files until usage drops.
    pub fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    /// The per-owner quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// What `owner` holds now.
    pub fn usage(&self, owner: u32) -> Usage {
        self.usage.get(&owner).copied().unwrap_or_default()
    }

    fn usage_mut(&mut self, owner: u32) -> &mut Usage {
        self.usage.entry(owner).or_default()
    }

    /// Drops a file's share of its owner's usage when it leaves custody.
    fn release_file(&mut self, owner: u32, pinned: u64) {
        let u = self.usage_mut(owner);
        u.files -= 1;
        u.pinned_bytes -= pinned;
    }

    /// The identity index (read-only), for status and diagnostics.
    pub fn index(&self) -> &IdentityIndex {
        &self.index
    }

    fn new_handle(&mut self, session: u64) -> SessionHandle {
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
        SessionHandle(h)
    }

    fn live(&self, h: SessionHandle) -> Result<u64> {
        match self.handles.get(&h.0) {
            None => err(Errno::EBADF, format!("no session handle {}", h.0)),
            Some(e) if !e.live => err(
                Errno::ESTALE,
                "the session handle is stale: its session crossed to the incoming side",
            ),
            Some(e) => Ok(e.session),
        }
    }

    fn stale_handles(&mut self, key: u64) {
        let s = self.sessions.get_mut(&key).expect("session");
        for h in s.handles.drain(..) {
            if let Some(e) = self.handles.get_mut(&h) {
                e.live = false;
            }
        }
    }

    /// Creates an outgoing session named `name` for `owner`; returns its first
    /// handle.
    ///
    /// `EINVAL` for a name that is empty, longer than 63 bytes or contains a
    /// NUL; `ENOSPC` at [`Limits::max_sessions`] outgoing sessions; `EEXIST`
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
        Ok(self.new_handle(key))
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

    /// Sets the session's [`SessionMode`]. It lasts until the session
    /// crosses over (handover or update), when it returns to the default.
    pub fn set_mode(&mut self, h: SessionHandle, mode: SessionMode) -> Result<()> {
        let key = self.live(h)?;
        self.sessions.get_mut(&key).expect("session").mode = mode;
        Ok(())
    }

    /// The session's [`SessionMode`].
    pub fn mode(&self, h: SessionHandle) -> Result<SessionMode> {
        let key = self.live(h)?;
        Ok(self.sessions[&key].mode)
    }

    /// Whether closing `h` finishes its session implicitly: the last live
    /// handle of a retrieved, unfinished session in `finish_on_close` mode.
    fn finishes_on_close(&self, h: SessionHandle) -> bool {
        let Ok(key) = self.live(h) else {
            return false;
        };
        let s = &self.sessions[&key];
        s.mode.finish_on_close
            && s.handles.len() == 1
            && s.side == (Side::Incoming { finished: false })
    }

    /// Preserves `fd` in the outgoing session under `token`. luo keeps the
    /// descriptor (its custody copy); the caller may close its own copies.
    ///
    /// Checks, in the kernel's order: `EINVAL` (not an outgoing session),
    /// `EEXIST` (token used in this session), `ENOSPC`
    /// ([`Limits::max_files_per_session`]), `EBADF` (an `O_PATH` fd), `ENOENT`
    /// (no handler accepts the file), `EBUSY` (the file is already managed by
    /// any session), then the FLB and handler `preserve` errors. A refused
    /// preserve leaves nothing behind: no index entry, no FLB reference, and
    /// `fd` is closed.
    pub fn preserve(&mut self, h: SessionHandle, fd: OwnedFd, token: u64) -> Result<()> {
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
        let mut undo = Vec::new();
        match self.preserve_steps(key, fd, token, &mut undo) {
            Ok(file) => {
                let s = self.sessions.get_mut(&key).expect("session");
                let owner = s.owner;
                let pinned = file.pinned;
                s.tokens.insert(token, s.files.len());
                s.files.push(file);
                let u = self.usage_mut(owner);
                u.files += 1;
                u.pinned_bytes += pinned;
                Ok(())
            }
            Err(e) => {
                for step in undo.into_iter().rev() {
                    match step {
                        Undo::Index(id, fd) => self.index.remove(id, fd),
                        Undo::Flb(i, g) => self.flbs[i].put_outgoing(g),
                    }
                }
                Err(e)
            }
        }
    }

    fn preserve_steps(
        &mut self,
        key: u64,
        fd: OwnedFd,
        token: u64,
        undo: &mut Vec<Undo>,
    ) -> Result<PreservedFile> {
        let bad = |e: Errno| {
            Error::new(
                Errno::EBADF,
                format!("token {token}: not a usable file ({e:?})"),
            )
        };
        if luo_sys::is_o_path(fd.as_fd()).map_err(bad)? {
            return err(
                Errno::EBADF,
                format!("token {token}: an O_PATH descriptor holds no file"),
            );
        }
        let stat = luo_sys::fstat(fd.as_fd()).map_err(bad)?;
        let info = FileInfo {
            fd: fd.as_fd(),
            stat,
        };
        let kexec_safe_only = self.sessions[&key].mode.kexec_safe_only;
        let Some(hi) = self
            .handlers
            .iter()
            .position(|h| (!kexec_safe_only || h.kexec_safe()) && h.can_preserve(&info))
        else {
            return err(
                Errno::ENOENT,
                format!("token {token}: no handler can preserve this kind of file"),
            );
        };
        let handler = &self.handlers[hi];
        let pinned = if handler.pins_memory() { stat.size } else { 0 };
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
        let custody = fd;
        let holder = Holder {
            session: key,
            token,
        };
        match self.index.insert(identity, custody.as_fd(), holder) {
            Ok(()) => undo.push(Undo::Index(identity, custody.as_raw_fd())),
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
            undo.push(Undo::Flb(fi, g));
            flb_refs.push((fi, g));
        }
        let args = FileOpArgs {
            session: key,
            owner,
            token,
            file: custody.as_fd(),
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
            identity,
            custody,
            data,
            flb_refs: flb_refs.into_boxed_slice(),
            indexed: true,
            retrieve: RetrieveStatus::NotRetrieved,
            pinned,
        })
    }

    fn freeze(&mut self, keys: &[u64]) -> Result<()> {
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
    fn unfreeze(&mut self, done: Vec<(u64, usize, u64)>) {
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
    fn cross_flbs(&mut self, keys: &[u64]) {
        for key in keys {
            for f in &self.sessions[key].files {
                for &(fi, g) in &f.flb_refs {
                    self.flbs[fi].cross(g);
                }
            }
        }
    }

    fn check_incoming_free(&self, keys: &[u64]) -> Result<()> {
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
    fn make_incoming(&mut self, key: u64) {
        self.stale_handles(key);
        let s = self.sessions.get_mut(&key).expect("session");
        s.side = Side::Incoming { finished: false };
        // Whoever retrieves it next chooses its mode.
        s.mode = SessionMode::default();
        let nk = (s.owner, s.name.clone());
        self.outgoing.remove(&nk);
        if let Some(old) = self.incoming.insert(nk, key) {
            // Only a finished session can be displaced (check_incoming_free).
            self.remove_session(old);
        }
    }

    fn remove_session(&mut self, key: u64) {
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
        Ok(self.new_handle(key))
    }

    /// Retrieves the file preserved under `token`. Any order, any number of
    /// times: every call returns a new descriptor of the same open file.
    ///
    /// `EINVAL` on an outgoing session; `ENOENT` for an unknown token (or after
    /// finish); a failed retrieve is sticky: the same errno every time, without
    /// calling the handler again.
    pub fn retrieve_fd(&mut self, h: SessionHandle, token: u64) -> Result<OwnedFd> {
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
        match f.retrieve {
            RetrieveStatus::Failed(e) => return err(e, what(f)),
            RetrieveStatus::Retrieved => {
                return f
                    .custody
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| Error::new(e.into(), "duplicating the retrieved file failed"));
            }
            RetrieveStatus::NotRetrieved => {}
        }
        let new = match self.handlers[f.handler].retrieve(&f.args(key, owner)) {
            Ok(fd) => fd,
            Err(e) => {
                f.retrieve = RetrieveStatus::Failed(e);
                return err(e, what(f));
            }
        };
        // A handler that gives back the custody file itself (a dup of the
        // same open file, as the userspace handlers do) changes nothing the
        // index knows: one kcmp instead of a remove and an insert, which
        // cost O(log n) kcmp calls each for open-file identities.
        if f.indexed
            && f.identity.kind == IdentityKind::OpenFile
            && luo_sys::kcmp_file(new.as_fd(), f.custody.as_fd()) == Ok(std::cmp::Ordering::Equal)
        {
            f.retrieve = RetrieveStatus::Retrieved;
            return Ok(new);
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
            self.index.remove(f.identity, f.custody.as_raw_fd());
        }
        f.custody = new;
        f.retrieve = RetrieveStatus::Retrieved;
        let holder = Holder {
            session: key,
            token,
        };
        // As in the kernel, a conflict here cannot fail the retrieve.
        f.indexed = self
            .index
            .insert(f.identity, f.custody.as_fd(), holder)
            .is_ok();
        Ok(out)
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
        for f in files.into_iter().rev() {
            self.release_file(owner, f.pinned);
            let args = f.args(key, owner);
            self.handlers[f.handler].finish(&args);
            for &(fi, g) in f.flb_refs.iter().rev() {
                self.flbs[fi].put_incoming(g);
            }
            if f.indexed {
                self.index.remove(f.identity, f.custody.as_raw_fd());
            }
        }
        Ok(())
    }

    /// Closes a handle. When it was the last handle of its session:
    ///
    /// - an outgoing session is aborted: every file is unpreserved, last to
    ///   first, and the session is gone;
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
        if !s.handles.is_empty() {
            return Ok(());
        }
        match s.side {
            Side::Outgoing => self.abort(e.session),
            Side::Incoming { finished: true } => self.remove_session(e.session),
            Side::Incoming { finished: false } => {}
        }
        Ok(())
    }

    fn abort(&mut self, key: u64) {
        let s = self.sessions.get_mut(&key).expect("session");
        let owner = s.owner;
        let files = std::mem::take(&mut s.files);
        for f in files.into_iter().rev() {
            self.release_file(owner, f.pinned);
            let args = f.args(key, owner);
            self.handlers[f.handler].unpreserve(&args);
            for &(fi, g) in f.flb_refs.iter().rev() {
                self.flbs[fi].put_outgoing(g);
            }
            self.index.remove(f.identity, f.custody.as_raw_fd());
        }
        self.remove_session(key);
    }

    /// The incoming object of an FLB, retrieving it on first use (sticky on
    /// error); `ENODATA` when no file holds an incoming reference.
    pub fn flb_incoming(&mut self, id: FlbId) -> Result<u64> {
        let slot = self
            .flbs
            .get_mut(id.0)
            .ok_or_else(|| Error::new(Errno::EINVAL, format!("no FLB {}", id.0)))?;
        slot.get_incoming().map_err(|e| {
            Error::new(
                e,
                format!("FLB {:?} has no incoming object", slot.flb.compatible()),
            )
        })
    }

    /// The outgoing data of an FLB; `ENOENT` when no dependent file is preserved.
    pub fn flb_outgoing(&self, id: FlbId) -> Result<u64> {
        let slot = self
            .flbs
            .get(id.0)
            .ok_or_else(|| Error::new(Errno::EINVAL, format!("no FLB {}", id.0)))?;
        slot.get_outgoing_data().map_err(|e| {
            Error::new(
                e,
                format!("FLB {:?} is not preserved", slot.flb.compatible()),
            )
        })
    }

    /// Reference counts of every FLB.
    pub fn flb_status(&self) -> Vec<FlbStatus> {
        self.flbs.iter().map(|s| s.status()).collect()
    }

    /// Every session with all its files, in creation order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .values()
            .map(|s| self.info(s, 0..s.files.len()))
            .collect()
    }

    /// Every session with all its files, in creation order, each with its
    /// key: the number handlers see as [`FileOpArgs::session`].
    pub fn sessions_keyed(&self) -> Vec<(u64, SessionInfo)> {
        self.sessions
            .iter()
            .map(|(k, s)| (*k, self.info(s, 0..s.files.len())))
            .collect()
    }

    /// Every session's key, in creation order.
    pub fn session_keys(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// A session by key, cheaply (no `fstat`): its owner, name, state and
    /// its files' tokens in preservation order. `None` when it is gone.
    pub fn session_tokens(&self, key: u64) -> Option<(u32, &[u8], SessionState, Vec<u64>)> {
        let s = self.sessions.get(&key)?;
        let state = self.info(s, 0..0).state;
        Some((
            s.owner,
            &s.name,
            state,
            s.files.iter().map(|f| f.token).collect(),
        ))
    }

    /// The custody descriptor of file `token` of session `key`.
    pub fn custody(&self, key: u64, token: u64) -> Option<std::os::fd::BorrowedFd<'_>> {
        let s = self.sessions.get(&key)?;
        let i = *s.tokens.get(&token)?;
        Some(s.files[i].custody.as_fd())
    }

    /// The key of the session behind a live handle (see
    /// [`FileOpArgs::session`]).
    pub fn session_key(&self, h: SessionHandle) -> Result<u64> {
        self.live(h)
    }

    /// The sessions of `owner` named `name`: the outgoing one, then the
    /// incoming one, where they exist. Costs nothing for other sessions.
    pub fn find(&self, owner: u32, name: &[u8]) -> Vec<SessionInfo> {
        self.find_files(owner, name, 0, usize::MAX)
    }

    /// As [`Luo::find`], with at most `len` files from index `start` of
    /// the files of both sessions taken in order (the first's, then the
    /// second's). Costs O(`len`) `fstat` calls, whatever the sessions hold.
    pub fn find_files(
        &self,
        owner: u32,
        name: &[u8],
        start: usize,
        len: usize,
    ) -> Vec<SessionInfo> {
        let key = (owner, name.to_vec());
        let mut skip = start;
        let mut left = len;
        [self.outgoing.get(&key), self.incoming.get(&key)]
            .into_iter()
            .flatten()
            .map(|k| {
                let s = &self.sessions[k];
                let from = skip.min(s.files.len());
                skip -= from;
                let n = left.min(s.files.len() - from);
                left -= n;
                self.info(s, from..from + n)
            })
            .collect()
    }

    /// Every session without its files (counts and totals only), in
    /// creation order. No `fstat` at all.
    pub fn summaries(&self) -> Vec<SessionInfo> {
        self.sessions.values().map(|s| self.info(s, 0..0)).collect()
    }

    /// The session behind a live handle.
    pub fn session(&self, h: SessionHandle) -> Result<SessionInfo> {
        self.session_files(h, 0, usize::MAX)
    }

    /// The session behind a live handle, with at most `len` of its files
    /// from index `start`.
    pub fn session_files(&self, h: SessionHandle, start: usize, len: usize) -> Result<SessionInfo> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        let from = start.min(s.files.len());
        let to = from + len.min(s.files.len() - from);
        Ok(self.info(s, from..to))
    }

    fn info(&self, s: &Session, window: std::ops::Range<usize>) -> SessionInfo {
        let state = match s.side {
            Side::Outgoing => SessionState::Open,
            Side::Incoming { finished: true } => SessionState::Finished,
            Side::Incoming { finished: false } if s.handles.is_empty() => SessionState::Incoming,
            Side::Incoming { finished: false } => SessionState::Retrieved,
        };
        SessionInfo {
            name: s.name.clone(),
            owner: s.owner,
            state,
            handles: s.handles.len(),
            file_count: s.files.len(),
            pinned_bytes: s.files.iter().map(|f| f.pinned).sum(),
            kexec_safe: s
                .files
                .iter()
                .all(|f| self.handlers[f.handler].kexec_safe()),
            files: s.files[window]
                .iter()
                .map(|f| FileStatus {
                    token: f.token,
                    handler: self.handlers[f.handler].compatible().to_string(),
                    kexec_safe: self.handlers[f.handler].kexec_safe(),
                    identity: f.identity,
                    managed: f.indexed,
                    retrieve: f.retrieve,
                    size: luo_sys::fstat(f.custody.as_fd()).map_or(0, |st| st.size),
                    pinned: f.pinned,
                })
                .collect(),
        }
    }

    /// The custody descriptors, in creation order of their sessions.
    pub fn custody_fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.sessions
            .values()
            .flat_map(|s| s.files.iter().map(|f| f.custody.as_fd()))
    }

    /// Descriptors luo holds in custody (one per preserved file).
    pub fn custody_count(&self) -> usize {
        self.sessions.values().map(|s| s.files.len()).sum()
    }
}
