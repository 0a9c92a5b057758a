//! The one place in luo that holds `unsafe` code.
//!
//! Every function here is a thin, safe wrapper over one Linux syscall (or a
//! small fixed sequence of them). Wrappers take [`BorrowedFd`] and return
//! [`OwnedFd`], so fd ownership is checked by the type system everywhere else;
//! every other crate in the workspace is `#![forbid(unsafe_code)]`.
//!
//! Most calls go through [`rustix`], which wraps them safely; what rustix
//! does not cover (`kcmp`, `F_DUPFD_QUERY`, `close_range`, `signalfd`,
//! `exec`, the `/dev/liveupdate` ioctls, ...) is written here against
//! `libc`, each with the reason next to it.
//!
//! Errors are returned as [`Errno`], unchanged from the kernel.

#![deny(missing_docs)]

use std::cmp::Ordering;
use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering as AtomicOrdering};
use std::sync::Once;

use rustix::event::epoll as rx_epoll;
use rustix::fs::{FileType, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::FdFlags;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// The fault-injection point at the top of a wrapper: with the
/// `fault-injection` feature (test builds only), the call can be made to
/// fail as `LUO_FAULT` asks (see `fault.rs`); without it, nothing.
macro_rules! fault {
    ($kind:ident) => {
        #[cfg(feature = "fault-injection")]
        $crate::fault::hit($crate::fault::Kind::$kind)?;
    };
}

mod errno;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod liveupdate;
pub mod service;
pub use errno::Errno;

#[cfg(feature = "preload")]
pub mod preload;

/// Result of a syscall wrapper.
pub type Result<T> = std::result::Result<T, Errno>;

/// For the calls written against libc: a negative return is `errno`.
fn cvt(ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The parts of a `struct stat` (libc's or rustix's) that luo uses.
macro_rules! file_stat {
    ($st:expr) => {{
        let st = $st;
        #[allow(clippy::unnecessary_cast)] // the field types differ by target
        FileStat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            size: st.st_size as u64,
        }
    }};
}

/// `fstat(2)` on a descriptor number this process may not own (an agent
/// checking what it inherited across `exec` before taking it over).
/// `EBADF` when nothing is open there.
pub fn fstat_raw(fd: RawFd) -> Result<FileStat> {
    fault!(Fstat);
    // Hand-written: rustix takes a BorrowedFd, which must be open, and this
    // probes a number that may not be.
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into `st` and reads nothing of
    // ours; any integer is a valid argument (a closed one gives EBADF).
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so `st` is initialised.
    Ok(file_stat!(unsafe { st.assume_init() }))
}

/// The parts of `struct stat` that luo uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Device of the filesystem holding the inode (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// File type and mode bits (`st_mode`).
    pub mode: u32,
    /// Number of hard links (`st_nlink`); 0 for a memfd.
    pub nlink: u64,
    /// Size in bytes (`st_size`).
    pub size: u64,
}

impl FileStat {
    /// `S_ISREG`.
    pub fn is_regular(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::RegularFile
    }
    /// `S_ISSOCK`.
    pub fn is_socket(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Socket
    }
    /// `S_ISFIFO` (pipes and named FIFOs).
    pub fn is_fifo(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Fifo
    }
}

/// `fstat(2)`.
///
/// ```
/// use std::os::fd::AsFd;
///
/// let m = luo_sys::memfd_create("data", 0).unwrap();
/// let st = luo_sys::fstat(m.as_fd()).unwrap();
/// assert!(st.is_regular());
/// assert_eq!(st.nlink, 0); // a memfd has no name in any directory
/// ```
pub fn fstat(fd: BorrowedFd<'_>) -> Result<FileStat> {
    fault!(Fstat);
    Ok(file_stat!(rustix::fs::fstat(fd)?))
}

/// `TMPFS_MAGIC`, the `f_type` of shmem files (memfds among them).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `HUGETLBFS_MAGIC`, the `f_type` of `MFD_HUGETLB` memfds.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `fstatfs(2)`, returning the filesystem's magic number (`f_type`).
pub fn fstatfs_type(fd: BorrowedFd<'_>) -> Result<i64> {
    fault!(Fstat);
    let st = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    Ok(st.f_type as i64)
}

/// `fcntl(F_GETFL)`: the open file description's status flags.
pub fn fcntl_getfl(fd: BorrowedFd<'_>) -> Result<i32> {
    fault!(Fcntl);
    Ok(rustix::fs::fcntl_getfl(fd)?.bits() as i32)
}

/// `fcntl(F_GETFD)`: the descriptor flags (`FD_CLOEXEC`).
pub fn fcntl_getfd(fd: BorrowedFd<'_>) -> Result<i32> {
    fault!(Fcntl);
    Ok(rustix::io::fcntl_getfd(fd)?.bits() as i32)
}

/// True when `fd` was opened with `O_PATH` (such fds carry no file to preserve).
pub fn is_o_path(fd: BorrowedFd<'_>) -> Result<bool> {
    fault!(Fcntl);
    Ok(rustix::fs::fcntl_getfl(fd)?.contains(OFlags::PATH))
}

/// `kcmp(getpid(), getpid(), KCMP_FILE, a, b)`: whether two descriptors of this
/// process refer to the same open file description, and if not, their order in
/// the kernel's (per-boot, obfuscated) total order of open file descriptions.
///
/// Fails with `ENOSYS` where the kernel lacks `CONFIG_KCMP` and `EPERM` where a
/// seccomp filter or ptrace policy forbids it.
///
/// ```
/// use std::cmp::Ordering;
/// use std::os::fd::AsFd;
///
/// let a = luo_sys::eventfd(0).unwrap();
/// let b = luo_sys::eventfd(0).unwrap();
/// let a2 = a.try_clone().unwrap(); // a dup: the same open file
/// assert_eq!(luo_sys::kcmp_file(a.as_fd(), a2.as_fd()).unwrap(), Ordering::Equal);
/// assert_ne!(luo_sys::kcmp_file(a.as_fd(), b.as_fd()).unwrap(), Ordering::Equal);
/// ```
pub fn kcmp_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<Ordering> {
    kcmp_raw(a.as_raw_fd(), b.as_raw_fd())
}

