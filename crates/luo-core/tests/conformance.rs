//! Conformance: the cases of `kernel-luo.md` §2.10 that apply to the session
//! and file model, plus the identity rules, lifecycles, rollbacks and FLB
//! reference counting. Each test asserts what a user would notice: an errno,
//! a byte that survived, a descriptor that was not leaked.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use luo_core::handler::{MemfdHandler, UserspaceHandler, UserspaceKind};
use luo_core::testing::{Faults, FaultyHandler, Op, TestFlb};
use luo_core::{
    Errno, FileOrder, IndexMode, Limits, Luo, Quota, RetrieveStatus, SessionHandle, SessionState,
    Usage,
};

mod common;

use common::{memfd, open_fds, read_all};

fn copy(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().unwrap()
}

fn errno<T: std::fmt::Debug>(r: luo_core::Result<T>) -> Errno {
    r.unwrap_err().errno
}

fn reopen(fd: &OwnedFd) -> OwnedFd {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(luo_sys::reopen_path(fd.as_fd()))
        .unwrap()
        .into()
}

fn luo() -> Luo {
    Luo::with_default_handlers()
}

/// A model whose memfd and eventfd handlers fail and log through `faults`.
fn faulty(faults: &Faults) -> Luo {
    let mut l = Luo::new(Limits::default());
    l.register_handler(Box::new(FaultyHandler::new(MemfdHandler, faults.clone())))
        .unwrap();
    l.register_handler(Box::new(FaultyHandler::new(
        UserspaceHandler(UserspaceKind::Eventfd),
        faults.clone(),
    )))
    .unwrap();
    l
}

/// Session "s" with memfds `(token, contents)`, handed over and retrieved.
fn retrieved(l: &mut Luo, files: &[(u64, &[u8])]) -> SessionHandle {
    let s = l.create_session(0, b"s").unwrap();
    for (t, bytes) in files {
        l.preserve(s, memfd(bytes), *t).unwrap();
    }
    l.handover(s).unwrap();
    l.retrieve_session(0, b"s").unwrap()
}

/// Retrieves and finishes the incoming session `name`.
fn finish_incoming(l: &mut Luo, name: &[u8]) {
    let r = l.retrieve_session(0, name).unwrap();
    l.finish(r).unwrap();
}

/// The logged calls of `ops`, in order.
fn calls(f: &Faults, ops: &[Op]) -> Vec<(Op, u64)> {
    f.log()
        .into_iter()
        .filter(|(o, _)| ops.contains(o))
        .collect()
}

fn state(l: &Luo, name: &[u8]) -> Vec<SessionState> {
    l.sessions()
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| s.state)
        .collect()
}

// ---- session names and lists ----------------------------------------------

#[test]
fn session_names_follow_the_kernel_rules() {
    let _serial = common::serial();
    let mut l = luo();
    assert_eq!(errno(l.create_session(0, b"")), Errno::EINVAL);
    assert_eq!(errno(l.create_session(0, &[b'X'; 64])), Errno::EINVAL);
    assert_eq!(errno(l.create_session(0, b"a\0b")), Errno::EINVAL);
    let s = l.create_session(0, &[b'A'; 63]).unwrap();
    assert_eq!(l.name(s).unwrap(), &[b'A'; 63]);
    l.create_session(0, b"dup").unwrap();
    assert_eq!(errno(l.create_session(0, b"dup")), Errno::EEXIST);
    // Names are per owner: another uid may use the same name.
    l.create_session(1000, b"dup").unwrap();
}

#[test]
fn outgoing_name_may_equal_an_incoming_one() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"svc").unwrap();
    l.handover(s).unwrap();
    let s2 = l.create_session(0, b"svc").unwrap();
    assert_eq!(
        state(&l, b"svc"),
        [SessionState::Incoming, SessionState::Open]
    );
    // But the new one cannot cross while the old one is unfinished.
    assert_eq!(errno(l.handover(s2)), Errno::EEXIST);
    assert_eq!(errno(l.update()), Errno::EEXIST);
    let r = l.retrieve_session(0, b"svc").unwrap();
    l.finish(r).unwrap();
    l.handover(s2).unwrap();
}

#[test]
fn enospc_for_sessions_comes_before_eexist() {
    let _serial = common::serial();
    let mut l = Luo::new(Limits {
        max_sessions: 2,
        ..Limits::default()
    });
    l.create_session(0, b"a").unwrap();
    l.create_session(0, b"b").unwrap();
    // The kernel grows its block set before the duplicate check.
    assert_eq!(errno(l.create_session(0, b"a")), Errno::ENOSPC);
    assert_eq!(errno(l.create_session(0, b"c")), Errno::ENOSPC);
    assert_eq!(errno(l.create_session(0, b"")), Errno::EINVAL);
}

// ---- preserve: errnos and their order --------------------------------------

#[test]
fn preserve_checks_run_in_the_kernels_order() {
    let _serial = common::serial();
    let mut l = Luo::new(Limits {
        max_files_per_session: 2,
        ..Limits::default()
    });
    for h in luo_core::handler::default_handlers() {
        l.register_handler(h).unwrap();
    }
    let s = l.create_session(0, b"s").unwrap();
    let m = memfd(b"x");
    l.preserve(s, copy(&m), 1).unwrap();
    let opath = || luo_sys::open_path(std::path::Path::new("/")).unwrap();
    // EEXIST (token) before EBADF (O_PATH) and EBUSY (same file).
    assert_eq!(errno(l.preserve(s, opath(), 1)), Errno::EEXIST);
    assert_eq!(errno(l.preserve(s, copy(&m), 1)), Errno::EEXIST);
    // EBADF before ENOENT and EBUSY.
    assert_eq!(errno(l.preserve(s, opath(), 2)), Errno::EBADF);
    let null: OwnedFd = File::open("/dev/null").unwrap().into();
    assert_eq!(errno(l.preserve(s, null, 2)), Errno::ENOENT);
    assert_eq!(errno(l.preserve(s, copy(&m), 2)), Errno::EBUSY);
    l.preserve(s, memfd(b"y"), 2).unwrap();
    // ENOSPC before EBADF and EBUSY, after EEXIST.
    assert_eq!(errno(l.preserve(s, opath(), 3)), Errno::ENOSPC);
    assert_eq!(errno(l.preserve(s, copy(&m), 3)), Errno::ENOSPC);
    assert_eq!(errno(l.preserve(s, opath(), 2)), Errno::EEXIST);
    // The same token in another session is fine.
    let s2 = l.create_session(0, b"s2").unwrap();
    l.preserve(s2, memfd(b"z"), 1).unwrap();
}

