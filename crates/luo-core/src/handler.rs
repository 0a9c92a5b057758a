//! File handlers: one per file type, with the kernel's callbacks.
//!
//! A handler decides whether it can preserve a file (`can_preserve`), what
//! identity the file has for the double-management rule (`identity`), and
//! does the per-file work at each step of the lifecycle. Handlers are tried in
//! registration order and the first whose `can_preserve` accepts a file wins.
//!
//! A handler also says what it is ([`FileHandler::descriptor`]): its short
//! type name, the identity of its files, whether they cross a kexec and if
//! not why, and whether they pin memory.
//!
//! Built in, in this order ([`crate::handlers`], one file each):
//! [`MemfdHandler`] (kexec-safe), then the userspace-only handlers for Unix,
//! TCP and UDP sockets, eventfds and pipes, which carry files across a
//! restart without a reboot but not across kexec.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};

use luo_sys::{Errno, FileStat};

use crate::identity::IdentityKind;

pub use crate::handlers::MemfdHandler;

/// Whether a handler's files survive a kernel live update (kexec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kexec {
    /// They do: a kernel LUO handler preserves them.
    Safe,
    /// They do not, for this reason (a sentence for the preflight).
    Lost(&'static str),
}

/// What a handler says about its files: plain data, for listings, the kexec
/// preflight and the model's own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Short type name in listings (`memfd`, `tcp-socket`, ...); `None`:
    /// the handler's compatible string.
    pub type_name: Option<&'static str>,
    /// The identity its files are managed under, as
    /// [`FileHandler::identity`] returns by default.
    pub identity: IdentityKind,
    /// Whether its files cross a kexec, and if not why.
    pub kexec: Kexec,
    /// Whether a preserved file pins its size in memory (memfd), so that it
    /// counts against the owner's pinned-bytes quota.
    pub pins_memory: bool,
}

impl Descriptor {
    /// Why files of a handler that says nothing do not cross a kexec.
    pub const NO_KERNEL_HANDLER: &'static str = "no kernel LUO handler preserves this kind of file";

    /// A handler that says nothing: its compatible string as type name,
    /// open-file identity, not kexec-safe, no pinned memory.
    pub const DEFAULT: Descriptor = Descriptor {
        type_name: None,
        identity: IdentityKind::OpenFile,
        kexec: Kexec::Lost(Descriptor::NO_KERNEL_HANDLER),
        pins_memory: false,
    };

    /// True when its files survive a kexec.
    pub fn kexec_safe(&self) -> bool {
        self.kexec == Kexec::Safe
    }
}

impl Default for Descriptor {
    fn default() -> Self {
        Descriptor::DEFAULT
    }
}

/// What a handler sees of a candidate file: the descriptor and its `fstat`,
/// and for a socket its kind, for an eventfd its fdinfo, read at most once
/// however many handlers (and the veto) ask.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo<'a> {
    /// The file.
    pub fd: BorrowedFd<'a>,
    /// Its `fstat`, taken once for all handlers.
    pub stat: FileStat,
    probe: &'a FileProbe,
    /// Where eventfds' ids are read, when the index keys eventfds by id.
    fdinfo: Option<&'a luo_sys::FdinfoDir>,
}

/// What the checks of one preserve learnt of its file: a socket's
/// `SO_DOMAIN` and (`SO_TYPE`, `SO_PROTOCOL`), and an anonymous
/// file's fdinfo, each read once per preserve. Only what was read is kept: a
/// failed read is tried again by the next handler that asks (a passing
/// shortage is not taken for an answer), and its errno is kept for the
/// preserve's error.
#[derive(Debug, Default)]
pub(crate) struct FileProbe {
    domain: std::cell::Cell<Option<i32>>,
    rest: std::cell::Cell<Option<(i32, i32)>>,
    eventfd: std::cell::Cell<Option<Option<luo_sys::EventfdInfo>>>,
    fdinfo_failed: std::cell::Cell<Option<Errno>>,
}

impl FileProbe {
    /// Why the file's fdinfo could not be read, if it could not.
    pub(crate) fn fdinfo_failed(&self) -> Option<Errno> {
        self.fdinfo_failed.get()
    }
}

impl<'a> FileInfo<'a> {
    pub(crate) fn new(
        fd: BorrowedFd<'a>,
        stat: FileStat,
        probe: &'a FileProbe,
        fdinfo: Option<&'a luo_sys::FdinfoDir>,
    ) -> Self {
        FileInfo {
            fd,
            stat,
            probe,
            fdinfo,
        }
    }

