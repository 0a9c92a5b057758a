//! A restart to a version that fails is rolled back: the new version exits
//! 1, or never says `READY=1` within `--ready-timeout`; the old version
//! keeps serving, no request fails, and `luoctl restart` exits non-zero
//! with the reason (the exit status, the last `STATUS=`, the end of the
//! new version's stderr).

mod common;

use std::time::{Duration, Instant};

use common::run::{self, Load, Supervisor};
use common::Agent;

#[test]
fn failed_restarts_roll_back_and_say_why() {
    if !run::have_python() {
        return;
    }
    let agent = Agent::start();
    let dir = common::fresh_dir();
    let report = dir.join("report");
    let report_s = report.to_str().unwrap();
    let port = run::free_port();
    let listen = format!("http=tcp:127.0.0.1:{port}");
    let py = run::python();
    let svc = run::svc_py();
    let sup = Supervisor::start(
        &agent.sock,
        &dir.join("run.log"),
        &[
            "web",
            "--listen",
            &listen,
            "--ready-timeout",
            "3s",
            "--",
            py,
            &svc,
            "serve",
            "v1",
            report_s,
        ],
    );
    let ctx = || format!("luoctl run:\n{}", common::tail(&sup.log()));
    assert_eq!(run::wait_http(port, &ctx), "hello from v1\n");
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(200));

    // A version that exits 1 after a STATUS= and a line on stderr.
    let t = Instant::now();
    let out = run::luoctl(&agent.sock, &["restart", "web", "--", py, &svc, "fail"]);
    let exit_took = t.elapsed();
    let text = run::both(&out);
    println!(
        "restart to a version that exits 1: luoctl restart exited {} after {} ms:\n{text}",
        out.status,
        exit_took.as_millis()
    );
    assert!(!out.status.success(), "a failed restart exited 0:\n{text}");
    for want in ["migrating the schema", "cannot open /nonexistent/db"] {
        assert!(text.contains(want), "no {want:?} in:\n{text}\n{}", ctx());
    }
    assert!(
        text.contains("exited with status 1"),
        "the exit status is not in:\n{text}"
    );
    assert_eq!(
        run::get(port, Duration::from_secs(5)).unwrap(),
        "hello from v1\n"
    );

    // A version that never says READY=1.
    let t = Instant::now();
    let out = run::luoctl(&agent.sock, &["restart", "web", "--", py, &svc, "hang"]);
    let hang_took = t.elapsed();
    let text = run::both(&out);
    println!(
        "restart to a version that never says READY=1 (--ready-timeout 3s): luoctl restart exited {} after {} ms:\n{text}",
        out.status,
        hang_took.as_millis()
    );
    assert!(
        !out.status.success(),
        "a restart that never got ready exited 0:\n{text}"
    );
    for want in ["warming the cache", "still loading"] {
        assert!(text.contains(want), "no {want:?} in:\n{text}\n{}", ctx());
    }
    assert!(
        text.contains("not ready within 3000 ms"),
        "the reason (no READY=1 in time) is not in:\n{text}"
    );
    assert!(
        hang_took >= Duration::from_secs(3) && hang_took < Duration::from_secs(20),
        "the ready timeout was 3 s, the restart took {hang_took:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let tally = load.stop();
    println!(
        "during both failed restarts: {} requests answered, {} failed, longest request {} ms, replies {:?}",
        tally.ok,
        tally.failed,
        tally.max_latency.as_millis(),
        tally.bodies
    );
    assert_eq!(tally.failed, 0, "{:?}\n{}", tally.errors, ctx());
    assert_eq!(tally.bodies, ["hello from v1\n"], "{}", ctx());
    // v1 served throughout: it started once.
    let starts = std::fs::read_to_string(&report).unwrap();
    assert_eq!(starts.lines().count(), 1, "{starts}");

    // The command is still v1's: a plain restart starts v1 again.
    let out = run::luoctl(&agent.sock, &["restart", "web"]);
    assert!(out.status.success(), "{}\n{}", run::both(&out), ctx());
    assert_eq!(
        run::get(port, Duration::from_secs(5)).unwrap(),
        "hello from v1\n"
    );
    let starts = std::fs::read_to_string(&report).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
    drop(sup);
    let _ = std::fs::remove_dir_all(&dir);
}
