//! What a service supervisor (`luoctl run`) needs from the kernel: the
//! `sd_notify(3)` socket with sender credentials, the socket-activation fd
//! layout (`sd_listen_fds(3)`) arranged in the service's process before it
//! execs, and signals to processes and process groups.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{cvt, Errno, Result};

/// `SD_LISTEN_FDS_START`: the first passed descriptor.
pub const LISTEN_FDS_START: RawFd = 3;

/// An `AF_UNIX` `SOCK_DGRAM` socket bound to `path` (`@name` for the
/// abstract namespace) with `SO_PASSCRED` set and `O_NONBLOCK`: a
/// `NOTIFY_SOCKET` that learns who sent each datagram.
pub fn notify_bind(path: &std::path::Path) -> Result<OwnedFd> {
    let fd = crate::dgram_bind(path)?;
    rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    crate::set_nonblocking(fd.as_fd(), true)?;
    Ok(fd)
}

/// One datagram received by [`notify_recv`].
#[derive(Debug)]
pub struct Notification {
    /// Bytes of payload received.
    pub len: usize,
    /// Descriptors that arrived (owned, `FD_CLOEXEC` set).
    pub fds: Vec<OwnedFd>,
    /// The sender's pid, uid and gid (`SCM_CREDENTIALS`), when the kernel
    /// attached them (it does when `SO_PASSCRED` is set).
    pub cred: Option<crate::PeerCred>,
    /// `MSG_TRUNC`: the payload did not fit in the buffer.
    pub truncated: bool,
    /// `MSG_CTRUNC`: control data was cut, so descriptors may have been lost.
    pub ctrunc: bool,
}

/// `recvmsg(2)` on a notify socket: the payload, up to `max_fds`
/// descriptors (at most [`crate::SCM_MAX_FD`]) and the sender's
/// credentials. `EAGAIN` when nothing is queued.
pub fn notify_recv(sock: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> Result<Notification> {
    let (r, cred) = crate::recvmsg_fds(sock, buf, max_fds, true)?;
    Ok(Notification {
        len: r.len,
        fds: r.fds,
        cred,
        truncated: r.truncated,
        ctrunc: r.ctrunc,
    })
}

/// `fcntl(fd, F_DUPFD, 3)` without `FD_CLOEXEC`: a copy of `fd` that a
/// child started now inherits across `exec`. The caller closes it once the
/// child has started.
pub fn dup_inheritable(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let f = rustix::io::fcntl_dupfd_cloexec(fd, LISTEN_FDS_START)?;
    crate::set_cloexec(f.as_fd(), false)?;
    Ok(f)
}

/// Puts the inherited descriptors numbered `nums` at 3, 4, … in that order,
/// without `FD_CLOEXEC`, and makes every other descriptor above 2
/// close-on-exec: the layout `sd_listen_fds(3)` expects, arranged in the
/// process that is about to exec the service.
///
/// Call it in a fresh program image (a trampoline) before it opens
/// anything it means to keep: the descriptors listed are taken over by
/// number, and any other descriptor above 2 will not survive the exec.
/// `EINVAL` when a number is not above 2 or listed twice, `EBADF` when one
/// is not open.
pub fn arrange_listen_fds(nums: &[RawFd]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if nums.iter().any(|&n| n <= 2 || !seen.insert(n)) {
        return Err(Errno::EINVAL);
    }
    let n = RawFd::try_from(nums.len()).map_err(|_| Errno::EINVAL)?;
    let end = LISTEN_FDS_START + n;
    let high = nums.iter().copied().max().unwrap_or(0).max(end);
    // First copy every source above both ranges, so that placing one at
    // its target cannot overwrite a source not yet placed.
    let mut temps = Vec::with_capacity(nums.len());
    for &src in nums {
        // Hand-written: the source is a number inherited across exec, not
        // yet owned by anything in this image.
        // SAFETY: F_DUPFD_CLOEXEC reads no memory; an unopened `src` fails
        // with EBADF.
        let t = cvt(unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, high + 1) })?;
        // SAFETY: fcntl returned a new descriptor that nothing else owns.
        temps.push(unsafe { OwnedFd::from_raw_fd(t) });
    }
    for &src in nums {
        if src >= end {
            // SAFETY: `src` was inherited and is owned by nothing in this
            // image; its copy lives on in `temps`. Closing it is what the
            // caller asked for (it is outside the layout).
            unsafe { libc::close(src) };
        }
    }
    for (i, t) in temps.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        // SAFETY: dup2 reads no memory; `target` is in the layout's range,
        // which the caller gives over to this function (a number there that
        // is open is replaced, as intended). The new descriptor has no
        // FD_CLOEXEC, so it survives the exec.
        cvt(unsafe { libc::dup2(t.as_raw_fd(), target) })?;
    }
    drop(temps);
    // Everything else above the layout: close-on-exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on the
    // descriptors in the range; it reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            end as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `kill(pid, signal)`. `ESRCH` when no such process.
