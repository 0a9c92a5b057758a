//! The keeper left behind by a crashed luod: it waits for the next luod at
//! the same socket path, and lets go of its files once that path can no
//! longer lead to it. `luoctl status` shows it.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{client_and_keeper, exited, memfd, read_text, start_kept, KeeperGuard, PATIENCE};

/// `luoctl status --json`'s keeper member, from the luod at `sock`.
fn keeper_status(sock: &Path) -> luo::KeeperStatus {
    let c = luo::Client::connect_to(sock).unwrap();
    c.status().unwrap().keeper.expect("status names the keeper")
}

/// Hands over session `name` with two memfds: `text` and 64 KiB of zeros.
fn hand_over(c: &luo::Client, name: &str, text: &str) {
    let s = c.create_session(name).unwrap();
    let big = memfd(&vec![0u8; 65536]);
    s.preserve_batch(&[(1, memfd(text).as_fd()), (2, big.as_fd())])
        .unwrap();
    s.handover().unwrap();
}

fn wait_exit(pid: u32, what: &str, log: &mut std::fs::File) {
    let start = Instant::now();
    while !exited(pid) {
        if start.elapsed() > PATIENCE * 3 {
            let mut text = String::new();
            let _ = log.read_to_string(&mut text);
            panic!("{what} did not exit:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_keeper_whose_directory_is_removed_logs_what_it_drops_and_exits() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut luod = start_kept(&dir, &sock);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    hand_over(&c, "orphan", "eleven byte");
    let k = keeper_status(&sock);
    assert_eq!(
        (k.pid, k.origin.as_str(), k.files, k.sessions),
        (keeper, "started", Some(2), Some(1))
    );
    drop(c);
    luod.kill().unwrap();
    luod.wait().unwrap();
    // The log lives in the directory: keep it readable past the removal.
    let mut log = std::fs::File::open(dir.join("luod.log")).unwrap();
    // As at logout: $XDG_RUNTIME_DIR goes, the keeper's socket with it.
    std::fs::remove_dir_all(&dir).unwrap();
    wait_exit(keeper, "the keeper of a removed directory", &mut log);
    let mut text = String::new();
    log.read_to_string(&mut text).unwrap();
    assert!(
        text.contains(&format!(
            "its directory {} was removed, so no luod can reach {} again: dropping 1 sessions with 2 files (65547 bytes) and exiting",
            dir.display(),
            sock.display().to_string() + ".keeper"
        )),
        "{text}"
    );
    assert!(
        text.contains("dropped session \"orphan\" of uid 0 (incoming): 2 files, 65547 bytes"),
        "{text}"
    );
}

#[test]
fn a_keeper_stays_while_its_directory_does_and_the_next_luod_finds_it() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut luod = start_kept(&dir, &sock);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    hand_over(&c, "kept", "kept bytes");
    drop(c);
    luod.kill().unwrap();
    luod.wait().unwrap();
    // Its socket file removed (a cleaner of stale sockets): it listens there
    // again once it checks, and it checks every second. Wait for that, and
    // for a few more checks that must not let the files go.
    let keeper_sock = dir.join("luod.sock.keeper");
    std::fs::remove_file(&keeper_sock).unwrap();
    let start = Instant::now();
    while !keeper_sock.exists() {
        assert!(
            start.elapsed() < PATIENCE,
            "the keeper did not listen again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(3000));
    assert!(!exited(keeper), "the keeper left while its directory stays");
    let mut luod = start_kept(&dir, &sock);
    let k = keeper_status(&sock);
    assert_eq!(
        (k.pid, k.origin.as_str(), k.files, k.sessions),
        (keeper, "found", Some(2), Some(1))
    );
    // `luoctl status` says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luoctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "crash safety:  keeper (pid {keeper}): found running, left by a previous luod, holds 2 files of 1 sessions"
        )),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_luoctl"))
        .arg("--socket")
        .arg(&sock)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["keeper"],
        serde_json::json!({"pid": keeper, "origin": "found", "entries": 3, "files": 2, "sessions": 1}),
        "{v}"
    );
    let c = luo::Client::connect_to(&sock).unwrap();
    let s = c.retrieve_session("kept").unwrap();
    assert_eq!(read_text(s.retrieve_fd(1).unwrap()), "kept bytes");
    s.finish().unwrap();
    drop(s);
    let k = keeper_status(&sock);
    assert_eq!((k.files, k.sessions), (Some(0), Some(0)));
    drop(c);
    let log_path = dir.join("luod.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("its socket"), "{log}");
    assert!(!log.contains("dropping"), "{log}");
    // A clean stop with nothing to keep lets the keeper go.
    std::process::Command::new("kill")
        .arg(luod.id().to_string())
        .status()
        .unwrap();
    luod.wait().unwrap();
    let mut f = std::fs::File::open(&log_path).unwrap();
    wait_exit(keeper, "the keeper of a stopped luod", &mut f);
    let _g = KeeperGuard(keeper);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_keeper_whose_directory_is_replaced_by_a_new_one_of_the_same_name_exits() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut luod = start_kept(&dir, &sock);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    hand_over(&c, "before logout", "bytes");
    drop(c);
    luod.kill().unwrap();
    luod.wait().unwrap();
    // Log out and in again: the old directory moved away (its socket with
    // it), a new empty one at the same path.
    let old = dir.with_extension("old");
    std::fs::rename(&dir, &old).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let mut log = std::fs::File::open(old.join("luod.log")).unwrap();
    wait_exit(keeper, "the keeper of a replaced directory", &mut log);
    let mut text = String::new();
    log.read_to_string(&mut text).unwrap();
    assert!(
        text.contains(&format!(
            "{} is another directory now (the one it listened in was removed or moved)",
            dir.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "dropped session \"before logout\" of uid 0 (incoming): 2 files, 65541 bytes"
        ),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&old);
}

#[test]
fn a_finished_session_leaves_the_keeper_and_no_other_does() {
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let mut luod = start_kept(&dir, &sock);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    // Twelve sessions: the first one's key is a prefix of the names of
    // the tenth to the twelfth (`KEY` 1 and 10, 11, 12).
    for i in 1..=12 {
        let s = c.create_session(&format!("s{i}")).unwrap();
        s.preserve(7, memfd(&format!("bytes of s{i}")).as_fd())
            .unwrap();
        s.handover().unwrap();
    }
    // Each session's file comes back with its bytes; then it is finished.
    let finish = |c: &luo::Client, i: u32| {
        let s = c.retrieve_session(&format!("s{i}")).unwrap();
        assert_eq!(
            read_text(s.retrieve_fd(7).unwrap()),
            format!("bytes of s{i}")
        );
        s.finish().unwrap();
    };
    for i in [1, 12] {
        finish(&c, i);
    }
    let k = keeper_status(&sock);
    assert_eq!((k.files, k.sessions), (Some(10), Some(10)));
    // A crash: the next luod takes back the ten the keeper still holds.
    drop(c);
    luod.kill().unwrap();
    luod.wait().unwrap();
    let mut luod = start_kept(&dir, &sock);
    let c = luo::Client::connect_to(&sock).unwrap();
    let mut names: Vec<String> = c
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (2..=11).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    for i in 2..=11 {
        finish(&c, i);
    }
    let k = keeper_status(&sock);
    assert_eq!((k.pid, k.files, k.sessions), (keeper, Some(0), Some(0)));
    drop(c);
    luod.kill().unwrap();
    luod.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
