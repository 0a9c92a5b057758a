//! The change log ([`Luo::take_changes`]) after each mutating call: exactly
//! what changed, nothing more, nothing less.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};

use luo_core::handler::MemfdHandler;
use luo_core::testing::{Faults, FaultyHandler, Op};
use luo_core::{Changes, Errno, Limits, Luo, SessionChange, SessionMode};

fn memfd() -> OwnedFd {
    luo_sys::memfd_create("changes", 0).unwrap()
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

/// One session's change, built field by field.
fn ch(f: impl FnOnce(&mut SessionChange)) -> SessionChange {
    let mut c = SessionChange::default();
    f(&mut c);
    c
}

fn sessions(pairs: Vec<(u64, SessionChange)>) -> Changes {
    Changes {
        epoch: false,
        sessions: pairs.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn every_mutating_call_records_exactly_what_it_changed() {
    let mut l = Luo::with_default_handlers();
    assert!(l.take_changes().is_empty());

    // create: a new session with its first handle.
    let a = l.create_session(0, b"a").unwrap();
    let ka = l.session_key(a).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(
            ka,
            ch(|c| {
                c.created = true;
                c.handles = true;
            })
        )])
    );

    // preserve: one token each, in order; a refusal records nothing.
    let m1 = memfd();
    let m2 = memfd();
    l.preserve(a, dup(&m1), 1).unwrap();
    l.preserve(a, dup(&m2), 2).unwrap();
    assert_eq!(l.preserve(a, dup(&m1), 3).unwrap_err().errno, Errno::EBUSY);
    assert_eq!(
        l.take_changes(),
        sessions(vec![(ka, ch(|c| c.added = vec![1, 2]))])
    );

    // dup, open by name, close of a handle that is not the last: handles.
    let a2 = l.dup(a).unwrap();
    let a3 = l.open_outgoing(0, b"a").unwrap();
    l.close(a3).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(ka, ch(|c| c.handles = true))])
    );
    l.close(a2).unwrap();
    l.take_changes();

    // set_mode: only when the mode changes.
    let m = SessionMode {
        finish_on_close: true,
        kexec_safe_only: false,
        persist: false,
    };
    l.set_mode(a, m).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(ka, ch(|c| c.mode = true))])
    );
    l.set_mode(a, m).unwrap();
    assert!(l.take_changes().is_empty());

    // handover: the session crosses (state), its handles go stale, its
    // mode returns to the default.
    l.handover(a).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(
            ka,
            ch(|c| {
                c.state = true;
                c.handles = true;
                c.mode = true;
            })
        )])
    );
    // Closing a stale handle changes nothing observable.
    l.close(a).unwrap();
    assert!(l.take_changes().is_empty());

    // retrieve_session: retrieved (state) with a handle.
    let r = l.retrieve_session(0, b"a").unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(
            ka,
            ch(|c| {
                c.state = true;
                c.handles = true;
            })
        )])
    );

    // retrieve_fd: the first retrieve of a token changes it; again does not.
    let back = l.retrieve_fd(r, 2).unwrap();
    let again = l.retrieve_fd(r, 2).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(ka, ch(|c| c.retrieved = vec![2]))])
    );
    drop((back, again));

    // Closing the last handle of a retrieved session: back to waiting.
    l.close(r).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(
            ka,
            ch(|c| {
                c.state = true;
                c.handles = true;
            })
        )])
    );

    // finish: every file leaves, last to first; a second finish is a no-op.
    let r = l.retrieve_session(0, b"a").unwrap();
    l.take_changes();
    l.finish(r).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(
            ka,
            ch(|c| {
                c.state = true;
                c.removed = vec![2, 1];
            })
        )])
    );
    l.finish(r).unwrap();
    assert!(l.take_changes().is_empty());

    // Closing a finished session's last handle: gone, and nothing else.
    l.close(r).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![(ka, ch(|c| c.gone = true))])
    );
}

