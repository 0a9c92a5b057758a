//! The C ABI from C: programs compiled with `cc $(pkg-config --cflags
//! --libs luo)` against the library just built (a `luo.pc` pointing at the
//! build tree), run against a real `luod` process: a two-process restart
//! carrying a patterned memfd and a listening socket (the example in
//! `examples/c`), every error path's errno, no descriptor leaked, and both
//! again under valgrind. Also: the committed `include/luo.h` is what
//! cbindgen makes of the crate, and the shipped `luo.pc` what the template
//! gives for `/usr`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`, with libluo.so, libluo.a and luod brought up to
/// date (`cargo test` builds neither a cdylib nor another package's
/// binary).
fn profile_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
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
        .args(["--bin", "luod", "--profile", profile])
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

fn fresh_dir() -> PathBuf {
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
fn compile(dir: &Path, source: &Path) -> PathBuf {
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
struct Luod(Child, PathBuf);

impl Luod {
    fn start(dir: &Path) -> Luod {
        let sock = dir.join("luod.sock");
        let log = std::fs::File::create(dir.join("luod.log")).unwrap();
        let child = Command::new(profile_dir().join("luod"))
            .arg("--socket")
            .arg(&sock)
            .args(["--keeper", "off"])
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

fn run(prog: &Path, args: &[&str], sock: &Path, valgrind: bool) -> Output {
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn need_valgrind() {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "valgrind is missing: install it (apt-get install valgrind); scripts/test does"
    );
}

fn restart(valgrind: bool) {
    let dir = fresh_dir();
    let prog = compile(&dir, &root().join("examples/c/restart.c"));
    let luod = Luod::start(&dir);
    let one = run(&prog, &["kv"], &luod.1, valgrind);
    assert_ok(&one, "the first run");
    assert!(
        text(&one.stdout).starts_with("handed over"),
        "{}",
        text(&one.stdout)
    );
    let two = run(&prog, &["kv"], &luod.1, valgrind);
    assert_ok(&two, "the next run");
    assert!(
        text(&two.stdout).starts_with("took over"),
        "{}",
        text(&two.stdout)
    );
    // The session is finished: a third run starts afresh.
    let three = run(&prog, &["kv"], &luod.1, false);
    assert!(
        text(&three.stdout).starts_with("handed over"),
        "{}",
        text(&three.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn errors(valgrind: bool) {
    let dir = fresh_dir();
    let prog = compile(&dir, &root().join("crates/luo-capi/tests/c/errors.c"));
    let luod = Luod::start(&dir);
    let out = run(&prog, &[luod.1.to_str().unwrap()], &luod.1, valgrind);
    assert_ok(&out, "the error paths program");
    assert!(text(&out.stdout).contains(" passed, 0 failed"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_carries_a_patterned_memfd_and_a_listening_socket() {
    restart(false);
}

#[test]
fn every_error_path_returns_the_rust_clients_errno_and_no_fd_leaks() {
    errors(false);
}

#[test]
fn the_restart_is_clean_under_valgrind() {
    need_valgrind();
    restart(true);
}

#[test]
fn the_error_paths_are_clean_under_valgrind() {
    need_valgrind();
    errors(true);
}

#[test]
fn the_committed_header_is_what_cbindgen_makes() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("cbindgen")
        .arg("--config")
        .arg(crate_dir.join("cbindgen.toml"))
        .args(["--crate", "luo-capi", "--quiet"])
        .arg(crate_dir)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("running cbindgen: {e} (install it: cargo install --locked cbindgen; scripts/test does)"),
    };
    assert_ok(&out, "cbindgen");
    let shipped = std::fs::read(root().join("include/luo.h")).unwrap();
    assert!(
        out.stdout == shipped,
        "include/luo.h is stale: refresh it with `cbindgen --config crates/luo-capi/cbindgen.toml --crate luo-capi --output include/luo.h crates/luo-capi` and commit it"
    );
}

#[test]
fn the_shipped_pc_file_is_the_template_for_usr() {
    let shipped = std::fs::read_to_string(root().join("contrib/pkgconfig/luo.pc")).unwrap();
    assert_eq!(
        shipped,
        pc("/usr", "${prefix}/lib", "${prefix}/include", false),
        "contrib/pkgconfig/luo.pc is stale: render crates/luo-capi/luo.pc.in for /usr"
    );
}

#[test]
fn a_static_link_works_too() {
    let dir = fresh_dir();
    let lib = profile_dir();
    let out = dir.join("restart-static");
    let r = Command::new("cc")
        .args(["-std=gnu11", "-O1", "-o"])
        .arg(&out)
        .arg(root().join("examples/c/restart.c"))
        .arg("-I")
        .arg(root().join("include"))
        .arg(lib.join("libluo.a"))
        .args(["-lpthread", "-ldl", "-lm", "-lgcc_s", "-lc"])
        .output()
        .unwrap();
    assert_ok(&r, "cc with libluo.a");
    let luod = Luod::start(&dir);
    assert_ok(&run(&out, &["s"], &luod.1, false), "the static program");
    assert_ok(
        &run(&out, &["s"], &luod.1, false),
        "the static program, again",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
