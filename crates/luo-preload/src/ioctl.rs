//! `ioctl` on the device and on session fds: the caller's struct goes to
//! luod as it is, luod runs the kernel's dispatcher, and the answer is
//! written back as the kernel writes it (`luo_ucmd_respond`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use luo_proto::ops::Ioctl;
use luo_proto::uapi::{self, Tail};
use luo_proto::Errno;
use luo_sys::preload::{read_memory, with_fd, with_unchecked_fd, write_back, Addr, Hooked};
use luo_sys::FileStat;

use crate::config;
use crate::lock;
use crate::wire::{self, Failure};

/// The hook of `ioctl`.
pub(crate) fn ioctl(fd: RawFd, cmd: u32, arg: Addr) -> Hooked {
    let luo_cmd = cmd >> 8 & 0xff == uapi::IOCTL_TYPE;
    // The common case, in every process that never used the device: one
    // compare and libc's ioctl.
    if !luo_cmd && !config::is_active() {
        return None;
    }
    // Handled by the VFS before any driver sees them; the socket does them
    // as the device would.
    if matches!(
        cmd as libc::c_ulong,
        libc::FIOCLEX | libc::FIONCLEX | libc::FIONBIO | libc::FIOASYNC
    ) {
        return None;
    }
    // A closed fd: libc's ioctl says EBADF.
    with_fd(fd, |f, st| {
        let ino = luod_socket(f, st, luo_cmd)?;
        config::activate();
        Some(emulate(f, ino, cmd, arg).map_err(|(errno, why)| {
            config::debug(|| format!("ioctl({cmd:#x}): {why}"));
            errno
        }))
    })
    .ok()?
}

thread_local! {
    /// The last socket this thread found to be luod's: its inode and its
    /// peer's pid. A socket's type and peer never change, and a live
    /// socket's inode is its own, so the next ioctl on it needs only the
    /// `fstat`, not three `getsockopt` more.
    static KNOWN: std::cell::Cell<(u64, i32)> = const { std::cell::Cell::new((0, 0)) };
}

/// The socket's inode if `fd` (whose `fstat` is `st`) is one of luod's
/// sockets (the device or a session handle: their peer is luod), else
/// `None`. With `may_ask`, luod's pid is learnt by connecting once, for a
/// session fd this process got by inheritance or `SCM_RIGHTS` without
/// opening the device.
fn luod_socket(fd: BorrowedFd<'_>, st: FileStat, may_ask: bool) -> Option<u64> {
    if !st.is_socket() {
        return None;
    }
    let (known, known_peer) = KNOWN.get();
    if known == st.ino && known_peer != 0 && known_peer == config::luod_pid() {
        return Some(st.ino);
    }
    let kind = luo_sys::socket_kind(fd).ok()?;
    if kind.domain != libc::AF_UNIX || kind.ty != libc::SOCK_SEQPACKET {
        return None;
    }
    let peer = luo_sys::peer_cred(fd).ok()?.pid;
    if peer == 0 {
        return None;
    }
    let mut luod = config::luod_pid();
    if luod != peer && may_ask {
        // Unknown, or luod restarted since.
        if let Ok(s) = luo_sys::seqpacket_connect(&config::config().socket) {
            if let Ok(c) = luo_sys::peer_cred(s.as_fd()) {
                config::set_luod_pid(c.pid);
                luod = c.pid;
            }
        }
    }
    if peer != luod {
        return None;
    }
    KNOWN.set((st.ino, peer));
    Some(st.ino)
}

type Failed = (Errno, String);

fn fail(errno: Errno, why: impl Into<String>) -> Failed {
    (errno, why.into())
}

/// What the bytes past the known struct hold (`copy_struct_from_user`).
fn tail(at: usize, len: usize) -> Tail {
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len());
        let Some(addr) = at.checked_add(done) else {
            return Tail::Fault;
        };
        if read_memory(Addr(addr), &mut chunk[..n]).is_err() {
            return Tail::Fault;
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Tail::NonZero;
        }
        done += n;
    }
    Tail::Zero
}

