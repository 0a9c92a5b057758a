//! `SessionMode`: the kernel's rules where the native API deliberately
//! differs, as the `/dev/liveupdate` emulation asks for them.

use luo_core::{Errno, Luo, SessionMode, SessionState};

mod common;

use common::{memfd, read_all};

const UAPI: SessionMode = SessionMode {
    finish_on_close: true,
    kexec_safe_only: true,
    persist: false,
};

#[test]
fn kexec_safe_only_refuses_userspace_types_with_enoent_in_the_kernel_order() {
    let mut luo = Luo::with_default_handlers();
    let s = luo.create_session(0, b"k").unwrap();
    luo.set_mode(s, UAPI).unwrap();
    assert_eq!(luo.mode(s).unwrap(), UAPI);
    let ev = luo_sys::eventfd(0).unwrap();
    let (a, _b) = luo_sys::socketpair(luo_sys::sock::SOCK_STREAM).unwrap();
    let (r, _w) = luo_sys::pipe().unwrap();
    for fd in [ev, a, r] {
        let e = luo.preserve(s, fd, 7).unwrap_err();
        assert_eq!(e.errno, Errno::ENOENT, "{e}");
    }
    // EEXIST comes before ENOENT, as in the kernel.
    luo.preserve(s, memfd(b"x"), 1).unwrap();
    let e = luo
        .preserve(s, luo_sys::eventfd(0).unwrap(), 1)
        .unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
    // The native default accepts them.
    let n = luo.create_session(0, b"n").unwrap();
    luo.preserve(n, luo_sys::eventfd(0).unwrap(), 7).unwrap();
}

#[test]
fn finish_on_close_finishes_and_discards_the_unretrieved() {
    let mut luo = Luo::with_default_handlers();
    let s = luo.create_session(0, b"s").unwrap();
    let kept = memfd(b"kept");
    luo.preserve(s, kept.try_clone().unwrap(), 1).unwrap();
    luo.preserve(s, memfd(b"dropped"), 2).unwrap();
    luo.update().unwrap();

    let r = luo.retrieve_session(0, b"s").unwrap();
    luo.set_mode(r, UAPI).unwrap();
    let got = luo.retrieve_fd(r, 1).unwrap();
    // A second handle keeps it open; only the last close finishes.
    let r2 = luo.dup(r).unwrap();
    luo.close(r).unwrap();
    assert_eq!(luo.session(r2).unwrap().state, SessionState::Retrieved);
    luo.close(r2).unwrap();
    assert!(luo.sessions().is_empty());
    assert_eq!(luo.custody_count(), 0);
    assert_eq!(
        luo.retrieve_session(0, b"s").unwrap_err().errno,
        Errno::ENOENT
    );
    // The retrieved file is the caller's and intact; it is no longer managed.
    assert_eq!(read_all(&got), b"kept");
    let again = luo.create_session(0, b"again").unwrap();
    luo.preserve(again, got, 1).unwrap();
}

#[test]
fn the_mode_does_not_cross_an_update() {
    let mut luo = Luo::with_default_handlers();
    let s = luo.create_session(0, b"s").unwrap();
    luo.set_mode(s, UAPI).unwrap();
    luo.preserve(s, memfd(b"a"), 1).unwrap();
    luo.update().unwrap();
    // Retrieved natively: closing returns it to waiting, nothing lost.
    let r = luo.retrieve_session(0, b"s").unwrap();
    assert_eq!(luo.mode(r).unwrap(), SessionMode::default());
    luo.close(r).unwrap();
    let r = luo.retrieve_session(0, b"s").unwrap();
    assert_eq!(read_all(luo.retrieve_fd(r, 1).unwrap()), b"a");
    luo.finish(r).unwrap();
    luo.close(r).unwrap();
    assert!(luo.sessions().is_empty());
}
