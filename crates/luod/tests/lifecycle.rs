//! The agent's own life: in-place upgrades under load, and (with the
//! keeper) crashes at any moment, with nothing lost.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{
    client_and_keeper, exited, keeper_pid, memfd, read_text, settled, start_kept, Agent,
    KeeperGuard, Opts, Proc, DEFAULT,
};

/// One client's round: create, preserve a memfd (with a text naming the
/// round), an eventfd and a pipe end, hand over, retrieve, check the
/// text, finish. Returns the errno of a failed step, if any.
fn round(c: &luo::Client, name: &str) -> Result<(), luo::Error> {
    let s = c.create_session(name)?;
    let text = format!("contents of {name}");
    let (r, _w) = luo_sys::pipe().unwrap();
    s.preserve_batch(&[
        (1, memfd(&text).as_fd()),
        (2, luo_sys::eventfd(0).unwrap().as_fd()),
        (3, r.as_fd()),
    ])?;
    s.handover()?;
    drop(s);
    let s = c.retrieve_session(name)?;
    let fds = s.retrieve_batch(&[1, 2, 3])?;
    let mut it = fds.into_iter();
    let got = read_text(it.next().unwrap());
    assert_eq!(got, text, "{name}: the memfd's bytes changed");
    s.finish()?;
    Ok(())
}

