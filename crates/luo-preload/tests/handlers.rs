//! `LUO_PRELOAD_HANDLERS`: the kernel's file types by default, luo's
//! userspace handlers on request, never luo's own sockets.

mod common;

use common::{agent, compile, fresh_dir, run_preloaded, text};

#[test]
fn sessions_take_the_kernels_types_unless_asked_for_all() {
    let dir = fresh_dir();
    let prog = compile(&dir, "handlers.c", &[]);
    let sock = agent(&dir);
    let kernel = run_preloaded(&prog, &[], &sock, &[]);
    assert!(kernel.status.success(), "{}", text(&kernel.stderr));
    assert_eq!(
        text(&kernel.stdout),
        "memfd: ok\neventfd: ENOENT\nunix socket: ENOENT\npipe: ENOENT\n\
         the session fd: ENOENT\nthe device fd: ENOENT\n"
    );
    let all = run_preloaded(&prog, &[], &sock, &[("LUO_PRELOAD_HANDLERS", "all")]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    assert_eq!(
        text(&all.stdout),
        "memfd: ok\neventfd: ok\nunix socket: ok\npipe: ok\n\
         the session fd: ENOENT\nthe device fd: ENOENT\n"
    );
}
