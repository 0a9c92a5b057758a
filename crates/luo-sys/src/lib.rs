//! The one place in luo that holds `unsafe` code.
//!
//! Every function here is a thin, safe wrapper over one Linux syscall (or a
//! small fixed sequence of them). Wrappers take [`BorrowedFd`] and return
//! [`OwnedFd`], so fd ownership is checked by the type system everywhere else;
//! every other crate in the workspace is `#![forbid(unsafe_code)]`.
//!
//! Errors are returned as [`Errno`], unchanged from the kernel.

#![deny(missing_docs)]

use std::cmp::Ordering;
use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering as AtomicOrdering};
use std::sync::Once;

mod errno;
pub mod liveupdate;
pub use errno::Errno;

#[cfg(feature = "preload")]
pub mod preload;

/// Result of a syscall wrapper.
pub type Result<T> = std::result::Result<T, Errno>;

fn cvt(ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `fstat(2)` on a descriptor number this process may not own (an agent
/// checking what it inherited across `exec` before taking it over).
/// `EBADF` when nothing is open there.
pub fn fstat_raw(fd: RawFd) -> Result<FileStat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into `st` and reads nothing of
    // ours; any integer is a valid argument (a closed one gives EBADF).
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so `st` is initialised.
    Ok(FileStat::of(&unsafe { st.assume_init() }))
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
    fn of(st: &libc::stat) -> FileStat {
        FileStat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            size: st.st_size as u64,
        }
    }

    /// `S_ISREG`.
    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    /// `S_ISSOCK`.
    pub fn is_socket(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFSOCK
    }
    /// `S_ISFIFO` (pipes and named FIFOs).
    pub fn is_fifo(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFIFO
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
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is a live descriptor for the borrow's duration and `st`
    // points to writable memory of the size fstat writes.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    Ok(FileStat::of(&unsafe { st.assume_init() }))
}

/// `TMPFS_MAGIC`, the `f_type` of shmem files (memfds among them).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `HUGETLBFS_MAGIC`, the `f_type` of `MFD_HUGETLB` memfds.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `fstatfs(2)`, returning the filesystem's magic number (`f_type`).
pub fn fstatfs_type(fd: BorrowedFd<'_>) -> Result<i64> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is live and `st` is writable memory of the right size.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    Ok(st.f_type as i64)
}

/// `fcntl(F_GETFL)`: the open file description's status flags.
pub fn fcntl_getfl(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: F_GETFL takes no pointer argument; `fd` is live.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// `fcntl(F_GETFD)`: the descriptor flags (`FD_CLOEXEC`).
pub fn fcntl_getfd(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: F_GETFD takes no pointer argument; `fd` is live.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })
}

/// True when `fd` was opened with `O_PATH` (such fds carry no file to preserve).
pub fn is_o_path(fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(fcntl_getfl(fd)? & libc::O_PATH != 0)
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
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe as a child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_after_fork)) };
    });
    // SAFETY: getpid takes no arguments and cannot fail.
    let p = unsafe { libc::getpid() };
    PID.store(p, AtomicOrdering::Relaxed);
    p
}

/// Flags for [`memfd_create`].
pub mod mfd {
    /// `MFD_CLOEXEC`.
    pub const CLOEXEC: u32 = libc::MFD_CLOEXEC;
    /// `MFD_ALLOW_SEALING`.
    pub const ALLOW_SEALING: u32 = libc::MFD_ALLOW_SEALING;
    /// `MFD_HUGETLB`.
    pub const HUGETLB: u32 = libc::MFD_HUGETLB;
}

/// `memfd_create(2)`. `MFD_CLOEXEC` is always added.
pub fn memfd_create(name: &str, flags: u32) -> Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `eventfd(2)` with `EFD_CLOEXEC`.
pub fn eventfd(initval: u32) -> Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(initval, libc::EFD_CLOEXEC) })?;
    // SAFETY: eventfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pipe2(O_CLOEXEC)`: returns `(read end, write end)`.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded; both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes and `len` holds their size.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// `getsockopt(SO_DOMAIN / SO_TYPE / SO_PROTOCOL)`; `ENOTSOCK` for non-sockets.