#[test]
fn a_refused_preserve_can_hand_the_file_back() {
    let _serial = common::serial();
    let mut l = luo();
    let (a, b) = (
        l.create_session(0, b"a").unwrap(),
        l.create_session(0, b"b").unwrap(),
    );
    let m = memfd(b"kept");
    l.preserve(a, copy(&m), 1).unwrap();
    let c = copy(&m);
    let raw = c.as_raw_fd();
    let (e, back) = l.preserve_or_return(b, c, 1).unwrap_err();
    assert_eq!(e.errno, Errno::EBUSY);
    // The very descriptor, still open, and nothing left behind.
    assert_eq!(back.as_raw_fd(), raw);
    assert_eq!(
        luo_sys::fstat(back.as_fd()).unwrap().ino,
        luo_sys::fstat(m.as_fd()).unwrap().ino
    );
    assert_eq!(l.file_count(b).unwrap(), 0);
    // Once a lets go (closing aborts it), the same descriptor is preserved.
    l.close(a).unwrap();
    l.preserve_or_return(b, back, 1)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(l.file_count(b).unwrap(), 1);
}

#[test]
fn no_handler_means_enoent() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"s").unwrap();
    let null: OwnedFd = File::open("/dev/null").unwrap().into();
    assert_eq!(errno(l.preserve(s, null, 1)), Errno::ENOENT);
    let regular: OwnedFd = File::open("/proc/self/exe").unwrap().into();
    assert_eq!(errno(l.preserve(s, regular, 2)), Errno::ENOENT);
    // A linked file on tmpfs is shmem too, but not a memfd (nlink 1).
    let p =
        std::path::Path::new("/dev/shm").join(format!("luo-conformance-{}", std::process::id()));
    if let Ok(f) = File::create(&p) {
        let fd: OwnedFd = f.into();
        let linked = luo_sys::fstat(fd.as_fd()).unwrap().nlink == 1;
        let r = l.preserve(s, fd, 3);
        std::fs::remove_file(&p).unwrap();
        assert!(linked);
        assert_eq!(errno(r), Errno::ENOENT);
    }
    assert!(l.index().is_empty());
}

#[test]
fn hugetlb_memfd_has_no_handler() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"s").unwrap();
    let h = luo_sys::memfd_create("huge", luo_sys::mfd::HUGETLB)
        .expect("MFD_HUGETLB memfds can be created on this kernel");
    assert_eq!(
        luo_sys::fstatfs_type(h.as_fd()).unwrap(),
        luo_sys::HUGETLBFS_MAGIC
    );
    assert_eq!(errno(l.preserve(s, h, 1)), Errno::ENOENT);
    assert!(l.index().is_empty());
}

#[test]
fn every_builtin_type_is_accepted_by_its_handler() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"s").unwrap();
    let tcp: OwnedFd = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
    let udp: OwnedFd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into();
    let (ua, _ub) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pr, pw) = luo_sys::pipe().unwrap();
    l.preserve(s, memfd(b"m"), 1).unwrap();
    l.preserve(s, tcp, 2).unwrap();
    l.preserve(s, udp, 3).unwrap();
    l.preserve(s, ua.into(), 4).unwrap();
    l.preserve(s, luo_sys::eventfd(0).unwrap(), 5).unwrap();
    // Both ends of one pipe share an inode but are distinct open files.
    l.preserve(s, pr, 6).unwrap();
    l.preserve(s, pw, 7).unwrap();
    let files = l.session(s).unwrap().files;
    let kinds: Vec<(&str, bool)> = files
        .iter()
        .map(|f| (f.handler.as_str(), f.kexec_safe))
        .collect();
    assert_eq!(
        kinds,
        [
            ("memfd-v2", true),
            ("luo-tcp-socket-v1", false),
            ("luo-udp-socket-v1", false),
            ("luo-unix-socket-v1", false),
            ("luo-eventfd-v1", false),
            ("luo-pipe-v1", false),
            ("luo-pipe-v1", false),
        ]
    );
}

#[test]
fn handlers_are_tried_in_registration_order() {
    let _serial = common::serial();
    let (f1, f2) = (Faults::default(), Faults::default());
    let mut l = Luo::new(Limits::default());
    l.register_handler(Box::new(FaultyHandler::named(
        MemfdHandler,
        f1.clone(),
        "first",
    )))
    .unwrap();
    l.register_handler(Box::new(FaultyHandler::named(
        MemfdHandler,
        f2.clone(),
        "second",
    )))
    .unwrap();
    let s = l.create_session(0, b"s").unwrap();
    l.preserve(s, memfd(b"a"), 1).unwrap();
    assert_eq!(l.session(s).unwrap().files[0].handler, "first");
    // When the first declines, the second gets the file.
    f1.fail(Op::CanPreserve, Errno::EPERM);
    l.preserve(s, memfd(b"b"), 2).unwrap();
    assert_eq!(l.session(s).unwrap().files[1].handler, "second");
    assert!(f2.log().contains(&(Op::Preserve, 2)));
}

#[test]
fn handler_and_flb_registration_errors() {
    let _serial = common::serial();
    let mut l = Luo::new(Limits::default());
    let h = l.register_handler(Box::new(MemfdHandler)).unwrap();
    assert_eq!(
        errno(l.register_handler(Box::new(MemfdHandler))),
        Errno::EEXIST
    );
    let long = "x".repeat(48);
    let f = Faults::default();
    assert_eq!(
        errno(l.register_handler(Box::new(FaultyHandler::named(
            MemfdHandler,
            f.clone(),
            &long
        )))),
        Errno::EINVAL
    );
    l.register_flb(Box::new(TestFlb::new(0, f.clone())), &[h])
        .unwrap();
    assert_eq!(
        errno(l.register_flb(Box::new(TestFlb::new(0, f.clone())), &[h])),
        Errno::EEXIST
    );
    assert_eq!(
        errno(l.register_flb(
            Box::new(TestFlb::new(1, f.clone())),
            &[luo_core::HandlerId(9)]
        )),
        Errno::EINVAL
    );
    for n in 1..63 {
        l.register_flb(Box::new(TestFlb::new(n, f.clone())), &[])
            .unwrap();
    }
    assert_eq!(
        errno(l.register_flb(Box::new(TestFlb::new(63, f)), &[])),
        Errno::ENOSPC
    );
}

// ---- the identity index -----------------------------------------------------