    /// Whether the file is an eventfd. Where the index keys eventfds by id,
    /// its fdinfo says (`eventfd-count:`), read once and kept for the
    /// index's key; elsewhere what `/proc/self/fd/N` links to
    /// (`anon_inode:[eventfd]`).
    pub fn is_eventfd(&self) -> Result<bool, Errno> {
        match self.fdinfo {
            Some(dir) => Ok(self.eventfd_info(dir)?.is_some()),
            None => luo_sys::fd_target(self.fd)
                .map(|p| p.as_os_str() == "anon_inode:[eventfd]")
                .map_err(Errno::from),
        }
    }

    /// The file's fdinfo as an eventfd's (`None`: not an eventfd), read
    /// through `dir` at most once.
    pub(crate) fn eventfd_info(
        &self,
        dir: &luo_sys::FdinfoDir,
    ) -> Result<Option<luo_sys::EventfdInfo>, Errno> {
        if let Some(i) = self.probe.eventfd.get() {
            return Ok(i);
        }
        match dir.eventfd(self.fd) {
            Ok(i) => {
                self.probe.eventfd.set(Some(i));
                Ok(i)
            }
            Err(e) => {
                self.probe.fdinfo_failed.set(Some(e));
                Err(e)
            }
        }
    }

    /// The socket's address family (`SO_DOMAIN`); `ENOTSOCK` for another
    /// file.
    pub fn socket_domain(&self) -> Result<i32, Errno> {
        if let Some(d) = self.probe.domain.get() {
            return Ok(d);
        }
        let d = luo_sys::socket_domain(self.fd)?;
        self.probe.domain.set(Some(d));
        Ok(d)
    }

    /// The socket's family, type and protocol.
    pub fn socket_kind(&self) -> Result<luo_sys::SocketKind, Errno> {
        let domain = self.socket_domain()?;
        let (ty, protocol) = match self.probe.rest.get() {
            Some(r) => r,
            None => {
                let r = luo_sys::socket_type_protocol(self.fd)?;
                self.probe.rest.set(Some(r));
                r
            }
        };
        Ok(luo_sys::SocketKind {
            domain,
            ty,
            protocol,
        })
    }
}

/// Outcome of the last retrieve of a file, as the kernel's `retrieve_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveStatus {
    /// Never retrieved (the kernel's 0).
    NotRetrieved,
    /// Retrieved (the kernel's > 0).
    Retrieved,
    /// The retrieve failed with this errno (the kernel's < 0). Sticky.
    Failed(Errno),
}

/// `no`, `yes`, or `failed: ERRNO` (`failed: errno N` for an errno without
/// a name).
impl std::fmt::Display for RetrieveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetrieveStatus::NotRetrieved => f.write_str("no"),
            RetrieveStatus::Retrieved => f.write_str("yes"),
            RetrieveStatus::Failed(e) => match e.name() {
                Some(n) => write!(f, "failed: {n}"),
                None => write!(f, "failed: errno {}", e.0),
            },
        }
    }
}

/// Parses what [`Display`](std::fmt::Display) writes.
impl std::str::FromStr for RetrieveStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<RetrieveStatus, ()> {
        match s {
            "no" => Ok(RetrieveStatus::NotRetrieved),
            "yes" => Ok(RetrieveStatus::Retrieved),
            _ => {
                let e = s.strip_prefix("failed: ").ok_or(())?;
                match e.strip_prefix("errno ") {
                    Some(n) => n
                        .parse()
                        .map(|n| RetrieveStatus::Failed(Errno(n)))
                        .map_err(drop),
                    None => Errno::from_name(e).map(RetrieveStatus::Failed).ok_or(()),
                }
            }
        }
    }
}

/// Arguments of the per-file callbacks, as the kernel's
/// `liveupdate_file_op_args`.
#[derive(Debug)]
pub struct FileOpArgs<'a> {
    /// The session the file belongs to: a number unique for the model's
    /// life, so that a handler can keep per-session state (the kernel
    /// backend's kernel sessions).
    pub session: u64,
    /// The uid that owns the session.
    pub owner: u32,
    /// The session-unique token of the file.
    pub token: u64,
    /// The preserved file: the custody copy luo holds.
    pub file: BorrowedFd<'a>,
    /// Opaque handler data, set by `preserve` and updated by `freeze`.
    pub serialized_data: u64,
    /// What happened at retrieve so far.
    pub retrieve_status: RetrieveStatus,
}

