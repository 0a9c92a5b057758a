//! `luoctl`: argument errors, help and an unreachable agent, with the
//! documented exit codes; its output against a scripted stand-in agent; and
//! whole sessions against a real `luod`.

use std::path::PathBuf;
use std::process::{Command, Output};

use common::wire::{Value, With};

mod common;

use common::{Agent, Opts, DEFAULT};

fn luoctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_luoctl"))
        .args(args)
        .env_remove("LUOD_SOCKET")
        .output()
        .expect("run luoctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

/// A fresh, empty directory for one test; removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("luoctl-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().expect("utf-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let o = luoctl(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("luoctl: "), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(err.contains("hint: see `luoctl"), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    assert_usage_error(&[], "no command given");
    assert_usage_error(&["frobnicate"], "unknown command 'frobnicate'");
    assert_usage_error(&["status", "--bogus"], "unknown option '--bogus'");
    assert_usage_error(&["show"], "show needs NAME");
    assert_usage_error(&["finish", "a", "b"], "takes one NAME");
    assert_usage_error(&["status", "extra"], "status takes no arguments");
    assert_usage_error(&["show", "kv", "--owner", "bob"], "numeric uid");
    assert_usage_error(&["sessions", "--owner", "0"], "--owner applies to");
    assert_usage_error(&["status", "--socket"], "--socket needs a PATH");
    // A usage error names the command's help when it knows the command.
    assert_usage_error(&["show"], "luoctl show --help");
}

#[test]
fn usage_error_with_json_prints_a_json_refusal() {
    let o = luoctl(&["--json", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let v = serde_json::from_slice::<Value>(&o.stdout).expect("valid JSON on stdout");
    assert_eq!(v.get("ok"), Some(&Value::Bool(false)));
    assert_eq!(v.get("error").and_then(Value::as_str), Some("EINVAL"));
}

#[test]
fn help_lists_commands_and_exit_codes() {
    for args in [&["--help"][..], &["help"], &["-h"]] {
        let o = luoctl(args);
        assert_eq!(o.status.code(), Some(0));
        let out = stdout(&o);
        for needle in [
            "status",
            "sessions",
            "show NAME",
            "update",
            "handover NAME",
            "finish NAME",
            "--socket PATH",
            "--json",
            "EXIT STATUS",
            "0   success",
            "1   the agent refused",
            "2   usage error",
            "3   cannot reach the agent",
            "4   protocol error",
        ] {
            assert!(out.contains(needle), "{args:?} lacks {needle:?}:\n{out}");
        }
    }
    for args in [&["show", "--help"][..], &["help", "show"]] {
        let o = luoctl(args);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).starts_with("usage: luoctl"), "{}", stdout(&o));
        assert!(stdout(&o).contains("show NAME [--owner UID]"));
    }
}