/// [`kcmp_file`] on descriptor numbers (an index that keeps numbers, not
/// descriptors). A number nothing is open at gives `EBADF`.
pub fn kcmp_raw(a: RawFd, b: RawFd) -> Result<Ordering> {
    fault!(Kcmp);
    // Hand-written: rustix has no kcmp.
    const KCMP_FILE: libc::c_long = 0;
    let pid = getpid() as libc::c_long;
    // SAFETY: kcmp only reads its integer arguments; any number is valid
    // (a closed one gives EBADF).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a as libc::c_long,
            b as libc::c_long,
        )
    };
    match ret {
        0 => Ok(Ordering::Equal),
        1 => Ok(Ordering::Less),
        2 => Ok(Ordering::Greater),
        r if r < 0 => Err(Errno::last()),
        // 3 means "not equal, no order", which KCMP_FILE never returns.
        _ => Err(Errno::EINVAL),
    }
}

/// `fcntl(a, F_DUPFD_QUERY, b)` (Linux 6.10 and later): whether two
/// descriptors of this process are the same open file description. Unlike
/// [`kcmp_file`] it needs no `CONFIG_CHECKPOINT_RESTORE`, but gives no order.
/// `EINVAL` on older kernels.
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<bool> {
    same_file_raw(a.as_raw_fd(), b.as_raw_fd())
}

/// [`same_file`] on descriptor numbers.
pub fn same_file_raw(a: RawFd, b: RawFd) -> Result<bool> {
    fault!(Fcntl);
    // Hand-written: rustix has no F_DUPFD_QUERY (and these are numbers, not
    // borrowed descriptors).
    const F_DUPFD_QUERY: libc::c_int = 1024 + 3;
    // SAFETY: F_DUPFD_QUERY takes an integer argument; any number is valid
    // (a closed one gives EBADF).
    let r = cvt(unsafe { libc::fcntl(a, F_DUPFD_QUERY, b) })?;
    Ok(r == 1)
}

static PID: AtomicI32 = AtomicI32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forget_pid_after_fork() {
    PID.store(0, AtomicOrdering::Relaxed);
}

/// `getpid(2)`, cached: glibc no longer caches it, and [`kcmp_file`] needs it
/// on every comparison. A `pthread_atfork` child handler clears the cache, so
/// a forked child sees its own pid.
pub fn getpid() -> i32 {
    let p = PID.load(AtomicOrdering::Relaxed);
    if p != 0 {
        return p;
    }
    ATFORK.call_once(|| {
        // Hand-written: pthread_atfork is libc's, not a syscall.
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe as a child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_after_fork)) };
    });
    let p = rustix::process::getpid().as_raw_nonzero().get();
    PID.store(p, AtomicOrdering::Relaxed);
    p
}

/// Flags for [`memfd_create`].
pub mod mfd {
    use rustix::fs::MemfdFlags;

    /// `MFD_CLOEXEC`.
    pub const CLOEXEC: u32 = MemfdFlags::CLOEXEC.bits();
    /// `MFD_ALLOW_SEALING`.
    pub const ALLOW_SEALING: u32 = MemfdFlags::ALLOW_SEALING.bits();
    /// `MFD_HUGETLB`.
    pub const HUGETLB: u32 = MemfdFlags::HUGETLB.bits();
}

/// `memfd_create(2)`. `MFD_CLOEXEC` is always added.
pub fn memfd_create(name: &str, flags: u32) -> Result<OwnedFd> {
    fault!(Memfd);
    let flags = MemfdFlags::from_bits_retain(flags) | MemfdFlags::CLOEXEC;
    Ok(rustix::fs::memfd_create(name, flags)?)
}

/// `eventfd(2)` with `EFD_CLOEXEC`.
pub fn eventfd(initval: u32) -> Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        initval,
        rustix::event::EventfdFlags::CLOEXEC,
    )?)
}

/// `pipe2(O_CLOEXEC)`: returns `(read end, write end)`.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A socket's `(SO_DOMAIN, SO_TYPE, SO_PROTOCOL)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketKind {
    /// Address family, e.g. `AF_UNIX`, `AF_INET`, `AF_INET6`.
    pub domain: i32,
    /// Socket type, e.g. `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`.
    pub ty: i32,
    /// Protocol, e.g. `IPPROTO_TCP`.
    pub protocol: i32,
}

/// `getsockopt(SO_DOMAIN / SO_TYPE / SO_PROTOCOL)`; `ENOTSOCK` for non-sockets.
pub fn socket_kind(fd: BorrowedFd<'_>) -> Result<SocketKind> {
    let domain = socket_domain(fd)?;
    let (ty, protocol) = socket_type_protocol(fd)?;
    Ok(SocketKind {
        domain,
        ty,
        protocol,
    })
}

/// `getsockopt(SO_TYPE / SO_PROTOCOL)`: the rest of [`socket_kind`], for a
/// caller that has read the domain already.
pub fn socket_type_protocol(fd: BorrowedFd<'_>) -> Result<(i32, i32)> {
    use rustix::net::sockopt;
    Ok((
        sockopt::socket_type(fd)?.as_raw() as i32,
        sockopt::socket_protocol(fd)?.map_or(0, |p| p.as_raw().get() as i32),
    ))
}

/// `getsockopt(SO_DOMAIN)` alone: the address family, in one call where
/// [`socket_kind`] makes three.
pub fn socket_domain(fd: BorrowedFd<'_>) -> Result<i32> {
    Ok(i32::from(rustix::net::sockopt::socket_domain(fd)?.as_raw()))
}

/// Address families and socket types, for callers of [`socket_kind`].
pub mod sock {
    use rustix::net::{ipproto, AddressFamily, SocketType};

    /// `AF_INET`.
    pub const AF_INET: i32 = AddressFamily::INET.as_raw() as i32;
    /// `AF_INET6`.
    pub const AF_INET6: i32 = AddressFamily::INET6.as_raw() as i32;
    /// `AF_UNIX`.
    pub const AF_UNIX: i32 = AddressFamily::UNIX.as_raw() as i32;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: i32 = ipproto::TCP.as_raw().get() as i32;
    /// `IPPROTO_UDP`.
    pub const IPPROTO_UDP: i32 = ipproto::UDP.as_raw().get() as i32;
    /// `SOCK_DGRAM`.
    pub const SOCK_DGRAM: i32 = SocketType::DGRAM.as_raw() as i32;
    /// `SOCK_SEQPACKET`.
    pub const SOCK_SEQPACKET: i32 = SocketType::SEQPACKET.as_raw() as i32;
    /// `SOCK_STREAM`.
    pub const SOCK_STREAM: i32 = SocketType::STREAM.as_raw() as i32;
}

