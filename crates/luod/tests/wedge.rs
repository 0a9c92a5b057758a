//! Nothing can wedge luod, with real processes: a descriptor that leads
//! back to luod itself (a session handle, an agent connection, the
//! emulated device) cannot be preserved through any API, so no session can
//! keep itself or another alive; and `abort` (the client's and luoctl's)
//! ends a session whoever holds it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use luo_proto::uapi;
use luo_proto::Errno;

mod common;

use common::wire::{call, errno, fd_arg, ioctl, ok, request, session_arg, Value};
use common::{client_and_keeper, memfd, start_kept, Agent};

/// Another uid, for the ownership tests (run as root).
const OTHER: u32 = 65534;
const ROLE_SOCKET: &str = "LUO_WEDGE_SOCKET";

fn leads_back(e: &luo::Error) {
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    assert!(
        e.message.contains("leads back to luod itself"),
        "{}",
        e.message
    );
}

/// The agent's descriptor count once it is idle, with `c` connected.
fn baseline(agent: &Agent, c: &luo::Client) -> usize {
    c.status().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    agent.settled_fds()
}

fn wait_until(f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < common::PATIENCE, "never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn descriptors_that_lead_back_to_luod_are_refused() {
    let agent = Agent::start();
    let c = agent.client();
    let base = baseline(&agent, &c);

    let a = c.create_session("a").unwrap();
    let b = c.create_session("b").unwrap();
    // Its own handle, and two sessions that would hold each other.
    leads_back(&a.preserve(1, a.as_fd()).unwrap_err());
    leads_back(&a.preserve(2, b.as_fd()).unwrap_err());
    leads_back(&b.preserve(2, a.as_fd()).unwrap_err());
    // An agent connection, and one that claimed the emulated device.
    let conn = agent.connect();
    leads_back(&a.preserve(3, &conn).unwrap_err());
    let dev = agent.connect();
    ok(&call(&dev, request("open_device"), &[]));
    leads_back(&a.preserve(4, &dev).unwrap_err());
    // A persistent session, its own handle and another's.
    let p = c.persist_session("p").unwrap();
    leads_back(&p.preserve(1, p.as_fd()).unwrap_err());
    leads_back(&p.preserve(2, a.as_fd()).unwrap_err());
    // A client's socket is not luod's: only sockets whose peer is luod.
    let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
    a.preserve(5, &x).unwrap();
    // The batch refuses at the token and keeps what came before it.
    let e = a
        .preserve_batch(&[(6, memfd("ok").as_fd()), (7, b.as_fd())])
        .unwrap_err();
    leads_back(&e);
    assert_eq!(e.token, Some(7));
    assert_eq!(a.info().unwrap().files.len(), 2);
    assert!(agent
        .log()
        .lines()
        .all(|l| !l.contains("panicked") && !l.contains("ERROR")));

    // The holder lets go: every session but the persistent one aborts.
    drop((a, b, conn, dev, x));
    drop(p);
    wait_until(|| c.sessions().unwrap().len() == 1);
    let names: Vec<Vec<u8>> = c.sessions().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, [b"p".to_vec()]);
    c.abort("p", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
    agent.wait_fds(base);
}

/// Run by `a_holder_that_exits_leaves_nothing` as a separate process: two
/// sessions that try to hold each other, a persistent one that tries to
/// hold itself and its agent connection; then it exits.
#[test]
#[ignore = "started by a_holder_that_exits_leaves_nothing"]
fn role_self_holder() {
    let sock = std::env::var_os(ROLE_SOCKET).expect("run by the wedge tests only");
    let c = luo::Client::connect_to(&sock).unwrap();
    let a = c.create_session("x").unwrap();
    let b = c.create_session("y").unwrap();
    leads_back(&a.preserve(1, b.as_fd()).unwrap_err());
    leads_back(&b.preserve(1, a.as_fd()).unwrap_err());
    let conn = luo_sys::seqpacket_connect(Path::new(&sock)).unwrap();
    leads_back(&a.preserve(2, &conn).unwrap_err());
    let p = c.persist_session("z").unwrap();
    leads_back(&p.preserve(1, p.as_fd()).unwrap_err());
    p.preserve(2, memfd("kept")).unwrap();
    println!("ROLE OK");
    // Exit with everything open.
    std::process::exit(0);
}

#[test]
fn a_holder_that_exits_leaves_nothing() {
    let agent = Agent::start();
    let c = agent.client();
    let base = baseline(&agent, &c);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "role_self_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_SOCKET, &agent.sock)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ROLE OK"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Only the persistent session stays (by design); the others aborted.
    wait_until(|| c.sessions().unwrap().len() == 1);
    assert_eq!(c.sessions().unwrap()[0].name, b"z");
    c.abort("z", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
    agent.wait_fds(base);
}

fn preserve_fd(token: u64) -> Value {
    ioctl(uapi::PRESERVE_FD, &fd_arg(token))
}

fn create_session(dev: &OwnedFd, name: &str) -> OwnedFd {
    let mut m = call(dev, ioctl(uapi::CREATE_SESSION, &session_arg(name)), &[]);
    ok(&m);
    m.fds.pop().unwrap()
}

#[test]
fn the_uapi_refuses_them_too() {
    let agent = Agent::start();
    let c = agent.client();
    let base = baseline(&agent, &c);
    let dev = agent.connect();
    ok(&call(&dev, request("open_device"), &[]));
    let s = create_session(&dev, "u1");
    let t = create_session(&dev, "u2");
    for fd in [&s, &t, &dev] {
        let m = call(&s, preserve_fd(1), &[fd.as_fd()]);
        assert_eq!(errno(&m), Errno::ENOENT, "{}", m.body);
        let msg = m.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains("leads back to luod itself"), "{msg}");
    }
    // The checks before the handler's come first, as on the kernel.
    ok(&call(&s, preserve_fd(1), &[memfd("x").as_fd()]));
    let m = call(&s, preserve_fd(1), &[t.as_fd()]);
    assert_eq!(errno(&m), Errno::EEXIST, "{}", m.body);
    drop((s, t, dev));
    assert!(c.sessions().unwrap().is_empty());
    agent.wait_fds(base);
}