#[test]
fn distinct_eventfds_and_memfds_do_not_collide() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"s").unwrap();
    let (e1, e2) = (luo_sys::eventfd(0).unwrap(), luo_sys::eventfd(0).unwrap());
    // The shared anonymous inode: an inode flag would make these collide.
    assert_eq!(
        luo_sys::fstat(e1.as_fd()).unwrap().ino,
        luo_sys::fstat(e2.as_fd()).unwrap().ino
    );
    l.preserve(s, e1, 1).unwrap();
    l.preserve(s, e2, 2).unwrap();
    l.preserve(s, memfd(b"1"), 3).unwrap();
    l.preserve(s, memfd(b"2"), 4).unwrap();
    assert_eq!(l.index().len(), 4);
}

#[test]
fn the_same_file_again_is_ebusy_in_any_session() {
    let _serial = common::serial();
    let mut l = luo();
    let a = l.create_session(0, b"a").unwrap();
    let b = l.create_session(1, b"b").unwrap();
    let ev = luo_sys::eventfd(0).unwrap();
    let m = memfd(b"data");
    l.preserve(a, copy(&ev), 1).unwrap();
    l.preserve(a, copy(&m), 2).unwrap();

    // A copy received over SCM_RIGHTS is the same open file.
    let (tx, rx) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
    luo_sys::send_with_fds(tx.as_fd(), b"x", &[ev.as_fd(), m.as_fd()]).unwrap();
    let mut buf = [0u8; 4];
    let mut got = luo_sys::recv_with_fds(rx.as_fd(), &mut buf, 2).unwrap().fds;
    let (ev_scm, m_scm) = (got.remove(0), got.remove(0));

    for s in [a, b] {
        // dup
        assert_eq!(errno(l.preserve(s, copy(&ev), 10)), Errno::EBUSY);
        assert_eq!(errno(l.preserve(s, copy(&m), 11)), Errno::EBUSY);
        // SCM_RIGHTS copy
        assert_eq!(errno(l.preserve(s, copy(&ev_scm), 12)), Errno::EBUSY);
        assert_eq!(errno(l.preserve(s, copy(&m_scm), 13)), Errno::EBUSY);
        // memfd re-opened through /proc/self/fd/N: a new open file, same inode.
        let r = reopen(&m);
        assert_ne!(
            luo_sys::kcmp_file(r.as_fd(), m.as_fd()).unwrap(),
            std::cmp::Ordering::Equal
        );
        assert_eq!(errno(l.preserve(s, r, 14)), Errno::EBUSY);
    }
    assert_eq!(l.index().len(), 2);
    assert_eq!(l.session(b).unwrap().files.len(), 0);
}

#[test]
fn after_abort_or_finish_the_same_file_can_be_preserved_again() {
    let _serial = common::serial();
    let mut l = luo();
    let ev = luo_sys::eventfd(0).unwrap();
    let m = memfd(b"again");
    let a = l.create_session(0, b"a").unwrap();
    l.preserve(a, copy(&ev), 1).unwrap();
    l.preserve(a, copy(&m), 2).unwrap();
    l.close(a).unwrap(); // abort
    assert!(l.index().is_empty());
    let b = l.create_session(0, b"b").unwrap();
    l.preserve(b, copy(&ev), 1).unwrap();
    l.preserve(b, copy(&m), 2).unwrap();
    l.handover(b).unwrap();
    let r = l.retrieve_session(0, b"b").unwrap();
    let ev2 = l.retrieve_fd(r, 1).unwrap();
    // Retrieved but not finished: still managed.
    let c = l.create_session(0, b"c").unwrap();
    assert_eq!(errno(l.preserve(c, copy(&ev2), 1)), Errno::EBUSY);
    assert_eq!(errno(l.preserve(c, copy(&m), 2)), Errno::EBUSY);
    l.finish(r).unwrap();
    assert!(l.index().is_empty());
    l.preserve(c, ev2, 1).unwrap();
    l.preserve(c, copy(&m), 2).unwrap();
}

/// An order that says kcmp is blocked, as under a seccomp filter.
#[derive(Debug)]
/// An order whose kcmp fails with an errno, as on a kernel without
/// `CONFIG_CHECKPOINT_RESTORE`; `dupfd_query` says whether `F_DUPFD_QUERY`
/// works too.
struct NoKcmp {
    errno: Errno,
    dupfd_query: bool,
}

impl FileOrder for NoKcmp {
    fn compare(&self, _: RawFd, _: RawFd) -> Result<std::cmp::Ordering, Errno> {
        Err(self.errno)
    }
    fn same(&self, a: RawFd, b: RawFd) -> Result<bool, Errno> {
        if self.dupfd_query {
            luo_sys::same_file_raw(a, b)
        } else {
            Err(Errno::EINVAL)
        }
    }
}

fn without_kcmp(errno: Errno, dupfd_query: bool) -> Luo {
    let mut l = Luo::with_order(Limits::default(), Box::new(NoKcmp { errno, dupfd_query }));
    for h in luo_core::handler::default_handlers() {
        l.register_handler(h).unwrap();
    }
    l
}

#[test]
fn without_kcmp_f_dupfd_query_keeps_open_file_identity_exact() {
    let _serial = common::serial();
    for e in [Errno::ENOSYS, Errno::EPERM] {
        let mut l = without_kcmp(e, true);
        assert_eq!(l.index().mode(), IndexMode::DupfdQuery(e));
        let s = l.create_session(0, b"s").unwrap();
        let ev = luo_sys::eventfd(0).unwrap();
        let other = luo_sys::eventfd(0).unwrap();
        l.preserve(s, copy(&ev), 1).unwrap();
        // A dup is the same file; another eventfd (same inode) is not.
        assert_eq!(errno(l.preserve(s, copy(&ev), 2)), Errno::EBUSY);
        l.preserve(s, copy(&other), 3).unwrap();
        assert_eq!(errno(l.preserve(s, copy(&other), 4)), Errno::EBUSY);
        let st = luo_sys::fstat(ev.as_fd()).unwrap();
        assert_eq!(l.index().bucket_len(st.dev, st.ino), 2);
        l.close(s).unwrap();
        assert!(l.index().is_empty());
        // Unpreserved: both can be preserved again.
        let s = l.create_session(0, b"s").unwrap();
        l.preserve(s, copy(&ev), 1).unwrap();
        l.preserve(s, copy(&other), 2).unwrap();
        l.close(s).unwrap();
    }
}

