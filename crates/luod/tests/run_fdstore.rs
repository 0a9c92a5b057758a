//! A C program linked against libsystemd (`tests/run/fdstore.c`) keeps its
//! state in a memfd it stores with `sd_pid_notify_with_fds(...,
//! "FDSTORE=1\nFDNAME=state", ...)` and finds again with
//! `sd_listen_fds_with_names()`. Under `luoctl run` its bytes survive
//! restarts, a SIGKILL of the supervisor and a new `luoctl run`, luod's
//! in-place upgrade, and a SIGKILL of luod (a new luod takes everything
//! back from the keeper). The program checks every byte at each start and
//! counts its starts in the memfd; the report file says what it found.

mod common;

use std::path::Path;
use std::time::Duration;

use common::run::{self, Supervisor};

/// The report lines so far.
fn lines(report: &Path) -> Vec<String> {
    std::fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Checks the report: one `created`, then every start `intact`, counted
/// 1, 2, 3, ... without a gap.
fn assert_report(report: &Path) -> usize {
    let l = lines(report);
    assert_eq!(
        l.first().map(String::as_str),
        Some("start 1: created 4194304 bytes"),
        "{l:#?}"
    );
    for (i, line) in l.iter().enumerate().skip(1) {
        assert_eq!(
            line,
            &format!("start {}: intact 4194304 bytes", i + 1),
            "report:\n{l:#?}"
        );
    }
    l.len()
}

#[test]
fn c_program_state_survives_restarts_and_crashes() {
    if !run::have_libsystemd() {
        return;
    }
    let dir = common::fresh_dir();
    let sock = dir.join("luod.sock");
    let prog = run::build_fdstore(&dir);
    let prog = prog.to_str().unwrap();
    let report = dir.join("report");
    let report_s = report.to_str().unwrap();
    let mut luod = common::start_kept(&dir, &sock);
    let (c, _keeper, _guard) = common::client_and_keeper(&sock);
    drop(c);
    let args = [
        "state",
        "--fdstore-max",
        "4",
        "--ready",
        "notify",
        "--",
        prog,
        report_s,
    ];
    let mut sup = Supervisor::start(&sock, &dir.join("run.log"), &args);
    let luod_log = || std::fs::read_to_string(dir.join("luod.log")).unwrap_or_default();
    let ctx = |sup: &Supervisor| {
        format!(
            "luoctl run:\n{}\nluod:\n{}",
            common::tail(&sup.log()),
            common::tail(&luod_log())
        )
    };
    let wait_start = |n: usize, sup: &Supervisor| {
        run::wait_lines(
            &report,
            n,
            |l| l.starts_with("start "),
            &format!("start {n}"),
            &|| ctx(sup),
        );
        assert_eq!(assert_report(&report), n, "{}", ctx(sup));
    };
    let restart = |sup: &Supervisor| {
        let n = lines(&report).len();
        let out = run::luoctl(&sock, &["restart", "state"]);
        assert!(
            out.status.success(),
            "luoctl restart state failed ({}):\n{}\n{}",
            out.status,
            run::both(&out),
            ctx(sup)
        );
        wait_start(n + 1, sup);
    };
    wait_start(1, &sup);

    // Restarts.
    restart(&sup);
    restart(&sup);
    println!("restarts: {:?}", lines(&report));

    // The supervisor is killed; the program goes on; a new `luoctl run`
    // of the same name takes over, and the next start finds the bytes.
    // (Killed by the test if it fails before the new supervisor stops it.)
    let orphans = run::children(sup.child.id());
    sup.also.extend(orphans);
    sup.kill_supervisor();
    let before = lines(&report).len();
    let mut sup2 = Supervisor::start(&sock, &dir.join("run2.log"), &args);
    std::thread::sleep(Duration::from_millis(500));
    sup2.assert_alive();
    let after = lines(&report).len();
    assert!(
        after == before || after == before + 1,
        "taking over started the program more than once: {:#?}\n{}",
        lines(&report),
        ctx(&sup2)
    );
    assert_report(&report);
    restart(&sup2);
    println!(
        "after the supervisor's SIGKILL and a new luoctl run: {:?}",
        lines(&report)
    );

    // luod upgrades itself in place.
    let up = run::luoctl(&sock, &["agent", "upgrade"]);
    assert!(
        up.status.success(),
        "luoctl agent upgrade: {}",
        run::both(&up)
    );
    restart(&sup2);
    println!("after luoctl agent upgrade: {:?}", lines(&report));

    // luod is killed; a new one takes everything back from the keeper.
    luod.kill().unwrap();
    luod.wait().unwrap();
    let _luod2 = common::start_kept(&dir, &sock);
    restart(&sup2);
    sup2.assert_alive();
    let n = assert_report(&report);
    println!("after luod's SIGKILL: {:?}", lines(&report));
    println!("the C program's 4 MiB memfd was intact at each of its {n} starts");
    drop(sup2);
    drop(sup);
    let _ = std::fs::remove_dir_all(&dir);
}
