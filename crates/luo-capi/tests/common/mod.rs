//! What the C tests share: the library and luod built for this test's
//! profile, C programs compiled with pkg-config against the build tree, and
//! a luod process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`, with libluo.so, libluo.a and luod brought up to
/// date (`cargo test` builds neither a cdylib nor another package's
/// binary).
pub fn profile_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

pub fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("no profile in {}", dir.display()),
    };
    let target_dir = dir.parent().expect("the target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "luo-capi", "--lib", "-p", "luod"])
        .args(["--bin", "luod", "--bin", "luoctl", "--profile", profile])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building libluo and luod failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "luo-capi-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `luo.pc` from the template, for a prefix, a library directory, an
/// include directory and, for a build tree, an rpath.
pub fn pc(prefix: &str, libdir: &str, includedir: &str, rpath: bool) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("luo.pc.in"))
        .unwrap()
        .replace("@PREFIX@", prefix)
        .replace("@LIBDIR@", libdir)
        .replace("@INCLUDEDIR@", includedir)
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@RPATH@", if rpath { "-Wl,-rpath,${libdir} " } else { "" })
}

/// Compiles `source` with `cc $(pkg-config --cflags --libs luo)`, the
/// `luo.pc` pointing at the build tree.
pub fn compile(dir: &Path, source: &Path) -> PathBuf {
    let lib = profile_dir();
    let pcdir = dir.join("pkgconfig");
    std::fs::create_dir_all(&pcdir).unwrap();
    let include = root().join("include");
    std::fs::write(
        pcdir.join("luo.pc"),
        pc(
            root().to_str().unwrap(),
            lib.to_str().unwrap(),
            include.to_str().unwrap(),
            true,
        ),
    )
    .unwrap();
    let out = dir.join(source.file_stem().unwrap());
    let r = Command::new("sh")
        .arg("-c")
        .arg(r#"cc -std=gnu11 -O1 -g -Wall -Wextra -Werror -o "$1" "$2" $(pkg-config --cflags --libs luo)"#)
        .arg("sh")
        .arg(&out)
        .arg(source)
        .env("PKG_CONFIG_PATH", &pcdir)
        .output()
        .expect("running sh, cc and pkg-config");
    assert!(
        r.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

/// A `luod` process on `dir/luod.sock`, killed on drop.
pub struct Luod(pub Child, pub PathBuf);

impl Luod {
    pub fn start(dir: &Path) -> Luod {
        Luod::start_with(dir, &[], &["--keeper", "off"])
    }

    /// `wrap... luod --socket dir/luod.sock args...`: `wrap` is a command
    /// that runs the rest (strace, setpriv, sh -c).
    pub fn start_with(dir: &Path, wrap: &[&str], args: &[&str]) -> Luod {
        let sock = dir.join("luod.sock");
        let log = std::fs::File::create(dir.join("luod.log")).unwrap();
        let luod = profile_dir().join("luod");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(luod);
                c
            }
            None => Command::new(luod),
        };
        let child = cmd
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning luod");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "luod did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // luod binds and listens in one go; a moment for the listen.
        std::thread::sleep(Duration::from_millis(50));
        Luod(child, sock)
    }
}

impl Drop for Luod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(prog: &Path, args: &[&str], sock: &Path, valgrind: bool) -> Output {
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args(["--error-exitcode=1", "--leak-check=full", "--quiet"])
            .arg(prog);
        c
    } else {
        Command::new(prog)
    };
    cmd.args(args)
        .env("LUOD_SOCKET", sock)
        .stdin(Stdio::null())
        .output()
        .expect("running the test program")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

pub fn need_valgrind() {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "valgrind is missing: install it (apt-get install valgrind); scripts/test does"
    );
}
