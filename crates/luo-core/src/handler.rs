//! File handlers: one per file type, with the kernel's callbacks.
//!
//! A handler decides whether it can preserve a file (`can_preserve`), what
//! identity the file has for the double-management rule (`identity`), and
//! does the per-file work at each step of the lifecycle. Handlers are tried in
//! registration order and the first whose `can_preserve` accepts a file wins.
//!
//! Built in, in this order: [`MemfdHandler`] (kexec-safe), then the
//! userspace-only handlers for Unix, TCP and UDP sockets, eventfds and pipes,
//! which carry files across a restart without a reboot but not across kexec.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use luo_sys::{sock, Errno, FileStat};

use crate::identity::IdentityKind;

/// What a handler sees of a candidate file: the descriptor and its `fstat`.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo<'a> {
    /// The file.
    pub fd: BorrowedFd<'a>,
    /// Its `fstat`, taken once for all handlers.
    pub stat: FileStat,
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

/// A file handler. Only `compatible`, `can_preserve`, `retrieve` and (where
/// the handler keeps state) `preserve`, `unpreserve` and `finish` need
/// implementing; the rest default to what the kernel does when the op is absent.
pub trait FileHandler: fmt::Debug + Send {
    /// The handler's compatible string (1 to 47 bytes), unique among handlers.
    fn compatible(&self) -> &str;

    /// True when files of this type survive a kernel live update (kexec).
    fn kexec_safe(&self) -> bool {
        false
    }

    /// True when a preserved file pins its size in memory (memfd), so that it
    /// counts against the owner's pinned-bytes quota.
    fn pins_memory(&self) -> bool {
        false
    }

    /// A cheap type check. The first registered handler that accepts wins.
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool;

    /// What makes two descriptors "the same file" for this type.
    fn identity(&self, _file: &FileInfo<'_>) -> IdentityKind {
        IdentityKind::OpenFile
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
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno>;

    /// Whether the session may be finished now; `false` refuses the whole
    /// finish with `EBUSY`.
    fn can_finish(&self, _args: &FileOpArgs<'_>) -> bool {
        true
    }

    /// Final cleanup. Must release the state of a file that was never retrieved.
    fn finish(&self, _args: &FileOpArgs<'_>) {}
}

/// memfd: the kernel's handler (`memfd-v2`), kexec-safe, identified by inode.
///
/// Accepts unlinked shmem files (`memfd_create` without `MFD_HUGETLB`), as the
/// kernel's `memfd_luo_can_preserve` does; a hugetlb memfd has no handler and
/// is refused with `ENOENT`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemfdHandler;

impl FileHandler for MemfdHandler {
    fn compatible(&self) -> &str {
        "memfd-v2"
    }
    fn kexec_safe(&self) -> bool {
        true
    }
    fn pins_memory(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_regular()
            && file.stat.nlink == 0
            && luo_sys::fstatfs_type(file.fd) == Ok(luo_sys::TMPFS_MAGIC)
    }
    fn identity(&self, _file: &FileInfo<'_>) -> IdentityKind {
        IdentityKind::Inode
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        Ok(args.file.try_clone_to_owned()?)
    }
}

/// The kinds of file the userspace-only handlers accept.
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

/// A handler that keeps the file itself open across a restart: valid for an
/// update without a reboot, reported as not kexec-safe.
#[derive(Debug, Clone, Copy)]
pub struct UserspaceHandler(pub UserspaceKind);

impl FileHandler for UserspaceHandler {
    fn compatible(&self) -> &str {
        match self.0 {
            UserspaceKind::UnixSocket => "luo-unix-socket-v1",
            UserspaceKind::TcpSocket => "luo-tcp-socket-v1",
            UserspaceKind::UdpSocket => "luo-udp-socket-v1",
            UserspaceKind::Eventfd => "luo-eventfd-v1",
            UserspaceKind::Pipe => "luo-pipe-v1",
        }
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        let inet = |k: luo_sys::SocketKind| k.domain == sock::AF_INET || k.domain == sock::AF_INET6;
        match self.0 {
            UserspaceKind::UnixSocket => {
                file.stat.is_socket()
                    && luo_sys::socket_kind(file.fd).is_ok_and(|k| k.domain == sock::AF_UNIX)
            }
            UserspaceKind::TcpSocket => {
                file.stat.is_socket()
                    && luo_sys::socket_kind(file.fd).is_ok_and(|k| {
                        inet(k) && k.ty == sock::SOCK_STREAM && k.protocol == sock::IPPROTO_TCP
                    })
            }
            UserspaceKind::UdpSocket => {
                file.stat.is_socket()
                    && luo_sys::socket_kind(file.fd).is_ok_and(|k| {
                        inet(k) && k.ty == sock::SOCK_DGRAM && k.protocol == sock::IPPROTO_UDP
                    })
            }
            UserspaceKind::Eventfd => {
                // Anonymous-inode files have no file type bits in st_mode.
                file.stat.mode & 0o170000 == 0
                    && luo_sys::fd_target(file.fd)
                        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
            }
            UserspaceKind::Pipe => file.stat.is_fifo(),
        }
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        Ok(args.file.as_fd().try_clone_to_owned()?)
    }
}

/// The built-in handlers in their registration order.
pub fn default_handlers() -> Vec<Box<dyn FileHandler>> {
    vec![
        Box::new(MemfdHandler),
        Box::new(UserspaceHandler(UserspaceKind::UnixSocket)),
        Box::new(UserspaceHandler(UserspaceKind::TcpSocket)),
        Box::new(UserspaceHandler(UserspaceKind::UdpSocket)),
        Box::new(UserspaceHandler(UserspaceKind::Eventfd)),
        Box::new(UserspaceHandler(UserspaceKind::Pipe)),
    ]
}