fn emulate(sock: BorrowedFd<'_>, ino: u64, cmd: u32, arg: Addr) -> Result<i32, Failed> {
    let _one_at_a_time =
        lock::lock(ino).map_err(|e| fail(e, "re-entered from a signal handler"))?;
    // The whole struct in one read when it is readable (the common case),
    // else the size first and then what it says, as the kernel reads them.
    let ksize = uapi::struct_size(cmd);
    let mut whole = ksize.map(|k| vec![0u8; k.max(4)]);
    if let Some(w) = &mut whole {
        if read_memory(arg, w).is_err() {
            whole = None;
        }
    }
    let size = match &whole {
        Some(w) => Some(u32::from_le_bytes(w[..4].try_into().expect("4 bytes"))),
        None => {
            let mut size_bytes = [0u8; 4];
            read_memory(arg, &mut size_bytes)
                .ok()
                .map(|()| u32::from_le_bytes(size_bytes))
        }
    };
    let mut data = None;
    let mut past = Tail::Zero;
    if let (Some(size), Some(ksize)) = (size, ksize) {
        let size = size as usize;
        match whole {
            Some(mut w) => {
                w.truncate(size.min(ksize));
                data = Some(w);
            }
            None => {
                let mut buf = vec![0u8; size.min(ksize)];
                if read_memory(arg, &mut buf).is_ok() {
                    data = Some(buf);
                }
            }
        }
        if size > ksize {
            past = arg
                .0
                .checked_add(ksize)
                .map_or(Tail::Fault, |at| tail(at, size - ksize));
        }
    }
    let body = Ioctl {
        cmd,
        size,
        arg: data.as_deref().map(uapi::to_hex),
        tail: past,
        // The kernel reserves the caller's descriptor first (EMFILE); luod
        // says so at the same point of its checks.
        emfile: uapi::returns_fd(cmd) && sock.try_clone_to_owned().is_err(),
    };
    // PRESERVE_FD carries the caller's fd; a closed one travels as none and
    // luod answers EBADF in the kernel's order. Whether it is open is
    // sendmsg's to say (EBADF, and nothing sent), not a syscall of its own.
    let user_fd = match (&data, cmd) {
        (Some(d), uapi::PRESERVE_FD) if d.len() >= 8 => Some(i32::from_le_bytes(
            d[uapi::FD_OFFSET..uapi::FD_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        )),
        _ => None,
    };
    let sent =
        user_fd.and_then(|ufd| with_unchecked_fd(ufd, |f| wire::call(sock, &body, &[f])).ok());
    let reply = match sent {
        Some(Err(Failure::Unsent(e))) if e.errno == Errno::EBADF => wire::call(sock, &body, &[]),
        Some(r) => r,
        None => wire::call(sock, &body, &[]),
    };
    let (reply, mut fds) = reply.map_err(|f: Failure| (f.errno(), f.message()))?;

    // Success: luod checked the size, so `data` holds the whole struct.
    let Some(read) = data else {
        return Err(fail(Errno::EIO, "luod accepted a struct it was not sent"));
    };
    let mut out = read.clone();
    let new_fd: Option<OwnedFd> = if uapi::returns_fd(cmd) {
        if fds.len() != 1 {
            return Err(fail(Errno::EIO, "luod's reply lacks the descriptor"));
        }
        let f = fds.pop();
        if let Some(f) = &f {
            out[uapi::FD_OFFSET..uapi::FD_OFFSET + 4].copy_from_slice(&f.as_raw_fd().to_le_bytes());
        }
        f
    } else {
        None
    };
    if cmd == uapi::GET_NAME {
        let name = reply
            .name
            .as_deref()
            .and_then(uapi::from_hex)
            .ok_or_else(|| fail(Errno::EIO, "luod's reply lacks the name"))?;
        // strscpy: the name and its NUL; the bytes after it are the caller's.
        let n = name.len().min(uapi::NAME_LENGTH - 1);
        out[uapi::NAME_OFFSET..uapi::NAME_OFFSET + n].copy_from_slice(&name[..n]);
        out[uapi::NAME_OFFSET + n] = 0;
    }
    // The kernel copies min(size, struct) bytes back, the input echoed.
    if write_back(arg, &read, &out).is_err() {
        // As the kernel's fput: a new session goes away, a retrieved one is
        // finished implicitly, a retrieved file stays retrieved.
        drop(new_fd);
        return Err(fail(Errno::EFAULT, "the struct cannot be written back"));
    }
    if let Some(f) = new_fd {
        let _ = f.into_raw_fd();
    }
    Ok(0)
}