#[test]
fn without_kcmp_or_f_dupfd_query_the_index_falls_back_to_inode_identity() {
    let _serial = common::serial();
    for e in [Errno::ENOSYS, Errno::EPERM] {
        let mut l = without_kcmp(e, false);
        assert_eq!(l.index().mode(), IndexMode::InodeFallback(e));
        let s = l.create_session(0, b"s").unwrap();
        let ev = luo_sys::eventfd(0).unwrap();
        l.preserve(s, copy(&ev), 1).unwrap();
        // Conservative: a dup is still caught, and so is any other eventfd.
        assert_eq!(errno(l.preserve(s, copy(&ev), 2)), Errno::EBUSY);
        assert_eq!(
            errno(l.preserve(s, luo_sys::eventfd(0).unwrap(), 3)),
            Errno::EBUSY
        );
        // Distinct inodes are unaffected.
        l.preserve(s, memfd(b"1"), 4).unwrap();
        l.preserve(s, memfd(b"2"), 5).unwrap();
        l.close(s).unwrap();
        assert!(l.index().is_empty());
    }
    assert_eq!(luo().index().mode(), IndexMode::Kcmp);
}

#[test]
fn thousands_of_eventfds_share_one_bucket_and_stay_distinct() {
    let _serial = common::serial();
    let _ = luo_sys::raise_nofile_limit();
    let n = 4_000;
    let mut l = luo();
    let s = l.create_session(0, b"many").unwrap();
    let first = luo_sys::eventfd(0).unwrap();
    let st = luo_sys::fstat(first.as_fd()).unwrap();
    l.preserve(s, copy(&first), 0).unwrap();
    for t in 1..n {
        l.preserve(s, luo_sys::eventfd(0).unwrap(), t).unwrap();
    }
    assert_eq!(l.index().bucket_len(st.dev, st.ino), n as usize);
    assert_eq!(errno(l.preserve(s, first, n)), Errno::EBUSY);
    let before = open_fds();
    l.close(s).unwrap();
    assert_eq!(open_fds(), before - n as usize);
    assert!(l.index().is_empty());
}

/// `kcmp`, counted.
#[derive(Debug, Clone, Default)]
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl FileOrder for Counting {
    fn compare(&self, a: RawFd, b: RawFd) -> Result<std::cmp::Ordering, Errno> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        luo_sys::kcmp_raw(a, b)
    }
}

impl Counting {
    fn take(&self) -> usize {
        self.0.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn files_alone_on_their_inode_and_whole_sessions_leaving_compare_nothing() {
    let _serial = common::serial();
    let _ = luo_sys::raise_nofile_limit();
    let kcmp = Counting::default();
    let mut l = Luo::with_order(Limits::default(), Box::new(kcmp.clone()));
    for h in luo_core::handler::default_handlers() {
        l.register_handler(h).unwrap();
    }
    kcmp.take();
    let base = open_fds();
    // Session "a": sockets, memfds (one inode each), pipes and
    // 1,000 eventfds; session "b": 200 eventfds that stay.
    let a = l.create_session(0, b"a").unwrap();
    let mut keep = Vec::new();
    for t in 0..100u64 {
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, w) = luo_sys::pipe().unwrap();
        keep.push(OwnedFd::from(x.try_clone().unwrap()));
        keep.push(copy(&r));
        l.preserve(a, x.into(), 4 * t).unwrap();
        l.preserve(a, y.into(), 4 * t + 1).unwrap();
        l.preserve(a, r, 4 * t + 2).unwrap();
        l.preserve(a, w, 4 * t + 3).unwrap();
        l.preserve(a, memfd(b"m"), 1_000 + t).unwrap();
    }
    // A pipe's two ends share its inode: one kcmp tells them apart.
    assert_eq!(
        kcmp.take(),
        100,
        "a file alone on its inode is compared with nothing"
    );
    for k in &keep {
        assert_eq!(errno(l.preserve(a, copy(k), 9_999)), Errno::EBUSY);
    }
    assert!(kcmp.take() <= keep.len(), "one kcmp tells a copy");
    let mut a_events = Vec::new();
    for t in 0..1_000u64 {
        let e = luo_sys::eventfd(0).unwrap();
        a_events.push(copy(&e));
        l.preserve(a, e, 10_000 + t).unwrap();
    }
    let b = l.create_session(0, b"b").unwrap();
    let mut b_events = Vec::new();
    for t in 0..200u64 {
        let e = luo_sys::eventfd(0).unwrap();
        b_events.push(copy(&e));
        l.preserve(b, e, t).unwrap();
    }
    let st = luo_sys::fstat(a_events[0].as_fd()).unwrap();
    assert_eq!(l.index().bucket_len(st.dev, st.ino), 1_200);
    let managed = l.index().len();
    l.handover(a).unwrap();
    l.close(a).unwrap();
    let a = l.retrieve_session(0, b"a").unwrap();
    let tokens: Vec<u64> = l
        .session_files(a, 0, usize::MAX)
        .unwrap()
        .files
        .iter()
        .map(|f| f.token)
        .collect();
    kcmp.take();
    let mut out = Vec::new();
    for &t in &tokens {
        out.push(l.retrieve_fd(a, t).unwrap());
    }
    assert_eq!(kcmp.take(), 0, "a plain retrieve compares nothing");
    assert_eq!(l.index().len(), managed);
    l.finish(a).unwrap();
    assert_eq!(
        kcmp.take(),
        0,
        "a session leaving the index compares nothing"
    );
    assert_eq!(l.index().len(), 200);
    assert_eq!(l.index().bucket_len(st.dev, st.ino), 200);
    // What left is free to be managed again; what stayed is still managed.
    let c = l.create_session(0, b"c").unwrap();
    for (t, e) in a_events.iter().enumerate() {
        l.preserve(c, copy(e), t as u64).unwrap();
    }
    for e in &b_events {
        assert_eq!(errno(l.preserve(c, copy(e), 99_999)), Errno::EBUSY);
    }
    // One file leaving a large bucket is searched for (few kcmp), exactly.
    l.unpreserve(c, 7).unwrap();
    assert!(kcmp.take() > 0);
    l.preserve(c, copy(&a_events[7]), 7).unwrap();
    assert_eq!(
        errno(l.preserve(c, copy(&a_events[8]), 99_999)),
        Errno::EBUSY
    );
    l.close(c).unwrap();
    l.close(b).unwrap();
    l.close(a).unwrap();
    assert!(l.index().is_empty());
    drop((out, keep, a_events, b_events));
    assert_eq!(open_fds(), base);
}

// ---- lifecycles -------------------------------------------------------------

#[test]
fn abort_unpreserves_in_reverse_and_leaves_files_usable() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = faulty(&f);
    let base = open_fds();
    let s = l.create_session(0, b"s").unwrap();
    let m = memfd(b"hello liveupdate");
    l.preserve(s, copy(&m), 0x1234).unwrap();
    l.preserve(s, memfd(b"b"), 2).unwrap();
    l.preserve(s, luo_sys::eventfd(0).unwrap(), 3).unwrap();
    assert_eq!(open_fds(), base + 4);
    let d = l.dup(s).unwrap();
    l.close(s).unwrap();
    assert_eq!(state(&l, b"s"), [SessionState::Open]); // a copy remains
    f.take_log();
    l.close(d).unwrap();
    assert_eq!(
        calls(&f, &[Op::Unpreserve]),
        [
            (Op::Unpreserve, 3),
            (Op::Unpreserve, 2),
            (Op::Unpreserve, 0x1234)
        ]
    );
    assert!(l.sessions().is_empty());
    assert!(l.index().is_empty());
    assert_eq!(open_fds(), base + 1);
    assert_eq!(read_all(m.as_fd()), b"hello liveupdate");
}