/// What [`recv_with_fds`] received.
#[derive(Debug)]
pub struct Received {
    /// Bytes of payload received.
    pub len: usize,
    /// Descriptors that arrived (already owned, `FD_CLOEXEC` set).
    pub fds: Vec<OwnedFd>,
    /// `MSG_TRUNC`: the payload did not fit in the buffer.
    pub truncated: bool,
    /// `MSG_CTRUNC`: control data was cut, so descriptors may have been lost.
    pub ctrunc: bool,
}

/// Most descriptors the kernel accepts in one SCM_RIGHTS message (`SCM_MAX_FD`).
pub const SCM_MAX_FD: usize = 253;

/// `CMSG_SPACE(n * sizeof(int))`: a `cmsghdr` and `n` descriptors, each
/// rounded up to the alignment of `size_t`, as the kernel lays them out.
const fn cmsg_space_fds(n: usize) -> usize {
    const ALIGN: usize = std::mem::size_of::<usize>();
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }
    let header = ALIGN + 2 * std::mem::size_of::<i32>();
    let data = n * std::mem::size_of::<RawFd>();
    header.div_ceil(ALIGN) * ALIGN + data.div_ceil(ALIGN) * ALIGN
}

/// Room for one `SCM_RIGHTS` message of [`SCM_MAX_FD`] descriptors wherever
/// the buffer starts (it is aligned for a `cmsghdr` inside): small enough
/// for the stack.
const CMSG_BUF: usize = cmsg_space_fds(SCM_MAX_FD) + std::mem::align_of::<usize>();

/// `sendmsg(2)` with the descriptors attached as one `SCM_RIGHTS` message.
/// `MSG_NOSIGNAL` is always set.
///
/// ```
/// use std::os::fd::AsFd;
///
/// let (a, b) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
/// let m = luo_sys::memfd_create("data", 0).unwrap();
/// luo_sys::send_with_fds(a.as_fd(), b"take this", &[m.as_fd()]).unwrap();
/// let mut buf = [0u8; 64];
/// let got = luo_sys::recv_with_fds(b.as_fd(), &mut buf, 4).unwrap();
/// assert_eq!(&buf[..got.len], b"take this");
/// assert_eq!(got.fds.len(), 1);
/// assert!(!got.ctrunc);
/// ```
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<usize> {
    sendmsg_fds(sock, None, data, fds)
}

fn sendmsg_fds(
    sock: BorrowedFd<'_>,
    to: Option<&SocketAddrUnix>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize> {
    fault!(Send);
    if fds.len() > SCM_MAX_FD {
        return Err(Errno::EINVAL);
    }
    let iov = [IoSlice::new(data)];
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_BUF];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // The buffer has room for SCM_MAX_FD descriptors, so the push fits.
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::EINVAL);
    }
    let flags = SendFlags::NOSIGNAL;
    Ok(match to {
        Some(addr) => rustix::net::sendmsg_addr(sock, addr, &iov, &mut control, flags)?,
        None => rustix::net::sendmsg(sock, &iov, &mut control, flags)?,
    })
}

/// `recvmsg(2)` with room for at least `max_fds` descriptors, received with
/// `MSG_CMSG_CLOEXEC`. Every descriptor that arrived is returned as an
/// [`OwnedFd`], also when control data was truncated, so that dropping the
/// result closes them all.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> Result<Received> {
    Ok(recvmsg_fds(sock, buf, max_fds, false)?.0)
}

/// Room for one `SCM_CREDENTIALS` message (at most 64 bytes of control data).
const CMSG_CRED_ROOM: usize = 64;

/// `recvmsg(2)` with room for exactly `max_fds` descriptors (at most
/// [`SCM_MAX_FD`]) and, when `cred` is asked for, one `SCM_CREDENTIALS`
/// message: what [`recv_with_fds`] and [`service::notify_recv`] share.
pub(crate) fn recvmsg_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    cred: bool,
) -> Result<(Received, Option<PeerCred>)> {
    fault!(Recv);
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_BUF + CMSG_CRED_ROOM];
    // Exactly CMSG_SPACE(max_fds) bytes (plus the credentials' space when
    // asked), aligned for a cmsghdr: the kernel delivers no more
    // descriptors than fit, and says MSG_CTRUNC.
    let start = space.as_ptr().align_offset(std::mem::align_of::<usize>());
    let mut len = cmsg_space_fds(max_fds.min(SCM_MAX_FD));
    if cred {
        len += rustix::cmsg_space!(ScmCredentials(1));
    }
    let mut control = RecvAncillaryBuffer::new(&mut space[start..start + len]);
    let msg = rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    let mut sender = None;
    for m in control.drain() {
        match m {
            RecvAncillaryMessage::ScmRights(arrived) => fds.extend(arrived),
            RecvAncillaryMessage::ScmCredentials(c) => {
                sender = Some(PeerCred {
                    pid: c.pid.as_raw_nonzero().get(),
                    uid: c.uid.as_raw(),
                    gid: c.gid.as_raw(),
                })
            }
            _ => {}
        }
    }
    let received = Received {
        len: msg.bytes,
        fds,
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        ctrunc: msg.flags.contains(ReturnFlags::CTRUNC),
    };
    Ok((received, sender))
}

