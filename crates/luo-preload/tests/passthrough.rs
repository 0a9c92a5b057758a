//! A program that never touches `/dev/liveupdate` behaves exactly as
//! without the library: the same output (results, errnos, threads,
//! descriptors), the same exit status, and no connection to luod.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

mod common;

use common::{compile, fresh_dir, library, text};

#[test]
fn a_program_that_never_opens_the_device_is_unchanged() {
    let dir = fresh_dir();
    let prog = compile(&dir, "plain.c", &["-D_FORTIFY_SOURCE=2", "-Wno-nonnull"]);
    // luod's socket, as far as the library knows: anything connecting to it
    // would wait in the backlog.
    let sock = dir.join("luod.sock");
    let listener = luo_sys::seqpacket_listen(&sock, 8).unwrap();

    let run = |preload: bool, work: &str| {
        let work = dir.join(work);
        std::fs::create_dir_all(&work).unwrap();
        let mut c = Command::new(&prog);
        c.arg(&work)
            .env("LUOD_SOCKET", &sock)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null());
        if preload {
            c.env("LD_PRELOAD", library());
        }
        c.output().unwrap()
    };
    let without = run(false, "a");
    let with = run(true, "b");
    assert_eq!(
        text(&with.stdout),
        text(&without.stdout),
        "the output differs with the library preloaded"
    );
    assert_eq!(with.status.code(), Some(3));
    assert_eq!(without.status.code(), Some(3));
    assert_eq!(text(&with.stderr), text(&without.stderr));
    // The fortified and 64-bit forms were reached, and the file is real.
    assert!(text(&with.stdout).contains("open a missing file, flags not constant: -1 ENOENT"));
    assert_eq!(
        std::fs::read(dir.join("b/file")).unwrap(),
        b"hello",
        "the preloaded program's file"
    );
    assert_eq!(
        luo_sys::accept(listener.as_fd()).unwrap_err(),
        luo_sys::Errno::EAGAIN,
        "the library connected to luod"
    );
}

#[test]
fn the_library_exports_exactly_the_hooked_functions() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library())
        .output()
        .expect("running nm");
    assert!(out.status.success());
    let mut names: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "T").then(|| name.to_string())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "__open64_2",
            "__open_2",
            "__openat64_2",
            "__openat_2",
            "ioctl",
            "open",
            "open64",
            "openat",
            "openat64"
        ]
    );
}