#[test]
fn twenty_upgrades_under_load_lose_nothing() {
    let luod = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let pid = luod.pid();
    let baseline = luod.settled_fds();
    let c = luod.client();
    // Sessions that live through every upgrade: one open, one waiting, one
    // retrieved and not finished.
    let open = c.create_session("long-open").unwrap();
    open.preserve(1, memfd("open bytes")).unwrap();
    let w = c.create_session("long-waiting").unwrap();
    w.preserve(1, memfd("waiting bytes")).unwrap();
    w.handover().unwrap();
    drop(w);
    let h = c.create_session("long-held").unwrap();
    h.preserve(1, memfd("held bytes")).unwrap();
    h.preserve(2, memfd("held later")).unwrap();
    h.handover().unwrap();
    drop(h);
    let held = c.retrieve_session("long-held").unwrap();
    assert_eq!(read_text(held.retrieve_fd(1).unwrap()), "held bytes");

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for t in 0..3 {
        let sock = luod.sock.clone();
        let stop = stop.clone();
        let rounds = rounds.clone();
        workers.push(std::thread::spawn(move || {
            // A client connection that lives through the upgrades too.
            let c = luo::Client::connect_to(&sock).unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{t}-{i}");
                if let Err(e) = round(&c, &name) {
                    panic!("{name}: {e} during an upgrade");
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let upgrader = luod.client();
    for n in 0..20 {
        std::thread::sleep(Duration::from_millis(30));
        let reply = upgrader
            .upgrade_agent(None)
            .unwrap_or_else(|e| panic!("upgrade {n}: {e}\n{}", luod.log()));
        assert_eq!(reply.pid, pid, "upgrade {n} changed the pid");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        rounds.load(Ordering::Relaxed) > 20,
        "the workload barely ran"
    );
    let log = luod.log();
    assert_eq!(log.matches("upgraded in place from").count(), 20, "{log}");
    assert_eq!(c.status().unwrap().pid, pid);

    // The long-lived sessions are as they were.
    open.preserve(2, memfd("open later")).unwrap();
    open.handover().unwrap();
    drop(open);
    let o = c.retrieve_session("long-open").unwrap();
    assert_eq!(read_text(o.retrieve_fd(1).unwrap()), "open bytes");
    assert_eq!(read_text(o.retrieve_fd(2).unwrap()), "open later");
    o.finish().unwrap();
    let w = c.retrieve_session("long-waiting").unwrap();
    assert_eq!(read_text(w.retrieve_fd(1).unwrap()), "waiting bytes");
    w.finish().unwrap();
    assert_eq!(read_text(held.retrieve_fd(2).unwrap()), "held later");
    held.finish().unwrap();
    drop((o, w, held, c, upgrader));
    // Every session is gone and no descriptor leaked across 20 execs.
    assert_eq!(luod.settled_fds(), baseline, "{}", luod.fd_listing());
}

#[test]
fn a_binary_that_is_not_luod_is_refused_and_the_agent_carries_on() {
    let luod = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let c = luod.client();
    let s = c.create_session("kept").unwrap();
    s.preserve(1, memfd("kept bytes")).unwrap();
    let dir = &luod.dir;
    // Not a luod at all.
    let e = c
        .upgrade_agent(Some(std::path::Path::new("/bin/true")))
        .unwrap_err();
    assert_eq!(e.errno, luo::Errno::ENOEXEC, "{e}");
    // A "luod" that reads only another state version.
    let fake = dir.join("luod-v99");
    std::fs::write(&fake, "#!/bin/sh\necho luod-upgrade-state 99\n").unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .unwrap();
    let e = c.upgrade_agent(Some(&fake)).unwrap_err();
    assert_eq!(e.errno, luo::Errno::EOPNOTSUPP, "{e}");
    assert!(e.message.contains("versions [99]"), "{e}");
    // Nothing exists there.
    let e = c.upgrade_agent(Some(&dir.join("missing"))).unwrap_err();
    assert_eq!(e.errno, luo::Errno::ENOENT, "{e}");
    // The same agent, the same session.
    s.handover().unwrap();
    let s = c.retrieve_session("kept").unwrap();
    assert_eq!(read_text(s.retrieve_fd(1).unwrap()), "kept bytes");
    s.finish().unwrap();
    assert!(!luod.log().contains("upgraded in place"));
}

#[test]
fn a_corrupt_upgrade_state_is_refused_before_anything_is_taken_over() {
    let dir = common::fresh_dir();
    let state = dir.join("state");
    // Not an upgrade state: refused, with a clear message and exit 1.
    std::fs::write(&state, b"luod-upgXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX").unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 7<'{}'; exec \"$0\" --socket '{}' --upgrade-state 7",
            state.display(),
            dir.join("s.sock").display()
        ))
        .arg(common::LUOD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing the upgrade"), "{err}");
    // A good envelope naming a descriptor that is another file.
    let payload = br#"{"fds":[[8,1,1]]}"#;
    std::fs::write(&state, luod::registry::seal(*b"luod-upg", 1, payload)).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 7<'{}'; exec 8</dev/null; exec \"$0\" --upgrade-state 7",
            state.display()
        ))
        .arg(common::LUOD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing the upgrade"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- crashes

/// A small deterministic generator (the seed is printed on failure).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn fifty_crashes_under_load_lose_no_handed_over_file() {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut child = start_kept(&dir, &sock);
    let (first, keeper, _guard) = client_and_keeper(&sock);
    drop(first);
    let agent_fds = settled(child.id());
    let keeper_fds = settled(keeper);

    // What the workload knows for sure: handed over (and not finished), or
    // finished. Requests whose answer was lost in a crash are in neither.
    let handed: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let finished: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (handed, finished, stop, sock) =
            (handed.clone(), finished.clone(), stop.clone(), sock.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(c) = luo::Client::connect_to(&sock) else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    i += 1;
                    let name = format!("s{i}");
                    let text = format!("bytes of {name}");
                    let made = (|| {
                        let s = c.create_session(&name)?;
                        s.preserve(1, memfd(&text))?;
                        s.preserve(2, luo_sys::eventfd(0).unwrap())?;
                        s.handover()
                    })();
                    match made {
                        Ok(()) => {
                            handed.lock().unwrap().insert(name, text);
                        }
                        Err(_) => break,
                    }
                    if i % 3 == 0 {
                        let old = handed.lock().unwrap().keys().next().cloned();
                        if let Some(old) = old {
                            let want = handed.lock().unwrap()[&old].clone();
                            let done = (|| {
                                let s = c.retrieve_session(&old)?;
                                let got = read_text(s.retrieve_fd(1)?);
                                assert_eq!(got, want, "{old}: its bytes changed");
                                s.finish()
                            })();
                            handed.lock().unwrap().remove(&old);
                            match done {
                                Ok(()) => {
                                    finished.lock().unwrap().insert(old);
                                }
                                // Unknown outcome: checked by nobody.
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    for n in 0..50 {
        std::thread::sleep(Duration::from_millis(5 + rng.next(40)));
        child.kill().unwrap();
        child.wait().unwrap();
        child = start_kept(&dir, &sock);
        assert!(!exited(keeper), "crash {n} (seed {seed}): the keeper died");
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    let log = std::fs::read_to_string(dir.join("luod.log")).unwrap_or_default();
    assert_eq!(
        log.matches("of a previous agent answered").count(),
        50,
        "seed {seed}\n{log}"
    );

    // Every session known handed over is there, bytes intact; every one
    // known finished is gone.
    let c = luo::Client::connect_to(&sock).unwrap();
    assert_eq!(keeper_pid(&c), keeper, "seed {seed}");
    let handed = handed.lock().unwrap().clone();
    assert!(handed.len() > 10, "seed {seed}: the workload barely ran");
    for (name, text) in &handed {
        let s = c
            .retrieve_session(name)
            .unwrap_or_else(|e| panic!("seed {seed}: {name} was lost: {e}\n{log}"));
        assert_eq!(
            &read_text(s.retrieve_fd(1).unwrap()),
            text,
            "seed {seed}: {name}"
        );
        s.retrieve_fd(2).unwrap();
        s.finish().unwrap();
    }
    for name in finished.lock().unwrap().iter() {
        let e = c.retrieve_session(name).unwrap_err();
        assert_eq!(
            e.errno,
            luo::Errno::ENOENT,
            "seed {seed}: {name} came back after finish"
        );
    }
    // Sessions whose last request was cut off by a crash: clear them.
    for s in c.sessions().unwrap() {
        if s.state == luo::SessionState::Incoming {
            c.finish(&s.name_lossy(), None).unwrap();
        }
    }
    assert_eq!(c.status().unwrap().files, 0, "seed {seed}");
    drop(c);
    // Nothing leaked in the agent or in the keeper.
    assert_eq!(
        settled(child.id()),
        agent_fds,
        "seed {seed}: the agent leaked descriptors"
    );
    assert_eq!(
        settled(keeper),
        keeper_fds,
        "seed {seed}: the keeper leaked descriptors"
    );
    // Stopped with nothing to keep, the agent lets the keeper go.
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{keeper}/fd")).exists() {
        assert!(
            start.elapsed() < common::PATIENCE,
            "the keeper did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- systemd

/// Reads notify datagrams until `until` holds for the store built so far.
fn notify_until(
    sock: &OwnedFd,
    store: &mut Vec<(String, OwnedFd)>,
    log: &mut Vec<String>,
    until: impl Fn(&[(String, OwnedFd)], &[String]) -> bool,
) {
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    while !until(store, log) {
        assert!(
            start.elapsed() < common::PATIENCE,
            "notify messages so far: {log:#?}"
        );
        let r = match luo_sys::recv_with_fds(sock.as_fd(), &mut buf, 8) {
            Ok(r) => r,
            Err(luo::Errno::EAGAIN) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("reading the notify socket: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..r.len]).into_owned();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .map(str::to_string);
        if text.contains("FDSTORE=1") {
            let mut fds = r.fds;
            assert_eq!(fds.len(), 1, "{text}: one descriptor per name");
            store.push((name.clone().unwrap(), fds.pop().unwrap()));
        } else if text.contains("FDSTOREREMOVE=1") {
            let n = name.clone().unwrap();
            store.retain(|(m, _)| *m != n);
        }
        log.push(text);
    }
}

#[test]
fn under_systemd_the_fd_store_holds_every_file_and_gives_them_back() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let notify_path = dir.join("notify.sock");
    let notify = luo_sys::dgram_bind(&notify_path).unwrap();
    luo_sys::set_nonblocking(notify.as_fd(), true).unwrap();
    let spawn = |script: &str, keep: &[&OwnedFd]| {
        for f in keep {
            luo_sys::set_cloexec(f.as_fd(), false).unwrap();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("luod.log"))
            .unwrap();
        let child = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(common::LUOD)
            .arg("--socket")
            .arg(&sock)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("LUOD_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map(Proc)
            .unwrap();
        for f in keep {
            luo_sys::set_cloexec(f.as_fd(), true).unwrap();
        }
        child
    };
    let mut store: Vec<(String, OwnedFd)> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    let mut child = spawn("exec \"$0\" \"$@\"", &[]);
    notify_until(&notify, &mut store, &mut log, |_, l| {
        l.iter().any(|m| m.contains("READY=1"))
    });
    let ready = log.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    assert!(ready.contains("STATUS="), "{ready}");

    let c = luo::Client::connect_to(&sock).unwrap();
    assert_eq!(c.status().unwrap().store, "systemd fd store");
    let data = memfd("kept by systemd");
    let st = luo_sys::fstat(data.as_fd()).unwrap();
    let s = c.create_session("sd").unwrap();
    s.preserve(1, &data).unwrap();
    // Open: nothing is stored (a restarted luod drops an open session).
    // luod sends what it stores before it answers, so anything would be
    // on the socket by now.
    let mut buf = vec![0u8; 4096];
    while let Ok(r) = luo_sys::recv_with_fds(notify.as_fd(), &mut buf, 8) {
        let text = String::from_utf8_lossy(&buf[..r.len]);
        assert!(
            !text.contains("FDSTORE"),
            "an open session was stored: {text}"
        );
    }
    // Handed over: the record and the file, before the answer.
    s.handover().unwrap();
    drop(s);
    notify_until(&notify, &mut store, &mut log, |s, _| s.len() == 2);
    let file = store
        .iter()
        .find(|(n, _)| n.starts_with("luo.f."))
        .expect("the file's entry");
    let got = luo_sys::fstat(file.1.as_fd()).unwrap();
    assert_eq!(
        (got.dev, got.ino),
        (st.dev, st.ino),
        "systemd got another file"
    );
    assert!(file.0.ends_with(".1"), "{}: token 1", file.0);
    let names: Vec<&String> = store.iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().all(|n| n.len() <= 255 && !n.contains(':')),
        "{names:?}"
    );

    // luod dies; systemd starts it again with the store's descriptors.
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();
    let n = store.len();
    let names = store
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(":");
    let mut script = String::new();
    for (i, (_, f)) in store.iter().enumerate() {
        script += &format!("exec {}<&{}; ", 100 + i, std::os::fd::AsRawFd::as_raw_fd(f));
    }
    for i in 0..n {
        script += &format!("exec {}<&{}; exec {}<&-; ", 3 + i, 100 + i, 100 + i);
    }
    script +=
        &format!("export LISTEN_PID=$$ LISTEN_FDS={n} LISTEN_FDNAMES={names}; exec \"$0\" \"$@\"");
    let keep: Vec<&OwnedFd> = store.iter().map(|(_, f)| f).collect();
    let mut child = spawn(&script, &keep);
    let before = log.len();
    notify_until(&notify, &mut store, &mut log, |_, l| {
        l[before..].iter().any(|m| m.contains("READY=1"))
    });
    let c = luo::Client::connect_to(&sock).unwrap();
    let s = c.retrieve_session("sd").unwrap();
    assert_eq!(read_text(s.retrieve_fd(1).unwrap()), "kept by systemd");
    // The new agent took the entries over as they were: nothing was stored
    // twice (at 16,000 files that would pass the descriptor limit).
    let old: Vec<String> = names.split(':').map(str::to_string).collect();
    let mut now: Vec<String> = store.iter().map(|(n, _)| n.clone()).collect();
    now.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(now, want, "{log:#?}");
    assert!(
        !log[before..].iter().any(|m| m.contains("FDSTORE=1")),
        "{log:#?}"
    );
    // Finished: nothing is left in the store.
    s.finish().unwrap();
    drop(s);
    notify_until(&notify, &mut store, &mut log, |s, _| s.is_empty());
    drop(c);
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    notify_until(&notify, &mut store, &mut log, |_, l| {
        l.iter().any(|m| m.contains("STOPPING=1"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn under_socket_activation_luod_serves_the_socket_systemd_passed() {
    let dir = common::fresh_dir();
    let sock = dir.join("activated.sock");
    let listener = luo_sys::seqpacket_listen(&sock, 16).unwrap();
    luo_sys::set_cloexec(listener.as_fd(), false).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let log = std::fs::File::create(dir.join("luod.log")).unwrap();
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<&{raw}; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=luod.socket; exec \"$0\" \"$@\""
        ))
        .arg(common::LUOD)
        .args(["--keeper", "off", "--socket"])
        .arg(&sock)
        .env("LUOD_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stderr(log)
        .spawn()
        .map(Proc)
        .unwrap();
    drop(listener);
    // Connections made before luod is ready wait in the socket's backlog.
    let c = luo::Client::connect_to(&sock).unwrap();
    assert_eq!(c.status().unwrap().pid, child.id());
    let text = std::fs::read_to_string(dir.join("luod.log")).unwrap();
    assert!(text.contains("socket activation"), "{text}");
    drop(c);
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    // systemd owns the socket file: luod leaves it.
    assert!(sock.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_keeper_that_dies_is_replaced_and_given_every_file_again() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut child = start_kept(&dir, &sock);
    let (c, first, _first_guard) = client_and_keeper(&sock);
    let a = c.create_session("before").unwrap();
    a.preserve(1, memfd("made before the keeper died")).unwrap();
    a.handover().unwrap();
    drop(a);
    // SIGTERM: luod blocks it for its signalfd, and the keeper, started by
    // luod, must not inherit that.
    std::process::Command::new("kill")
        .args(["-TERM", &first.to_string()])
        .status()
        .unwrap();
    while !exited(first) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next change finds the keeper gone, starts another, and gives it
    // everything: the old session's file too.
    let b = c.create_session("after").unwrap();
    b.preserve(1, memfd("made after")).unwrap();
    b.handover().unwrap();
    drop(b);
    let second = keeper_pid(&c);
    let _second_guard = KeeperGuard(second);
    assert_ne!(second, first);
    // luod reaped the dead keeper.
    assert!(!std::path::Path::new(&format!("/proc/{first}")).exists());
    let log = std::fs::read_to_string(dir.join("luod.log")).unwrap();
    assert!(log.contains("the keeper died; started a new one"), "{log}");
    drop(c);
    // luod crashes: the new keeper hands both sessions back.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    for (name, text) in [
        ("before", "made before the keeper died"),
        ("after", "made after"),
    ] {
        let s = c.retrieve_session(name).unwrap();
        assert_eq!(read_text(s.retrieve_fd(1).unwrap()), text);
        s.finish().unwrap();
    }
    drop(c);
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while !exited(second) {
        assert!(
            start.elapsed() < common::PATIENCE,
            "the keeper did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_crash_with_12000_files_loses_none() {
    // More than half the descriptor limit (20,000 here): the keeper must
    // never hold two copies of each.
    let _ = luo_sys::raise_nofile_limit();
    let n: u64 = 12_000;
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut child = start_kept(&dir, &sock);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    let s = c.create_session("many").unwrap();
    for start in (0..n).step_by(250) {
        let fds: Vec<OwnedFd> = (start..start + 250)
            .map(|t| memfd(&t.to_string()))
            .collect();
        let list: Vec<(u64, std::os::fd::BorrowedFd<'_>)> =
            (start..).zip(fds.iter().map(|f| f.as_fd())).collect();
        s.preserve_batch(&list).unwrap();
    }
    s.handover().unwrap();
    drop((s, c));
    for round in 0..2 {
        child.kill().unwrap();
        child.wait().unwrap();
        child = start_kept(&dir, &sock);
        let c = luo::Client::connect_to(&sock).unwrap();
        let st = c.status().unwrap();
        assert_eq!(st.files, n, "round {round}: files came back");
        assert_eq!(
            keeper_pid(&c),
            keeper,
            "round {round}: the keeper was replaced"
        );
    }
    let c = luo::Client::connect_to(&sock).unwrap();
    let s = c.retrieve_session("many").unwrap();
    for t in [0, 4_999, n - 1] {
        assert_eq!(read_text(s.retrieve_fd(t).unwrap()), t.to_string());
    }
    s.finish().unwrap();
    drop((s, c));
    // The keeper holds nothing more than its own few descriptors.
    assert!(settled(keeper) < 16, "the keeper still holds files");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Closing a session's handle and asking again by name at once works, as
/// the kernel's close is over when close() returns: luod sees the handle's
/// hang-up before it refuses the request (the soak found the race).
#[test]
fn close_then_ask_again_by_name_at_once() {
    let agent = Agent::start();
    let c = agent.client();
    let s = c.create_session("again").unwrap();
    s.preserve(1, common::memfd("kept")).unwrap();
    s.handover().unwrap();
    drop(s);
    for i in 0..300 {
        let s = c
            .retrieve_session("again")
            .unwrap_or_else(|e| panic!("retrieve {i} after a close: {e}"));
        drop(s);
    }
    let s = c.retrieve_session("again").unwrap();
    assert_eq!(common::read_text(s.retrieve_fd(1).unwrap()), "kept");
    s.finish().unwrap();
    drop(s);
    // An open session ends with its last handle: its name is free again.
    for i in 0..300 {
        let s = c
            .create_session("reused")
            .unwrap_or_else(|e| panic!("create {i} after a close: {e}"));
        drop(s);
    }
}

/// A native `preserve` of a file whose session was closed just before
/// succeeds, as after the kernel's synchronous close, even when luod reads
/// the preserve before the hang-up: here the other handle's connection is
/// reported by epoll for a 253-file preserve luod is still working on when
/// the first handle closes, and the pipelined preserve stands before the
/// hang-up. (The `PRESERVE_FD` ioctl's twin is in uapi.rs.) When exactly
/// the close lands is up to the scheduler, so the exchange is repeated.
#[test]
fn a_closed_sessions_file_can_be_preserved_natively_in_another_at_once() {
    use common::wire::{ok, recv, request, send, With};
    let agent = Agent::start();
    let c = agent.client();
    let f = memfd("busy");
    let busy: Vec<OwnedFd> = (0..luo_proto::MAX_FDS).map(|_| memfd("b")).collect();
    let busy_fds: Vec<_> = busy.iter().map(|b| b.as_fd()).collect();
    let tokens: Vec<u64> = (100..100 + busy.len() as u64).collect();
    for round in 0..40u64 {
        let a = c.create_session("closing").unwrap();
        a.preserve(1, &f).unwrap();
        let b = c.create_session("next").unwrap();
        let work = request("preserve").with("tokens", tokens.clone());
        send(b.as_fd(), &work, &busy_fds).unwrap();
        std::thread::sleep(Duration::from_micros(50 + 10 * round));
        drop(a);
        send(
            b.as_fd(),
            &request("preserve").with("tokens", vec![1]),
            &[f.as_fd()],
        )
        .unwrap();
        let b_fd = b.as_fd().try_clone_to_owned().unwrap();
        ok(&recv(&b_fd));
        let m = recv(&b_fd);
        assert!(m.body["ok"] == true, "round {round}: {}", m.body);
        let sessions = c.sessions().unwrap();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].file_count, busy.len() + 1);
        // Closing b aborts it; the next round's create_session sees that.
        drop((b, b_fd));
    }
}

/// A preserved eventfd (managed by its kernel id where the kernel shows
/// one) stays managed through an in-place upgrade and a restart from the
/// keeper: each time, a copy of it is refused with `EBUSY` in another
/// session while another eventfd is not; its counter comes back; finished,
/// it can be preserved again.
#[test]
fn a_preserved_eventfd_stays_managed_across_an_upgrade_and_a_restart() {
    use std::io::Read;
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut child = start_kept(&dir, &sock);
    let (c, _keeper, _guard) = client_and_keeper(&sock);
    let e = luo_sys::eventfd(5).unwrap();
    let s = c.create_session("kept").unwrap();
    s.preserve_batch(&[(1, e.as_fd()), (2, luo_sys::eventfd(6).unwrap().as_fd())])
        .unwrap();
    s.handover().unwrap();
    drop(s);
    let busy = |c: &luo::Client, when: &str| {
        let o = c.create_session(&format!("other {when}")).unwrap();
        let err = o.preserve(1, e.try_clone().unwrap()).unwrap_err();
        assert_eq!(err.errno, luo_proto::Errno::EBUSY, "{when}: {err}");
        assert!(err.to_string().contains("'kept'"), "{when}: {err}");
        o.preserve(2, luo_sys::eventfd(0).unwrap())
            .unwrap_or_else(|err| panic!("{when}: another eventfd: {err}"));
    };
    busy(&c, "at first");
    c.upgrade_agent(None).unwrap();
    let c = luo::Client::connect_to(&sock).unwrap();
    busy(&c, "after an in-place upgrade");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(c);
    let mut child = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    busy(&c, "after a restart");
    let s = c.retrieve_session("kept").unwrap();
    let fds = s.retrieve_batch(&[1, 2]).unwrap();
    for (fd, want) in fds.into_iter().zip([5u64, 6]) {
        let mut v = [0u8; 8];
        std::fs::File::from(fd).read_exact(&mut v).unwrap();
        assert_eq!(u64::from_ne_bytes(v), want, "the eventfd's counter");
    }
    s.finish().unwrap();
    let again = c.create_session("again").unwrap();
    again.preserve(1, e.try_clone().unwrap()).unwrap();
    drop((again, s, c));
    common::terminate(child.id());
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
