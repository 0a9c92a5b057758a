//! The C ABI from C: programs compiled with `cc $(pkg-config --cflags
//! --libs luo)` against the library just built (a `luo.pc` pointing at the
//! build tree), run against a real `luod` process: a two-process restart
//! carrying a patterned memfd and a listening socket (the example in
//! `examples/c`), every error path's errno, no descriptor leaked, and both
//! again under valgrind. Also: the committed `include/luo.h` is what
//! cbindgen makes of the crate, and the shipped `luo.pc` what the template
//! gives for `/usr`.

use std::path::Path;
use std::process::Command;

mod common;

use common::*;

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
