//! The fuzz targets' corpus and regressions (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`), replayed through the same checks the
//! targets make (`luod::fuzzing`), on stable: whatever the fuzzer found
//! stays fixed without a nightly toolchain.
//!
//! `write_seeds` (ignored; `cargo test -p luod --test fuzz_corpus --
//! --ignored write_seeds`) writes the seeds the corpus was grown from into
//! `fuzz/seeds/<target>/`: real messages of every op, replies, refusals,
//! the keeper's messages, the 0.1.0 registry fixture and an upgrade state
//! written by the codec from a live agent.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use luo_proto::ops::*;
use luo_proto::{uapi, Errno, Error};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every file of `dir/<target>/`, by target.
fn files(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for &(name, _) in luod::fuzzing::TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        out.extend(paths.into_iter().map(|p| (name, p)));
    }
    out
}

fn check(name: &str, data: &[u8]) -> bool {
    let (_, f) = luod::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target");
    f(data)
}

fn replay(dir: &Path) -> usize {
    let all = files(dir);
    for (name, path) in &all {
        let data = std::fs::read(path).unwrap();
        let r = std::panic::catch_unwind(|| {
            check(name, &data);
        });
        assert!(r.is_ok(), "{name}: {} fails its check", path.display());
    }
    all.len()
}

#[test]
fn every_corpus_file_passes_its_check() {
    let n = replay(&fuzz_dir().join("corpus"));
    // Every target has a corpus.
    for &(name, _) in luod::fuzzing::TARGETS {
        assert!(
            fuzz_dir().join("corpus").join(name).read_dir().is_ok(),
            "fuzz/corpus/{name} is missing"
        );
    }
    assert!(n >= luod::fuzzing::TARGETS.len(), "{n} corpus files");
}

#[test]
fn every_regression_passes_its_check() {
    let dir = fuzz_dir().join("regressions");
    // Replay reads only the targets' directories: one under another name
    // (a renamed target, a typo) would be skipped, and none at all would
    // pass with nothing replayed.
    for e in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let name = e.unwrap().file_name();
        assert!(
            luod::fuzzing::TARGETS.iter().any(|&(t, _)| *t == *name),
            "fuzz/regressions/{} is no fuzz target's",
            name.to_string_lossy()
        );
    }
    let n = replay(&dir);
    assert!(n > 0, "no regressions replayed from {}", dir.display());
}

#[test]
fn every_seed_passes_its_check() {
    for (name, data, accepted) in seeds(false) {
        assert_eq!(check(name, &data), accepted, "{name}: {data:?}");
    }
}

#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the formats change"]
fn write_seeds() {
    let dir = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&dir);
    for (i, (name, data, accepted)) in seeds(true).into_iter().enumerate() {
        assert_eq!(check(name, &data), accepted, "{name}: {data:?}");
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{i:03}")), data).unwrap();
    }
}

/// `[selector..., bytes...]`.
fn with(sel: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut v = sel.to_vec();
    v.extend_from_slice(bytes);
    v
}