pub fn socket_kind(fd: BorrowedFd<'_>) -> Result<SocketKind> {
    Ok(SocketKind {
        domain: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        ty: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        protocol: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
    })
}

/// Address families and socket types, re-exported for callers of [`socket_kind`].
pub mod sock {
    pub use libc::{
        AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_SEQPACKET,
        SOCK_STREAM,
    };
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
    to: Option<&(libc::sockaddr_un, libc::socklen_t)>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize> {
    if fds.len() > SCM_MAX_FD {
        return Err(Errno::EINVAL);
    }
    let iov = [IoSlice::new(data)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice()) as u32;
    let space = if raw.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure computation.
        unsafe { libc::CMSG_SPACE(payload) as usize }
    };
    // u64 storage keeps the buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    if let Some((addr, len)) = to {
        msg.msg_name = (addr as *const libc::sockaddr_un).cast_mut().cast();
        msg.msg_namelen = *len;
    }
    if !raw.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` bytes, enough for one cmsghdr
        // carrying `payload` bytes, so CMSG_FIRSTHDR is non-null and the header
        // and data writes stay inside the buffer.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    // SAFETY: `msg` points to live iovec, control and address buffers that
    // outlive the call; the fds are borrowed and stay open.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok(n as usize)
}

/// `recvmsg(2)` with room for at least `max_fds` descriptors, received with
/// `MSG_CMSG_CLOEXEC`. Every descriptor that arrived is returned as an
/// [`OwnedFd`], also when control data was truncated, so that dropping the
/// result closes them all.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let payload = (max_fds.min(SCM_MAX_FD) * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload) as usize };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr().cast();
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points to live, writable iovec and control buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Errno::last());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros
    // walk only within msg_controllen, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        ctrunc: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// `socketpair(AF_UNIX, ty | SOCK_CLOEXEC, 0)`.
pub fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn unix_addr(path: &std::path::Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid (empty path).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    // The path and its NUL must fit in sun_path (108 bytes).
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(Errno::ENAMETOOLONG);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// An address for a path, or for the abstract namespace when it starts
/// with `@` (as `$NOTIFY_SOCKET` may).
fn unix_addr_any(path: &std::path::Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let Some(name) = bytes.strip_prefix(b"@") else {
        return unix_addr(path);
    };
    // SAFETY: an all-zero sockaddr_un is valid (empty path).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() + 1 > addr.sun_path.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays NUL: the abstract namespace.
    for (d, s) in addr.sun_path[1..].iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((addr, len as libc::socklen_t))
}

fn unix_socket(ty: i32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one datagram with descriptors to the `AF_UNIX` `SOCK_DGRAM` socket
/// at `path` (`@name` for the abstract namespace): the `sd_notify(3)`
/// protocol, `$NOTIFY_SOCKET`.
pub fn dgram_send_to(path: &std::path::Path, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let to = unix_addr_any(path)?;
    let sock = unix_socket(libc::SOCK_DGRAM)?;
    sendmsg_fds(std::os::fd::AsFd::as_fd(&sock), Some(&to), data, fds)?;
    Ok(())
}

/// An `AF_UNIX` `SOCK_DGRAM` socket bound to `path` (`@name` for the
/// abstract namespace), for receiving datagrams.
pub fn dgram_bind(path: &std::path::Path) -> Result<OwnedFd> {
    let fd = unix_socket(libc::SOCK_DGRAM)?;
    bind_to(fd.as_raw_fd(), &unix_addr_any(path)?)?;
    Ok(fd)
}

fn bind_to(fd: RawFd, (addr, len): &(libc::sockaddr_un, libc::socklen_t)) -> Result<()> {
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes; `fd` is ours.
    cvt(unsafe { libc::bind(fd, (addr as *const libc::sockaddr_un).cast(), *len) })?;
    Ok(())
}

/// Whether a socket is listening (`SO_ACCEPTCONN`).
pub fn is_listening(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are writable and sized for an int option.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v != 0)
}

fn seqpacket_socket(nonblock: bool) -> Result<OwnedFd> {
    let flags = if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags,
            0,
        )
    })?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking `AF_UNIX` `SOCK_SEQPACKET` socket bound to `path` and
/// listening. `ENAMETOOLONG` when the path does not fit in `sun_path`.
pub fn seqpacket_listen(path: &std::path::Path, backlog: i32) -> Result<OwnedFd> {
    let addr = unix_addr(path)?;
    let fd = seqpacket_socket(true)?;
    bind_to(fd.as_raw_fd(), &addr)?;
    // SAFETY: plain listen(2) on our own socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// A blocking `SOCK_SEQPACKET` connection to the socket at `path`.
pub fn seqpacket_connect(path: &std::path::Path) -> Result<OwnedFd> {
    let (addr, len) = unix_addr(path)?;
    let fd = seqpacket_socket(false)?;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        match cvt(r) {
            Ok(_) => return Ok(fd),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `accept4(fd, SOCK_CLOEXEC | SOCK_NONBLOCK)`.
pub fn accept(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: a null address is allowed when the peer address is not wanted.
    let c = cvt(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
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
    let fl = fcntl_getfl(fd)?;
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL with an int argument on a descriptor we borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) })?;
    Ok(())
}

/// Sets `SO_SNDBUF` (the kernel doubles it and applies its own bounds).
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: i32) -> Result<()> {
    // SAFETY: `bytes` is a valid int read by setsockopt.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// This process's effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Readiness bits for [`Epoll`].
pub mod epoll {
    pub use libc::{EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP};
}

/// A level-triggered epoll instance that reports a caller-chosen `u64` per fd.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Epoll> {
        // SAFETY: plain epoll_create1 call.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 returned a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: BorrowedFd<'_>, key: u64, events: i32) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) })?;
        Ok(())
    }

    /// Watches `fd` for `events`, reporting `key`.
    pub fn add(&self, fd: BorrowedFd<'_>, key: u64, events: i32) -> Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, events)
    }

    /// Changes the events (and key) watched for `fd`.
    pub fn modify(&self, fd: BorrowedFd<'_>, key: u64, events: i32) -> Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, key, events)
    }

    /// Stops watching `fd` (closing it does that too).
    pub fn delete(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `out` with
    /// `(key, events)` of ready fds, at most `max`. `EINTR` is returned as is.
    pub fn wait(&self, out: &mut Vec<(u64, u32)>, max: usize, timeout_ms: i32) -> Result<()> {
        out.clear();
        let max = max.clamp(1, 4096);
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max];
        // SAFETY: `evs` has room for `max` events.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr(),
                max as libc::c_int,
                timeout_ms,
            )
        })?;
        out.extend(evs[..n as usize].iter().map(|e| (e.u64, e.events)));
        Ok(())
    }
}

/// Signal numbers for [`SignalFd`].
pub mod signal {
    pub use libc::{SIGHUP, SIGINT, SIGTERM};
}

/// A `signalfd` for a set of signals that are blocked in the calling thread,
/// so that they are read from a descriptor (e.g. in an epoll loop) instead of
/// interrupting the program. Threads started later inherit the block; so do
/// children, until they unblock.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` in this thread and returns a non-blocking signalfd
    /// that reports them.
    pub fn new(signals: &[i32]) -> Result<SignalFd> {
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
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(Errno(r));
        }
        // SAFETY: -1 asks for a new signalfd for the valid set `set`.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// The next pending signal, or `None` when none is pending.
    pub fn read(&self) -> Result<Option<i32>> {
        // SAFETY: an all-zero signalfd_siginfo is a valid value to overwrite.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable and exactly `size` bytes long.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            return match Errno::last() {
                Errno::EAGAIN => Ok(None),
                e => Err(e),
            };
        }
        Ok((n as usize == size).then_some(info.ssi_signo as i32))
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
    let mut status = 0;
    // SAFETY: `status` is a writable int; waitpid reads nothing else of ours.
    let r = cvt(unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) })?;
    Ok(r != 0)
}

