//! Persistent sessions, per-file unpreserve and fetch: luo's additions to
//! the kernel's model (docs/semantics.md).

mod common;

use std::os::fd::AsFd;

use common::{memfd, open_fds, read_all};
use luo_core::{Errno, Luo, Quota, SessionMode, SessionState};

fn dup(fd: &impl AsFd) -> std::os::fd::OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_persistent_session_survives_its_last_close_and_reopens_by_name() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let h = luo.persist_session(1000, b"svc").unwrap();
    assert!(luo.mode(h).unwrap().persist);
    luo.preserve(h, memfd(b"state"), 1).unwrap();
    luo.close(h).unwrap();
    let all = luo.sessions();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, SessionState::Open);
    assert!(all[0].persistent);
    assert_eq!(all[0].handles, 0);
    assert_eq!(all[0].file_count, 1);
    assert_eq!(luo.usage(1000).files, 1);
    assert_eq!(luo.usage(1000).sessions, 1);

    // Reopened: the same session, a new handle; two handles at once.
    let a = luo.persist_session(1000, b"svc").unwrap();
    let b = luo.persist_session(1000, b"svc").unwrap();
    assert_eq!(luo.session_key(a), luo.session_key(b));
    assert_eq!(read_all(luo.fetch(a, 1).unwrap()), b"state");
    luo.close(a).unwrap();
    luo.close(b).unwrap();
    assert_eq!(luo.sessions()[0].file_count, 1);

    // Another owner's name is another session.
    let other = luo.persist_session(1001, b"svc").unwrap();
    assert_eq!(luo.sessions().len(), 2);
    luo.close(other).unwrap();
}

#[test]
fn persist_session_refuses_what_create_session_refuses_and_a_plain_session_of_its_name() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    assert_eq!(
        luo.persist_session(0, b"").unwrap_err().errno,
        Errno::EINVAL
    );
    assert_eq!(
        luo.persist_session(0, &[b'x'; 64]).unwrap_err().errno,
        Errno::EINVAL
    );
    assert_eq!(
        luo.persist_session(0, b"a\0b").unwrap_err().errno,
        Errno::EINVAL
    );
    let plain = luo.create_session(0, b"s").unwrap();
    assert_eq!(
        luo.persist_session(0, b"s").unwrap_err().errno,
        Errno::EEXIST
    );
    // And create_session refuses a persistent one's name.
    let p = luo.persist_session(0, b"p").unwrap();
    assert_eq!(
        luo.create_session(0, b"p").unwrap_err().errno,
        Errno::EEXIST
    );
    luo.close(plain).unwrap();
    luo.close(p).unwrap();
    // The plain one was aborted at its last close: the name is free.
    let again = luo.persist_session(0, b"s").unwrap();
    assert!(luo.session(again).unwrap().persistent);

    // Quotas: the session counts as any session does.
    luo.set_quota(Quota {
        sessions: 2,
        ..Quota::default()
    });
    luo.persist_session(5, b"one").unwrap();
    luo.persist_session(5, b"two").unwrap();
    assert_eq!(
        luo.persist_session(5, b"three").unwrap_err().errno,
        Errno::EDQUOT
    );
    // Reopening needs no quota.
    luo.persist_session(5, b"two").unwrap();
}

#[test]
fn a_file_in_a_persistent_session_is_managed_by_it() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let p = luo.persist_session(0, b"p").unwrap();
    let m = memfd(b"x");
    luo.preserve(p, dup(&m), 1).unwrap();
    luo.close(p).unwrap();
    let s = luo.create_session(0, b"s").unwrap();
    assert_eq!(luo.preserve(s, dup(&m), 1).unwrap_err().errno, Errno::EBUSY);
    let p = luo.persist_session(0, b"p").unwrap();
    assert_eq!(luo.preserve(p, dup(&m), 2).unwrap_err().errno, Errno::EBUSY);
    assert_eq!(
        luo.preserve(p, memfd(b"y"), 1).unwrap_err().errno,
        Errno::EEXIST
    );
}

