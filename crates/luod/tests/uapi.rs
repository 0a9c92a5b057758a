//! The `/dev/liveupdate` emulation's requests (`open_device`, `ioctl`)
//! against a real `luod` process, in the raw protocol: the device's
//! exclusivity, the kernel's dispatcher order, and hostile input, after
//! which the agent still serves and holds no descriptor it should not.
//! (The C program that uses them through the preload library is tested in
//! crates/luo-preload.)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use luo_proto::uapi::{self, to_hex};
use luo_proto::Errno;

mod common;

use common::wire::{call, errno, fd_arg, ioctl, ok, request, session_arg, Message, Value, With};
use common::Agent;

fn open_device(agent: &Agent) -> (OwnedFd, Message) {
    let c = agent.connect();
    let m = call(&c, request("open_device"), &[]);
    (c, m)
}

fn memfd() -> OwnedFd {
    luo_sys::memfd_create("uapi", 0).unwrap()
}

/// The agent's descriptor count once it is idle, with `c` connected.
fn baseline(agent: &Agent, c: &OwnedFd) -> usize {
    ok(&call(c, request("status"), &[]));
    std::thread::sleep(Duration::from_millis(50));
    agent.settled_fds()
}

#[test]
fn the_device_is_one_open_at_a_time_and_free_again_once_closed() {
    let agent = Agent::start();
    let (a, m) = open_device(&agent);
    ok(&m);
    let (b, m) = open_device(&agent);
    assert_eq!(errno(&m), Errno::EBUSY);
    assert_eq!(errno(&call(&a, request("open_device"), &[])), Errno::EBUSY);
    // A plain agent connection is no device.
    let plain = agent.connect();
    assert_eq!(
        errno(&call(
            &plain,
            ioctl(uapi::CREATE_SESSION, &session_arg("x")),
            &[]
        )),
        Errno::ENOTTY
    );
    // Closed, then asked at once: the close is seen first, as in the kernel.
    drop(a);
    ok(&call(&b, request("open_device"), &[]));
    let mut m = call(&b, ioctl(uapi::CREATE_SESSION, &session_arg("dev")), &[]);
    ok(&m);
    let s = m.fds.pop().unwrap();
    assert_eq!(
        errno(&call(&s, ioctl(uapi::PRESERVE_FD, &fd_arg(1)), &[])),
        Errno::EBADF,
        "a preserve without its fd is EBADF"
    );
    ok(&call(
        &s,
        ioctl(uapi::PRESERVE_FD, &fd_arg(1)),
        &[memfd().as_fd()],
    ));

    // An update ends every claim, as a kexec ends every process.
    let luo = agent.client();
    luo.update().unwrap();
    assert_eq!(
        errno(&call(
            &b,
            ioctl(uapi::CREATE_SESSION, &session_arg("late")),
            &[]
        )),
        Errno::ESTALE
    );
    let (c, m) = open_device(&agent);
    ok(&m);
    let mut m = call(&c, ioctl(uapi::RETRIEVE_SESSION, &session_arg("dev")), &[]);
    ok(&m);
    let s2 = m.fds.pop().unwrap();
    let mut m = call(&s2, ioctl(uapi::RETRIEVE_FD, &fd_arg(1)), &[]);
    ok(&m);
    assert_eq!(m.fds.len(), 1);
    drop(m.fds.pop());
    // Closed without FINISH: finished implicitly, gone.
    drop(s2);
    assert_eq!(
        errno(&call(
            &c,
            ioctl(uapi::RETRIEVE_SESSION, &session_arg("dev")),
            &[]
        )),
        Errno::ENOENT
    );
    assert!(luo.sessions().unwrap().is_empty());
    drop(s);
}