#[test]
fn abort_ends_an_open_session_its_holder_keeps() {
    let agent = Agent::start();
    let c = agent.client();
    let base = baseline(&agent, &c);
    let holder = agent.client();
    let s = holder.create_session("kv").unwrap();
    for t in 1..=3 {
        s.preserve(t, memfd("held")).unwrap();
    }
    c.abort("kv", None).unwrap();
    // Its files are gone now: only the holder's connection and handle.
    agent.wait_fds(base + 2);
    assert_eq!(
        s.preserve(4, memfd("late")).unwrap_err().errno,
        Errno::ESTALE
    );
    assert_eq!(s.info().unwrap_err().errno, Errno::ESTALE);
    assert!(c.sessions().unwrap().is_empty());
    // The name is free again.
    let again = c.create_session("kv").unwrap();
    c.abort("kv", None).unwrap();
    assert_eq!(c.abort("kv", None).unwrap_err().errno, Errno::ENOENT);
    drop(again);
    assert!(agent
        .log()
        .contains("session 'kv' of uid 0 aborted by uid 0"));
    drop((s, holder));
    agent.wait_fds(base);
}

#[test]
fn abort_ends_persistent_and_waiting_sessions() {
    let agent = Agent::start();
    let c = agent.client();
    let base = baseline(&agent, &c);
    let p = c.persist_session("svc").unwrap();
    p.preserve(1, memfd("kept")).unwrap();
    drop(p);
    wait_until(|| c.show("svc", None).unwrap()[0].handles == 0);
    c.abort("svc", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
    // Reopened by name: a new, empty one.
    let p = c.persist_session("svc").unwrap();
    assert!(p.info().unwrap().files.is_empty());
    c.abort("svc", None).unwrap();
    drop(p);

    let s = c.create_session("w").unwrap();
    s.preserve(1, memfd("waiting")).unwrap();
    s.handover().unwrap();
    drop(s);
    wait_until(|| c.sessions().unwrap()[0].state == luo_core::SessionState::Incoming);
    // Retrieved, with its handle open: refused.
    let r = c.retrieve_session("w").unwrap();
    assert_eq!(c.abort("w", None).unwrap_err().errno, Errno::EBUSY);
    drop(r);
    wait_until(|| c.sessions().unwrap()[0].state == luo_core::SessionState::Incoming);
    // Waiting: discarded with its files.
    c.abort("w", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
    assert_eq!(c.retrieve_session("w").unwrap_err().errno, Errno::ENOENT);
    agent.wait_fds(base);
}

/// Run by `abort_by_owner_or_root` as uid [`OTHER`]: a persistent session
/// with one file, left open on exit.
#[test]
#[ignore = "started by abort_by_owner_or_root"]
fn role_other_uid() {
    let sock = std::env::var_os(ROLE_SOCKET).expect("run by the wedge tests only");
    let c = luo::Client::connect_to(sock).unwrap();
    let p = c.persist_session("theirs").unwrap();
    p.preserve(1, memfd("another uid's")).unwrap();
    // Not this uid's to abort.
    assert_eq!(c.abort("mine", Some(0)).unwrap_err().errno, Errno::EPERM);
    println!("ROLE OK");
}

fn luoctl(sock: &Path, args: &[&str], uid: Option<u32>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_luoctl"));
    cmd.arg("--socket").arg(sock).args(args);
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    cmd.output().unwrap()
}

#[test]
fn abort_by_owner_or_root() {
    if luo_sys::geteuid() != 0 {
        eprintln!("skipped: another uid's session needs root");
        return;
    }
    let agent = Agent::start();
    let c = agent.client();
    let mine = c.create_session("mine").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "role_other_uid",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_SOCKET, &agent.sock)
        .uid(OTHER)
        .gid(OTHER)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ROLE OK"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(c.sessions().unwrap().len(), 2);
    // Not mine without --owner; another uid's may not abort root's.
    assert_eq!(c.abort("theirs", None).unwrap_err().errno, Errno::ENOENT);
    let o = luoctl(&agent.sock, &["abort", "mine", "--owner", "0"], Some(OTHER));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only uid 0 or root may abort"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Root aborts another uid's.
    let o = luoctl(
        &agent.sock,
        &["abort", "theirs", "--owner", &OTHER.to_string()],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("session 'theirs' of uid {OTHER} aborted")
    );
    assert!(agent
        .log()
        .contains(&format!("session 'theirs' of uid {OTHER} aborted by uid 0")));
    let names: Vec<Vec<u8>> = c.sessions().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, [b"mine".to_vec()]);
    drop(mine);
}

#[test]
fn an_abort_survives_a_crash_of_luod() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut luod = start_kept(&dir, &sock);
    let (c, _keeper, _guard) = client_and_keeper(&sock);
    let p = c.persist_session("gone").unwrap();
    p.preserve(1, memfd("aborted")).unwrap();
    let q = c.persist_session("kept").unwrap();
    q.preserve(1, memfd("kept")).unwrap();
    drop((p, q));
    c.abort("gone", None).unwrap();
    luod.kill().unwrap();
    luod.wait().unwrap();
    drop(c);
    let _luod = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    let names: Vec<Vec<u8>> = c.sessions().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, [b"kept".to_vec()]);
    c.abort("kept", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
}