/// A file handler. Only `compatible`, `can_preserve`, `retrieve`,
/// `descriptor` and (where the handler keeps state) `preserve`, `unpreserve`
/// and `finish` need implementing; the rest default to what the kernel does
/// when the op is absent.
pub trait FileHandler: fmt::Debug + Send {
    /// The handler's compatible string (1 to 47 bytes), unique among handlers.
    fn compatible(&self) -> &str;

    /// What the handler's files are: type name, identity, whether they
    /// cross a kexec (and if not why), whether they pin memory.
    fn descriptor(&self) -> Descriptor {
        Descriptor::DEFAULT
    }

    /// A cheap type check. The first registered handler that accepts wins.
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool;

    /// What makes two descriptors "the same file" for this type; by default
    /// the descriptor's identity.
    fn identity(&self, _file: &FileInfo<'_>) -> IdentityKind {
        self.descriptor().identity
    }

    /// Preserves the file; returns the initial `serialized_data`.
    fn preserve(&self, _args: &FileOpArgs<'_>) -> Result<u64, Errno> {
        Ok(0)
    }

    /// Undoes `preserve` when the outgoing session is aborted.
    fn unpreserve(&self, _args: &FileOpArgs<'_>) {}

    /// Called when the session crosses to the next epoch (or is handed over);
    /// may update `serialized_data`. An error cancels the whole update.
    fn freeze(&self, _args: &mut FileOpArgs<'_>) -> Result<(), Errno> {
        Ok(())
    }

    /// Undoes a successful `freeze` when a later freeze failed.
    fn unfreeze(&self, _args: &FileOpArgs<'_>) {}

    /// Produces the file for the incoming side. The error is sticky: later
    /// retrieves return it without calling the handler again.
    ///
    /// By default, a new descriptor of the preserved open file, which stays
    /// open across a restart (every built-in handler does this).
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        Ok(args.file.try_clone_to_owned()?)
    }

    /// True when [`FileHandler::retrieve`] is the default: a new descriptor
    /// of the custody file. The model then makes that copy itself and keeps
    /// the custody descriptor as it is (no replacement, nothing to compare
    /// in the identity index). A handler that overrides `retrieve` leaves
    /// this `false`.
    fn retrieves_custody(&self) -> bool {
        false
    }

    /// Whether the session may be finished now; `false` refuses the whole
    /// finish with `EBUSY`.
    fn can_finish(&self, _args: &FileOpArgs<'_>) -> bool {
        true
    }

    /// Final cleanup. Must release the state of a file that was never retrieved.
    fn finish(&self, _args: &FileOpArgs<'_>) {}
}

/// The kinds of file the userspace-only built-in handlers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserspaceKind {
    /// `AF_UNIX` sockets of any type.
    UnixSocket,
    /// `AF_INET`/`AF_INET6` stream sockets (TCP), listening or connected.
    TcpSocket,
    /// `AF_INET`/`AF_INET6` datagram sockets (UDP).
    UdpSocket,
    /// eventfds (which share one anonymous inode: identity is the open file).
    Eventfd,
    /// Pipe ends and FIFOs.
    Pipe,
}

/// One of the userspace-only built-in handlers by kind: the same handler as
/// its own type in [`crate::handlers`], under the same compatible string.
#[derive(Debug, Clone, Copy)]
pub struct UserspaceHandler(pub UserspaceKind);

impl UserspaceHandler {
    fn inner(&self) -> &'static dyn FileHandler {
        use crate::handlers::*;
        match self.0 {
            UserspaceKind::UnixSocket => &UnixSocketHandler,
            UserspaceKind::TcpSocket => &TcpSocketHandler,
            UserspaceKind::UdpSocket => &UdpSocketHandler,
            UserspaceKind::Eventfd => &EventfdHandler,
            UserspaceKind::Pipe => &PipeHandler,
        }
    }
}

impl FileHandler for UserspaceHandler {
    fn compatible(&self) -> &str {
        self.inner().compatible()
    }
    fn descriptor(&self) -> Descriptor {
        self.inner().descriptor()
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        self.inner().can_preserve(file)
    }
    fn identity(&self, file: &FileInfo<'_>) -> IdentityKind {
        self.inner().identity(file)
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        self.inner().retrieve(args)
    }
    fn retrieves_custody(&self) -> bool {
        self.inner().retrieves_custody()
    }
}

/// The built-in handlers in their registration order
/// ([`crate::handlers::BUILTIN`]).
pub fn default_handlers() -> Vec<Box<dyn FileHandler>> {
    crate::handlers::default_handlers()
}
