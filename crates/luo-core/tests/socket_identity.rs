//! Is a socket's inode an exact identity? Every way to get a second open
//! file description of one socket inode is tried here, for Unix (stream,
//! datagram, seqpacket; a pair, a listener and an accepted one), TCP
//! (listening and connected) and UDP sockets.
//!
//! What it shows: a socket inode has exactly one open file description
//! that holds the socket. A re-open through `/proc/PID/fd/N` (this
//! process's or another's) or of a bound socket's path fails with
//! `ENXIO`; an `O_PATH` re-open succeeds but holds no file, and luo
//! refuses it with `EBADF`; `dup`, SCM_RIGHTS and inheritance share the
//! one description; `accept` and `socketpair` make new inodes.
//!
//! What it does not make exact: the inode number. sockfs numbers its
//! inodes with the kernel's `get_next_ino()`, a 32-bit counter shared with
//! pipes and other pseudo-filesystems, which wraps and never checks for a
//! live inode with the same number; two live sockets can have the same
//! `(st_dev, st_ino)`. Inode identity would then refuse the second with
//! `EBUSY`, wrongly. So sockets keep open-file identity: their bucket
//! normally holds one file, which luo stores without comparing anything,
//! and `kcmp` runs only when two live sockets share an inode number.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::{Command, Stdio};

use luo_core::{Errno, IdentityKind, Luo};

const ENXIO: i32 = 6;

/// The sockets under test, each with a name.
fn sockets(dir: &std::path::Path) -> Vec<(&'static str, OwnedFd)> {
    let mut v: Vec<(&'static str, OwnedFd)> = Vec::new();
    let (a, b) = UnixStream::pair().unwrap();
    v.push(("unix stream pair end", a.into()));
    v.push(("unix stream pair other end", b.into()));
    let (a, _) = UnixDatagram::pair().unwrap();
    v.push(("unix datagram", a.into()));
    let (a, _) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
    v.push(("unix seqpacket", a));
    let path = dir.join("listener");
    let l = UnixListener::bind(&path).unwrap();
    let c = UnixStream::connect(&path).unwrap();
    let (acc, _) = l.accept().unwrap();
    v.push(("unix listener", l.into()));
    v.push(("unix connected", c.into()));
    v.push(("unix accepted", acc.into()));
    let tl = TcpListener::bind("127.0.0.1:0").unwrap();
    let tc = TcpStream::connect(tl.local_addr().unwrap()).unwrap();
    let (ta, _) = tl.accept().unwrap();
    v.push(("tcp listening", tl.into()));
    v.push(("tcp connected", tc.into()));
    v.push(("tcp accepted", ta.into()));
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    v.push(("udp", u.into()));
    if let Ok(l6) = TcpListener::bind("[::1]:0") {
        v.push(("tcp6 listening", l6.into()));
    }
    v
}

fn ino(fd: impl AsFd) -> (u64, u64) {
    let st = luo_sys::fstat(fd.as_fd()).unwrap();
    (st.dev, st.ino)
}

fn enxio(r: std::io::Result<std::fs::File>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: opened a second description of a socket"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(ENXIO), "{what}: {e}"),
    }
}

#[test]
fn a_socket_cannot_be_reopened_through_proc() {
    let dir = tempdir();
    for (what, s) in sockets(&dir) {
        let path = luo_sys::reopen_path(s.as_fd());
        for write in [false, true] {
            enxio(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(&path),
                what,
            );
        }
    }
}