#[test]
fn bytes_survive_handover_and_retrieve_in_any_order() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(0, b"state").unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
    l.preserve(s, memfd(&big), 0xAAAA).unwrap();
    l.preserve(s, memfd(b"second"), 0xBBBB).unwrap();
    l.handover(s).unwrap();
    assert_eq!(errno(l.name(s)), Errno::ESTALE);
    assert_eq!(errno(l.preserve(s, memfd(b"late"), 9)), Errno::ESTALE);
    let r = l.retrieve_session(0, b"state").unwrap();
    assert_eq!(l.name(r).unwrap(), b"state");
    let b = l.retrieve_fd(r, 0xBBBB).unwrap();
    let a = l.retrieve_fd(r, 0xAAAA).unwrap();
    assert_eq!(read_all(a.as_fd()), big);
    assert_eq!(read_all(b.as_fd()), b"second");
    // Retrieve twice: the same open file description.
    let a2 = l.retrieve_fd(r, 0xAAAA).unwrap();
    assert_eq!(
        luo_sys::kcmp_file(a.as_fd(), a2.as_fd()).unwrap(),
        std::cmp::Ordering::Equal
    );
    assert_eq!(
        luo_sys::fcntl_getfd(a2.as_fd()).unwrap() & 1,
        1,
        "FD_CLOEXEC"
    );
    assert_eq!(errno(l.retrieve_fd(r, 0xCCCC)), Errno::ENOENT);
    l.finish(r).unwrap();
    assert_eq!(errno(l.retrieve_fd(r, 0xAAAA)), Errno::ENOENT);
    l.close(r).unwrap();
    assert_eq!(errno(l.retrieve_session(0, b"state")), Errno::ENOENT);
    // The caller's descriptors outlive luo's custody.
    assert_eq!(read_all(a.as_fd()), big);
}

#[test]
fn wrong_session_kind_is_einval() {
    let _serial = common::serial();
    let mut l = luo();
    let out = l.create_session(0, b"out").unwrap();
    assert_eq!(errno(l.retrieve_fd(out, 1)), Errno::EINVAL);
    assert_eq!(errno(l.finish(out)), Errno::EINVAL);
    let x = l.create_session(0, b"in").unwrap();
    l.handover(x).unwrap();
    let inc = l.retrieve_session(0, b"in").unwrap();
    assert_eq!(errno(l.preserve(inc, memfd(b"x"), 1)), Errno::EINVAL);
    assert_eq!(errno(l.handover(inc)), Errno::EINVAL);
    assert_eq!(errno(l.close(SessionHandle(999_999))), Errno::EBADF);
    assert_eq!(errno(l.name(SessionHandle(999_999))), Errno::EBADF);
}

#[test]
fn retrieve_session_unknown_twice_and_after_close() {
    let _serial = common::serial();
    let mut l = luo();
    assert_eq!(errno(l.retrieve_session(0, b"nope")), Errno::ENOENT);
    let s = l.create_session(0, b"s").unwrap();
    let m = memfd(b"kept");
    l.preserve(s, copy(&m), 1).unwrap();
    l.preserve(s, memfd(b"never retrieved"), 2).unwrap();
    // Outgoing sessions cannot be retrieved.
    assert_eq!(errno(l.retrieve_session(0, b"s")), Errno::ENOENT);
    l.handover(s).unwrap();
    // Another owner sees nothing under that name.
    assert_eq!(errno(l.retrieve_session(1000, b"s")), Errno::ENOENT);
    let r = l.retrieve_session(0, b"s").unwrap();
    assert_eq!(errno(l.retrieve_session(0, b"s")), Errno::EINVAL);
    let _one = l.retrieve_fd(r, 1).unwrap();
    // The holder goes away before finish: nothing is lost (a deviation: the
    // kernel would finish implicitly and discard token 2).
    l.close(r).unwrap();
    assert_eq!(state(&l, b"s"), [SessionState::Incoming]);
    assert_eq!(l.index().len(), 2);
    let r = l.retrieve_session(0, b"s").unwrap();
    let two = l.retrieve_fd(r, 2).unwrap();
    assert_eq!(read_all(two.as_fd()), b"never retrieved");
    l.finish(r).unwrap();
    // Finished but still held: a second retrieve is EINVAL, as in the kernel.
    assert_eq!(errno(l.retrieve_session(0, b"s")), Errno::EINVAL);
    l.close(r).unwrap();
    assert_eq!(errno(l.retrieve_session(0, b"s")), Errno::ENOENT);
}

#[test]
fn finish_before_all_retrieved_discards_the_rest_and_frees_custody() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = faulty(&f);
    let base = open_fds();
    let r = retrieved(
        &mut l,
        &[
            (0, b"file 0"),
            (1, b"file 1"),
            (2, b"file 2"),
            (3, b"file 3"),
        ],
    );
    let kept = l.retrieve_fd(r, 2).unwrap();
    assert_eq!(open_fds(), base + 5);
    f.take_log();
    l.finish(r).unwrap();
    assert_eq!(
        calls(&f, &[Op::Finish]),
        [
            (Op::Finish, 3),
            (Op::Finish, 2),
            (Op::Finish, 1),
            (Op::Finish, 0)
        ]
    );
    assert_eq!(
        open_fds(),
        base + 1,
        "only the caller's retrieved fd remains"
    );
    assert_eq!(read_all(kept.as_fd()), b"file 2");
    assert_eq!(errno(l.retrieve_fd(r, 0)), Errno::ENOENT);
    // FINISH twice is a no-op.
    f.take_log();
    l.finish(r).unwrap();
    assert!(f.log().is_empty());
    assert_eq!(state(&l, b"s"), [SessionState::Finished]);
    l.close(r).unwrap();
    assert!(l.sessions().is_empty());
    // An empty session can be handed over and finished too.
    let e = l.create_session(0, b"empty").unwrap();
    l.handover(e).unwrap();
    let r = l.retrieve_session(0, b"empty").unwrap();
    l.finish(r).unwrap();
}

