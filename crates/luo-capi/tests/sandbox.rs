//! The hardened systemd unit (`contrib/systemd/luod.service`): its
//! exposure score, and that luod does its work within the unit's limits as
//! far as they can be reproduced without systemd as PID 1.
//!
//! What is checked here: `systemd-analyze security --offline=yes` scores the
//! unit at most 2.5; luod runs with the unit's capability bounding set
//! (`CAP_SYS_BOOT` only), `NoNewPrivileges` and `UMask=0077` (through
//! `setpriv` and `sh`), serves clients of root and of another uid, carries
//! a restart, re-executes itself (`agent upgrade`) and starts its keeper;
//! and every system call it made meanwhile (traced with `strace -f`) is one
//! the unit's `SystemCallFilter=` allows. What is not: the mount namespace
//! options (`ProtectSystem=`, `PrivateTmp=`, ...), `DeviceAllow=`,
//! `MemoryDenyWriteExecute=` and `RestrictAddressFamilies=`, which need
//! systemd to set up, and `kexec_file_load` itself, which needs the real
//! kernel backend (the VM test).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn unit() -> std::path::PathBuf {
    root().join("contrib/systemd/luod.service")
}

fn systemd_analyze(args: &[&str]) -> String {
    let out = Command::new("systemd-analyze").args(args).output().unwrap_or_else(|e| {
        panic!("running systemd-analyze: {e} (install it: apt-get install systemd; scripts/test does)")
    });
    assert_ok(&out, "systemd-analyze");
    text(&out.stdout)
}

#[test]
fn the_unit_scores_2_5_or_better() {
    let unit = unit();
    let report = systemd_analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= 2.5,
        "the unit scores {score} (at most 2.5 wanted):\n{report}"
    );
}

/// Every syscall group `systemd-analyze syscall-filter` knows, with its
/// members (names and nested `@groups`).
fn groups() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in systemd_analyze(&["syscall-filter"]).lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && t.starts_with('@') {
            current = Some(t.to_string());
            out.insert(t.to_string(), Vec::new());
        } else if let Some(g) = &current {
            out.get_mut(g).unwrap().push(t.to_string());
        }
    }
    out
}

fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>, into: &mut BTreeSet<String>) {
    match groups.get(item) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, into)),
        None if item.starts_with('@') => panic!("unknown syscall group {item}"),
        None => {
            into.insert(item.to_string());
        }
    }
}

/// The system calls the unit's `SystemCallFilter=` lines allow.
fn allowed() -> BTreeSet<String> {
    let groups = groups();
    let unit = std::fs::read_to_string(unit()).unwrap();
    let mut allowed = BTreeSet::new();
    for line in unit.lines() {
        let Some(v) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, v) = match v.strip_prefix('~') {
            Some(v) => (true, v),
            None => (false, v),
        };
        let mut set = BTreeSet::new();
        v.split_whitespace()
            .for_each(|i| expand(i, &groups, &mut set));
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    assert!(allowed.len() > 100, "no allow list in the unit");
    allowed
}

/// The system calls in an `strace -f` log.
fn traced(log: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in log.lines() {
        // "1234  name(args..." or "1234  <... name resumed>..."
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        let name = match rest.strip_prefix("<... ") {
            Some(r) => r.split(' ').next().unwrap_or(""),
            None => rest.split('(').next().unwrap_or(""),
        };
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            out.insert(name.to_string());
        }
    }
    out
}

fn luoctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(profile_dir().join("luoctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("running luoctl")
}

#[test]
fn luod_works_within_the_units_capabilities_and_system_call_filter() {
    let allowed = allowed();
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "strace is missing: install it (apt-get install strace); scripts/test does"
    );
    let dir = fresh_dir();
    let trace = dir.join("trace");
    let trace_arg = trace.to_str().unwrap().to_string();
    let mut wrap = vec!["sh", "-c", r#"umask 077 && exec "$@""#, "sh"];
    let root = unsafe_free_is_root();
    if root {
        // CapabilityBoundingSet=CAP_SYS_BOOT, NoNewPrivileges=yes.
        wrap.extend([
            "setpriv",
            "--bounding-set=-all,+sys_boot",
            "--inh-caps=-all",
            "--no-new-privs",
        ]);
    }
    wrap.extend(["strace", "-f", "-qq", "-o", &trace_arg]);
    let luod = Luod::start_with(&dir, &wrap, &["--keeper", "auto"]);
    let sock = luod.1.clone();

    // Clients of two uids (errors.c forks one of uid 65534 when run as
    // root), a restart, an in-place upgrade.
    let errors = compile(
        &dir,
        &common::root().join("crates/luo-capi/tests/c/errors.c"),
    );
    assert_ok(
        &run(&errors, &[sock.to_str().unwrap()], &sock, false),
        "errors.c",
    );
    let restart = compile(&dir, &common::root().join("examples/c/restart.c"));
    assert_ok(
        &run(&restart, &["kv"], &sock, false),
        "the restart's first run",
    );
    assert_ok(
        &luoctl(&sock, &["agent", "upgrade"]),
        "luoctl agent upgrade",
    );
    assert_ok(
        &run(&restart, &["kv"], &sock, false),
        "the restart's next run",
    );
    let status = luoctl(&sock, &["--json", "status"]);
    assert_ok(&status, "luoctl status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let pid = status["pid"].as_u64().expect("luod's pid");

    // A clean stop, so that strace writes everything out; the keeper
    // outlives luod while it keeps files (the persistent session errors.c
    // leaves), so it is stopped too.
    let children: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(!children.is_empty(), "luod started no keeper");
    assert!(Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "luod did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(&children).status();
    let mut luod = luod;
    while luod.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "strace did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&trace).unwrap();
    // What setpriv and sh did before luod ran is systemd's part.
    let from = log.find("execve(\"").and_then(|_| {
        log.match_indices("execve(\"")
            .find(|(i, _)| {
                log[*i..].starts_with(&format!(
                    "execve(\"{}",
                    profile_dir().join("luod").display()
                ))
            })
            .map(|(i, _)| log[..i].rfind('\n').map_or(0, |n| n + 1))
    });
    let log = &log[from.unwrap_or(0)..];
    let used = traced(log);
    assert!(
        used.contains("kcmp") || used.contains("memfd_create"),
        "the trace looks empty: {used:?}"
    );
    eprintln!("luod made {} kinds of system call: {used:?}", used.len());
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        refused.is_empty(),
        "luod made system calls the unit's SystemCallFilter= refuses: {refused:?}\n(all it made: {used:?})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn unsafe_free_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}