#[test]
fn a_socket_cannot_be_reopened_through_another_process() {
    let dir = tempdir();
    for (what, s) in sockets(&dir) {
        // The child holds the socket as its stdin (inherited: the same
        // description, as after fork).
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(s.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let theirs = format!("/proc/{}/fd/0", child.id());
        // Until exec the child's fd 0 may still be something else: wait
        // for its descriptor to be this socket's inode.
        let link = format!("socket:[{}]", ino(&s).1);
        for _ in 0..1000 {
            if std::fs::read_link(&theirs).is_ok_and(|p| p.as_os_str() == link.as_str()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            std::fs::read_link(&theirs).unwrap().as_os_str(),
            link.as_str(),
            "{what}"
        );
        enxio(std::fs::File::open(&theirs), what);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn a_bound_unix_socket_path_cannot_be_opened() {
    let dir = tempdir();
    let path = dir.join("bound");
    let _l = UnixListener::bind(&path).unwrap();
    enxio(std::fs::File::open(&path), "listener path");
    let dpath = dir.join("dgram");
    let _d = UnixDatagram::bind(&dpath).unwrap();
    enxio(std::fs::File::open(&dpath), "datagram path");
    // The path's inode is the filesystem's, not the socket's.
    assert_ne!(ino(luo_sys::open_path(&path).unwrap()), ino(&_l));
}

#[test]
fn copies_share_the_description_and_new_sockets_get_new_inodes() {
    let dir = tempdir();
    let all = sockets(&dir);
    let mut inodes: Vec<(u64, u64)> = all.iter().map(|(_, s)| ino(s)).collect();
    inodes.sort_unstable();
    inodes.dedup();
    assert_eq!(inodes.len(), all.len(), "every socket has its own inode");
    let (carrier, peer) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
    for (what, s) in &all {
        let dup = s.try_clone().unwrap();
        assert_eq!(
            luo_sys::kcmp_file(dup.as_fd(), s.as_fd()),
            Ok(std::cmp::Ordering::Equal),
            "{what}: dup"
        );
        luo_sys::send_with_fds(carrier.as_fd(), b"x", &[s.as_fd()]).unwrap();
        let mut buf = [0u8; 8];
        let got = luo_sys::recv_with_fds(peer.as_fd(), &mut buf, 1).unwrap();
        let passed = got.fds.into_iter().next().unwrap();
        assert_eq!(ino(&passed), ino(s), "{what}");
        assert_eq!(
            luo_sys::kcmp_file(passed.as_fd(), s.as_fd()),
            Ok(std::cmp::Ordering::Equal),
            "{what}: SCM_RIGHTS"
        );
    }
}

#[test]
fn luo_refuses_every_second_handle_on_a_socket() {
    let dir = tempdir();
    let mut luo = Luo::with_default_handlers();
    let h = luo.create_session(0, b"sockets").unwrap();
    for (token, (what, s)) in sockets(&dir).into_iter().enumerate() {
        let token = token as u64 * 10;
        let dup = s.try_clone().unwrap();
        let opath = luo_sys::open_path(&luo_sys::reopen_path(s.as_fd())).unwrap();
        // An O_PATH re-open: the same inode, a new description, no socket.
        assert_eq!(ino(&opath), ino(&s), "{what}");
        assert_ne!(
            luo_sys::kcmp_file(opath.as_fd(), s.as_fd()),
            Ok(std::cmp::Ordering::Equal)
        );
        luo.preserve(h, s, token).unwrap();
        let e = luo.preserve(h, dup, token + 1).unwrap_err();
        assert_eq!(e.errno(), Errno::EBUSY, "{what}: dup");
        let e = luo.preserve(h, opath, token + 2).unwrap_err();
        assert_eq!(e.errno(), Errno::EBADF, "{what}: O_PATH");
    }
    let files = luo.session_files(h, 0, usize::MAX).unwrap().files;
    assert!(files
        .iter()
        .all(|f| f.identity.kind == IdentityKind::OpenFile));
}

/// The premise of keeping open-file identity: sockfs inode numbers are
/// 32-bit (`get_next_ino()`), drawn from the counter pipes use too, so they
/// wrap after 2^32 such inodes system-wide.
#[test]
fn socket_inode_numbers_are_32_bit() {
    let dir = tempdir();
    for (what, s) in sockets(&dir) {
        assert!(ino(&s).1 <= u64::from(u32::MAX), "{what}");
    }
    let (r, _w) = luo_sys::pipe().unwrap();
    assert!(ino(&r).1 <= u64::from(u32::MAX));
    assert_ne!(ino(&r).1, 0);
}

fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "luo-socket-identity-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
