//! The emulated device's exclusivity is per uid, with real uids: uid A
//! holds `/dev/liveupdate` through the preload library; uid B opens its own
//! at the same time; a second open by uid A (from the same process or
//! another) is refused with the kernel's errno, `EBUSY`; once A's process
//! exits, uid A can open it again. Needs root (to run the programs as other
//! uids); skipped otherwise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

mod common;

use common::{agent, compile, fresh_dir, library, text};

const UID_A: u32 = 65534;
const UID_B: u32 = 65533;

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Running {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }
    /// Lets the program go on to its second open; returns the rest of its
    /// output.
    fn go_on(mut self) -> String {
        self.stdin.take().unwrap().write_all(b"\n").unwrap();
        let mut rest = String::new();
        for l in self.out.lines() {
            rest.push_str(&l.unwrap());
            rest.push('\n');
        }
        assert!(self.child.wait().unwrap().success());
        rest
    }
}

fn start(prog: &Path, sock: &Path, uid: u32, session: &str) -> Running {
    let mut child = Command::new(prog)
        .arg(session)
        .uid(uid)
        .gid(uid)
        .env("LD_PRELOAD", library())
        .env("LUOD_SOCKET", sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = BufReader::new(child.stdout.take().unwrap());
    Running { child, stdin, out }
}

/// `prog` as `uid`, run to its end at once (stdin at its end).
fn run_through(prog: &Path, sock: &Path, uid: u32) -> String {
    let out = Command::new(prog)
        .arg("third")
        .uid(uid)
        .gid(uid)
        .env("LD_PRELOAD", library())
        .env("LUOD_SOCKET", sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn each_uid_has_its_own_device_and_a_second_open_is_ebusy() {
    if luo_sys::geteuid() != 0 {
        eprintln!("skipped: running programs as uids {UID_A} and {UID_B} needs root");
        return;
    }
    let dir = fresh_dir();
    let prog = compile(&dir, "two_uids.c", &[]);
    let sock = agent(&dir);

    let mut a = start(&prog, &sock, UID_A, "held-by-a");
    assert_eq!(a.line(), "open: ok");
    assert_eq!(a.line(), "create session: ok");
    // Another uid, while A holds its device: its own device.
    let mut b = start(&prog, &sock, UID_B, "held-by-b");
    assert_eq!(b.line(), "open: ok");
    assert_eq!(b.line(), "create session: ok");
    // Another process of uid A: refused, as the kernel refuses a second open.
    assert_eq!(
        run_through(&prog, &sock, UID_A),
        "open: EBUSY\nsecond open: EBUSY\n"
    );
    // The same process of uid A, still holding it: refused too.
    assert_eq!(a.go_on(), "second open: EBUSY\n");
    assert_eq!(b.go_on(), "second open: EBUSY\n");
    // A's process exited, which closed its device: uid A may open it again.
    assert_eq!(
        run_through(&prog, &sock, UID_A),
        "open: ok\ncreate session: ok\nsecond open: EBUSY\n"
    );
}