/// Unblocks every signal in the calling thread. A process started by luod
/// inherits its blocked SIGTERM and SIGINT (luod reads them from a
/// signalfd); the keeper must die of them like any process.
pub fn unblock_all_signals() -> Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised by sigemptyset above.
    let set = unsafe { set.assume_init() };
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(())
}

/// `raise(3)`: sends `signal` to the calling thread.
pub fn raise_signal(signal: i32) -> Result<()> {
    // SAFETY: raise takes a signal number and touches no memory of ours.
    cvt(unsafe { libc::raise(signal) })?;
    Ok(())
}

/// `open(path, O_PATH | O_CLOEXEC)`: a descriptor that names a file without
/// opening it (luo refuses these with `EBADF`, as the kernel's `fget` does).
pub fn open_path(path: &std::path::Path) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets or clears `FD_CLOEXEC`: a descriptor without it survives `exec`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD takes an integer flag; the fd is live for the borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) })?;
    Ok(())
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
    // Numbers not above 2 are refused by adopt_verified.
    for &n in nums.iter().filter(|&&n| n > 2) {
        // SAFETY: F_GETFD only inspects the descriptor table entry.
        cvt(unsafe { libc::fcntl(n, libc::F_GETFD) })?;
    }
    adopt_verified(nums)
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
                // SAFETY: F_SETFD takes an integer flag; `n` is open.
                cvt(unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) })?;
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
    // SAFETY: F_ADD_SEALS takes an integer; the fd is live for the borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(())
}

