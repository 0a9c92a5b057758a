//! A snapshot carries the whole model: restored from it (with descriptors
//! of the same files), a new model answers every request as the old one.

use std::os::fd::{AsFd, OwnedFd};

use luo_core::snapshot::SnapSide;
use luo_core::{Errno, Luo, RetrieveStatus, SessionState};

mod common;

use common::{memfd, read_all};

/// Snapshots `old` and restores into a fresh model, with new descriptors
/// of the same files (as after `exec`).
fn carry(old: &Luo) -> Luo {
    let (snap, fds) = old.snapshot().unwrap();
    let fds: Vec<OwnedFd> = fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();
    let mut new = Luo::with_default_handlers();
    new.restore(snap, fds).unwrap();
    new
}

#[test]
fn every_session_state_survives_a_snapshot() {
    let mut old = Luo::with_default_handlers();
    // Open, with a memfd and two eventfds (open-file identity).
    let open = old.create_session(1000, b"open").unwrap();
    let ev = luo_sys::eventfd(0).unwrap();
    old.preserve(open, memfd(b"open data"), 1).unwrap();
    old.preserve(open, ev.try_clone().unwrap(), 2).unwrap();
    old.preserve(open, luo_sys::eventfd(0).unwrap(), 3).unwrap();
    // Incoming, waiting.
    let w = old.create_session(1000, b"waiting").unwrap();
    old.preserve(w, memfd(b"waiting data"), 7).unwrap();
    old.handover(w).unwrap();
    // Retrieved, one file taken.
    let r = old.create_session(0, b"held").unwrap();
    old.preserve(r, memfd(b"held 1"), 1).unwrap();
    old.preserve(r, memfd(b"held 2"), 2).unwrap();
    old.handover(r).unwrap();
    let held = old.retrieve_session(0, b"held").unwrap();
    let _got = old.retrieve_fd(held, 1).unwrap();
    // Finished, handle still open.
    let f = old.create_session(0, b"done").unwrap();
    old.handover(f).unwrap();
    let done = old.retrieve_session(0, b"done").unwrap();
    old.finish(done).unwrap();

    let (snap, _) = old.snapshot().unwrap();
    assert_eq!(snap.sessions.len(), 4);
    assert_eq!(snap.sessions[3].side, SnapSide::Incoming(true));
    let mut new = carry(&old);

    // The same sessions, files, usage and epoch.
    let strip = |l: &Luo| {
        l.sessions()
            .into_iter()
            .map(|mut s| {
                s.files.iter_mut().for_each(|f| f.size = 0);
                s
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&new), strip(&old));
    assert_eq!(new.usage(1000), old.usage(1000));
    assert_eq!(new.usage(0), old.usage(0));
    assert_eq!(new.epoch(), old.epoch());
    assert_eq!(new.index().len(), old.index().len());

    // The handles work in the new model as in the old.
    assert_eq!(new.name(open).unwrap(), b"open");
    assert_eq!(
        new.preserve(open, ev.try_clone().unwrap(), 9)
            .unwrap_err()
            .errno,
        Errno::EBUSY
    );
    new.preserve(open, luo_sys::eventfd(0).unwrap(), 9).unwrap();
    assert_eq!(new.name(w).unwrap_err().errno, Errno::ESTALE);
    let infos = new.sessions();
    let h = infos.iter().find(|s| s.name == b"held").unwrap();
    assert_eq!(h.state, SessionState::Retrieved);
    assert_eq!(h.files[0].retrieve, RetrieveStatus::Retrieved);
    assert_eq!(read_all(new.retrieve_fd(held, 2).unwrap()), b"held 2");
    new.finish(held).unwrap();
    new.close(held).unwrap();
    let w2 = new.retrieve_session(1000, b"waiting").unwrap();
    assert_eq!(read_all(new.retrieve_fd(w2, 7).unwrap()), b"waiting data");
    // New sessions and handles do not collide with carried ones.
    let n = new.create_session(1000, b"after").unwrap();
    assert!(n.0 > held.0);
    new.close(done).unwrap();
    assert!(new.sessions().iter().all(|s| s.name != b"done"));
    new.close(open).unwrap();
    assert!(new.sessions().iter().all(|s| s.name != b"open"));
}

#[test]
fn a_broken_snapshot_is_refused() {
    let mut old = Luo::with_default_handlers();
    let s = old.create_session(0, b"s").unwrap();
    old.preserve(s, memfd(b"x"), 1).unwrap();
    let (snap, fds) = old.snapshot().unwrap();
    // A descriptor missing.
    let mut new = Luo::with_default_handlers();
    assert_eq!(
        new.restore(snap.clone(), Vec::new()).unwrap_err().errno,
        Errno::EINVAL
    );
    // A handler the new model does not have.
    let mut bare = Luo::new(luo_core::Limits::default());
    let fd = fds[0].try_clone_to_owned().unwrap();
    assert_eq!(
        bare.restore(snap.clone(), vec![fd]).unwrap_err().errno,
        Errno::ENOENT
    );
    // A model that is not empty.
    let mut busy = Luo::with_default_handlers();
    busy.create_session(0, b"other").unwrap();
    let fd = fds[0].try_clone_to_owned().unwrap();
    assert_eq!(
        busy.restore(snap, vec![fd]).unwrap_err().errno,
        Errno::EINVAL
    );
    let _ = fds[0].as_fd();
}

#[test]
fn a_stale_handle_of_a_session_that_is_gone_survives_a_snapshot() {
    let mut old = Luo::with_default_handlers();
    // Aborted by name while its handle is open: the handle goes stale and
    // stays until its holder closes it.
    let h = old.create_session(1000, b"aborted").unwrap();
    old.preserve(h, memfd(b"x"), 1).unwrap();
    old.abort_session(1000, b"aborted").unwrap();
    let mut new = carry(&old);
    assert_eq!(new.name(h).unwrap_err().errno, Errno::ESTALE);
    new.close(h).unwrap();
    assert_eq!(new.close(h).unwrap_err().errno, Errno::EBADF);
    assert!(new.sessions().is_empty());
}
