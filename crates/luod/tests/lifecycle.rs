//! The agent's own life: in-place upgrades under load, and (with the
//! keeper) crashes at any moment, with nothing lost.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{Agent, Opts, DEFAULT};

fn memfd(text: &str) -> OwnedFd {
    let mut f = std::fs::File::from(luo::memfd_create("lc").unwrap());
    f.write_all(text.as_bytes()).unwrap();
    OwnedFd::from(f)
}

fn read(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

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
    let got = read(it.next().unwrap());
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
    assert_eq!(read(held.retrieve_fd(1).unwrap()), "held bytes");

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
        assert_eq!(
            reply.get("pid").and_then(luo::Value::as_u64),
            Some(u64::from(pid)),
            "upgrade {n} changed the pid"
        );
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
    assert_eq!(read(o.retrieve_fd(1).unwrap()), "open bytes");
    assert_eq!(read(o.retrieve_fd(2).unwrap()), "open later");
    o.finish().unwrap();
    let w = c.retrieve_session("long-waiting").unwrap();
    assert_eq!(read(w.retrieve_fd(1).unwrap()), "waiting bytes");
    w.finish().unwrap();
    assert_eq!(read(held.retrieve_fd(2).unwrap()), "held later");
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
    assert_eq!(read(s.retrieve_fd(1).unwrap()), "kept bytes");
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