pub fn kill(pid: i32, signal: i32) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(Errno::EINVAL)?;
    let sig = rustix::process::Signal::from_named_raw(signal).ok_or(Errno::EINVAL)?;
    Ok(rustix::process::kill_process(pid, sig)?)
}

/// `kill(-pgid, signal)`: every process of the group. `ESRCH` when the
/// group is empty.
pub fn kill_group(pgid: i32, signal: i32) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(pgid).ok_or(Errno::EINVAL)?;
    let sig = rustix::process::Signal::from_named_raw(signal).ok_or(Errno::EINVAL)?;
    Ok(rustix::process::kill_process_group(pid, sig)?)
}

/// Whether process `pid` exists (`kill(pid, 0)`; a process of another
/// user counts).
pub fn process_exists(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// `getpgid(pid)`.
pub fn getpgid(pid: i32) -> Result<i32> {
    let p = rustix::process::Pid::from_raw(pid).ok_or(Errno::EINVAL)?;
    Ok(rustix::process::getpgid(Some(p))?.as_raw_nonzero().get())
}

/// A signal's number from its name (`TERM`, `SIGTERM`) or number (`15`).
pub fn signal_from_name(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return rustix::process::Signal::from_named_raw(n).map(|_| n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// A signal's name without `SIG` (`TERM`), or its number.
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|&&(_, v)| v == sig)
        .map_or_else(|| sig.to_string(), |(n, _)| (*n).to_string())
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
];

/// Process `pid`'s start time in clock ticks after boot (field 22 of
/// `/proc/PID/stat`): with the pid, it names a process even after the pid
/// is reused.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name() {
        assert_eq!(signal_from_name("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_from_name("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal_from_name("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(signal_from_name("9"), Some(9));
        assert_eq!(signal_from_name("NOPE"), None);
        assert_eq!(signal_name(libc::SIGHUP), "HUP");
    }

    #[test]
    fn credentials_come_with_a_notification() {
        let _serial = crate::fd_serial();
        let dir = std::env::temp_dir().join(format!("luo-sys-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let sock = notify_bind(&path).unwrap();
        let m = crate::memfd_create("x", 0).unwrap();
        crate::dgram_send_to(&path, b"READY=1", &[m.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let n = notify_recv(sock.as_fd(), &mut buf, 8).unwrap();
        assert_eq!(&buf[..n.len], b"READY=1");
        assert_eq!(n.fds.len(), 1);
        assert_eq!(n.cred.unwrap().pid, std::process::id() as i32);
        assert_eq!(
            notify_recv(sock.as_fd(), &mut buf, 8).unwrap_err(),
            Errno::EAGAIN
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn start_time_of_self() {
        let _serial = crate::fd_serial();
        assert!(process_start_time(std::process::id() as i32).is_some());
        assert!(process_exists(std::process::id() as i32));
    }
}