#[test]
fn failed_retrieve_is_sticky() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = faulty(&f);
    let r = retrieved(&mut l, &[(1, b"lost"), (2, b"fine")]);
    f.fail_token(Op::Retrieve, 1, Errno::EIO);
    let base = open_fds();
    assert_eq!(errno(l.retrieve_fd(r, 1)), Errno::EIO);
    f.clear_all();
    f.take_log();
    assert_eq!(errno(l.retrieve_fd(r, 1)), Errno::EIO);
    assert!(f.log().is_empty(), "the handler is not called again");
    assert_eq!(open_fds(), base);
    let ok = l.retrieve_fd(r, 2).unwrap();
    assert_eq!(read_all(ok.as_fd()), b"fine");
    let st = l.session(r).unwrap().files;
    assert_eq!(st[0].retrieve, RetrieveStatus::Failed(Errno::EIO));
    assert_eq!(st[1].retrieve, RetrieveStatus::Retrieved);
}

#[test]
fn can_finish_false_refuses_with_ebusy_and_changes_nothing() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = faulty(&f);
    let r = retrieved(&mut l, &[(1, b"a"), (2, b"b")]);
    f.fail_token(Op::CanFinish, 2, Errno::EBUSY);
    f.take_log();
    assert_eq!(errno(l.finish(r)), Errno::EBUSY);
    assert!(!f.log().iter().any(|(o, _)| *o == Op::Finish));
    assert_eq!(state(&l, b"s"), [SessionState::Retrieved]);
    assert_eq!(l.session(r).unwrap().files.len(), 2);
    let a = l.retrieve_fd(r, 1).unwrap();
    assert_eq!(read_all(a.as_fd()), b"a");
    f.clear_all();
    l.finish(r).unwrap();
    assert!(l.index().is_empty());
}

// ---- updates, freeze and rollback ------------------------------------------

#[test]
fn a_freeze_failure_rolls_back_the_whole_update() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = faulty(&f);
    let names: [&[u8]; 3] = [b"s1", b"s2", b"s3"];
    let mut hs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let h = l.create_session(0, n).unwrap();
        for t in 0..2 {
            l.preserve(h, memfd(b"x"), (i as u64) * 10 + t).unwrap();
        }
        hs.push(h);
    }
    // Session s2's second file (token 11) refuses to freeze.
    f.fail_token(Op::Freeze, 11, Errno::EAGAIN);
    f.take_log();
    let before = l.sessions();
    assert_eq!(errno(l.update()), Errno::EAGAIN);
    assert_eq!(
        calls(&f, &[Op::Freeze, Op::Unfreeze]),
        [
            (Op::Freeze, 0),
            (Op::Freeze, 1),
            (Op::Freeze, 10),
            (Op::Freeze, 11),
            (Op::Unfreeze, 10),
            (Op::Unfreeze, 1),
            (Op::Unfreeze, 0),
        ]
    );
    assert_eq!(l.sessions(), before);
    assert_eq!(l.epoch(), 1);
    for h in &hs {
        l.name(*h).unwrap(); // handles still live
    }
    // The same for a per-session handover.
    f.take_log();
    assert_eq!(errno(l.handover(hs[1])), Errno::EAGAIN);
    assert_eq!(calls(&f, &[Op::Unfreeze]), [(Op::Unfreeze, 10)]);
    assert_eq!(l.sessions(), before);
    f.clear_all();
    assert_eq!(l.update().unwrap(), 2);
    assert!(l
        .sessions()
        .iter()
        .all(|s| s.state == SessionState::Incoming));
    for h in hs {
        assert_eq!(errno(l.name(h)), Errno::ESTALE);
        l.close(h).unwrap(); // closing a stale handle aborts nothing
    }
    assert_eq!(l.index().len(), 6);
}

#[test]
fn update_carries_unfinished_incoming_sessions_and_drops_finished_ones() {
    let _serial = common::serial();
    let mut l = luo();
    let a = l.create_session(0, b"a").unwrap();
    l.preserve(a, memfd(b"A"), 1).unwrap();
    let b = l.create_session(0, b"b").unwrap();
    l.preserve(b, memfd(b"B"), 1).unwrap();
    let c = l.create_session(0, b"c").unwrap();
    l.handover(a).unwrap();
    l.handover(b).unwrap();
    let ra = l.retrieve_session(0, b"a").unwrap(); // held through the update
    let rb = l.retrieve_session(0, b"b").unwrap();
    l.finish(rb).unwrap();
    assert_eq!(l.update().unwrap(), 2);
    assert_eq!(errno(l.name(ra)), Errno::ESTALE);
    let names: Vec<(Vec<u8>, SessionState)> = l
        .sessions()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        names,
        [
            (b"a".to_vec(), SessionState::Incoming),
            (b"c".to_vec(), SessionState::Incoming),
        ]
    );
    let ra = l.retrieve_session(0, b"a").unwrap();
    let fa = l.retrieve_fd(ra, 1).unwrap();
    assert_eq!(read_all(fa.as_fd()), b"A");
    let _ = c;
}

// ---- FLB --------------------------------------------------------------------

fn flb_events(f: &Faults) -> Vec<Op> {
    let flb = [
        Op::FlbPreserve,
        Op::FlbUnpreserve,
        Op::FlbRetrieve,
        Op::FlbFinish,
    ];
    calls(f, &flb).into_iter().map(|(o, _)| o).collect()
}

/// Outgoing sessions "a" and "b", one memfd each under token 1.
fn two_sessions(l: &mut Luo) -> (SessionHandle, SessionHandle) {
    let a = l.create_session(0, b"a").unwrap();
    let b = l.create_session(0, b"b").unwrap();
    l.preserve(a, memfd(b"1"), 1).unwrap();
    l.preserve(b, memfd(b"2"), 1).unwrap();
    (a, b)
}

