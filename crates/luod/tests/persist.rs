//! Persistent sessions with real processes: a supervisor that exits or is
//! SIGKILLed loses nothing; the session lives through an in-place upgrade
//! and, with a keeper, a crash of luod; unpreserve lets go of the file.

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{client_and_keeper, memfd, read_text, start_kept, Agent, Opts, DEFAULT, PATIENCE};
use luo_proto::Errno;

const SOCKET: &str = "LUO_PERSIST_SOCKET";
const READY: &str = "LUO_PERSIST_READY";

/// This test binary running `role`, with the agent's socket and a file to
/// create when it is ready.
fn role(role: &str, sock: &Path, ready: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        role,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SOCKET, sock)
    .env(READY, ready)
    .stdout(Stdio::null());
    c
}

fn wait_for(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(start.elapsed() < PATIENCE, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn role_client() -> (luo::Client, std::path::PathBuf) {
    let sock = std::env::var_os(SOCKET).expect("run by the persist tests only");
    let ready = std::env::var_os(READY).expect("run by the persist tests only");
    (luo::Client::connect_to(sock).unwrap(), ready.into())
}

#[test]
#[ignore = "started by a_supervisor_that_exits_or_is_killed_loses_nothing"]
fn role_supervisor_exits() {
    let (luo, ready) = role_client();
    let s = luo.persist_session("svc").unwrap();
    s.preserve(1, memfd("kept by a supervisor that exited"))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    s.preserve(2, &listener).unwrap();
    std::fs::write(&ready, listener.local_addr().unwrap().port().to_string()).unwrap();
    // Exit: every descriptor of this process closes, the handle too.
}

#[test]
#[ignore = "started by a_supervisor_that_exits_or_is_killed_loses_nothing"]
fn role_supervisor_killed() {
    let (luo, ready) = role_client();
    let s = luo.persist_session("svc").unwrap();
    // The second supervisor reopens what the first left.
    assert_eq!(s.info().unwrap().file_count, 2);
    s.preserve(3, memfd("kept by a supervisor that was killed"))
        .unwrap();
    std::fs::write(&ready, "").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_supervisor_that_exits_or_is_killed_loses_nothing() {
    let luod = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let first = luod.dir.join("first");
    let out = role("role_supervisor_exits", &luod.sock, &first)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port: u16 = std::fs::read_to_string(&first).unwrap().parse().unwrap();

    let second = luod.dir.join("second");
    let mut child = role("role_supervisor_killed", &luod.sock, &second)
        .spawn()
        .unwrap();
    wait_for(&second);
    child.kill().unwrap();
    child.wait().unwrap();

    let c = luod.client();
    let list = c.sessions().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].state, luo_core::SessionState::Open);
    assert!(list[0].persistent);
    assert_eq!(list[0].file_count, 3);
    // luod hears the killed process's hang-up a moment later.
    let start = Instant::now();
    while c.sessions().unwrap()[0].handles != 0 {
        assert!(start.elapsed() < PATIENCE, "the handle never closed");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Another process (this one) takes the files without retrieving them.
    let s = c.persist_session("svc").unwrap();
    let mut fds = s.fetch(&[1, 3, 2]).unwrap();
    let listener = TcpListener::from(fds.pop().unwrap());
    assert_eq!(listener.local_addr().unwrap().port(), port);
    assert_eq!(
        read_text(fds.pop().unwrap()),
        "kept by a supervisor that was killed"
    );
    assert_eq!(
        read_text(fds.pop().unwrap()),
        "kept by a supervisor that exited"
    );
    // The listener still accepts: it never closed.
    let _conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    listener.accept().unwrap();

    // The errnos on the wire.
    let e = s.fetch(&[1, 9]).unwrap_err();
    assert_eq!((e.errno, e.token), (Errno::ENOENT, Some(9)));
    assert_eq!(s.unpreserve(&[9]).unwrap_err().errno, Errno::ENOENT);
    let plain = c.create_session("plain").unwrap();
    assert_eq!(c.persist_session("plain").unwrap_err().errno, Errno::EEXIST);
    plain.preserve(1, memfd("plain")).unwrap();
    assert_eq!(plain.fetch(&[1]).unwrap_err().errno, Errno::EINVAL);
    plain.unpreserve(&[1]).unwrap();
    drop(plain);

    // Handed over, it is an ordinary incoming session.
    s.handover().unwrap();
    let r = c.retrieve_session("svc").unwrap();
    assert!(!r.info().unwrap().persistent);
    assert_eq!(
        read_text(r.retrieve_fd(1).unwrap()),
        "kept by a supervisor that exited"
    );
    r.finish().unwrap();
    drop(r);
    assert!(c.sessions().unwrap().is_empty());
    let log = luod.log();
    assert!(log.contains("persistent session 'svc' of uid"), "{log}");
    assert!(log.contains("it stays open with its"), "{log}");
}

#[test]
fn a_persistent_session_lives_through_an_in_place_upgrade() {
    let luod = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let c = luod.client();
    let s = c.persist_session("svc").unwrap();
    s.preserve(1, memfd("one")).unwrap();
    s.preserve(2, memfd("two")).unwrap();
    drop(s);
    c.upgrade_agent(None)
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", luod.log()));
    let c = luod.client();
    let list = c.sessions().unwrap();
    assert!(list[0].persistent, "{list:?}");
    assert_eq!(list[0].handles, 0);
    let s = c.persist_session("svc").unwrap();
    s.unpreserve(&[1]).unwrap();
    let fds = s.fetch(&[2]).unwrap();
    assert_eq!(read_text(&fds[0]), "two");
    // A second upgrade with a handle open.
    c.upgrade_agent(None).unwrap();
    assert_eq!(s.info().unwrap().file_count, 1);
    assert!(luod.log().contains("upgraded in place from"));
}

#[test]
fn a_persistent_session_survives_a_crash_of_luod_with_its_keeper() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut child = start_kept(&dir, &sock);
    let (c, _keeper, _guard) = client_and_keeper(&sock);
    let s = c.persist_session("svc").unwrap();
    for t in 1..=3u64 {
        s.preserve(t, memfd(&format!("file {t}"))).unwrap();
    }
    drop(s);
    // An ordinary open session is dropped by a restart, as before.
    let plain = c.create_session("plain").unwrap();
    plain.preserve(1, memfd("plain")).unwrap();

    child.kill().unwrap();
    child.wait().unwrap();
    drop((plain, c));
    let mut child = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    let list = c.sessions().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].persistent && list[0].state == luo_core::SessionState::Open);
    let s = c.persist_session("svc").unwrap();
    for (t, fd) in (1..=3u64).zip(s.fetch(&[1, 2, 3]).unwrap()) {
        assert_eq!(read_text(fd), format!("file {t}"));
    }
    // One file leaves, one comes: the store follows, across another crash.
    s.unpreserve(&[2]).unwrap();
    s.preserve(4, memfd("file 4")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop((s, c));
    let mut child = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    let s = c.persist_session("svc").unwrap();
    let info = s.info().unwrap();
    let tokens: Vec<u64> = info.files.iter().map(|f| f.token).collect();
    assert_eq!(tokens, [1, 3, 4]);
    assert_eq!(read_text(&s.fetch(&[4]).unwrap()[0]), "file 4");
    assert_eq!(c.status().unwrap().files, 3);
    let log = std::fs::read_to_string(dir.join("luod.log")).unwrap();
    assert!(log.contains("(1 persistent, still open)"), "{log}");
    // Ending it: hand it over and finish it by name.
    s.handover().unwrap();
    drop(s);
    c.finish("svc", None).unwrap();
    assert!(c.sessions().unwrap().is_empty());
    drop(c);
    common::terminate(child.id());
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unpreserve_closes_the_custody_descriptor() {
    let luod = Agent::start();
    let c = luod.client();
    let s = c.persist_session("svc").unwrap();
    let baseline = luod.settled_fds();
    let batch: Vec<_> = (0..10).map(|t| memfd(&t.to_string())).collect();
    let list: Vec<_> = (0..).zip(batch.iter().map(|f| f.as_fd())).collect();
    s.preserve_batch(&list).unwrap();
    drop(list);
    drop(batch);
    assert_eq!(luod.settled_fds(), baseline + 10);
    s.unpreserve(&[0, 1, 2, 3]).unwrap();
    assert_eq!(luod.settled_fds(), baseline + 6);
    // Fetched copies are the caller's: luod keeps one per file.
    let fds = s.fetch(&[4, 5]).unwrap();
    assert_eq!(luod.settled_fds(), baseline + 6);
    drop(fds);
    s.unpreserve(&[4, 5, 6, 7, 8, 9]).unwrap();
    assert_eq!(luod.settled_fds(), baseline);
    assert_eq!(c.status().unwrap().files, 0);
}