#[test]
fn abort_is_gone_and_a_session_born_and_gone_between_takes_is_not_reported() {
    let mut l = Luo::with_default_handlers();
    let s = l.create_session(0, b"s").unwrap();
    let k = l.session_key(s).unwrap();
    let m = memfd();
    l.preserve(s, dup(&m), 1).unwrap();
    l.take_changes();
    // Abort of a session the caller has seen: gone, its files with it.
    l.close(s).unwrap();
    assert_eq!(l.take_changes(), sessions(vec![(k, ch(|c| c.gone = true))]));

    // Created, filled and aborted between two takes: nothing to report.
    let t = l.create_session(0, b"t").unwrap();
    l.preserve(t, dup(&m), 1).unwrap();
    l.close(t).unwrap();
    assert!(l.take_changes().is_empty());
}

#[test]
fn update_records_the_epoch_and_each_session_it_moves_or_drops() {
    let mut l = Luo::with_default_handlers();
    let m = memfd();
    // Finished, still held: dropped by the update.
    let f = l.create_session(0, b"f").unwrap();
    let kf = l.session_key(f).unwrap();
    l.handover(f).unwrap();
    let f = l.retrieve_session(0, b"f").unwrap();
    l.finish(f).unwrap();
    // Retrieved, not finished: released back to waiting.
    let w = l.create_session(0, b"w").unwrap();
    let kw = l.session_key(w).unwrap();
    l.handover(w).unwrap();
    let w = l.retrieve_session(0, b"w").unwrap();
    // Waiting and not held: unchanged.
    let q = l.create_session(0, b"q").unwrap();
    l.handover(q).unwrap();
    // Outgoing: crosses.
    let o = l.create_session(0, b"o").unwrap();
    let ko = l.session_key(o).unwrap();
    l.preserve(o, dup(&m), 9).unwrap();
    l.take_changes();

    l.update().unwrap();
    let mut want = sessions(vec![
        (kf, ch(|c| c.gone = true)),
        (
            kw,
            ch(|c| {
                c.state = true;
                c.handles = true;
            }),
        ),
        (
            ko,
            ch(|c| {
                c.state = true;
                c.handles = true;
            }),
        ),
    ]);
    want.epoch = true;
    assert_eq!(l.take_changes(), want);
    for h in [f, w, o] {
        l.close(h).unwrap();
    }
    assert!(l.take_changes().is_empty());

    // set_epoch records only a change.
    let e = l.epoch();
    l.set_epoch(e);
    assert!(l.take_changes().is_empty());
    l.set_epoch(e + 5);
    assert_eq!(
        l.take_changes(),
        Changes {
            epoch: true,
            ..Changes::default()
        }
    );
}

#[test]
fn a_handover_that_displaces_a_finished_session_reports_it_gone() {
    let mut l = Luo::with_default_handlers();
    let a = l.create_session(0, b"a").unwrap();
    l.handover(a).unwrap();
    let old = l.retrieve_session(0, b"a").unwrap();
    let k_old = l.session_key(old).unwrap();
    l.finish(old).unwrap();
    let b = l.create_session(0, b"a").unwrap();
    let k_new = l.session_key(b).unwrap();
    l.take_changes();
    l.handover(b).unwrap();
    assert_eq!(
        l.take_changes(),
        sessions(vec![
            (k_old, ch(|c| c.gone = true)),
            (
                k_new,
                ch(|c| {
                    c.state = true;
                    c.handles = true;
                })
            ),
        ])
    );
    // The displaced session's handle is stale now.
    l.close(old).unwrap();
    assert!(l.take_changes().is_empty());
}

#[test]
fn refused_calls_and_a_failed_freeze_record_nothing_a_failed_retrieve_records_the_file() {
    let faults = Faults::default();
    let mut l = Luo::new(Limits::default());
    l.register_handler(Box::new(FaultyHandler::new(MemfdHandler, faults.clone())))
        .unwrap();
    let s = l.create_session(0, b"s").unwrap();
    let k = l.session_key(s).unwrap();
    let m = memfd();
    l.preserve(s, dup(&m), 1).unwrap();
    l.take_changes();

    assert!(l.create_session(0, b"s").is_err());
    faults.fail(Op::Preserve, Errno::ENOMEM);
    assert!(l.preserve(s, memfd(), 2).is_err());
    faults.clear_all();
    faults.fail(Op::Freeze, Errno::EIO);
    assert!(l.handover(s).is_err());
    faults.clear_all();
    assert!(l.take_changes().is_empty());

    l.handover(s).unwrap();
    let r = l.retrieve_session(0, b"s").unwrap();
    l.take_changes();
    faults.fail(Op::Retrieve, Errno::EIO);
    assert!(l.retrieve_fd(r, 1).is_err());
    assert_eq!(
        l.take_changes(),
        sessions(vec![(k, ch(|c| c.retrieved = vec![1]))])
    );
    // Sticky: the same error, nothing new.
    assert!(l.retrieve_fd(r, 1).is_err());
    assert!(l.take_changes().is_empty());
    faults.clear_all();
}