fn flb_luo(f: &Faults) -> (Luo, luo_core::FlbId) {
    let mut l = Luo::new(Limits::default());
    let h = l.register_handler(Box::new(MemfdHandler)).unwrap();
    l.register_handler(Box::new(UserspaceHandler(UserspaceKind::Eventfd)))
        .unwrap();
    let id = l
        .register_flb(Box::new(TestFlb::new(0, f.clone())), &[h])
        .unwrap();
    (l, id)
}

#[test]
fn flb_is_preserved_once_and_unpreserved_with_the_last_file() {
    let _serial = common::serial();
    let f = Faults::default();
    let (mut l, id) = flb_luo(&f);
    assert_eq!(errno(l.flb_outgoing(id)), Errno::ENOENT);
    let (a, b) = two_sessions(&mut l);
    l.preserve(b, luo_sys::eventfd(0).unwrap(), 2).unwrap(); // not linked
    assert_eq!(flb_events(&f), [Op::FlbPreserve]);
    assert_eq!(l.flb_outgoing(id).unwrap(), 0xFEED_F00D_CAFE_BEE0);
    assert_eq!(l.flb_status()[0].outgoing_refs, 2);
    l.close(a).unwrap();
    assert_eq!(flb_events(&f), [Op::FlbPreserve]);
    l.close(b).unwrap();
    assert_eq!(flb_events(&f), [Op::FlbPreserve, Op::FlbUnpreserve]);
    assert_eq!(l.flb_status()[0].outgoing_refs, 0);
}

#[test]
fn flb_finishes_with_the_last_file_even_if_nobody_asked_for_it() {
    let _serial = common::serial();
    let f = Faults::default();
    let (mut l, id) = flb_luo(&f);
    let a = l.create_session(0, b"a").unwrap();
    l.preserve(a, memfd(b"1"), 1).unwrap();
    l.preserve(a, memfd(b"2"), 2).unwrap();
    let b = l.create_session(0, b"b").unwrap();
    l.preserve(b, memfd(b"3"), 1).unwrap();
    assert_eq!(errno(l.flb_incoming(id)), Errno::ENODATA);
    l.update().unwrap();
    // The incoming count is set when the epoch begins.
    assert_eq!(l.flb_status()[0].incoming_refs, [3]);
    assert_eq!(l.flb_status()[0].outgoing_refs, 0);
    finish_incoming(&mut l, b"a");
    assert_eq!(flb_events(&f), [Op::FlbPreserve]);
    finish_incoming(&mut l, b"b");
    // Never asked for: retrieved on the way to finish, then finished.
    assert_eq!(
        flb_events(&f),
        [Op::FlbPreserve, Op::FlbRetrieve, Op::FlbFinish]
    );
    assert!(f.log().contains(&(Op::FlbFinish, 0xFEED_F00D_CAFE_BEE1)));
    assert_eq!(errno(l.flb_incoming(id)), Errno::ENODATA);
}

#[test]
fn flb_retrieve_is_sticky_and_retrievable_in_the_next_epoch() {
    let _serial = common::serial();
    let f = Faults::default();
    let (mut l, id) = flb_luo(&f);
    let a = l.create_session(0, b"a").unwrap();
    l.preserve(a, memfd(b"1"), 1).unwrap();
    l.update().unwrap();
    f.fail(Op::FlbRetrieve, Errno::EIO);
    assert_eq!(errno(l.flb_incoming(id)), Errno::EIO);
    f.clear_all();
    assert_eq!(errno(l.flb_incoming(id)), Errno::EIO);
    let r = l.retrieve_session(0, b"a").unwrap();
    l.finish(r).unwrap();
    // Retrieve failed: finish is not called on an object that never existed.
    assert_eq!(flb_events(&f), [Op::FlbPreserve, Op::FlbRetrieve]);

    let f = Faults::default();
    let (mut l, id) = flb_luo(&f);
    let a = l.create_session(0, b"a").unwrap();
    l.preserve(a, memfd(b"1"), 1).unwrap();
    l.update().unwrap();
    assert_eq!(l.flb_incoming(id).unwrap(), 0xFEED_F00D_CAFE_BEE1);
    assert_eq!(l.flb_incoming(id).unwrap(), 0xFEED_F00D_CAFE_BEE1);
    assert_eq!(flb_events(&f), [Op::FlbPreserve, Op::FlbRetrieve]);
}

#[test]
fn a_failed_flb_preserve_leaves_nothing_behind() {
    let _serial = common::serial();
    let f = Faults::default();
    let mut l = Luo::new(Limits::default());
    let h = l
        .register_handler(Box::new(FaultyHandler::new(MemfdHandler, f.clone())))
        .unwrap();
    l.register_flb(Box::new(TestFlb::new(0, f.clone())), &[h])
        .unwrap();
    l.register_flb(Box::new(TestFlb::new(1, f.clone())), &[h])
        .unwrap();
    let s = l.create_session(0, b"s").unwrap();
    let base = open_fds();
    // The second FLB fails: the first is put back (unpreserved at 1→0).
    f.fail_token(Op::FlbPreserve, 0xFEED_F00D_CAFE_BEE1, Errno::ENOMEM);
    let m = memfd(b"m");
    assert_eq!(errno(l.preserve(s, copy(&m), 1)), Errno::ENOMEM);
    assert_eq!(
        flb_events(&f),
        [Op::FlbPreserve, Op::FlbPreserve, Op::FlbUnpreserve]
    );
    assert!(l.index().is_empty());
    assert!(l.flb_status().iter().all(|s| s.outgoing_refs == 0));
    assert_eq!(open_fds(), base + 1);
    // The handler's preserve fails: both FLBs are put back, in reverse.
    f.clear_all();
    f.fail(Op::Preserve, Errno::EFBIG);
    f.take_log();
    assert_eq!(errno(l.preserve(s, copy(&m), 1)), Errno::EFBIG);
    assert_eq!(
        calls(&f, &[Op::FlbPreserve, Op::FlbUnpreserve]),
        [
            (Op::FlbPreserve, 0xFEED_F00D_CAFE_BEE0),
            (Op::FlbPreserve, 0xFEED_F00D_CAFE_BEE1),
            (Op::FlbUnpreserve, 0xFEED_F00D_CAFE_BEE1),
            (Op::FlbUnpreserve, 0xFEED_F00D_CAFE_BEE0),
        ]
    );
    assert!(l.index().is_empty());
    assert_eq!(open_fds(), base + 1);
    f.clear_all();
    l.preserve(s, m, 1).unwrap();
}