/// A session fd closed just before a preserve into another session lets go
/// of its files first, as the kernel's synchronous close does. luod may see
/// the preserve before the close: the other session's connection, reported
/// by epoll for a request luod is still busy with, stands before the closed
/// one in epoll's ready list. The preserve is then refused (EBUSY), the
/// pending closes are seen, and it is tried again. Here the request luod is
/// busy with is a native preserve of 253 memfds, and the close comes while
/// it works on them; when exactly is up to the scheduler, so the exchange
/// is repeated.
#[test]
fn a_closed_sessions_file_can_be_preserved_in_another_at_once() {
    let agent = Agent::start();
    let (d, m) = open_device(&agent);
    ok(&m);
    let create = |name: &str| {
        let mut m = call(&d, ioctl(uapi::CREATE_SESSION, &session_arg(name)), &[]);
        ok(&m);
        m.fds.pop().unwrap()
    };
    let f = memfd();
    let busy: Vec<OwnedFd> = (0..luo_proto::MAX_FDS).map(|_| memfd()).collect();
    let busy_fds: Vec<BorrowedFd<'_>> = busy.iter().map(|b| b.as_fd()).collect();
    let tokens: Vec<u64> = (100..100 + busy.len() as u64).collect();
    for round in 0..40 {
        let (a, b) = (create("closing"), create("next"));
        ok(&call(
            &a,
            ioctl(uapi::PRESERVE_FD, &fd_arg(1)),
            &[f.as_fd()],
        ));
        let work = request("preserve").with("tokens", tokens.clone());
        common::wire::send(b.as_fd(), &work, &busy_fds).unwrap();
        std::thread::sleep(Duration::from_micros(50 + 10 * round));
        drop(a);
        let preserve = ioctl(uapi::PRESERVE_FD, &fd_arg(1));
        common::wire::send(b.as_fd(), &preserve, &[f.as_fd()]).unwrap();
        ok(&common::wire::recv(&b));
        let m = common::wire::recv(&b);
        assert!(m.body["ok"] == true, "round {round}: {}", m.body);
        let sessions = agent.client().sessions().unwrap();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].name, b"next");
        assert_eq!(sessions[0].file_count, busy.len() + 1);
        if round == 0 {
            // Still busy while its session is open: the retry changes
            // nothing else.
            let c = create("third");
            assert_eq!(
                errno(&call(
                    &c,
                    ioctl(uapi::PRESERVE_FD, &fd_arg(1)),
                    &[f.as_fd()]
                )),
                Errno::EBUSY
            );
        }
        // Closing b aborts it; the next round's CREATE_SESSION sees that
        // first.
    }
}

#[test]
fn the_dispatcher_checks_in_the_kernels_order() {
    let agent = Agent::start();
    let (d, m) = open_device(&agent);
    ok(&m);
    let create = session_arg("order");
    let cases: Vec<(Value, Errno)> = vec![
        // Out of range beats everything, an unreadable size included.
        (
            request("ioctl").with("cmd", 0xBA02u32).with("tail", "zero"),
            Errno::EINVAL,
        ),
        // Then the unreadable size.
        (
            request("ioctl")
                .with("cmd", 0x4004_BA00u32)
                .with("tail", "zero"),
            Errno::EFAULT,
        ),
        // Then the exact command.
        (ioctl(0x4004_BA00, &create), Errno::ENOTTY),
        (
            ioctl(uapi::CREATE_SESSION, &create).with("size", 71),
            Errno::EINVAL,
        ),
        (
            ioctl(uapi::CREATE_SESSION, &create)
                .with("size", 80)
                .with("tail", "nonzero"),
            Errno::E2BIG,
        ),
        (
            ioctl(uapi::CREATE_SESSION, &create)
                .with("size", 80)
                .with("tail", "fault"),
            Errno::EFAULT,
        ),
        (
            ioctl(uapi::CREATE_SESSION, &create).with("arg", Value::Null),
            Errno::EFAULT,
        ),
        // No descriptor free comes before the name is looked at.
        (
            ioctl(uapi::CREATE_SESSION, &session_arg("")).with("emfile", true),
            Errno::EMFILE,
        ),
        (ioctl(uapi::CREATE_SESSION, &session_arg("")), Errno::EINVAL),
        (
            ioctl(uapi::CREATE_SESSION, &[b'X'; 72]).with("size", 72),
            Errno::EINVAL,
        ),
        (
            ioctl(uapi::RETRIEVE_SESSION, &session_arg("")),
            Errno::ENOENT,
        ),
    ];
    for (req, want) in cases {
        let what = req.to_string();
        let m = call(&d, req, &[]);
        assert_eq!(errno(&m), want, "{what}");
    }
    assert!(agent.client().sessions().unwrap().is_empty());
}

