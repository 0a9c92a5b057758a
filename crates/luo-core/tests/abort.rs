//! `Luo::abort_session` (abort by name, whoever holds the session) and
//! `Luo::set_veto` (files refused before any handler, at the kernel's
//! `ENOENT` step).

mod common;

use std::os::fd::AsFd;

use common::{memfd, open_fds};
use luo_core::{Errno, Luo, SessionState};

#[test]
fn abort_ends_an_open_session_whoever_holds_it() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let before = open_fds();
    let h = luo.create_session(1000, b"kv").unwrap();
    luo.preserve(h, memfd(b"a"), 1).unwrap();
    luo.preserve(h, memfd(b"b"), 2).unwrap();
    let key = luo.session_key(h).unwrap();
    let _ = luo.take_changes();
    assert_eq!(
        luo.abort_session(1000, b"kv").unwrap(),
        (SessionState::Open, 2)
    );
    assert_eq!(open_fds(), before);
    assert_eq!(luo.usage(1000).files, 0);
    assert_eq!(luo.usage(1000).sessions, 0);
    assert!(luo.take_changes().sessions[&key].gone);
    assert_eq!(luo.name(h).unwrap_err().errno, Errno::ESTALE);
    luo.close(h).unwrap();
    assert_eq!(
        luo.abort_session(1000, b"kv").unwrap_err().errno,
        Errno::ENOENT
    );
    // Another owner's name is another session.
    luo.create_session(1000, b"kv").unwrap();
    assert_eq!(
        luo.abort_session(0, b"kv").unwrap_err().errno,
        Errno::ENOENT
    );
}

#[test]
fn abort_ends_a_persistent_session_and_discards_a_waiting_one() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let before = open_fds();
    let p = luo.persist_session(7, b"svc").unwrap();
    luo.preserve(p, memfd(b"kept"), 1).unwrap();
    luo.close(p).unwrap();
    assert_eq!(luo.sessions().len(), 1);
    luo.abort_session(7, b"svc").unwrap();
    assert!(luo.sessions().is_empty());
    assert_eq!(open_fds(), before);

    let h = luo.create_session(7, b"w").unwrap();
    luo.preserve(h, memfd(b"w"), 1).unwrap();
    luo.handover(h).unwrap();
    luo.close(h).unwrap();
    let r = luo.retrieve_session(7, b"w").unwrap();
    assert_eq!(luo.abort_session(7, b"w").unwrap_err().errno, Errno::EBUSY);
    luo.close(r).unwrap();
    assert_eq!(
        luo.abort_session(7, b"w").unwrap(),
        (SessionState::Incoming, 1)
    );
    assert!(luo.sessions().is_empty());
    assert_eq!(luo.usage(7).files, 0);
    assert_eq!(open_fds(), before);
}

#[test]
fn a_vetoed_file_is_enoent_after_the_earlier_checks() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    luo.set_veto(|f| f.stat.is_socket().then(|| "no sockets here".to_string()));
    let h = luo.create_session(0, b"s").unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = luo
        .preserve(h, a.as_fd().try_clone_to_owned().unwrap(), 1)
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT);
    assert!(e.message.contains("no sockets here"), "{}", e.message);
    // A used token is EEXIST first, as the kernel checks it first.
    luo.preserve(h, memfd(b"x"), 2).unwrap();
    let e = luo
        .preserve(h, a.as_fd().try_clone_to_owned().unwrap(), 2)
        .unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
    assert_eq!(luo.file_count(h).unwrap(), 1);
}