/// `fcntl(F_GET_SEALS)`.
pub fn seals(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: F_GET_SEALS takes no argument; the fd is live for the borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

/// The memfd seals.
pub mod seal {
    /// `F_SEAL_SEAL`: no more seals.
    pub const SEAL: i32 = libc::F_SEAL_SEAL;
    /// `F_SEAL_SHRINK`.
    pub const SHRINK: i32 = libc::F_SEAL_SHRINK;
    /// `F_SEAL_GROW`.
    pub const GROW: i32 = libc::F_SEAL_GROW;
    /// `F_SEAL_WRITE`.
    pub const WRITE: i32 = libc::F_SEAL_WRITE;
}

/// `RLIMIT_NOFILE` as `(soft, hard)`.
pub fn nofile_limit() -> Result<(u64, u64)> {
    let mut r = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `r` is writable memory of the size getrlimit writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, r.as_mut_ptr()) })?;
    // SAFETY: getrlimit returned 0, so `r` is initialised.
    let r = unsafe { r.assume_init() };
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit; returns the new
/// `(soft, hard)`.
pub fn raise_nofile_limit() -> Result<(u64, u64)> {
    let (_, hard) = nofile_limit()?;
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit read by setrlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
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
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The path under which `fd` can be re-opened (a new open file description of
/// the same inode): `/proc/self/fd/N`.
pub fn reopen_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    /// Tests that count this process's fds must not overlap with tests that open some.
    static FDS: Mutex<()> = Mutex::new(());

    #[test]
    fn kcmp_tells_dups_from_distinct_eventfds() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
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
    fn scm_rights_round_trip_and_ctrunc() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
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
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
        let p = open_path(std::path::Path::new("/")).unwrap();
        assert!(is_o_path(p.as_fd()).unwrap());
        let m = memfd_create("x", 0).unwrap();
        assert!(!is_o_path(m.as_fd()).unwrap());
    }
    #[test]
    fn seqpacket_listen_connect_accept_and_peer_cred() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
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