#[test]
fn unpreserve_releases_one_file_and_everything_it_held() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    luo.set_quota(Quota {
        files: 2,
        ..Quota::default()
    });
    let p = luo.persist_session(1000, b"p").unwrap();
    let m = memfd(b"hello");
    luo.preserve(p, dup(&m), 1).unwrap();
    luo.preserve(p, memfd(b"two"), 2).unwrap();
    luo.preserve(p, memfd(b"three"), 3).unwrap_err();
    let before = open_fds();
    let pinned = luo.usage(1000).pinned_bytes;
    luo.take_changes();
    luo.unpreserve(p, 1).unwrap();
    // The custody descriptor is closed, the quota released.
    assert_eq!(open_fds(), before - 1);
    assert_eq!(luo.usage(1000).files, 1);
    assert_eq!(luo.usage(1000).pinned_bytes, pinned - 5);
    let key = luo.session_key(p).unwrap();
    assert_eq!(luo.take_changes().sessions[&key].removed, [1]);
    // The identity entry is gone: the same memfd can be preserved again,
    // and the token is free.
    luo.preserve(p, dup(&m), 1).unwrap();
    let tokens: Vec<u64> = luo
        .session(p)
        .unwrap()
        .files
        .iter()
        .map(|f| f.token)
        .collect();
    assert_eq!(tokens, [2, 1]);
    assert_eq!(read_all(luo.fetch(p, 2).unwrap()), b"two");

    assert_eq!(luo.unpreserve(p, 9).unwrap_err().errno, Errno::ENOENT);
    // Any outgoing session, not only a persistent one.
    let s = luo.create_session(1000, b"s").unwrap();
    luo.unpreserve(p, 2).unwrap();
    luo.preserve(s, memfd(b"s"), 7).unwrap();
    luo.unpreserve(s, 7).unwrap();
    assert_eq!(luo.session(s).unwrap().file_count, 0);
    // Not an incoming one.
    luo.preserve(s, memfd(b"s"), 8).unwrap();
    luo.handover(s).unwrap();
    let r = luo.retrieve_session(1000, b"s").unwrap();
    assert_eq!(luo.unpreserve(r, 8).unwrap_err().errno, Errno::EINVAL);
}

#[test]
fn fetch_copies_a_persistent_file_without_retrieving_it() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let p = luo.persist_session(0, b"p").unwrap();
    luo.preserve(p, memfd(b"abc"), 1).unwrap();
    luo.take_changes();
    let a = luo.fetch(p, 1).unwrap();
    let b = luo.fetch(p, 1).unwrap();
    assert_eq!(read_all(&a), b"abc");
    assert_eq!(read_all(&b), b"abc");
    assert!(luo.take_changes().is_empty());
    assert_eq!(
        luo.session(p).unwrap().files[0].retrieve,
        luo_core::RetrieveStatus::NotRetrieved
    );
    assert_eq!(luo.fetch(p, 2).unwrap_err().errno, Errno::ENOENT);
    // Not from a session that is not persistent.
    let s = luo.create_session(0, b"s").unwrap();
    luo.preserve(s, memfd(b"s"), 1).unwrap();
    assert_eq!(luo.fetch(s, 1).unwrap_err().errno, Errno::EINVAL);
    // Nor once it crossed over: a persistent session hands over as any.
    luo.handover(p).unwrap();
    let r = luo.retrieve_session(0, b"p").unwrap();
    assert!(!luo.session(r).unwrap().persistent);
    assert_eq!(luo.mode(r).unwrap(), SessionMode::default());
    assert_eq!(luo.fetch(r, 1).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(read_all(luo.retrieve_fd(r, 1).unwrap()), b"abc");
    luo.finish(r).unwrap();
    luo.close(r).unwrap();
    // The name is free for a persistent session again.
    let p2 = luo.persist_session(0, b"p").unwrap();
    assert_eq!(luo.session(p2).unwrap().file_count, 0);
}

#[test]
fn a_snapshot_carries_a_persistent_session_without_handles() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let p = luo.persist_session(7, b"p").unwrap();
    luo.preserve(p, memfd(b"abc"), 1).unwrap();
    luo.close(p).unwrap();
    let (snap, fds) = luo.snapshot().unwrap();
    assert!(snap.sessions[0].mode.persist);
    let fds: Vec<_> = fds.iter().map(dup).collect();
    let mut back = Luo::with_default_handlers();
    back.restore(snap, fds).unwrap();
    assert!(back.sessions()[0].persistent);
    let h = back.persist_session(7, b"p").unwrap();
    assert_eq!(read_all(back.fetch(h, 1).unwrap()), b"abc");
}

#[test]
fn an_update_hands_a_persistent_session_over() {
    let _serial = common::serial();
    let mut luo = Luo::with_default_handlers();
    let p = luo.persist_session(0, b"p").unwrap();
    luo.preserve(p, memfd(b"abc"), 1).unwrap();
    luo.close(p).unwrap();
    luo.update().unwrap();
    let s = &luo.sessions()[0];
    assert_eq!(s.state, SessionState::Incoming);
    assert!(!s.persistent);
}
