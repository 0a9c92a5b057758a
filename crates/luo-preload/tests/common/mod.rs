//! What the preload tests share: the library's path, C programs compiled
//! with the host's `cc`, and an agent served from a thread of the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The C sources: `tests/uapi` of this crate.
pub fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/uapi")
}

/// `libluo_preload.so` of this test's profile (`target/<profile>`, two
/// levels above the test binary in `deps`), brought up to date first.
///
/// `cargo test` builds test binaries but not the cdylib they load, so the
/// first call runs `cargo build -p luo-preload --lib` for the same profile
/// and target directory: it builds the library when it is missing or
/// stale, and is a no-op otherwise. Under `cargo nextest run`, where every
/// test is a process, concurrent builds wait for cargo's own lock.
pub fn library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_library).clone()
}

fn build_library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let so = profile_dir.join("libluo_preload.so");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("no profile in {}", profile_dir.display()),
    };
    // target/<profile>, or target/<triple>/<profile> with --target: cargo
    // marks the target directory itself (CACHEDIR.TAG when cargo made it,
    // .rustc_info.json always).
    let above = profile_dir.parent().expect("the target directory");
    let (target_dir, triple) =
        if above.join("CACHEDIR.TAG").exists() || above.join(".rustc_info.json").exists() {
            (above, None)
        } else {
            let triple = above.file_name().and_then(|n| n.to_str());
            (above.parent().expect("the target directory"), triple)
        };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "luo-preload",
        "--lib",
        "--profile",
        profile,
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir);
    if let Some(t) = triple {
        cmd.args(["--target", t]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "running {} to build libluo_preload.so: {e}",
            Path::new(&cargo).display()
        )
    });
    assert!(
        out.status.success(),
        "building libluo_preload.so ({cmd:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        so.exists(),
        "{} is missing after cargo built it",
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