#[test]
fn hostile_uapi_requests_are_refused_and_leave_nothing_behind() {
    let agent = Agent::start();
    let (d, m) = open_device(&agent);
    ok(&m);
    let mut m = call(&d, ioctl(uapi::CREATE_SESSION, &session_arg("h")), &[]);
    ok(&m);
    let s = m.fds.pop().unwrap();
    let base = baseline(&agent, &d);
    let a = memfd();
    let b = memfd();

    let good = ioctl(uapi::CREATE_SESSION, &session_arg("y"));
    let device: Vec<(Value, Vec<BorrowedFd<'_>>, Errno)> = vec![
        (request("ioctl"), vec![], Errno::EINVAL),
        (good.clone().with("cmd", "0xba00"), vec![], Errno::EINVAL),
        (good.clone().with("cmd", 1u64 << 40), vec![], Errno::EINVAL),
        (good.clone().with("cmd", -1), vec![], Errno::EINVAL),
        (good.clone().with("tail", "maybe"), vec![], Errno::EINVAL),
        (good.clone().with("tail", 0), vec![], Errno::EINVAL),
        (good.clone().with("size", -5), vec![], Errno::EINVAL),
        (good.clone().with("size", "72"), vec![], Errno::EINVAL),
        (good.clone().with("arg", "zz"), vec![], Errno::EINVAL),
        (good.clone().with("arg", "abc"), vec![], Errno::EINVAL),
        (good.clone().with("arg", 12), vec![], Errno::EINVAL),
        (good.clone().with("arg", "00"), vec![], Errno::EINVAL),
        (
            good.clone().with("arg", "00".repeat(30_000)),
            vec![],
            Errno::EINVAL,
        ),
        (good.clone().with("emfile", "yes"), vec![], Errno::EINVAL),
        (good.clone(), vec![a.as_fd()], Errno::EINVAL),
        (good.clone(), vec![a.as_fd(), b.as_fd()], Errno::EINVAL),
        (
            request("open_device").with("handlers", 5),
            vec![],
            Errno::EINVAL,
        ),
        (
            request("open_device").with("handlers", "everything"),
            vec![],
            Errno::EINVAL,
        ),
        (request("open_device"), vec![a.as_fd()], Errno::EINVAL),
    ];
    for (req, fds, want) in device {
        let what = req.to_string();
        let what = &what[..what.len().min(120)];
        let m = call(&d, req, &fds);
        assert_eq!(errno(&m), want, "{what}");
        agent.wait_fds(base);
    }

    let preserve = ioctl(uapi::PRESERVE_FD, &fd_arg(1));
    let session: Vec<(Value, Vec<BorrowedFd<'_>>, Errno)> = vec![
        (preserve.clone(), vec![a.as_fd(), b.as_fd()], Errno::EINVAL),
        (
            ioctl(uapi::GET_NAME, &session_arg("")),
            vec![a.as_fd()],
            Errno::EINVAL,
        ),
        (
            preserve.clone().with("size", 8),
            vec![a.as_fd()],
            Errno::EINVAL,
        ),
        (
            preserve.clone().with("tail", "nonzero").with("size", 20),
            vec![a.as_fd()],
            Errno::E2BIG,
        ),
        (
            ioctl(uapi::FINISH, &[8, 0, 0, 0, 0, 0, 0, 0]),
            vec![a.as_fd()],
            Errno::EINVAL,
        ),
        (request("open_device"), vec![], Errno::EOPNOTSUPP),
        (
            request("ioctl").with("cmd", 0xBA43u32),
            vec![],
            Errno::EINVAL,
        ),
    ];
    for (req, fds, want) in session {
        let what = req.to_string();
        let m = call(&s, req, &fds);
        assert_eq!(errno(&m), want, "{what}");
        agent.wait_fds(base);
    }

    // A client that asks and leaves without reading.
    let (gone, m) = open_device(&agent);
    assert_eq!(errno(&m), Errno::EBUSY);
    common::wire::send(gone.as_fd(), &good, &[]).unwrap();
    drop(gone);

    // Still serving, with the same descriptors: one preserve works.
    ok(&call(&s, preserve, &[a.as_fd()]));
    agent.wait_fds(base + 1);
    let mut m = call(&s, ioctl(uapi::GET_NAME, &session_arg("")), &[]);
    ok(&m);
    assert_eq!(
        m.body.get("name").and_then(Value::as_str),
        Some(to_hex(b"h").as_str())
    );
    assert!(m.fds.pop().is_none());
    drop(s);
    agent.wait_fds(base - 1);
}