/// `socketpair(AF_UNIX, ty | SOCK_CLOEXEC, 0)`.
pub fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd)> {
    fault!(Socket);
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::from_raw(ty as u32),
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn unix_addr(path: &std::path::Path) -> Result<SocketAddrUnix> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // The path and its NUL must fit in sun_path (108 bytes).
    if bytes.is_empty() || bytes.len() >= 108 || bytes.contains(&0) {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(SocketAddrUnix::new(path)?)
}

/// An address for a path, or for the abstract namespace when it starts
/// with `@` (as `$NOTIFY_SOCKET` may).
fn unix_addr_any(path: &std::path::Path) -> Result<SocketAddrUnix> {
    use std::os::unix::ffi::OsStrExt;
    match path.as_os_str().as_bytes().strip_prefix(b"@") {
        // ENAMETOOLONG when it does not fit after sun_path's leading NUL.
        Some(name) => Ok(SocketAddrUnix::new_abstract_name(name)?),
        None => unix_addr(path),
    }
}

fn unix_socket(ty: SocketType, flags: SocketFlags) -> Result<OwnedFd> {
    fault!(Socket);
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        ty,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// Sends one datagram with descriptors to the `AF_UNIX` `SOCK_DGRAM` socket
/// at `path` (`@name` for the abstract namespace): the `sd_notify(3)`
/// protocol, `$NOTIFY_SOCKET`.
pub fn dgram_send_to(path: &std::path::Path, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let to = unix_addr_any(path)?;
    let sock = unix_socket(SocketType::DGRAM, SocketFlags::empty())?;
    sendmsg_fds(sock.as_fd(), Some(&to), data, fds)?;
    Ok(())
}

/// An `AF_UNIX` `SOCK_DGRAM` socket bound to `path` (`@name` for the
/// abstract namespace), for receiving datagrams.
pub fn dgram_bind(path: &std::path::Path) -> Result<OwnedFd> {
    let fd = unix_socket(SocketType::DGRAM, SocketFlags::empty())?;
    rustix::net::bind(&fd, &unix_addr_any(path)?)?;
    Ok(fd)
}

/// Whether a socket is listening (`SO_ACCEPTCONN`).
pub fn is_listening(fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(rustix::net::sockopt::socket_acceptconn(fd)?)
}

/// `listen(2)` again on a listening socket: sets its accept queue's length
/// to `backlog` (capped at `net.core.somaxconn`), for listeners made by
/// code that chose a short one.
pub fn set_backlog(fd: BorrowedFd<'_>, backlog: i32) -> Result<()> {
    Ok(rustix::net::listen(fd, backlog)?)
}

/// A non-blocking `AF_UNIX` `SOCK_SEQPACKET` socket bound to `path` and
/// listening. `ENAMETOOLONG` when the path does not fit in `sun_path`.
pub fn seqpacket_listen(path: &std::path::Path, backlog: i32) -> Result<OwnedFd> {
    let addr = unix_addr(path)?;
    let fd = unix_socket(SocketType::SEQPACKET, SocketFlags::NONBLOCK)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// A blocking `SOCK_SEQPACKET` connection to the socket at `path`.
pub fn seqpacket_connect(path: &std::path::Path) -> Result<OwnedFd> {
    let addr = unix_addr(path)?;
    let fd = unix_socket(SocketType::SEQPACKET, SocketFlags::empty())?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `accept4(fd, SOCK_CLOEXEC | SOCK_NONBLOCK)`.
pub fn accept(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fault!(Accept);
    Ok(rustix::net::accept_with(
        fd,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
    )?)
}

/// A Unix socket peer's credentials (`SO_PEERCRED`): taken when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id (0 if the peer is in another pid namespace).
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// `getsockopt(SO_PEERCRED)`.
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<PeerCred> {
    // Hand-written: rustix's socket_peercred keeps the pid in a non-zero
    // `Pid`, but the kernel answers 0 for a peer outside our pid namespace.
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` and `len` are valid for writes and `len` holds their size.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    fault!(Fcntl);
    let mut fl = rustix::fs::fcntl_getfl(fd)?;
    fl.set(OFlags::NONBLOCK, on);
    rustix::fs::fcntl_setfl(fd, fl)?;
    Ok(())
}

/// Sets `SO_SNDBUF` (the kernel doubles it and applies its own bounds).
/// `EINVAL` for a negative size.
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: i32) -> Result<()> {
    let bytes = usize::try_from(bytes).map_err(|_| Errno::EINVAL)?;
    Ok(rustix::net::sockopt::set_socket_send_buffer_size(
        fd, bytes,
    )?)
}

/// `shutdown(SHUT_WR)`: the peer reads end-of-file; this side can still
/// read what the peer sent.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> Result<()> {
    Ok(rustix::net::shutdown(fd, rustix::net::Shutdown::Write)?)
}

/// This process's effective uid.
pub fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Readiness bits for [`Epoll`].
pub mod epoll {
    use rustix::event::epoll::EventFlags;

    /// `EPOLLIN`.
    pub const EPOLLIN: i32 = EventFlags::IN.bits() as i32;
    /// `EPOLLOUT`.
    pub const EPOLLOUT: i32 = EventFlags::OUT.bits() as i32;
    /// `EPOLLERR`.
    pub const EPOLLERR: i32 = EventFlags::ERR.bits() as i32;
    /// `EPOLLHUP`.
    pub const EPOLLHUP: i32 = EventFlags::HUP.bits() as i32;
    /// `EPOLLRDHUP`.
    pub const EPOLLRDHUP: i32 = EventFlags::RDHUP.bits() as i32;
}

/// A level-triggered epoll instance that reports a caller-chosen `u64` per fd.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Epoll> {
        fault!(Epoll);
        let fd = rx_epoll::create(rx_epoll::CreateFlags::CLOEXEC)?;
        Ok(Epoll { fd })
    }

    /// Watches `fd` for `events`, reporting `key`.
    pub fn add(&self, fd: BorrowedFd<'_>, key: u64, events: i32) -> Result<()> {
        fault!(Epoll);
        let flags = rx_epoll::EventFlags::from_bits_retain(events as u32);
        Ok(rx_epoll::add(
            &self.fd,
            fd,
            rx_epoll::EventData::new_u64(key),
            flags,
        )?)
    }

    /// Changes the events (and key) watched for `fd`.
    pub fn modify(&self, fd: BorrowedFd<'_>, key: u64, events: i32) -> Result<()> {
        fault!(Epoll);
        let flags = rx_epoll::EventFlags::from_bits_retain(events as u32);
        Ok(rx_epoll::modify(
            &self.fd,
            fd,
            rx_epoll::EventData::new_u64(key),
            flags,
        )?)
    }

    /// Stops watching `fd` (closing it does that too).
    pub fn delete(&self, fd: BorrowedFd<'_>) -> Result<()> {
        Ok(rx_epoll::delete(&self.fd, fd)?)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `out` with
    /// `(key, events)` of ready fds, at most `max` (at most
    /// [`Epoll::MAX_EVENTS`]). `EINTR` is returned as is.
    pub fn wait(&self, out: &mut Vec<(u64, u32)>, max: usize, timeout_ms: i32) -> Result<()> {
        fault!(EpollWait);
        out.clear();
        let max = max.clamp(1, Self::MAX_EVENTS);
        // On the stack and uninitialised: an agent waits once per request.
        let mut evs = [std::mem::MaybeUninit::<rx_epoll::Event>::uninit(); Self::MAX_EVENTS];
        let (ready, _) =
            rx_epoll::wait(&self.fd, &mut evs[..max], timespec_ms(timeout_ms).as_ref())?;
        out.extend(ready.iter().map(|e| ({ e.data }.u64(), { e.flags }.bits())));
        Ok(())
    }

    /// The most events one [`Epoll::wait`] reports.
    pub const MAX_EVENTS: usize = 256;
}

/// A timeout in milliseconds as rustix takes it: `None` (no limit) when
/// negative.
fn timespec_ms(ms: i32) -> Option<rustix::event::Timespec> {
    (ms >= 0).then(|| rustix::event::Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    })
}

/// Signal numbers for [`SignalFd`].
pub mod signal {
    use rustix::process::Signal;

    /// `SIGHUP`.
    pub const SIGHUP: i32 = Signal::HUP.as_raw();
    /// `SIGINT`.
    pub const SIGINT: i32 = Signal::INT.as_raw();
    /// `SIGTERM`.
    pub const SIGTERM: i32 = Signal::TERM.as_raw();
    /// `SIGKILL`.
    pub const SIGKILL: i32 = Signal::KILL.as_raw();
}

/// A `signalfd` for a set of signals that are blocked in the calling thread,
/// so that they are read from a descriptor (e.g. in an epoll loop) instead of
/// interrupting the program. Threads started later inherit the block; so do
/// children, until they unblock.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

/// `sizeof(struct signalfd_siginfo)`: what one read of a signalfd returns.
const SIGINFO_SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();

impl SignalFd {
    /// Blocks `signals` in this thread and returns a non-blocking signalfd
    /// that reports them.
    pub fn new(signals: &[i32]) -> Result<SignalFd> {
        let set = thread_sigmask(libc::SIG_BLOCK, signals)?;
        // Hand-written: rustix has no signalfd.
        // SAFETY: -1 asks for a new signalfd for the valid set `set`.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// The next pending signal, or `None` when none is pending.
    pub fn read(&self) -> Result<Option<i32>> {
        let mut info = [0u8; SIGINFO_SIZE];
        match rustix::io::read(&self.fd, &mut info) {
            // ssi_signo, a u32, is the struct's first field.
            Ok(SIGINFO_SIZE) => Ok(Some(
                u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32,
            )),
            Ok(_) => Ok(None),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl std::os::fd::AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `waitpid(pid, WNOHANG)`: reaps child `pid` if it has exited (so that a
/// dead child does not stay a zombie). `Ok(true)` when it was reaped,
/// `Ok(false)` while it runs, `ECHILD` when it is not our child.
pub fn try_reap(pid: u32) -> Result<bool> {
    use rustix::process::{waitpid, Pid, WaitOptions};
    // No child of ours has pid 0 or one beyond i32 (those name groups).
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::from(rustix::io::Errno::CHILD))?;
    Ok(waitpid(Some(pid), WaitOptions::NOHANG)?.is_some())
}

/// Unblocks every signal in the calling thread. A process started by luod
/// inherits its blocked SIGTERM and SIGINT (luod reads them from a
/// signalfd); the keeper must die of them like any process.
pub fn unblock_all_signals() -> Result<()> {
    thread_sigmask(libc::SIG_SETMASK, &[])?;
    Ok(())
}

/// Changes this thread's signal mask by the set of `signals` (`how`:
/// `SIG_BLOCK`, `SIG_UNBLOCK` or `SIG_SETMASK`), and returns that set.
fn thread_sigmask(how: libc::c_int, signals: &[i32]) -> Result<libc::sigset_t> {
    // Hand-written: rustix's sigprocmask is only in its (unsafe) runtime
    // module.
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    for &sig in signals {
        // SAFETY: the set was initialised by sigemptyset.
        cvt(unsafe { libc::sigaddset(set.as_mut_ptr(), sig) })?;
    }
    // SAFETY: initialised above.
    let set = unsafe { set.assume_init() };
    // SAFETY: `set` is a valid sigset; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(set)
}

/// `raise(3)`: sends `signal` to the calling thread.
pub fn raise_signal(signal: i32) -> Result<()> {
    // Hand-written: rustix signals processes only (its tkill is in the
    // runtime module), and the signal must reach this thread.
    // SAFETY: raise takes a signal number and touches no memory of ours.
    cvt(unsafe { libc::raise(signal) })?;
    Ok(())
}

/// `open(path, O_PATH | O_CLOEXEC)`: a descriptor that names a file without
/// opening it (luo refuses these with `EBADF`, as the kernel's `fget` does).
pub fn open_path(path: &std::path::Path) -> Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Sets or clears `FD_CLOEXEC`: a descriptor without it survives `exec`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    fault!(Fcntl);
    let flags = if on {
        FdFlags::CLOEXEC
    } else {
        FdFlags::empty()
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// Takes ownership of descriptors inherited across `exec`, by number (an
/// agent that re-executed itself finds them in its state). Each must be
/// open, above 2 and listed once. They are made close-on-exec again (one
/// `close_range(CLOSE_RANGE_CLOEXEC)` per run of consecutive numbers rather
/// than one `fcntl` per descriptor).
///
/// Call it once, before this process opens anything else, with numbers
/// that only the previous program image used: nothing in this image owns
/// them yet.
pub fn adopt_inherited(nums: &[RawFd]) -> Result<Vec<OwnedFd>> {
    // Numbers not above 2 are refused by adopt_verified. Only EBADF says
    // a number is not open; another failure (ENOMEM) says nothing of it,
    // and refusing would lose what the previous image handed over.
    for &n in nums.iter().filter(|&&n| n > 2) {
        if let Err(Errno::EBADF) = check_open_raw(n) {
            return Err(Errno::EBADF);
        }
    }
    adopt_verified(nums)
}

/// `fcntl(fd, F_GETFD)` on a descriptor number: `Ok` when something is open
/// there, `EBADF` when not.
fn check_open_raw(fd: RawFd) -> Result<()> {
    fault!(Fcntl);
    // Hand-written: rustix takes a BorrowedFd, which must be open, and this
    // probes a number that may not be.
    // SAFETY: F_GETFD only inspects the descriptor table entry; any number is
    // a valid argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(())
}

/// As [`adopt_inherited`], for numbers the caller has just checked are
/// open (with [`fstat_raw`]): no `fcntl` per descriptor, one
/// `close_range` per run of consecutive numbers. `EINVAL` for a number
/// listed twice or not above 2.
pub fn adopt_verified(nums: &[RawFd]) -> Result<Vec<OwnedFd>> {
    let mut seen = std::collections::HashSet::with_capacity(nums.len());
    if nums.iter().any(|&n| n <= 2 || !seen.insert(n)) {
        return Err(Errno::EINVAL);
    }
    cloexec_span(nums)?;
    Ok(nums
        .iter()
        // SAFETY: each `n` was checked open by the caller, is listed once,
        // and was inherited across exec: nothing else in this image owns it.
        .map(|&n| unsafe { OwnedFd::from_raw_fd(n) })
        .collect())
}

/// Makes the descriptors `nums` close-on-exec: one `close_range` per run of
/// consecutive numbers (custody descriptors mostly are), so that nothing
/// outside the list is touched; one `fcntl` each before Linux 5.11.
fn cloexec_span(nums: &[RawFd]) -> Result<()> {
    let mut sorted = nums.to_vec();
    sorted.sort_unstable();
    let mut i = 0;
    while i < sorted.len() {
        let lo = sorted[i];
        let mut hi = lo;
        while i + 1 < sorted.len() && sorted[i + 1] == hi + 1 {
            i += 1;
            hi += 1;
        }
        i += 1;
        // Hand-written: rustix has no close_range.
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
        // the descriptors in the range; it reads no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                lo as libc::c_uint,
                hi as libc::c_uint,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if r < 0 {
            for n in lo..=hi {
                // SAFETY: `n` is open (the caller checked) and stays so for
                // the call: nothing else in this image owns it yet.
                let fd = unsafe { BorrowedFd::borrow_raw(n) };
                rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC)?;
            }
        }
    }
    Ok(())
}

fn cstrings(args: &[String]) -> Result<Vec<CString>> {
    args.iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| Errno::EINVAL))
        .collect()
}

/// `execv(path, args)`: replaces this process image (same pid, descriptors
/// without `FD_CLOEXEC` kept, environment kept). Returns only on failure.
pub fn exec(path: &std::path::Path, args: &[String]) -> Errno {
    // Hand-written: rustix's execve is only in its (unsafe) runtime module.
    use std::os::unix::ffi::OsStrExt;
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return Errno::EINVAL;
    };
    let Ok(c) = cstrings(args) else {
        return Errno::EINVAL;
    };
    let mut argv: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: `p` and every argument are NUL-terminated strings that outlive
    // the call, and `argv` is NULL-terminated.
    unsafe { libc::execv(p.as_ptr(), argv.as_ptr()) };
    Errno::last()
}

/// `execveat(fd, "", args, environ, AT_EMPTY_PATH)`: as [`exec`], with the
/// program given by an open descriptor (it may have been replaced on disk
/// since). Returns only on failure.
pub fn exec_fd(fd: BorrowedFd<'_>, args: &[String]) -> Errno {
    // Hand-written: rustix's execveat is only in its (unsafe) runtime module.
    let Ok(c) = cstrings(args) else {
        return Errno::EINVAL;
    };
    let mut argv: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let empty = c"";
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: the descriptor is live, `empty` and the arguments are
    // NUL-terminated and outlive the call, `argv` is NULL-terminated, and
    // `environ` is the process's environment, which nothing changes during
    // the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
    Errno::last()
}

/// `fcntl(F_ADD_SEALS)` on a memfd created with `MFD_ALLOW_SEALING`.
pub fn add_seals(fd: BorrowedFd<'_>, seals: i32) -> Result<()> {
    fault!(Fcntl);
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::from_bits_retain(seals as u32),
    )?)
}

/// `write(2)` until all of `buf` is written (retrying on `EINTR`): the
/// small files luod writes itself (session records, the upgrade state).
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<()> {
    fault!(Write);
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(Errno::ENOSPC),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A whole file's contents, read with `pread(2)` from offset 0 (the
/// descriptor's own offset neither matters nor moves).
pub fn read_all(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    fault!(Read);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match rustix::io::pread(fd, &mut chunk[..], out.len() as u64) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `fcntl(F_GET_SEALS)`.
pub fn seals(fd: BorrowedFd<'_>) -> Result<i32> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits() as i32)
}

/// The memfd seals.
pub mod seal {
    use rustix::fs::SealFlags;

    /// `F_SEAL_SEAL`: no more seals.
    pub const SEAL: i32 = SealFlags::SEAL.bits() as i32;
    /// `F_SEAL_SHRINK`.
    pub const SHRINK: i32 = SealFlags::SHRINK.bits() as i32;
    /// `F_SEAL_GROW`.
    pub const GROW: i32 = SealFlags::GROW.bits() as i32;
    /// `F_SEAL_WRITE`.
    pub const WRITE: i32 = SealFlags::WRITE.bits() as i32;
}

/// `RLIMIT_NOFILE` as `(soft, hard)` (`RLIM_INFINITY` is `u64::MAX`).
pub fn nofile_limit() -> Result<(u64, u64)> {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Ok((r.current.unwrap_or(u64::MAX), r.maximum.unwrap_or(u64::MAX)))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft` (the hard limit unchanged): for
/// tests that run a process out of descriptors.
pub fn set_nofile_soft_limit(soft: u64) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    Ok(setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    )?)
}

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit; returns the new
/// `(soft, hard)`.
pub fn raise_nofile_limit() -> Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    )?;
    let hard = hard.unwrap_or(u64::MAX);
    Ok((hard, hard))
}

/// Number of descriptors open in this process (entries of `/proc/self/fd`,
/// less the one used to read it).
pub fn open_fd_count() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// What `/proc/self/fd/N` names, e.g. `anon_inode:[eventfd]` or
/// `/memfd:data (deleted)`.
pub fn fd_target(fd: BorrowedFd<'_>) -> std::io::Result<std::path::PathBuf> {
    std::fs::read_link(reopen_path(fd))
}

/// The path under which `fd` can be re-opened (a new open file description of
/// the same inode): `/proc/self/fd/N`.
pub fn reopen_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// What an eventfd's `/proc/self/fdinfo/N` says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventfdInfo {
    /// Its `eventfd-id:` (Linux 5.2 and later): unique among live eventfds,
    /// one per eventfd context, and a context has exactly one open file
    /// description. `None` on older kernels.
    pub id: Option<u64>,
}

