//! The Live Update Orchestrator's session and file model, with the kernel's
//! semantics.
//!
//! [`Luo`] holds every session, preserved file, handler, FLB and the global
//! [identity index](identity). It is sans-IO: plain methods over plain state,
//! no sockets and no threads. The agent moves bytes and descriptors; this crate
//! decides what they mean. Every mutating call records what it changed
//! ([`Luo::take_changes`]), so that an agent mirroring the model elsewhere
//! follows it with work proportional to the change.
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

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};

use foldhash::{HashMap, HashMapExt};

mod changes;
mod crossing;
mod error;
pub mod flb;
pub mod handler;
pub mod handlers;
mod handles;
pub mod identity;
mod persist;
mod preserve;
mod queries;
mod quotas;
pub mod snapshot;
pub mod testing;
mod tree;
mod types;

pub use changes::{Changes, SessionChange};
pub use crossing::Retrieval;
pub use error::{Errno, Error, Result};
pub use flb::{Flb, FlbStatus};
pub use handler::{Descriptor, FileHandler, FileInfo, FileOpArgs, Kexec, RetrieveStatus};
pub use identity::{
    FileOrder, Holder, Identity, IdentityIndex, IdentityKind, IndexKey, IndexMode, Kcmp,
};
pub use quotas::{parse_size, Quota, Usage};
pub use types::{
    FileStatus, FlbId, HandlerId, Limits, SessionHandle, SessionInfo, SessionMode, SessionState,
};

use error::err;
use flb::{FlbSlot, Gen};

/// Longest session name in bytes (the kernel's 64-byte field less its NUL).
pub const MAX_SESSION_NAME: usize = 63;
/// Longest handler or FLB compatible string in bytes.
pub const MAX_COMPATIBLE: usize = 47;
/// Most FLBs that can be registered (the kernel's `LUO_FLB_MAX` on 4 KiB pages).
pub const MAX_FLBS: usize = 63;

#[derive(Debug)]
struct PreservedFile {
    token: u64,
    handler: usize,
    /// Where the index files it, which also gives its identity
    /// ([`IdentityIndex::identity`]).
    key: IndexKey,
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
    /// What changed since the last [`Luo::take_changes`].
    changes: Changes,
    /// Descriptors refused before any handler is asked ([`Luo::set_veto`]).
    veto: Option<Veto>,
}

/// A predicate over a file to preserve, consulted where the model looks for
/// its handler: `Some(why)` refuses it as no handler would (`ENOENT`).
pub struct Veto(Box<VetoFn>);

/// The predicate a [`Veto`] holds.
type VetoFn = dyn Fn(&FileInfo<'_>) -> Option<String> + Send + Sync;

impl std::fmt::Debug for Veto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Veto(..)")
    }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
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
            changes: Changes::default(),
            veto: None,
        }
    }

    /// Sets the predicate every file to preserve meets before the handlers
    /// (it replaces the previous one). A file it refuses gets `ENOENT` at
    /// the kernel's step for a file no handler takes, with its reason as
    /// the message: the embedder's way to refuse descriptors the kernel
    /// would have no handler for, such as its own sockets.
    pub fn set_veto(
        &mut self,
        veto: impl Fn(&FileInfo<'_>) -> Option<String> + Send + Sync + 'static,
    ) {
        self.veto = Some(Veto(Box::new(veto)));
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
        if self.epoch != epoch {
            self.changed_epoch();
        }
        self.epoch = epoch;
    }

    /// The identity index (read-only), for status and diagnostics.
    pub fn index(&self) -> &IdentityIndex {
        &self.index
    }
}