#[test]
fn version_prints_the_version() {
    let o = luoctl(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        format!("luoctl {} (protocol 1)", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unreachable_agent_exits_3_with_a_hint() {
    let dir = TempDir::new("unreachable");
    let sock = dir.path("luod.sock");
    for cmd in [&["status"][..], &["sessions"], &["show", "kv"], &["update"]] {
        let mut args = vec!["--socket", &sock];
        args.extend_from_slice(cmd);
        let o = luoctl(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{cmd:?}: {err}");
        assert!(
            err.starts_with(&format!("luoctl: cannot connect to luod at {sock}")),
            "{err}"
        );
        assert!(err.contains("(ENOENT)"), "{err}");
        assert!(err.contains("\nhint: "), "{err}");
        assert!(err.contains("--socket"), "{err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn unreachable_agent_with_json_prints_ok_false() {
    let dir = TempDir::new("unreachable-json");
    let sock = dir.path("luod.sock");
    let o = luoctl(&["--json", "--socket", &sock, "status"]);
    assert_eq!(o.status.code(), Some(3));
    let v = serde_json::from_slice::<Value>(&o.stdout).expect("valid JSON on stdout");
    assert_eq!(v.get("ok"), Some(&Value::Bool(false)));
    assert_eq!(v.get("errno").and_then(Value::as_i64), Some(2));
    assert_eq!(v.get("error").and_then(Value::as_str), Some("ENOENT"));
    assert!(v
        .get("message")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains(&sock)));
    // One document: nothing after it but the newline.
    assert_eq!(stdout(&o).trim_end().lines().count(), 1);
}

#[test]
fn a_socket_nobody_listens_on_exits_3() {
    let dir = TempDir::new("refused");
    let sock = dir.path("luod.sock");
    std::fs::write(&sock, b"").unwrap();
    let o = luoctl(&["--socket", &sock, "sessions"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("ECONNREFUSED"), "{}", stderr(&o));
}

#[test]
fn luod_socket_is_used_without_socket_flag() {
    let dir = TempDir::new("env");
    let sock = dir.path("env.sock");
    let o = Command::new(env!("CARGO_BIN_EXE_luoctl"))
        .arg("status")
        .env("LUOD_SOCKET", &sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains(&sock), "{err}");
    assert!(err.contains("hint: check $LUOD_SOCKET"), "{err}");
}

// ------------------------------------------------------------------------
// Against a scripted stand-in for luod: rendering, refusals (exit 1) and
// protocol errors (exit 4), without needing the real agent.

mod fake {
    use std::os::fd::AsFd;
    use std::thread::JoinHandle;

    use luo_proto::RecvBuf;

    use crate::common::wire::{send, Value};

    /// Serves one connection on `path`: each request is answered with
    /// `answer(request)`. Returns the requests it saw.
    pub fn agent(
        path: &str,
        answer: impl Fn(&Value) -> Value + Send + 'static,
    ) -> JoinHandle<Vec<Value>> {
        // A stand-in from an earlier step of the same test leaves its file.
        let _ = std::fs::remove_file(path);
        let listener = luo_sys::seqpacket_listen(std::path::Path::new(path), 4).unwrap();
        std::thread::spawn(move || {
            let ep = luo_sys::Epoll::new().unwrap();
            ep.add(listener.as_fd(), 0, luo_sys::epoll::EPOLLIN)
                .unwrap();
            let mut ready = Vec::new();
            ep.wait(&mut ready, 1, 10_000).unwrap();
            let conn = luo_sys::accept(listener.as_fd()).unwrap();
            luo_sys::set_nonblocking(conn.as_fd(), false).unwrap();
            let mut seen = Vec::new();
            let mut buf = RecvBuf::default();
            while let Ok(Some(m)) = luo_proto::recv(conn.as_fd(), &mut buf) {
                let body: Value = serde_json::from_slice(m.bytes).unwrap();
                let reply = answer(&body);
                seen.push(body);
                // A reply without "v"/"fds" cannot be made with send(), so
                // the protocol-error case sends raw bytes.
                if reply.get("raw").is_some() {
                    let raw = reply.get("raw").and_then(Value::as_str).unwrap();
                    luo_sys::send_with_fds(conn.as_fd(), raw.as_bytes(), &[]).unwrap();
                } else {
                    send(conn.as_fd(), &reply, &[]).unwrap();
                }
            }
            seen
        })
    }
}

fn op(v: &Value) -> &str {
    v.get("op").and_then(Value::as_str).unwrap_or("")
}

fn status_reply(epoch: u64) -> Value {
    let parsed = serde_json::from_slice::<Value>(
        br#"{"ok":true,"agent":"luod 0.1.0","protocol":1,"backend":"emulated","pid":4242,"uid":1000,
        "epoch":1,"outgoing":1,"incoming":0,"files":2,"pinned_bytes":1073741824,
        "connections":3,"open_fds":9,"nofile_soft":20000,"nofile_hard":40000,
        "quota":{"sessions":null,"files":100,"pinned_bytes":null},
        "usage":{"sessions":1,"files":2,"pinned_bytes":1073741824}}"#,
    )
    .unwrap();
    let mut v = parsed;
    v["epoch"] = epoch.into();
    v
}

fn show_reply() -> Value {
    serde_json::from_slice::<Value>(
        br#"{"ok":true,"sessions":[{"name":"kv","owner":54321,"state":"open","handles":1,
        "file_count":2,"pinned_bytes":1073741824,"kexec_safe":false,"files":[
        {"token":1,"handler":"memfd-v2","type":"memfd","identity":"inode","dev":42,
         "ino":1234,"size":1073741824,"pinned_bytes":1073741824,"kexec_safe":true,
         "managed":true,"retrieved":"no"},
        {"token":2,"handler":"tcp-v1","type":"tcp-socket","identity":"open-file","dev":15,
         "ino":1025,"size":0,"pinned_bytes":0,"kexec_safe":false,"managed":true,
         "retrieved":"failed: EBUSY"}]}]}"#,
    )
    .unwrap()
}

#[test]
fn status_and_update_are_rendered_for_people() {
    let dir = TempDir::new("fake-status");
    let sock = dir.path("luod.sock");
    let agent = fake::agent(&sock, |req| match op(req) {
        "status" => status_reply(7),
        "update" => serde_json::from_slice::<Value>(br#"{"ok":true,"epoch":8}"#).unwrap(),
        _ => unreachable!(),
    });
    let o = luoctl(&["--socket", &sock, "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "luod 0.1.0 (protocol 1)",
        "emulated",
        "4242",
        "epoch:",
        "1 outgoing, 0 incoming",
        "1.0 GiB",
        "20000 (hard 40000)",
        "files 2 of 100",
        "sessions 1 of unlimited",
    ] {
        assert!(out.contains(needle), "lacks {needle:?}:\n{out}");
    }
    assert_eq!(agent.join().unwrap().len(), 1);

    let agent = fake::agent(&sock, |req| match op(req) {
        "status" => status_reply(7),
        "update" => serde_json::from_slice::<Value>(br#"{"ok":true,"epoch":8}"#).unwrap(),
        _ => unreachable!(),
    });
    let o = luoctl(&["--socket", &sock, "update"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "epoch 7 -> 8: every outgoing session crossed; old handles are stale\n"
    );
    let seen = agent.join().unwrap();
    assert_eq!(
        seen.iter().map(op).collect::<Vec<_>>(),
        ["status", "update"]
    );
}

#[test]
fn sessions_and_show_are_tables() {
    let dir = TempDir::new("fake-show");
    let sock = dir.path("luod.sock");
    let agent = fake::agent(&sock, |_| {
        serde_json::from_slice::<Value>(br#"{"ok":true,"sessions":[]}"#).unwrap()
    });
    let o = luoctl(&["--socket", &sock, "sessions"]);
    assert_eq!(stdout(&o), "no sessions\n");
    agent.join().unwrap();

    let agent = fake::agent(&sock, |_| show_reply());
    let o = luoctl(&["--socket", &sock, "sessions"]);
    let out = stdout(&o);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("NAME"), "{out}");
    for col in ["OWNER", "STATE", "HANDLES", "FILES", "PINNED", "KEXEC-SAFE"] {
        assert!(header.contains(col), "{out}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // A uid without a passwd entry is shown as the number alone.
    assert_eq!(row, ["kv", "54321", "open", "1", "2", "1.0", "GiB", "no"]);
    agent.join().unwrap();

    let agent = fake::agent(&sock, |_| show_reply());
    let o = luoctl(&["--socket", &sock, "show", "kv", "--owner", "54321"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("session 'kv' (owner 54321): open"), "{out}");
    assert!(out.contains("inode 0:42/1234"), "{out}");
    assert!(out.contains("open file (inode 0:15/1025)"), "{out}");
    assert!(out.contains("failed: EBUSY"), "{out}");
    for col in ["TOKEN", "TYPE", "HANDLER", "IDENTITY", "SIZE", "RETRIEVED"] {
        assert!(out.contains(col), "{out}");
    }
    let seen = agent.join().unwrap();
    assert_eq!(seen[0].get("name").and_then(Value::as_str), Some("kv"));
    assert_eq!(seen[0].get("owner").and_then(Value::as_u64), Some(54321));
}

#[test]
fn json_prints_the_reply_object() {
    let dir = TempDir::new("fake-json");
    let sock = dir.path("luod.sock");
    let agent = fake::agent(&sock, |_| show_reply());
    let o = luoctl(&["--json", "--socket", &sock, "show", "kv"]);
    assert_eq!(o.status.code(), Some(0));
    let v = serde_json::from_slice::<Value>(&o.stdout).expect("valid JSON");
    assert_eq!(v.get("ok"), Some(&Value::Bool(true)));
    assert_eq!(v.get("sessions"), show_reply().get("sessions"));
    agent.join().unwrap();
}

#[test]
fn a_refusal_exits_1_with_the_errno_and_a_hint() {
    let dir = TempDir::new("fake-refused");
    let sock = dir.path("luod.sock");
    let refuse = |_: &Value| {
        common::wire::refusal(&luo_proto::Error::new(
            luo::Errno::EINVAL,
            "session 'kv' is held by a process",
        ))
    };
    let agent = fake::agent(&sock, refuse);
    let o = luoctl(&["--socket", &sock, "finish", "kv"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "luoctl: session 'kv' is held by a process (EINVAL)\n\
         hint: the session is held by a process; close its handle first\n"
    );
    agent.join().unwrap();

    let agent = fake::agent(&sock, refuse);
    let o = luoctl(&["--socket", &sock, "--json", "finish", "kv"]);
    assert_eq!(o.status.code(), Some(1));
    let v = serde_json::from_slice::<Value>(&o.stdout).expect("valid JSON");
    assert_eq!(v.get("ok"), Some(&Value::Bool(false)));
    assert_eq!(v.get("errno").and_then(Value::as_i64), Some(22));
    assert_eq!(v.get("error").and_then(Value::as_str), Some("EINVAL"));
    agent.join().unwrap();

    let agent = fake::agent(&sock, |_| {
        common::wire::refusal(&luo_proto::Error::new(
            luo::Errno::ENOENT,
            "no session named 'kv'",
        ))
    });
    let o = luoctl(&["--socket", &sock, "show", "kv"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("hint: see `luoctl sessions`"),
        "{}",
        stderr(&o)
    );
    agent.join().unwrap();
}

#[test]
fn an_unexpected_reply_exits_4() {
    let dir = TempDir::new("fake-proto");
    let sock = dir.path("luod.sock");
    // A reply without "ok".
    let agent = fake::agent(&sock, |_| {
        common::wire::json!({}).with("raw", r#"{"v":1,"fds":0}"#)
    });
    let o = luoctl(&["--socket", &sock, "status"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("(EPROTO)"), "{}", stderr(&o));
    agent.join().unwrap();

    // Another protocol version.
    let agent = fake::agent(&sock, |_| {
        common::wire::json!({}).with("raw", r#"{"ok":true,"v":2,"fds":0}"#)
    });
    let o = luoctl(&["--socket", &sock, "sessions"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    agent.join().unwrap();

    // A success whose results are malformed.
    let agent = fake::agent(&sock, |_| {
        serde_json::from_slice::<Value>(br#"{"ok":true,"sessions":3}"#).unwrap()
    });
    let o = luoctl(&["--socket", &sock, "sessions"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    agent.join().unwrap();
}

// ------------------------------------------------------------------------
// Against the real agent.

/// A `luod` that logs only warnings.
fn start_luod() -> Agent {
    Agent::start_with(Opts {
        log: "warn",
        ..DEFAULT
    })
}

/// `luoctl --socket S ARGS` against `luod`.
fn ctl(luod: &Agent, args: &[&str]) -> Output {
    let mut all = vec!["--socket", luod.sock_str()];
    all.extend_from_slice(args);
    luoctl(&all)
}

#[test]
fn a_session_through_its_life_with_luod() {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    let luod = start_luod();
    let client = luo::Client::connect_to(&luod.sock).unwrap();
    let session = client.create_session("e2e").unwrap();
    assert_eq!(session.name().unwrap(), "e2e");
    let mut state = std::fs::File::from(luo::memfd_create("state").unwrap());
    state.write_all(&[7u8; 4096]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    session
        .preserve_batch(&[(1, state.as_fd()), (2, listener.as_fd())])
        .unwrap();
    // The same token again is refused, and the error names it.
    let e = session.preserve(1, &listener).unwrap_err();
    assert_eq!((e.errno, e.token), (luo::Errno::EEXIST, Some(1)));
    drop((state, listener));

    let o = ctl(&luod, &["sessions"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "e2e");
    // OWNER is "UID (name)" or "UID", so find STATE by its value.
    let state = row.iter().position(|c| *c == "open").expect(&out);
    assert_eq!(&row[state..state + 3], ["open", "1", "2"], "{out}");

    let o = ctl(&luod, &["show", "e2e"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("session 'e2e'"), "{out}");
    assert!(out.contains("memfd"), "{out}");
    assert!(out.contains("tcp-socket"), "{out}");
    assert!(out.contains("open file (inode "), "{out}");

    let o = ctl(&luod, &["handover", "e2e"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(session.name().unwrap_err().errno, luo::Errno::ESTALE);
    drop(session);

    let session = client.retrieve_session("e2e").unwrap();
    let mut fds = session.retrieve_batch(&[1, 2]).unwrap();
    let listener = std::net::TcpListener::from(fds.pop().unwrap());
    assert_eq!(listener.local_addr().unwrap().port(), port);
    let mut state = std::fs::File::from(fds.pop().unwrap());
    let mut back = Vec::new();
    state.rewind().unwrap();
    state.read_to_end(&mut back).unwrap();
    assert_eq!(back, vec![7u8; 4096]);
    assert_eq!(
        session.retrieve_fd(99).unwrap_err().errno,
        luo::Errno::ENOENT
    );

    // Held by this process: luoctl cannot finish it.
    let o = ctl(&luod, &["finish", "e2e"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("(EINVAL)"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("close its handle first"),
        "{}",
        stderr(&o)
    );

    session.finish().unwrap();
    drop(session);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = ctl(&luod, &["sessions"]);
        if stdout(&o) == "no sessions\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stdout(&o));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = ctl(&luod, &["--json", "sessions"]);
    let v = serde_json::from_slice::<Value>(&o.stdout).expect("valid JSON");
    assert_eq!(v.get("ok"), Some(&Value::Bool(true)));

    let o = ctl(&luod, &["show", "e2e"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint: see `luoctl sessions`"));
}

#[test]
fn status_and_update_with_luod() {
    let luod = start_luod();
    let client = luo::Client::connect_to(&luod.sock).unwrap();
    let session = client.create_session("u").unwrap();
    let memfd = luo::memfd_create("m").unwrap();
    session.preserve(1, &memfd).unwrap();

    let status = client.status().unwrap();
    assert_eq!((status.outgoing, status.files), (1, 1));
    let o = ctl(&luod, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 outgoing, 0 incoming"),
        "{}",
        stdout(&o)
    );

    let o = ctl(&luod, &["update"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "epoch {} -> {}: every outgoing session crossed; old handles are stale\n",
            status.epoch,
            status.epoch + 1
        )
    );
    assert_eq!(session.name().unwrap_err().errno, luo::Errno::ESTALE);
    assert_eq!(client.status().unwrap().incoming, 1);
    assert_eq!(client.update().unwrap(), status.epoch + 2);
    client.finish("u", None).unwrap();
}

#[test]
fn a_batch_over_253_files_stops_at_the_refused_token_with_luod() {
    use std::os::fd::{AsFd, BorrowedFd};

    let luod = start_luod();
    let client = luo::Client::connect_to(&luod.sock).unwrap();
    let session = client.create_session("batch").unwrap();
    let files: Vec<_> = (0..300).map(|_| luo_sys::eventfd(0).unwrap()).collect();
    let mut batch: Vec<(u64, BorrowedFd<'_>)> =
        files.iter().zip(1..).map(|(f, t)| (t, f.as_fd())).collect();
    // Token 280 (in the second message) is a token already used.
    batch[279].0 = 5;
    let e = session.preserve_batch(&batch).unwrap_err();
    assert_eq!((e.errno, e.token), (luo::Errno::EEXIST, Some(5)), "{e}");
    let info = session.info().unwrap();
    assert_eq!(info.files.len(), 279);
    assert_eq!(info.file_count, 279);
    // The rest can follow.
    session.preserve_batch(&batch[280..]).unwrap();
    assert_eq!(session.info().unwrap().file_count, 299);
}

#[test]
fn kexec_usage_errors() {
    assert_usage_error(&["update", "--kernel", "/k"], "update needs --kexec");
    assert_usage_error(&["update", "--kexec"], "needs --kernel FILE");
    assert_usage_error(
        &["status", "--dry-run"],
        "--dry-run applies to update, not status",
    );
    assert_usage_error(
        &[
            "update",
            "--kexec",
            "--kernel",
            "/k",
            "--append",
            "x",
            "--reuse-cmdline",
        ],
        "not both",
    );
    assert_usage_error(&["update", "--kexec", "--kernel"], "--kernel needs a FILE");
}

#[test]
fn kexec_preflight_and_refusals_on_the_emulated_backend() {
    let luod = start_luod();
    let baseline = luod.settled_fds();
    let dir = TempDir::new("kexec");
    let kernel = dir.path("bzImage");
    std::fs::write(&kernel, vec![0u8; 4096]).unwrap();
    let client = luo::Client::connect_to(&luod.sock).unwrap();
    let s = client.create_session("k").unwrap();
    s.preserve(1, luo::memfd_create("m").unwrap()).unwrap();
    s.preserve(2, luo_sys::eventfd(0).unwrap()).unwrap();
    s.handover().unwrap();
    let base = [
        "update",
        "--kexec",
        "--kernel",
        kernel.as_str(),
        "--append",
        "console=ttyS0 liveupdate=on",
    ];

    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        ctl(&luod, &a)
    };
    // The preflight names what cannot cross, and why, and changes nothing.
    let o = with(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "backend emulated",
        "(liveupdate=on: yes)",
        "cannot cross a kexec:",
        "token 2 (luo-eventfd-v1)",
        "1 file in 1 session cross",
        "1 file would be lost",
        "luod runs on the emulated backend",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    let o = ctl(
        &luod,
        &[
            "--json",
            "update",
            "--kexec",
            "--kernel",
            kernel.as_str(),
            "--append",
            "quiet",
            "--dry-run",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = serde_json::from_slice::<Value>(stdout(&o).trim().as_bytes()).unwrap();
    let p = v.get("preflight").unwrap();
    let n = |k: &str| p.get(k).and_then(Value::as_u64);
    assert_eq!((n("carried_files"), n("lost_files")), (Some(1), Some(1)));
    assert_eq!(n("kernel_bytes"), Some(4096));
    assert_eq!(
        p.get("next_cmdline_liveupdate").and_then(Value::as_bool),
        Some(false)
    );
    // Lost files, no liveupdate=on, the emulated backend.
    assert_eq!(
        p.get("problems").and_then(Value::as_array).map(Vec::len),
        Some(3)
    );

    // Problems refuse the update; --force reaches luod, which cannot kexec.
    let o = with(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ECANCELED"), "{}", stderr(&o));
    let o = with(&["--force"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("EOPNOTSUPP") && err.contains("--backend kernel"),
        "{err}"
    );
    // Nothing changed.
    let st = client.status().unwrap();
    assert_eq!((st.incoming, st.files), (1, 2));

    let o = ctl(
        &luod,
        &["update", "--kexec", "--kernel", "/nonexistent/bzImage"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot open the kernel"),
        "{}",
        stderr(&o)
    );

    // The raw request: descriptors must match "initrd".
    let r = client
        .raw_request(
            &common::wire::request("kexec")
                .with("cmdline", "x")
                .with("dry_run", true),
        )
        .unwrap_err();
    assert_eq!(r.errno, luo::Errno::EINVAL);
    assert!(r.message.contains("kernel image's descriptor"), "{r}");
    client.finish("k", None).unwrap();
    drop((s, client));
    // The kernel images sent with each request were closed.
    assert_eq!(luod.settled_fds(), baseline);
}

#[test]
fn sessions_and_show_mark_a_persistent_session() {
    let luod = start_luod();
    let client = luo::Client::connect_to(&luod.sock).unwrap();
    let p = client.persist_session("sup").unwrap();
    p.preserve(1, luo::memfd_create("fdstore").unwrap())
        .unwrap();
    drop(p);
    let plain = client.create_session("plain").unwrap();

    let o = ctl(&luod, &["sessions"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let sup = rows.iter().find(|r| r[0] == "sup").expect(&out);
    let state = sup.iter().position(|c| c.starts_with("open")).expect(&out);
    assert_eq!(
        &sup[state..state + 3],
        ["open,persistent", "0", "1"],
        "{out}"
    );
    let plain_row = rows.iter().find(|r| r[0] == "plain").expect(&out);
    assert!(plain_row.contains(&"open"), "{out}");

    let o = ctl(&luod, &["show", "sup"]);
    let out = stdout(&o);
    assert!(
        out.contains("session 'sup' (owner ") && out.contains("): open, persistent, 0 handles"),
        "{out}"
    );
    let o = ctl(&luod, &["--json", "sessions"]);
    let out = stdout(&o);
    assert_eq!(out.matches("\"persistent\"").count(), 1, "{out}");
    drop(plain);
}