/// `/proc/self/fdinfo`, kept open so that reading one descriptor's fdinfo
/// walks one path component instead of four.
#[derive(Debug)]
pub struct FdinfoDir {
    dir: OwnedFd,
    /// The process the directory is of: a forked child opens its own.
    pid: i32,
}

impl FdinfoDir {
    /// Opens `/proc/self/fdinfo` (`O_DIRECTORY | O_CLOEXEC`).
    pub fn open() -> Result<FdinfoDir> {
        Ok(FdinfoDir {
            dir: rustix::fs::open(
                "/proc/self/fdinfo",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
            pid: getpid(),
        })
    }

    /// Whether `fd` is an eventfd (its fdinfo has an `eventfd-count:`
    /// line), and if so its id: one `openat`, `read` and `close`.
    pub fn eventfd(&self, fd: BorrowedFd<'_>) -> Result<Option<EventfdInfo>> {
        fault!(Fdinfo);
        // The descriptor's number as a path, on the stack.
        let name = rustix::path::DecInt::from_fd(fd);
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let file = if getpid() == self.pid {
            rustix::fs::openat(&self.dir, name, flags, Mode::empty())?
        } else {
            rustix::fs::open(
                format!("/proc/self/fdinfo/{}", fd.as_raw_fd()).as_str(),
                flags,
                Mode::empty(),
            )?
        };
        // An eventfd's fdinfo is about 100 bytes; a longer file (an epoll
        // with many watches) is another kind, told by its first lines.
        let mut buf = [0u8; 512];
        let mut len = 0;
        loop {
            let info = parse_eventfd_info(&buf[..len]);
            if info.is_some_and(|i| i.id.is_some()) || len == buf.len() {
                return Ok(info);
            }
            match rustix::io::read(&file, &mut buf[len..]) {
                Ok(0) => return Ok(info),
                Ok(k) => len += k,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The eventfd lines of an fdinfo text, whole lines only: `None` when no
/// line starts with `eventfd-count:`.
fn parse_eventfd_info(text: &[u8]) -> Option<EventfdInfo> {
    let mut count = false;
    let mut id = None;
    let whole = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..end],
        None => return None,
    };
    for line in whole.split(|&b| b == b'\n') {
        if line.starts_with(b"eventfd-count:") {
            count = true;
        } else if let Some(v) = line.strip_prefix(b"eventfd-id:") {
            id = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
    }
    count.then_some(EventfdInfo { id })
}

/// Held by every unit test of this crate that opens or counts descriptors:
/// `cargo test` runs a binary's tests as threads of one process, so a count
/// must not overlap with a test that opens some.
#[cfg(test)]
pub(crate) fn fd_serial() -> std::sync::MutexGuard<'static, ()> {
    static FDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FDS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn kcmp_tells_dups_from_distinct_eventfds() {
        let _serial = fd_serial();
        let a = eventfd(0).unwrap();
        let b = eventfd(0).unwrap();
        let a2 = a.try_clone().unwrap();
        assert_eq!(kcmp_file(a.as_fd(), a2.as_fd()).unwrap(), Ordering::Equal);
        let ab = kcmp_file(a.as_fd(), b.as_fd()).unwrap();
        assert_ne!(ab, Ordering::Equal);
        assert_eq!(kcmp_file(b.as_fd(), a.as_fd()).unwrap(), ab.reverse());
        // Distinct eventfds share the one anonymous inode.
        assert_eq!(fstat(a.as_fd()).unwrap().ino, fstat(b.as_fd()).unwrap().ino);
    }

    #[test]
    fn fdinfo_tells_eventfds_and_their_ids() {
        let _serial = fd_serial();
        let dir = FdinfoDir::open().unwrap();
        let a = eventfd(0).unwrap();
        let b = eventfd(0).unwrap();
        let a2 = a.try_clone().unwrap();
        let before = open_fd_count().unwrap();
        let ia = dir.eventfd(a.as_fd()).unwrap().expect("an eventfd");
        let ib = dir.eventfd(b.as_fd()).unwrap().expect("an eventfd");
        assert_eq!(dir.eventfd(a2.as_fd()).unwrap(), Some(ia), "a dup");
        if ia.id.is_some() {
            assert_ne!(ia.id, ib.id, "two eventfds");
        }
        let (r, w) = pipe().unwrap();
        assert_eq!(dir.eventfd(r.as_fd()).unwrap(), None);
        assert_eq!(dir.eventfd(w.as_fd()).unwrap(), None);
        let ep = rx_epoll::create(rx_epoll::CreateFlags::CLOEXEC).unwrap();
        assert_eq!(dir.eventfd(ep.as_fd()).unwrap(), None);
        drop((r, w, ep));
        assert_eq!(open_fd_count().unwrap(), before, "nothing left open");
    }

    #[test]
    fn fdinfo_lines_are_read_whole() {
        let full = b"pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:                0\neventfd-id: 42\n";
        assert_eq!(parse_eventfd_info(full), Some(EventfdInfo { id: Some(42) }));
        // Cut inside the id: the id is not read from half a line.
        assert_eq!(
            parse_eventfd_info(&full[..full.len() - 2]),
            Some(EventfdInfo { id: None })
        );
        assert_eq!(parse_eventfd_info(b"pos:\t0\nflags:\t02\n"), None);
        assert_eq!(parse_eventfd_info(b"pos:\t0\neventfd-cou"), None);
    }

    #[test]
    fn scm_rights_round_trip_and_ctrunc() {
        let _serial = fd_serial();
        let (s, r) = socketpair(libc::SOCK_SEQPACKET).unwrap();
        let m = memfd_create("x", 0).unwrap();
        let e = eventfd(0).unwrap();
        send_with_fds(s.as_fd(), b"hi", &[m.as_fd(), e.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let got = recv_with_fds(r.as_fd(), &mut buf, 4).unwrap();
        assert_eq!((got.len, got.fds.len(), got.ctrunc), (2, 2, false));
        assert_eq!(
            fcntl_getfd(got.fds[0].as_fd()).unwrap() & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC
        );
        assert_eq!(
            kcmp_file(m.as_fd(), got.fds[0].as_fd()).unwrap(),
            Ordering::Equal
        );
        // Room for one fd (two after cmsg alignment), three sent: the kernel
        // truncates, says so, and what did arrive is owned and closed on drop.
        let before = open_fd_count().unwrap();
        send_with_fds(s.as_fd(), b"hi", &[m.as_fd(), e.as_fd(), m.as_fd()]).unwrap();
        let got = recv_with_fds(r.as_fd(), &mut buf, 1).unwrap();
        assert!(got.ctrunc);
        assert!(got.fds.len() < 3);
        drop(got);
        assert_eq!(open_fd_count().unwrap(), before);
    }

    #[test]
    fn scm_rights_at_the_limits() {
        let _serial = fd_serial();
        let (s, r) = socketpair(libc::SOCK_SEQPACKET).unwrap();
        let e = eventfd(0).unwrap();
        let mut buf = [0u8; 4];
        let before = open_fd_count().unwrap();
        // SCM_MAX_FD descriptors go in one message and all arrive.
        let many = vec![e.as_fd(); SCM_MAX_FD];
        send_with_fds(s.as_fd(), b"x", &many).unwrap();
        let got = recv_with_fds(r.as_fd(), &mut buf, SCM_MAX_FD).unwrap();
        assert_eq!((got.fds.len(), got.ctrunc), (SCM_MAX_FD, false));
        drop(got);
        // One more is refused before any syscall.
        let too_many = vec![e.as_fd(); SCM_MAX_FD + 1];
        assert_eq!(
            send_with_fds(s.as_fd(), b"x", &too_many),
            Err(Errno::EINVAL)
        );
        // No room asked for: nothing arrives, and the kernel says so.
        send_with_fds(s.as_fd(), b"x", &[e.as_fd()]).unwrap();
        let got = recv_with_fds(r.as_fd(), &mut buf, 0).unwrap();
        assert_eq!((got.len, got.fds.len(), got.ctrunc), (1, 0, true));
        // Exactly the room asked for (an even count fills CMSG_SPACE).
        send_with_fds(s.as_fd(), b"x", &[e.as_fd(); 3]).unwrap();
        let got = recv_with_fds(r.as_fd(), &mut buf, 2).unwrap();
        assert_eq!((got.fds.len(), got.ctrunc), (2, true));
        drop(got);
        // A payload longer than the buffer is cut, and said to be.
        send_with_fds(s.as_fd(), b"too long", &[]).unwrap();
        let got = recv_with_fds(r.as_fd(), &mut buf, 0).unwrap();
        assert_eq!((got.len, got.truncated, got.ctrunc), (4, true, false));
        assert_eq!(&buf, b"too ");
        assert_eq!(open_fd_count().unwrap(), before);
    }

    #[test]
    fn cached_pid_follows_fork() {
        let parent = getpid();
        assert_eq!(parent as u32, std::process::id());
        // SAFETY: the child calls only getpid and _exit before it ends.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: getpid takes no arguments.
            let ok = getpid() != parent && getpid() == unsafe { libc::getpid() };
            // SAFETY: _exit ends the child without running the parent's state.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `status` is writable; `child` is our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(status, 0, "the forked child saw a stale pid");
    }

    #[test]
    fn o_path_is_detected() {
        let _serial = fd_serial();
        let p = open_path(std::path::Path::new("/")).unwrap();
        assert!(is_o_path(p.as_fd()).unwrap());
        let m = memfd_create("x", 0).unwrap();
        assert!(!is_o_path(m.as_fd()).unwrap());
    }
    #[test]
    fn seqpacket_listen_connect_accept_and_peer_cred() {
        let _serial = fd_serial();
        let dir = std::env::temp_dir().join(format!("luo-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = seqpacket_listen(&path, 8).unwrap();
        // Nothing pending: a non-blocking accept says so.
        assert_eq!(accept(l.as_fd()).unwrap_err(), Errno::EAGAIN);
        let c = seqpacket_connect(&path).unwrap();
        let a = accept(l.as_fd()).unwrap();
        let cred = peer_cred(a.as_fd()).unwrap();
        assert_eq!(cred.uid, geteuid());
        assert_eq!(cred.pid as u32, std::process::id());
        send_with_fds(c.as_fd(), b"one", &[]).unwrap();
        send_with_fds(c.as_fd(), b"two", &[]).unwrap();
        let ep = Epoll::new().unwrap();
        ep.add(a.as_fd(), 7, epoll::EPOLLIN).unwrap();
        let mut ready = Vec::new();
        ep.wait(&mut ready, 8, 1000).unwrap();
        assert_eq!(ready, vec![(7, epoll::EPOLLIN as u32)]);
        // Datagram boundaries are kept.
        let mut buf = [0u8; 8];
        assert_eq!(recv_with_fds(a.as_fd(), &mut buf, 0).unwrap().len, 3);
        assert_eq!(&buf[..3], b"one");
        drop(c);
        assert_eq!(recv_with_fds(a.as_fd(), &mut buf, 0).unwrap().len, 3);
        // Peer gone: EOF, and epoll reports the hang-up.
        assert_eq!(recv_with_fds(a.as_fd(), &mut buf, 0).unwrap().len, 0);
        ep.wait(&mut ready, 8, 1000).unwrap();
        assert!(ready[0].1 & epoll::EPOLLHUP as u32 != 0);
        assert_eq!(
            seqpacket_listen(&dir.join("x".repeat(200)), 1).unwrap_err(),
            Errno::ENAMETOOLONG
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn signals_arrive_through_a_signalfd() {
        // Blocking and raising both act on this test's thread only.
        let s = SignalFd::new(&[signal::SIGHUP]).unwrap();
        assert_eq!(s.read().unwrap(), None);
        raise_signal(signal::SIGHUP).unwrap();
        assert_eq!(s.read().unwrap(), Some(signal::SIGHUP));
        assert_eq!(s.read().unwrap(), None);
    }
}
