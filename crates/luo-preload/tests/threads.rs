//! Threads calling ioctls at once get correct answers, and what they leave
//! behind goes away with the process.

use std::time::{Duration, Instant};

mod common;

use common::{agent, compile, fresh_dir, run_preloaded, text};

#[test]
fn concurrent_ioctls_from_threads_and_forked_children_are_answered_right() {
    let dir = fresh_dir();
    let prog = compile(&dir, "threads.c", &["-pthread"]);
    let sock = agent(&dir);
    let out = run_preloaded(&prog, &[], &sock, &[]);
    assert_eq!(
        text(&out.stdout),
        "threads: 8 sessions of 25 files and one shared session of 201 files\nwrong answers: 0\n",
        "stderr:\n{}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "{}", out.status);

    // The process is gone, so are its session fds: every session aborted.
    let luo = luo::Client::connect_to(&sock).unwrap();
    let start = Instant::now();
    loop {
        let left = luo.sessions().unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} sessions are left",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(luo.status().unwrap().files, 0);
}