#[test]
fn finish_on_close_reports_the_finish_and_then_gone() {
    let mut l = Luo::with_default_handlers();
    let s = l.create_session(0, b"s").unwrap();
    let k = l.session_key(s).unwrap();
    l.preserve(s, memfd(), 4).unwrap();
    l.handover(s).unwrap();
    let r = l.retrieve_session(0, b"s").unwrap();
    l.set_mode(
        r,
        SessionMode {
            finish_on_close: true,
            kexec_safe_only: false,
            persist: false,
        },
    )
    .unwrap();
    l.take_changes();
    l.close(r).unwrap();
    assert_eq!(l.take_changes(), sessions(vec![(k, ch(|c| c.gone = true))]));
}

#[test]
fn a_restored_snapshot_reports_every_session_as_created_with_its_files() {
    let mut old = Luo::with_default_handlers();
    let a = old.create_session(0, b"a").unwrap();
    old.preserve(a, memfd(), 1).unwrap();
    old.preserve(a, memfd(), 2).unwrap();
    let ka = old.session_key(a).unwrap();
    let b = old.create_session(0, b"b").unwrap();
    let kb = old.session_key(b).unwrap();
    old.handover(b).unwrap();
    let (snap, fds) = old.snapshot().unwrap();
    let fds: Vec<OwnedFd> = fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();

    let mut new = Luo::with_default_handlers();
    new.restore(snap, fds).unwrap();
    let mut want = sessions(vec![
        (
            ka,
            ch(|c| {
                c.created = true;
                c.handles = true;
                c.added = vec![1, 2];
            }),
        ),
        (kb, ch(|c| c.created = true)),
    ]);
    want.epoch = true;
    assert_eq!(new.take_changes(), want);
}

/// `retrieve_custody` is `retrieve_fd` without the copy: the same status,
/// change log and errors, and `custody_fd` lends out only retrieved files.
#[test]
fn a_borrowed_retrieve_records_what_retrieve_fd_does() {
    use luo_core::{Retrieval, RetrieveStatus};
    let mut l = Luo::with_default_handlers();
    let s = l.create_session(0, b"b").unwrap();
    let k = l.session_key(s).unwrap();
    let m1 = memfd();
    let m2 = memfd();
    l.preserve(s, dup(&m1), 1).unwrap();
    l.preserve(s, dup(&m2), 2).unwrap();
    l.handover(s).unwrap();
    let r = l.retrieve_session(0, b"b").unwrap();
    l.take_changes();

    // Not retrieved yet: nothing to lend.
    assert_eq!(l.custody_fd(r, 1).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(l.custody_fd(r, 9).unwrap_err().errno, Errno::ENOENT);
    assert!(matches!(
        l.retrieve_custody(r, 1).unwrap(),
        Retrieval::Custody
    ));
    assert!(matches!(
        l.retrieve_custody(r, 1).unwrap(),
        Retrieval::Custody
    ));
    assert_eq!(l.retrieve_custody(r, 9).unwrap_err().errno, Errno::ENOENT);
    assert_eq!(
        l.take_changes(),
        sessions(vec![(k, ch(|c| c.retrieved = vec![1]))])
    );
    let lent = l.custody_fd(r, 1).unwrap();
    assert_eq!(
        luo_sys::kcmp_file(lent, m1.as_fd()).unwrap(),
        std::cmp::Ordering::Equal
    );
    let files = l.session_files(r, 0, usize::MAX).unwrap().files;
    let status: Vec<_> = files.iter().map(|f| (f.token, f.retrieve)).collect();
    assert_eq!(
        status,
        [
            (1, RetrieveStatus::Retrieved),
            (2, RetrieveStatus::NotRetrieved)
        ]
    );
    // After finish nothing is lent.
    l.finish(r).unwrap();
    assert_eq!(l.custody_fd(r, 1).unwrap_err().errno, Errno::ENOENT);
}