#[test]
fn partial_handover_shares_one_flb_lifecycle() {
    let _serial = common::serial();
    let f = Faults::default();
    let (mut l, id) = flb_luo(&f);
    let (a, b) = two_sessions(&mut l);
    l.handover(a).unwrap();
    let st = &l.flb_status()[0];
    assert_eq!((st.outgoing_refs, st.incoming_refs.clone()), (1, vec![1]));
    // Both sides work on the same data.
    assert_eq!(l.flb_outgoing(id).unwrap(), 0xFEED_F00D_CAFE_BEE0);
    assert_eq!(l.flb_incoming(id).unwrap(), 0xFEED_F00D_CAFE_BEE1);
    // The rest crosses later and joins the same lifecycle.
    l.handover(b).unwrap();
    assert_eq!(l.flb_status()[0].incoming_refs, [2]);
    finish_incoming(&mut l, b"a");
    finish_incoming(&mut l, b"b");
    assert_eq!(
        flb_events(&f),
        [Op::FlbPreserve, Op::FlbRetrieve, Op::FlbFinish]
    );
}

#[test]
fn a_shared_flb_lifecycle_ends_exactly_once() {
    let _serial = common::serial();
    // The side that crossed finishes before the rest crosses: the FLB is not
    // finished while an outgoing file still depends on it.
    let f = Faults::default();
    let (mut l, _) = flb_luo(&f);
    let (a, b) = two_sessions(&mut l);
    l.handover(a).unwrap();
    finish_incoming(&mut l, b"a");
    assert_eq!(flb_events(&f), [Op::FlbPreserve]);
    l.handover(b).unwrap();
    finish_incoming(&mut l, b"b");
    assert_eq!(
        flb_events(&f),
        [Op::FlbPreserve, Op::FlbRetrieve, Op::FlbFinish]
    );

    // The files that stayed are aborted: no unpreserve of data the incoming
    // side still uses; the crossed side's finish ends it.
    let f = Faults::default();
    let (mut l, _) = flb_luo(&f);
    let (a, b) = two_sessions(&mut l);
    l.handover(a).unwrap();
    l.close(b).unwrap();
    assert_eq!(flb_events(&f), [Op::FlbPreserve]);
    finish_incoming(&mut l, b"a");
    assert_eq!(
        flb_events(&f),
        [Op::FlbPreserve, Op::FlbRetrieve, Op::FlbFinish]
    );
    // A new preserve after everything crossed starts a new lifecycle.
    let c = l.create_session(0, b"c").unwrap();
    l.preserve(c, memfd(b"3"), 1).unwrap();
    l.close(c).unwrap();
    assert_eq!(flb_events(&f)[3..], [Op::FlbPreserve, Op::FlbUnpreserve]);
}

#[test]
fn quotas_refuse_with_edquot_and_free_up_when_files_leave() {
    let _serial = common::serial();
    let mut l = luo();
    l.set_quota(Quota {
        sessions: 2,
        files: 2,
        pinned_bytes: 100,
    });
    let a = l.create_session(1000, b"a").unwrap();
    let b = l.create_session(1000, b"b").unwrap();
    // EEXIST is checked before the quota, as the name is the caller's mistake.
    assert_eq!(errno(l.create_session(1000, b"a")), Errno::EEXIST);
    let e = l.create_session(1000, b"c").unwrap_err();
    assert_eq!(e.errno, Errno::EDQUOT);
    assert!(e.message.contains("quota of sessions"), "{e}");
    // Other uids have their own count; root has none.
    l.create_session(1001, b"c").unwrap();
    l.create_session(0, b"c").unwrap();
    l.create_session(0, b"d").unwrap();
    l.create_session(0, b"e").unwrap();

    let before = open_fds();
    // 60 + 50 bytes of memfd would pass 100: refused, fd closed.
    l.preserve(a, memfd(&[1; 60]), 1).unwrap();
    let e = l.preserve(a, memfd(&[2; 50]), 2).unwrap_err();
    assert_eq!(e.errno, Errno::EDQUOT);
    assert!(e.message.contains("pinned bytes"), "{e}");
    // Eventfds pin nothing, but count as files.
    l.preserve(b, luo_sys::eventfd(0).unwrap(), 1).unwrap();
    let e = l.preserve(b, luo_sys::eventfd(0).unwrap(), 2).unwrap_err();
    assert_eq!(e.errno, Errno::EDQUOT);
    assert!(e.message.contains("quota of files"), "{e}");
    assert_eq!(
        l.usage(1000),
        Usage {
            sessions: 2,
            files: 2,
            pinned_bytes: 60
        }
    );
    assert_eq!(open_fds(), before + 2);
    // The check comes after ENOENT (nothing to account) and before EBUSY.
    let null = File::open("/dev/null").unwrap();
    assert_eq!(errno(l.preserve(b, null.into(), 3)), Errno::ENOENT);

    // Aborting a session gives back its session and files.
    l.close(b).unwrap();
    assert_eq!(
        l.usage(1000),
        Usage {
            sessions: 1,
            files: 1,
            pinned_bytes: 60
        }
    );
    // Finishing gives back files; the session counts until it is gone.
    l.handover(a).unwrap();
    let r = l.retrieve_session(1000, b"a").unwrap();
    l.finish(r).unwrap();
    assert_eq!(l.usage(1000).files, 0);
    assert_eq!(l.usage(1000).pinned_bytes, 0);
    assert_eq!(l.usage(1000).sessions, 1);
    l.close(r).unwrap();
    assert_eq!(l.usage(1000), Usage::default());
    assert_eq!(open_fds(), before);
}

#[test]
fn open_outgoing_names_a_session_of_one_owner() {
    let _serial = common::serial();
    let mut l = luo();
    let s = l.create_session(1000, b"db").unwrap();
    l.preserve(s, memfd(b"x"), 1).unwrap();
    assert_eq!(errno(l.open_outgoing(1001, b"db")), Errno::ENOENT);
    let h = l.open_outgoing(1000, b"db").unwrap();
    l.handover(h).unwrap();
    // Both handles went stale together.
    assert_eq!(errno(l.preserve(s, memfd(b"y"), 2)), Errno::ESTALE);
    assert_eq!(errno(l.open_outgoing(1000, b"db")), Errno::ENOENT);
    l.close(h).unwrap();
    l.close(s).unwrap();
    let r = l.retrieve_session(1000, b"db").unwrap();
    assert_eq!(read_all(l.retrieve_fd(r, 1).unwrap().as_fd()), b"x");
}
