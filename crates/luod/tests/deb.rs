//! The Debian package (`[package.metadata.deb]` in crates/luod/Cargo.toml):
//! built with cargo-deb from a release build, its file list checked, then
//! unpacked and used: the unpacked luod serves on a temporary socket, the
//! unpacked luoctl asks its status, and a C program compiled with the
//! unpacked luo.h and luo.pc (pkg-config's sysroot at the unpacked tree)
//! carries a restart. Also: the package's unit is the repository's unit
//! with /usr/bin paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The target directory this test was built in: the first directory above
/// the test binary that cargo marked as one (`CACHEDIR.TAG` when cargo made
/// the directory, `.rustc_info.json` always).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|a| a.join("CACHEDIR.TAG").exists() || a.join(".rustc_info.json").exists())
        .expect("the target directory")
        .to_path_buf()
}

/// `contrib/debian/luod.service` from `contrib/systemd/luod.service`.
fn debian_unit(unit: &str) -> String {
    let header = "# luod, the Live Update Orchestrator agent, under systemd, as the luo Debian\n\
                  # package installs it (contrib/systemd/luod.service with /usr/bin paths).\n\
                  #   systemctl enable --now luod.service\n\
                  # See docs/operations.md, \"Running under systemd\".\n";
    let body = &unit[unit.find("\n\n").expect("a blank line after the header") + 1..];
    format!("{header}{}", body.replace("/usr/local/bin/", "/usr/bin/"))
}

#[test]
fn the_packaged_unit_is_the_repositorys_with_usr_bin_paths() {
    let unit = std::fs::read_to_string(root().join("contrib/systemd/luod.service")).unwrap();
    let packaged = std::fs::read_to_string(root().join("contrib/debian/luod.service")).unwrap();
    assert!(
        packaged == debian_unit(&unit),
        "contrib/debian/luod.service is stale: it is contrib/systemd/luod.service with the header of the \
         packaged one and /usr/local/bin/ replaced by /usr/bin/"
    );
    let unit = std::fs::read_to_string(root().join("contrib/systemd/luo-run@.service")).unwrap();
    let packaged = std::fs::read_to_string(root().join("contrib/debian/luo-run@.service")).unwrap();
    assert!(
        packaged == unit.replace("/usr/local/bin/", "/usr/bin/"),
        "contrib/debian/luo-run@.service is stale: it is contrib/systemd/luo-run@.service with \
         /usr/local/bin/ replaced by /usr/bin/"
    );
}

const EXPECTED: &[&str] = &[
    "./usr/bin/luod",
    "./usr/bin/luoctl",
    "./usr/lib/libluo.so",
    "./usr/lib/libluo.a",
    "./usr/lib/libluo_preload.so",
    "./usr/include/luo.h",
    "./usr/lib/pkgconfig/luo.pc",
    "./usr/lib/systemd/system/luod.service",
    "./usr/lib/systemd/system/luod.socket",
    "./usr/lib/systemd/system/luo-run@.service",
    "./usr/share/man/man8/luod.8",
    "./usr/share/man/man1/luoctl.1",
    "./usr/share/man/man1/luoctl-status.1",
    "./usr/share/bash-completion/completions/luod",
    "./usr/share/bash-completion/completions/luoctl",
    "./usr/share/zsh/vendor-completions/_luoctl",
    "./usr/share/fish/vendor_completions.d/luoctl.fish",
    "./usr/share/doc/luo/README.md",
    "./usr/share/doc/luo/operations.md",
    "./usr/share/doc/luo/examples/restart.c",
];

#[test]
fn the_debian_package_builds_installs_and_runs() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let target = target_dir();
    let manifest = root().join("Cargo.toml");
    ok(
        Command::new(&cargo)
            .args(["build", "--quiet", "--release", "--locked"])
            .args(["-p", "luod", "-p", "luo-capi", "-p", "luo-preload"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
        "the release build",
    );
    // Fault injection (luo-sys's test-only `fault-injection` feature) is
    // not in what ships: the release luod never reads LUO_FAULT.
    let luod = std::fs::read(target.join("release/luod")).unwrap();
    assert!(
        !luod.windows(b"LUO_FAULT".len()).any(|w| w == b"LUO_FAULT"),
        "the release luod was built with fault injection"
    );
    let dir = std::env::temp_dir().join(format!("luo-deb-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let deb = dir.join("luo.deb");
    let built = Command::new(&cargo)
        .args([
            "deb",
            "-p",
            "luod",
            "--no-build",
            "--strip",
            "--quiet",
            "--output",
        ])
        .arg(&deb)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !built.status.success() && text(&built.stderr).contains("no such command") {
        panic!("cargo-deb is missing: install it (cargo install --locked cargo-deb); scripts/test does");
    }
    ok(built, "cargo deb");

    // The file list.
    let list = text(
        &ok(
            Command::new("dpkg-deb")
                .arg("-c")
                .arg(&deb)
                .output()
                .unwrap(),
            "dpkg-deb -c",
        )
        .stdout,
    );
    let files: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let missing: Vec<&&str> = EXPECTED
        .iter()
        .filter(|e| {
            !files
                .iter()
                .any(|f| f == *e || f.strip_suffix(".gz") == Some(**e))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the package lacks {missing:?}; it has:\n{list}"
    );
    let info = text(
        &ok(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&deb)
                .arg("Package")
                .arg("Version")
                .output()
                .unwrap(),
            "dpkg-deb -f",
        )
        .stdout,
    );
    assert!(
        info.contains("Package: luo") && info.contains(env!("CARGO_PKG_VERSION")),
        "{info}"
    );

    // Unpacked and run.
    let tree = dir.join("root");
    ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tree)
            .output()
            .unwrap(),
        "dpkg-deb -x",
    );
    let sock = dir.join("luod.sock");
    let mut luod = Command::new(tree.join("usr/bin/luod"))
        .arg("--socket")
        .arg(&sock)
        .args(["--keeper", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        let out = Command::new(tree.join("usr/bin/luoctl"))
            .arg("--socket")
            .arg(&sock)
            .arg("status")
            .output()
            .unwrap();
        if out.status.success() || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = ok(status, "the unpacked luoctl status");
    assert!(
        text(&status.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&status.stdout)
    );

    // A C program against the unpacked header, pc file and library.
    let prog = dir.join("restart");
    ok(
        Command::new("sh")
            .arg("-c")
            .arg(r#"cc -o "$1" "$2" $(pkg-config --cflags --libs luo)"#)
            .arg("sh")
            .arg(&prog)
            .arg(tree.join("usr/share/doc/luo/examples/restart.c"))
            .env("PKG_CONFIG_PATH", tree.join("usr/lib/pkgconfig"))
            .env("PKG_CONFIG_SYSROOT_DIR", &tree)
            .output()
            .unwrap(),
        "compiling against the unpacked package",
    );
    for want in ["handed over", "took over"] {
        let out = ok(
            Command::new(&prog)
                .env("LUOD_SOCKET", &sock)
                .env("LD_LIBRARY_PATH", tree.join("usr/lib"))
                .output()
                .unwrap(),
            "the example",
        );
        assert!(text(&out.stdout).starts_with(want), "{}", text(&out.stdout));
    }
    let _ = luod.kill();
    let _ = luod.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
