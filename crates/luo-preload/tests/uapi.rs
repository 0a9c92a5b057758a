//! The uAPI test program (`tests/uapi/luo_uapi_test.c`), unchanged, under
//! the preload library against luod: stage 1, `update`, stage 2, and the
//! output compared with `tests/uapi/expected.txt`, which a real kernel must
//! produce too.

use std::path::Path;
use std::process::Command;

mod common;

use common::{agent, compile, fresh_dir, run_preloaded, sources, text};

/// Stops stage 1's background process (its pid is in `pidfile`).
struct Background<'a>(&'a Path);

impl Drop for Background<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn two_stages_around_an_update_give_the_expected_output() {
    let dir = fresh_dir();
    let prog = compile(&dir, "luo_uapi_test.c", &[]);
    let sock = agent(&dir);
    let pidfile = dir.join("background.pid");
    let _background = Background(&pidfile);
    let pidfile_str = pidfile.to_str().unwrap();

    let one = run_preloaded(
        &prog,
        &["--stage", "1"],
        &sock,
        &[("LUO_UAPI_TEST_PIDFILE", pidfile_str)],
    );
    let epoch = luo::Client::connect_to(&sock).unwrap().update().unwrap();
    assert_eq!(epoch, 2);
    let two = run_preloaded(&prog, &["--stage", "2"], &sock, &[]);

    let got = text(&one.stdout) + &text(&two.stdout);
    let want = std::fs::read_to_string(sources().join("expected.txt")).unwrap();
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(w, g)| w != g)
            .map(|(w, g)| format!("- {w}\n+ {g}"))
            .collect();
        panic!(
            "the output differs from expected.txt ({} lines expected, {} got):\n{}\nstderr:\n{}{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n"),
            text(&one.stderr),
            text(&two.stderr)
        );
    }
    assert!(one.status.success(), "stage 1 exited with {}", one.status);
    assert!(two.status.success(), "stage 2 exited with {}", two.status);
    assert!(
        one.stderr.is_empty() && two.stderr.is_empty(),
        "the library wrote to stderr without LUO_PRELOAD_DEBUG:\n{}{}",
        text(&one.stderr),
        text(&two.stderr)
    );
}

#[test]
fn without_luod_the_device_does_not_exist() {
    let dir = fresh_dir();
    let prog = compile(&dir, "luo_uapi_test.c", &[]);
    let out = run_preloaded(&prog, &["--stage", "1"], &dir.join("nobody.sock"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "stage 1: FATAL: open /dev/liveupdate (ENOENT)\n"
    );
    // Silent unless asked.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = run_preloaded(
        &prog,
        &["--stage", "1"],
        &dir.join("nobody.sock"),
        &[("LUO_PRELOAD_DEBUG", "1")],
    );
    assert!(
        text(&out.stderr).contains("cannot connect to luod"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_program_builds_static_for_a_real_kernel() {
    let dir = fresh_dir();
    let prog = compile(&dir, "luo_uapi_test.c", &["-static"]);
    if Path::new("/dev/liveupdate").exists() {
        eprintln!("this kernel has /dev/liveupdate: not running the static build here");
        return;
    }
    // No preload reaches a static program: it meets the kernel, which has
    // no LUO here.
    let out = Command::new(&prog).args(["--stage", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "stage 1: FATAL: open /dev/liveupdate (ENOENT)\n"
    );
}
