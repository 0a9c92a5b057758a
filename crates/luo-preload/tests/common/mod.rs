//! What the preload tests share: the library's path, C programs compiled
//! with the host's `cc`, and an agent served from a thread of the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The C sources: `tests/uapi` of this crate.
pub fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/uapi")
}

/// `libluo_preload.so`, built by cargo with this test (`target/<profile>`,
/// two levels above the test binary in `deps`).
pub fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let so = profile.join("libluo_preload.so");
    assert!(
        so.exists(),
        "{} is missing: cargo builds it with this test (cargo build -p luo-preload)",
        so.display()
    );
    so
}

/// A new, empty directory for this test.
pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "luo-preload-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `source` (in [`sources`]) with `cc` into `dir`; returns the
/// program's path.
pub fn compile(dir: &Path, source: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(source.trim_end_matches(".c"));
    let r = Command::new("cc")
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(sources().join(source))
        .output()
        .expect("running cc (a C compiler is needed for these tests)");
    assert!(
        r.status.success(),
        "cc {source} failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

/// An agent on `dir/luod.sock`, served from a thread of this process until
/// the test ends. Returns the socket path.
pub fn agent(dir: &Path) -> PathBuf {
    let sock = dir.join("luod.sock");
    let mut agent = luod::Agent::bind(luod::Config::new(&sock)).expect("binding an agent");
    std::thread::spawn(move || agent.serve());
    sock
}

/// Runs `program args` with the library preloaded and `LUOD_SOCKET=sock`.
pub fn run_preloaded(program: &Path, args: &[&str], sock: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .env("LD_PRELOAD", library())
        .env("LUOD_SOCKET", sock)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running the test program")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