/// A target, an input, and whether it is accepted.
type Seed = (&'static str, Vec<u8>, bool);

fn seeds(with_agent: bool) -> Vec<Seed> {
    let mut out = Vec::new();
    proto_seeds(&mut out);
    ioctl_seeds(&mut out);
    keeper_seeds(&mut out);
    registry_seeds(&mut out);
    notify_seeds(&mut out);
    if with_agent {
        upgrade_seeds(&mut out);
    }
    out
}

fn req<C: Call>(c: &C, n: usize) -> Vec<u8> {
    luo_proto::encode_request(c, n).unwrap()
}

fn ioctl_arg(cmd: u32, token: u64, name: &[u8]) -> Ioctl {
    let size = uapi::struct_size(cmd).unwrap();
    let mut arg = vec![0u8; size];
    arg[..4].copy_from_slice(&(size as u32).to_le_bytes());
    if size == 72 {
        arg[8..8 + name.len()].copy_from_slice(name);
    } else if size == 16 {
        arg[8..16].copy_from_slice(&token.to_le_bytes());
    }
    Ioctl {
        cmd,
        size: Some(size as u32),
        arg: Some(uapi::to_hex(&arg)),
        tail: uapi::Tail::Zero,
        emfile: false,
    }
}

fn proto_seeds(out: &mut Vec<Seed>) {
    let name = || "kv".to_string();
    let agent: Vec<(Vec<u8>, usize)> = vec![
        (req(&CreateSession { name: name() }, 0), 0),
        (req(&PersistSession { name: name() }, 0), 0),
        (
            req(
                &RetrieveSession {
                    name: name(),
                    owner: Some(1000),
                },
                0,
            ),
            0,
        ),
        (
            req(
                &HandoverSession {
                    name: name(),
                    owner: None,
                },
                0,
            ),
            0,
        ),
        (
            req(
                &FinishSession {
                    name: name(),
                    owner: Some(0),
                },
                0,
            ),
            0,
        ),
        (req(&Update {}, 0), 0),
        (req(&GetStatus {}, 0), 0),
        (req(&ListSessions { start: Some(3) }, 0), 0),
        (
            req(
                &Show {
                    name: name(),
                    owner: Some(7),
                    start: Some(1),
                },
                0,
            ),
            0,
        ),
        (
            req(
                &Kexec {
                    cmdline: "console=ttyS0".into(),
                    initrd: true,
                    dry_run: true,
                    force: false,
                    start: None,
                },
                2,
            ),
            2,
        ),
        (
            req(
                &Upgrade {
                    binary: Some("/usr/sbin/luod".into()),
                },
                0,
            ),
            0,
        ),
        (
            req(
                &OpenDevice {
                    handlers: Some(Handlers::All),
                },
                0,
            ),
            0,
        ),
        (req(&ioctl_arg(uapi::CREATE_SESSION, 0, b"kv"), 0), 0),
    ];
    for (b, n) in agent {
        out.push(("proto", with(&[0, n as u8], &b), true));
    }
    let handle: Vec<(Vec<u8>, usize)> = vec![
        (req(&Name {}, 0), 0),
        (req(&Info { start: Some(2) }, 0), 0),
        (
            req(
                &Preserve {
                    tokens: vec![1, 2, u64::MAX],
                },
                3,
            ),
            3,
        ),
        (req(&Retrieve { tokens: vec![1] }, 0), 0),
        (req(&Unpreserve { tokens: vec![2] }, 0), 0),
        (req(&Fetch { tokens: vec![1, 2] }, 0), 0),
        (req(&Handover {}, 0), 0),
        (req(&Finish {}, 0), 0),
        (req(&ioctl_arg(uapi::PRESERVE_FD, 9, b""), 1), 1),
    ];
    for (b, n) in handle {
        out.push(("proto", with(&[1, n as u8], &b), true));
    }
    out.push((
        "proto",
        with(
            &[2, 1],
            br#"{"v":1,"fds":1,"op":"put","names":["luo.f.a.1.7"]}"#,
        ),
        true,
    ));
    let replies: Vec<(u8, Vec<u8>, usize)> = vec![
        (3, luo_proto::encode_reply(&Done {}, 1).unwrap(), 1),
        (
            4,
            luo_proto::encode_reply(&Epoch { epoch: 4 }, 0).unwrap(),
            0,
        ),
        (
            6,
            luo_proto::encode_reply(
                &SessionPage {
                    sessions: vec![],
                    next: Some(5),
                },
                0,
            )
            .unwrap(),
            0,
        ),
        (
            8,
            luo_proto::encode_reply(&SessionName { name: "kv".into() }, 0).unwrap(),
            0,
        ),
        (
            9,
            luo_proto::encode_reply(&Preserved { preserved: 3 }, 0).unwrap(),
            0,
        ),
        (
            10,
            luo_proto::encode_reply(&KexecReply { preflight: None }, 0).unwrap(),
            0,
        ),
        (
            11,
            luo_proto::encode_reply(
                &Upgraded {
                    pid: 42,
                    agent: "luod 0.2.0".into(),
                    previous: "luod 0.1.0".into(),
                },
                0,
            )
            .unwrap(),
            0,
        ),
        (
            12,
            luo_proto::encode_reply(
                &IoctlReply {
                    name: Some(uapi::to_hex(b"kv")),
                },
                0,
            )
            .unwrap(),
            0,
        ),
        (
            9,
            luo_proto::encode_refusal(&Error::new(Errno::EBUSY, "busy").with_token(9)),
            0,
        ),
        (
            3,
            luo_proto::encode_refusal(&Error::new(Errno::ENOENT, "no such session")),
            0,
        ),
    ];
    for (sel, b, n) in replies {
        out.push(("proto", with(&[sel, n as u8], &b), true));
    }
}

fn ioctl_seeds(out: &mut Vec<Seed>) {
    for cmd in [uapi::CREATE_SESSION, uapi::RETRIEVE_SESSION] {
        let b = req(&ioctl_arg(cmd, 0, b"kv"), 0);
        out.push(("ioctl", with(&[1], &b), true));
    }
    for cmd in [
        uapi::PRESERVE_FD,
        uapi::RETRIEVE_FD,
        uapi::FINISH,
        uapi::GET_NAME,
    ] {
        let b = req(&ioctl_arg(cmd, 7, b""), 0);
        out.push(("ioctl", with(&[0], &b), true));
    }
    let mut odd = ioctl_arg(uapi::CREATE_SESSION, 0, b"x");
    odd.size = Some(80);
    odd.tail = uapi::Tail::NonZero;
    out.push(("ioctl", with(&[1], &req(&odd, 0)), false));
    let mut odd = ioctl_arg(uapi::FINISH, 0, b"");
    odd.arg = None;
    odd.emfile = true;
    out.push(("ioctl", with(&[2], &req(&odd, 0)), false));
}

fn keeper_seeds(out: &mut Vec<Seed>) {
    let to: [(&[u8], u8); 6] = [
        (
            br#"{"v":1,"fds":2,"op":"put","names":["luo.s.1-2.1","luo.f.1-2.1.7"]}"#,
            2,
        ),
        (
            br#"{"v":1,"fds":0,"op":"remove","names":["luo.f.1-2.1.7"]}"#,
            0,
        ),
        (br#"{"v":1,"fds":0,"op":"take","start":253}"#, 0),
        (br#"{"v":1,"fds":0,"op":"count"}"#, 0),
        (br#"{"v":1,"fds":0,"op":"bye"}"#, 0),
        (br#"{"v":1,"fds":0,"op":"forget","prefix":"1-2"}"#, 0),
    ];
    for (b, n) in to {
        out.push(("keeper", with(&[1, n], b), true));
    }
    let from: [(&[u8], u8); 3] = [
        (
            br#"{"ok":true,"v":1,"fds":2,"names":["luo.s.1-2.1","luo.f.1-2.1.7"],"more":false}"#,
            2,
        ),
        (br#"{"ok":true,"v":1,"fds":0,"names":[],"more":true}"#, 0),
        (br#"{"ok":true,"v":1,"fds":0}"#, 0),
    ];
    for (b, n) in from {
        out.push(("keeper", with(&[0, n], b), true));
    }
}

fn registry_seeds(out: &mut Vec<Seed>) {
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry-v0.1.0.bin"),
    )
    .unwrap();
    out.push(("registry", with(&[0], &fixture), true));
    let header = luod::registry::HEADER;
    out.push(("registry", with(&[1], &fixture[header..]), true));
}

fn notify_seeds(out: &mut Vec<Seed>) {
    let msgs: [(&[u8], u8, bool); 10] = [
        (b"READY=1\nSTATUS=serving 3 clients\nMAINPID=42\n", 0, true),
        (b"FDSTORE=1\nFDNAME=conn-7\nFDPOLL=0", 2, true),
        (b"FDSTOREREMOVE=1\nFDNAME=conn-7", 0, true),
        (b"BARRIER=1", 1, true),
        (b"RELOADING=1\nMONOTONIC_USEC=123", 0, true),
        (b"STOPPING=1\nERRNO=2", 0, true),
        (b"WATCHDOG=1\nWATCHDOG_USEC=5000000", 0, true),
        (b"WATCHDOG=trigger\nEXTEND_TIMEOUT_USEC=0", 0, true),
        (b"X_FOO=bar\n\nready=1", 0, true),
        (b"READY=1\nMAINPID=abc", 0, false),
    ];
    for (b, n, ok) in msgs {
        out.push(("notify", with(&[n], b), ok));
    }
}

/// A live agent (emulated backend) with sessions in every state, a device
/// holder and pending connections; the state its codec writes.
fn upgrade_seeds(out: &mut Vec<Seed>) {
    let dir = std::env::temp_dir().join(format!("luo-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("luod.sock");
    let mut config = luod::Config::new(&sock);
    config.backend = luod::Backend::Emulated;
    let agent = luod::Agent::bind(config).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut agent = agent;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            agent.poll(Some(Duration::from_millis(10))).unwrap();
        }
        agent
    });
    let c = luo::Client::connect_to(&sock).unwrap();
    let memfd = || luo_sys::memfd_create("seed", 0).unwrap();
    // Not a socketpair: its peer would be in this process, luod's, and
    // luod refuses a socket that leads back to itself.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ev = luo_sys::eventfd(0).unwrap();
    // Carried across an update: incoming, one retrieved.
    let old = c.create_session("old").unwrap();
    old.preserve(1, memfd()).unwrap();
    old.preserve(2, ev.as_fd()).unwrap();
    old.handover().unwrap();
    drop(old);
    let gone = c.create_session("finished").unwrap();
    gone.preserve(5, memfd()).unwrap();
    gone.handover().unwrap();
    drop(gone);
    c.update().unwrap();
    let inc = c.retrieve_session("old").unwrap();
    let _one = inc.retrieve_fd(1).unwrap();
    // Outgoing, open.
    let kv = c.create_session("kv").unwrap();
    kv.preserve(7, memfd()).unwrap();
    kv.preserve(u64::MAX, listener.as_fd()).unwrap();
    // A connection holding the device.
    let dev = luo::Client::connect_to(&sock).unwrap();
    dev.raw_request(&serde_json::json!({"op": "open_device", "handlers": "all"}))
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let agent = server.join().unwrap();
    let state = luod::fuzzing::upgrade_state_of(&agent).unwrap();
    drop((listener, kv, inc, dev, c));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    out.push(("upgrade_state", with(&[0], &state), true));
    out.push((
        "upgrade_state",
        with(&[1], &state[luod::registry::HEADER..]),
        true,
    ));
}
