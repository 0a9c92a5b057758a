//! Eventfds keyed by their kernel id (`eventfd-id:` in fdinfo): each is
//! managed alone, so nothing compares them, with the same answers as the
//! comparisons gave; without the id (a test seam: an order that does not
//! allow it, as on a kernel before 5.2) they are compared as before; and a
//! failed read of an eventfd's fdinfo fails the call with its errno rather
//! than filing the file anywhere else.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use luo_core::handler::{FileHandler, FileInfo, FileOpArgs, UserspaceHandler, UserspaceKind};
use luo_core::{Errno, FileOrder, Limits, Luo, SessionHandle};

mod common;

use common::open_fds;

fn errno<T: std::fmt::Debug>(r: luo_core::Result<T>) -> Errno {
    r.unwrap_err().errno
}

fn copy(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().unwrap()
}

/// `kcmp`, counted; once `armed`, any comparison panics. `ids`: whether
/// the index may key eventfds by id.
#[derive(Debug, Clone, Default)]
struct Watched {
    armed: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    ids: bool,
}

impl FileOrder for Watched {
    fn compare(&self, a: RawFd, b: RawFd) -> Result<std::cmp::Ordering, Errno> {
        assert!(
            !self.armed.load(Ordering::Relaxed),
            "compared descriptors {a} and {b}"
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
        luo_sys::kcmp_raw(a, b)
    }
    fn same(&self, a: RawFd, b: RawFd) -> Result<bool, Errno> {
        assert!(
            !self.armed.load(Ordering::Relaxed),
            "compared descriptors {a} and {b}"
        );
        luo_sys::same_file_raw(a, b)
    }
    fn eventfd_ids(&self) -> bool {
        self.ids
    }
}

/// An eventfd handler that makes its own copy at retrieve (not the
/// model's), so that the retrieved file is keyed afresh.
#[derive(Debug)]
struct Redup;

impl FileHandler for Redup {
    fn compatible(&self) -> &str {
        "test-eventfd-redup"
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        UserspaceHandler(UserspaceKind::Eventfd).can_preserve(file)
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        Ok(args.file.try_clone_to_owned()?)
    }
}

/// A model with the built-in handlers (or `Redup` for eventfds first).
fn model(order: Watched, redup: bool) -> Luo {
    let mut l = Luo::with_order(Limits::default(), Box::new(order));
    if redup {
        l.register_handler(Box::new(Redup)).unwrap();
    }
    for h in luo_core::handler::default_handlers() {
        l.register_handler(h).unwrap();
    }
    l
}

/// `n` eventfds through a whole lifecycle, with the identity rules checked
/// at each step: two distinct eventfds are both preserved, a copy (a dup,
/// an SCM_RIGHTS copy) is refused with `EBUSY` in any session while the
/// original is managed, and free again once its session is finished.
fn lifecycle(l: &mut Luo, n: u64) {
    let base = open_fds();
    let a = l.create_session(0, b"a").unwrap();
    let mut mine = Vec::new();
    for t in 0..n {
        let e = luo_sys::eventfd(t as u32 + 1).unwrap();
        mine.push(copy(&e));
        l.preserve(a, e, t).unwrap();
    }
    assert_eq!(l.index().len(), n as usize);
    let st = luo_sys::fstat(mine[0].as_fd()).unwrap();
    assert_eq!(l.index().bucket_len(st.dev, st.ino), n as usize);
    let b = l.create_session(0, b"b").unwrap();
    let refused = |l: &mut Luo, s: SessionHandle, fd: OwnedFd| {
        let e = l.preserve(s, fd, 1_000_000).unwrap_err();
        assert_eq!(e.errno, Errno::EBUSY, "{e}");
        assert!(e.message.contains("session 'a'"), "{e}");
    };
    for e in mine.iter().step_by(97) {
        refused(l, b, copy(e));
        refused(l, a, copy(e));
    }
    // A copy through SCM_RIGHTS is the same open file too.
    let (x, y) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
    luo_sys::send_with_fds(x.as_fd(), b"e", &[mine[1].as_fd()]).unwrap();
    let mut buf = [0u8; 4];
    let mut got = luo_sys::recv_with_fds(y.as_fd(), &mut buf, 1).unwrap();
    refused(l, b, got.fds.remove(0));
    // Another eventfd is another file.
    l.preserve(b, luo_sys::eventfd(0).unwrap(), 1).unwrap();
    l.handover(a).unwrap();
    l.close(a).unwrap();
    let a = l.retrieve_session(0, b"a").unwrap();
    let mut out = Vec::new();
    for t in 0..n {
        let fd = l.retrieve_fd(a, t).unwrap();
        // The same eventfd: its counter (never 0, so the read does not
        // block).
        let mut v = [0u8; 8];
        if t % 251 == 0 {
            assert_eq!(rustix_read(&fd, &mut v), 8);
            assert_eq!(u64::from_ne_bytes(v), t + 1);
        }
        out.push(fd);
    }
    assert_eq!(l.index().len(), n as usize + 1);
    // Retrieved, not finished: still managed.
    refused(l, b, copy(&mine[2]));
    l.finish(a).unwrap();
    assert_eq!(l.index().len(), 1);
    // Finished: free to be managed again, each once.
    let c = l.create_session(0, b"c").unwrap();
    for (t, e) in mine.iter().enumerate().step_by(13) {
        l.preserve(c, copy(e), t as u64).unwrap();
        assert_eq!(errno(l.preserve(b, copy(e), 7)), Errno::EBUSY);
    }
    l.unpreserve(c, 0).unwrap();
    l.preserve(b, copy(&mine[0]), 2).unwrap();
    for s in [a, b, c] {
        l.close(s).unwrap();
    }
    assert!(l.index().is_empty());
    drop((mine, out, x, y, got));
    assert_eq!(open_fds(), base, "every custody descriptor closed");
}

fn rustix_read(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    use std::io::Read;
    std::fs::File::from(copy(fd)).read(buf).unwrap()
}

/// True when this kernel shows eventfd ids (Linux 5.2 and later); else the
/// test says so and checks nothing more.
fn kernel_has_ids() -> bool {
    let l = model(
        Watched {
            ids: true,
            ..Watched::default()
        },
        false,
    );
    let has = l.index().eventfd_ids();
    if !has {
        eprintln!("this kernel shows no eventfd-id in fdinfo: nothing to check");
    }
    has
}

#[test]
fn two_thousand_eventfds_keyed_by_id_are_never_compared() {
    let _serial = common::serial();
    let _ = luo_sys::raise_nofile_limit();
    if !kernel_has_ids() {
        return;
    }
    for redup in [false, true] {
        let order = Watched {
            ids: true,
            ..Watched::default()
        };
        let mut l = model(order.clone(), redup);
        assert!(l.index().eventfd_ids());
        // From here on a comparison panics (the probe of kcmp, in `new`,
        // was one).
        order.calls.store(0, Ordering::Relaxed);
        order.armed.store(true, Ordering::Relaxed);
        lifecycle(&mut l, 2_000);
        assert_eq!(order.calls.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn without_eventfd_ids_eventfds_are_compared_with_the_same_answers() {
    let _serial = common::serial();
    let _ = luo_sys::raise_nofile_limit();
    let order = Watched::default();
    let mut l = model(order.clone(), false);
    assert!(!l.index().eventfd_ids());
    order.calls.store(0, Ordering::Relaxed);
    lifecycle(&mut l, 500);
    assert!(
        order.calls.load(Ordering::Relaxed) > 500,
        "eventfds on their shared inode are told apart by kcmp"
    );
}

#[test]
fn eventfds_keyed_by_id_stay_managed_in_a_restored_model() {
    let _serial = common::serial();
    if !kernel_has_ids() {
        return;
    }
    let mut old = Luo::with_default_handlers();
    let s = old.create_session(0, b"kept").unwrap();
    let e = luo_sys::eventfd(3).unwrap();
    let other = luo_sys::eventfd(4).unwrap();
    old.preserve(s, copy(&e), 1).unwrap();
    old.preserve(s, copy(&other), 2).unwrap();
    let (snap, fds) = old.snapshot().unwrap();
    // The snapshot carries the identity as before: the shared inode.
    let st = luo_sys::fstat(e.as_fd()).unwrap();
    for f in &snap.sessions[0].files {
        assert_eq!((f.identity.dev, f.identity.ino), (st.dev, st.ino));
    }
    let fds: Vec<OwnedFd> = fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();
    let order = Watched {
        ids: true,
        ..Watched::default()
    };
    let mut new = model(order.clone(), false);
    order.armed.store(true, Ordering::Relaxed);
    new.restore(snap, fds).unwrap();
    let b = new.create_session(0, b"b").unwrap();
    assert_eq!(errno(new.preserve(b, copy(&e), 1)), Errno::EBUSY);
    assert_eq!(errno(new.preserve(b, copy(&other), 2)), Errno::EBUSY);
    new.preserve(b, luo_sys::eventfd(0).unwrap(), 3).unwrap();
    let listed = new.sessions();
    let kept = listed.iter().find(|x| x.name == b"kept").unwrap();
    assert!(kept
        .files
        .iter()
        .all(|f| (f.identity.dev, f.identity.ino) == (st.dev, st.ino)));
}

/// Runs `f` with every descriptor number taken (the soft limit lowered to
/// the table's size), then gives the limit back.
fn out_of_descriptors<T>(f: impl FnOnce() -> T) -> T {
    let (soft, _) = luo_sys::nofile_limit().unwrap();
    let mut fill = Vec::new();
    luo_sys::set_nofile_soft_limit(open_fds() as u64 + 8).unwrap();
    while let Ok(e) = luo_sys::eventfd(0) {
        fill.push(e);
    }
    let r = f();
    luo_sys::set_nofile_soft_limit(soft).unwrap();
    r
}

#[test]
fn an_eventfd_whose_id_cannot_be_read_is_refused_with_that_errno() {
    let _serial = common::serial();
    if !kernel_has_ids() {
        return;
    }
    let mut l = Luo::with_default_handlers();
    let s = l.create_session(0, b"s").unwrap();
    let e = luo_sys::eventfd(0).unwrap();
    let m = common::memfd(b"m");
    let before = l.index().len();
    let (e1, m1) = (copy(&e), copy(&m));
    let (ev, mem) = out_of_descriptors(|| {
        (
            l.preserve(s, e1, 1).map(drop),
            l.preserve(s, m1, 2).map(drop),
        )
    });
    // No free descriptor to open its fdinfo with: EMFILE, not "no
    // handler", and not filed on the shared inode instead.
    let ev = ev.unwrap_err();
    assert_eq!(ev.errno, Errno::EMFILE, "{ev}");
    assert!(ev.message.contains("fdinfo"), "{ev}");
    // A memfd needs no fdinfo.
    mem.unwrap();
    assert_eq!(l.index().len(), before + 1, "the memfd alone");
    // With descriptors again, it is preserved, and a copy refused.
    l.preserve(s, copy(&e), 1).unwrap();
    assert_eq!(errno(l.preserve(s, copy(&e), 3)), Errno::EBUSY);

    // A restore that cannot read an id fails, with that errno.
    let (snap, fds) = l.snapshot().unwrap();
    let fds: Vec<OwnedFd> = fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();
    let mut new = Luo::with_default_handlers();
    let r = out_of_descriptors(|| new.restore(snap, fds));
    assert_eq!(errno(r), Errno::EMFILE);
}

/// A handler that takes non-blocking eventfds under inode identity: the
/// whole anonymous inode, as such a handler held it before eventfds had
/// ids.
#[derive(Debug)]
struct WholeInode;

/// `O_NONBLOCK` (Linux's generic value).
const O_NONBLOCK: i32 = 0o4000;

impl FileHandler for WholeInode {
    fn compatible(&self) -> &str {
        "test-eventfd-inode"
    }
    fn descriptor(&self) -> luo_core::handler::Descriptor {
        luo_core::handler::Descriptor {
            identity: luo_core::IdentityKind::Inode,
            ..luo_core::handler::Descriptor::DEFAULT
        }
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        UserspaceHandler(UserspaceKind::Eventfd).can_preserve(file)
            && luo_sys::fcntl_getfl(file.fd).is_ok_and(|f| f & O_NONBLOCK != 0)
    }
}

#[test]
fn an_inode_identity_on_the_eventfds_inode_still_holds_every_eventfd() {
    let _serial = common::serial();
    if !kernel_has_ids() {
        return;
    }
    let whole = || {
        let e = luo_sys::eventfd(0).unwrap();
        luo_sys::set_nonblocking(e.as_fd(), true).unwrap();
        e
    };
    // WholeInode first, so that it takes the non-blocking eventfds.
    let mut m = Luo::new(Limits::default());
    m.register_handler(Box::new(WholeInode)).unwrap();
    for h in luo_core::handler::default_handlers() {
        m.register_handler(h).unwrap();
    }
    let s = m.create_session(0, b"s").unwrap();
    // The inode first: no eventfd after it.
    m.preserve(s, whole(), 1).unwrap();
    assert_eq!(
        errno(m.preserve(s, luo_sys::eventfd(0).unwrap(), 2)),
        Errno::EBUSY
    );
    m.unpreserve(s, 1).unwrap();
    // An eventfd (by id) first: then not the whole inode.
    let e = luo_sys::eventfd(0).unwrap();
    m.preserve(s, copy(&e), 2).unwrap();
    assert_eq!(errno(m.preserve(s, whole(), 3)), Errno::EBUSY);
    assert_eq!(
        m.index()
            .holder(
                luo_core::Identity::new(
                    &luo_sys::fstat(e.as_fd()).unwrap(),
                    luo_core::IdentityKind::Inode
                ),
                e.as_fd()
            )
            .unwrap()
            .map(|h| h.token),
        Some(2)
    );
    m.unpreserve(s, 2).unwrap();
    m.preserve(s, whole(), 3).unwrap();
    m.close(s).unwrap();
    assert!(m.index().is_empty());
}
