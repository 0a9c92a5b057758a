//! Hostile and careless clients against a real `luod` process.
//!
//! Every test starts its own agent on a socket in a fresh temporary
//! directory, talks the raw protocol to it (luo-sys and luo-proto, no client
//! library), and checks the errnos in the replies and the agent's open
//! descriptors (`/proc/PID/fd`): whatever a client sends, the agent answers,
//! keeps serving, and closes every descriptor it was given and no longer
//! needs.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use luo_proto::Errno;

mod common;

use common::wire::{call, ok, raw, refused, request, with, Value, With};
use common::{fresh_dir, memfd, read_memfd, tail, Agent, Opts, DEFAULT, LUOD, PATIENCE};

/// Opens a connection, makes sure the agent accepted it, and returns it with
/// the agent's descriptor count at that moment: the baseline the test
/// returns to.
fn baseline(agent: &Agent) -> (OwnedFd, usize) {
    let c = agent.connect();
    ok(&call(&c, request("status"), &[]));
    // The probe connection of the start-up may still be closing.
    std::thread::sleep(Duration::from_millis(50));
    (c, agent.fds())
}

fn tokens(t: &[u64]) -> Value {
    Value::Array(t.iter().map(|&x| Value::from(x)).collect())
}

fn create(c: &OwnedFd, name: &str) -> OwnedFd {
    let mut m = call(c, with("create_session", "name", name), &[]);
    ok(&m);
    assert_eq!(m.fds.len(), 1, "create_session must return one handle");
    m.fds.pop().unwrap()
}

fn status(c: &OwnedFd) -> Value {
    ok(&call(c, request("status"), &[])).clone()
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {key:?} in {}", v))
}

/// Polls `status` until `f` holds for it.
fn wait_status(agent: &Agent, c: &OwnedFd, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let st = status(c);
        if f(&st) {
            return st;
        }
        if start.elapsed() > PATIENCE {
            panic!("{what}: status is {}\nlog:\n{}", st, tail(&agent.log()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_messages_are_refused_and_the_connection_stays_usable() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);

    let deep = format!(
        "{{\"v\":1,\"fds\":0,\"op\":\"status\",\"x\":{}{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let very_deep = "[".repeat(60_000);
    let cases: &[(&[u8], Errno)] = &[
        (b"{\"v\":1,\"fds\":0,\"op\":", Errno::EINVAL),
        (b"not json at all", Errno::EINVAL),
        (b"\xff\xfe{}", Errno::EINVAL),
        (b"{\"v\":1,\"fds\":0,\"op\":\"status\",}", Errno::EINVAL),
        (
            b"{\"v\":1,\"v\":1,\"fds\":0,\"op\":\"status\"}",
            Errno::EINVAL,
        ),
        (b"[1,2,3]", Errno::EINVAL),
        (b"\"just a string\"", Errno::EINVAL),
        (b"null", Errno::EINVAL),
        (b"42", Errno::EINVAL),
        (deep.as_bytes(), Errno::EINVAL),
        (very_deep.as_bytes(), Errno::EINVAL),
        (b"{\"fds\":0,\"op\":\"status\"}", Errno::EINVAL),
        (b"{\"v\":\"1\",\"fds\":0,\"op\":\"status\"}", Errno::EINVAL),
        (b"{\"v\":-1,\"fds\":0,\"op\":\"status\"}", Errno::EINVAL),
        (
            b"{\"v\":2,\"fds\":0,\"op\":\"status\"}",
            Errno::EPROTONOSUPPORT,
        ),
        (
            b"{\"v\":0,\"fds\":0,\"op\":\"status\"}",
            Errno::EPROTONOSUPPORT,
        ),
        (b"{\"v\":1,\"op\":\"status\"}", Errno::EINVAL),
        (b"{\"v\":1,\"fds\":1.5,\"op\":\"status\"}", Errno::EINVAL),
        (b"{\"v\":1,\"fds\":0}", Errno::EINVAL),
        (b"{\"v\":1,\"fds\":0,\"op\":7}", Errno::EINVAL),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"create_session\"}",
            Errno::EINVAL,
        ),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"create_session\",\"name\":5}",
            Errno::EINVAL,
        ),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"create_session\",\"name\":\"\"}",
            Errno::EINVAL,
        ),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"create_session\",\"name\":\"a\\u0000b\"}",
            Errno::EINVAL,
        ),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"show\",\"name\":\"x\",\"owner\":-3}",
            Errno::EINVAL,
        ),
        (
            b"{\"v\":1,\"fds\":0,\"op\":\"show\",\"name\":\"x\",\"owner\":99999999999}",
            Errno::EINVAL,
        ),
        (b"", Errno::EINVAL),
    ];
    for (bytes, errno) in cases {
        let m = raw(&c, bytes, &[]);
        let what = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        assert_eq!(
            m.body.get("errno").and_then(Value::as_i64),
            Some(i64::from(errno.0)),
            "{what:?} answered with {}",
            m.body
        );
        refused(&m, *errno);
    }
    let long = "n".repeat(64);
    refused(
        &call(&c, with("create_session", "name", long.as_str()), &[]),
        Errno::EINVAL,
    );

    // Still the same connection, still serving, nothing created or leaked.
    let st = status(&c);
    assert_eq!((num(&st, "outgoing"), num(&st, "incoming")), (0, 0));
    agent.wait_fds(base);
}

#[test]
fn descriptor_count_mismatches_close_what_arrived() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let a = memfd(b"a");
    let b = memfd(b"b");

    // Says 2, 1 arrives.
    let m = raw(&c, br#"{"v":1,"fds":2,"op":"status"}"#, &[a.as_fd()]);
    assert!(refused(&m, Errno::EINVAL).contains("descriptors"));
    agent.wait_fds(base);
    // Says 0, 2 arrive.
    let m = raw(
        &c,
        br#"{"v":1,"fds":0,"op":"status"}"#,
        &[a.as_fd(), b.as_fd()],
    );
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base);
    // Does not say, 2 arrive.
    let m = raw(&c, br#"{"v":1,"op":"status"}"#, &[a.as_fd(), b.as_fd()]);
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base);
    // Malformed, with descriptors.
    let m = raw(&c, b"{{{{", &[a.as_fd(), b.as_fd()]);
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base);
    // Wrong version, with descriptors.
    let m = raw(&c, br#"{"v":9,"fds":1,"op":"status"}"#, &[a.as_fd()]);
    refused(&m, Errno::EPROTONOSUPPORT);
    agent.wait_fds(base);
    // Counted right, but the op takes none.
    let m = raw(
        &c,
        br#"{"v":1,"fds":2,"op":"status"}"#,
        &[a.as_fd(), b.as_fd()],
    );
    assert!(refused(&m, Errno::EINVAL).contains("takes no descriptors"));
    agent.wait_fds(base);
    let m = raw(
        &c,
        br#"{"v":1,"fds":1,"op":"create_session","name":"x"}"#,
        &[a.as_fd()],
    );
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base);
    // An unknown op with descriptors.
    let m = raw(&c, br#"{"v":1,"fds":1,"op":"gimme"}"#, &[a.as_fd()]);
    refused(&m, Errno::EOPNOTSUPP);
    agent.wait_fds(base);
    // The same on a session handle.
    let h = create(&c, "s");
    let with_handle = base + 1;
    agent.wait_fds(with_handle);
    let m = raw(
        &h,
        br#"{"v":1,"fds":2,"op":"preserve","tokens":[1,2]}"#,
        &[a.as_fd()],
    );
    refused(&m, Errno::EINVAL);
    let m = raw(
        &h,
        br#"{"v":1,"fds":0,"op":"info"}"#,
        &[a.as_fd(), b.as_fd()],
    );
    refused(&m, Errno::EINVAL);
    let m = raw(&h, br#"{"v":1,"fds":1,"op":"info"}"#, &[a.as_fd()]);
    refused(&m, Errno::EINVAL);
    agent.wait_fds(with_handle);
    // The session is untouched.
    let info = call(&h, request("info"), &[]);
    assert_eq!(num(ok(&info).get("session").unwrap(), "file_count"), 0);
    drop(h);
    agent.wait_fds(base);
    // Our copies still work.
    assert_eq!(read_memfd(&a), b"a");
}

#[test]
fn oversized_messages_are_emsgsize_and_their_descriptors_close() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let m1 = memfd(b"x");
    let m2 = memfd(b"y");
    let m3 = memfd(b"z");
    let fds = [m1.as_fd(), m2.as_fd(), m3.as_fd()];
    for size in [65_537usize, 100_000, 200_000] {
        let mut big = br#"{"v":1,"fds":3,"op":"status","pad":""#.to_vec();
        big.resize(size - 2, b'p');
        big.extend_from_slice(b"\"}");
        assert_eq!(big.len(), size);
        let m = raw(&c, &big, &fds);
        refused(&m, Errno::EMSGSIZE);
        agent.wait_fds(base);
    }
    // Exactly at the limit is fine (padded with whitespace: unknown members
    // are refused).
    let mut max = br#"{"v":1,"fds":0,"op":"status""#.to_vec();
    max.resize(65_536 - 1, b' ');
    max.extend_from_slice(b"}");
    ok(&raw(&c, &max, &[]));
    agent.wait_fds(base);
}

#[test]
fn the_most_descriptors_a_message_can_carry() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let one = memfd(b"one");
    // 253 copies of one file, on an op that takes none: all closed.
    let copies = vec![one.as_fd(); 253];
    let m = raw(&c, br#"{"v":1,"fds":253,"op":"status"}"#, &copies);
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base);

    // 253 distinct memfds preserved in one request.
    let h = create(&c, "many");
    let files: Vec<OwnedFd> = (0..253).map(|i| memfd(format!("{i}").as_bytes())).collect();
    let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
    let toks: Vec<u64> = (0..253).collect();
    let m = call(&h, with("preserve", "tokens", tokens(&toks)), &borrowed);
    assert_eq!(num(ok(&m), "preserved"), 253);
    agent.wait_fds(base + 1 + 253);
    // 254 tokens are too many, whatever comes with them.
    let toks: Vec<u64> = (1000..1254).collect();
    refused(
        &call(&h, with("preserve", "tokens", tokens(&toks)), &[]),
        Errno::EINVAL,
    );
    // Closing the handle aborts the session and every custody copy closes.
    drop(h);
    agent.wait_fds(base);
    let st = status(&c);
    assert_eq!((num(&st, "outgoing"), num(&st, "files")), (0, 0));
}

#[test]
fn truncated_control_data_is_refused_when_the_agent_runs_out_of_descriptors() {
    // With 48 descriptors the agent cannot take 253 in one message: the
    // kernel truncates the control data (MSG_CTRUNC), and the agent must
    // refuse the message and close the ones that did arrive.
    let agent = Agent::start_with(Opts {
        nofile: Some(48),
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let one = memfd(b"one");
    let copies = vec![one.as_fd(); 253];
    let m = raw(&c, br#"{"v":1,"fds":253,"op":"status"}"#, &copies);
    assert!(refused(&m, Errno::EINVAL).contains("truncated"));
    agent.wait_fds(base);
    let h = create(&c, "s");
    let toks: Vec<u64> = (0..253).collect();
    let m = call(&h, with("preserve", "tokens", tokens(&toks)), &copies);
    refused(&m, Errno::EINVAL);
    agent.wait_fds(base + 1);
    let info = call(&h, request("info"), &[]);
    assert_eq!(num(ok(&info).get("session").unwrap(), "file_count"), 0);
    drop(h);
    agent.wait_fds(base);
    ok(&call(&c, request("status"), &[]));
}

#[test]
fn accept_backs_off_instead_of_spinning_when_out_of_descriptors() {
    let mut agent = Agent::start_with(Opts {
        nofile: Some(32),
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    // More connections than the agent has descriptors for: it accepts what
    // it can, the rest wait in the backlog.
    let conns: Vec<OwnedFd> = (0..60).map(|_| agent.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // How often the agent is found runnable, not the CPU time it got: a
    // busy loop is runnable all the time however loaded the machine is (and
    // then gets less CPU time), an agent that rests between attempts sleeps.
    let share = agent.runnable_share(Duration::from_secs(1));
    assert!(
        share < 0.5,
        "the agent was runnable {:.0}% of 1 s while out of descriptors",
        share * 100.0
    );
    assert!(
        agent.log().contains("cannot accept connections"),
        "{}",
        tail(&agent.log())
    );
    // While it is full, a session cannot be made, and it says why.
    let m = call(&c, with("create_session", "name", "x"), &[]);
    refused(&m, Errno::EMFILE);
    drop(conns);
    agent.wait_fds(base);
    // Afterwards it serves new clients again.
    let c2 = agent.connect();
    ok(&call(&c2, request("status"), &[]));
    let h = create(&c2, "after");
    drop(h);
    drop(c2);
    agent.wait_fds(base);
    agent.assert_alive();
}

#[test]
fn unknown_ops_and_ops_on_the_wrong_socket() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let msg = refused(&call(&c, request("frobnicate"), &[]), Errno::EOPNOTSUPP);
    assert!(msg.contains("unknown op"), "{msg}");
    for op in ["preserve", "retrieve", "name", "info"] {
        let msg = refused(&call(&c, request(op), &[]), Errno::EOPNOTSUPP);
        assert!(msg.contains("session handle"), "{op}: {msg}");
    }
    let h = create(&c, "kv");
    for op in [
        "create_session",
        "retrieve_session",
        "status",
        "sessions",
        "show",
        "update",
    ] {
        let msg = refused(&call(&h, request(op), &[]), Errno::EOPNOTSUPP);
        assert!(msg.contains("agent connection"), "{op}: {msg}");
    }
    let msg = refused(&call(&h, request("bogus"), &[]), Errno::EOPNOTSUPP);
    assert!(msg.contains("unknown op"), "{msg}");
    refused(&raw(&h, br#"{"v":1,"fds":0}"#, &[]), Errno::EINVAL);
    // handover and finish exist on both, with different arguments.
    refused(&call(&c, request("handover"), &[]), Errno::EINVAL);
    refused(&call(&h, request("finish"), &[]), Errno::EINVAL); // outgoing
                                                               // Both sockets still work.
    let name = call(&h, request("name"), &[]);
    assert_eq!(ok(&name).get("name").and_then(Value::as_str), Some("kv"));
    assert_eq!(num(&status(&c), "outgoing"), 1);
    drop(h);
    agent.wait_fds(base);
    assert_eq!(num(&status(&c), "outgoing"), 0);
}

#[test]
fn preserve_argument_errors_and_the_first_refusal_stops_a_batch() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let h = create(&c, "p");
    agent.wait_fds(base + 1);
    let a = memfd(b"aaaa");
    let b = memfd(b"bb");
    let cases: Vec<(Value, Vec<BorrowedFd<'_>>)> = vec![
        (with("preserve", "tokens", tokens(&[1, 2])), vec![a.as_fd()]),
        (
            with("preserve", "tokens", tokens(&[1])),
            vec![a.as_fd(), b.as_fd()],
        ),
        (with("preserve", "tokens", tokens(&[])), vec![]),
        (with("preserve", "tokens", tokens(&[1])), vec![]),
        (request("preserve"), vec![a.as_fd()]),
        (with("preserve", "tokens", "1"), vec![a.as_fd()]),
        (
            with("preserve", "tokens", Value::Array(vec!["x".into()])),
            vec![a.as_fd()],
        ),
        (
            with("preserve", "tokens", Value::Array(vec![Value::from(-1i64)])),
            vec![a.as_fd()],
        ),
        (with("retrieve", "tokens", tokens(&[])), vec![]),
        (request("retrieve"), vec![]),
    ];
    for (body, fds) in cases {
        let what = body.to_string();
        let m = call(&h, body, &fds);
        assert_eq!(
            m.body.get("error").and_then(Value::as_str),
            Some("EINVAL"),
            "{what}: {}",
            m.body
        );
        refused(&m, Errno::EINVAL);
        agent.wait_fds(base + 1);
    }

    // [memfd, /dev/null-like file, memfd]: the first is preserved, the
    // second refused (no handler: ENOENT) and named, the third closed.
    let plain = File::open(std::env::current_exe().unwrap()).unwrap();
    let plain = OwnedFd::from(plain);
    let m = call(
        &h,
        with("preserve", "tokens", tokens(&[10, 11, 12])),
        &[a.as_fd(), plain.as_fd(), b.as_fd()],
    );
    refused(&m, Errno::ENOENT);
    assert_eq!(m.body.get("token").and_then(Value::as_u64), Some(11));
    agent.wait_fds(base + 1 + 1);
    // A used token, and the same file again.
    let m = call(&h, with("preserve", "tokens", tokens(&[10])), &[b.as_fd()]);
    refused(&m, Errno::EEXIST);
    assert_eq!(m.body.get("token").and_then(Value::as_u64), Some(10));
    let m = call(&h, with("preserve", "tokens", tokens(&[20])), &[a.as_fd()]);
    refused(&m, Errno::EBUSY);
    // An O_PATH descriptor holds no file.
    let opath = luo_sys::open_path(Path::new("/")).unwrap();
    refused(
        &call(
            &h,
            with("preserve", "tokens", tokens(&[21])),
            &[opath.as_fd()],
        ),
        Errno::EBADF,
    );
    agent.wait_fds(base + 1 + 1);
    let info = call(&h, request("info"), &[]);
    let s = ok(&info).get("session").unwrap();
    assert_eq!(num(s, "file_count"), 1);
    let f = &s.get("files").unwrap().as_array().unwrap()[0];
    assert_eq!(num(f, "token"), 10);
    assert_eq!(f.get("type").and_then(Value::as_str), Some("memfd"));
    assert_eq!(f.get("identity").and_then(Value::as_str), Some("inode"));
    assert_eq!(num(f, "pinned_bytes"), 4);
    assert_eq!(f.get("retrieved").and_then(Value::as_str), Some("no"));
    // retrieve on an outgoing session: EINVAL, naming the token.
    let m = call(&h, with("retrieve", "tokens", tokens(&[10])), &[]);
    refused(&m, Errno::EINVAL);
    drop(h);
    agent.wait_fds(base);
}

#[test]
fn listings_too_large_for_one_message_are_paged_and_echoes_are_cut_short() {
    let agent = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let handles: Vec<OwnedFd> = (0..600)
        .map(|i| create(&c, &format!("session-with-a-longish-name-{i:04}")))
        .collect();
    // 600 summaries do not fit in one datagram: they come in pages.
    let mut seen = 0;
    let mut pages = 0;
    let mut start = 0u64;
    loop {
        let m = call(&c, request("sessions").with("start", start), &[]);
        let body = ok(&m);
        seen += body
            .get("sessions")
            .and_then(Value::as_array)
            .unwrap()
            .len();
        pages += 1;
        match body.get("next").and_then(Value::as_u64) {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(seen, 600);
    assert!(pages > 1, "{pages} pages");
    // One session is still shown.
    ok(&call(
        &c,
        with("show", "name", "session-with-a-longish-name-0007"),
        &[],
    ));
    // A client's long strings do not come back whole.
    let long = "x".repeat(60_000);
    let msg = refused(&call(&c, request(&long), &[]), Errno::EOPNOTSUPP);
    assert!(msg.len() < 1000, "{} bytes", msg.len());
    let h = &handles[0];
    let msg = refused(&call(h, request(&long), &[]), Errno::EOPNOTSUPP);
    assert!(msg.len() < 1000, "{} bytes", msg.len());
    for op in [
        "show",
        "retrieve_session",
        "finish",
        "handover",
        "create_session",
    ] {
        let msg = refused(
            &call(&c, with(op, "name", long.as_str()), &[]),
            Errno::EINVAL,
        );
        assert!(msg.len() < 1000, "{op}: {} bytes", msg.len());
    }
    drop(handles);
    wait_status(&agent, &c, "sessions aborted", |st| {
        num(st, "outgoing") == 0
    });
    agent.wait_fds(base);
}

#[test]
fn ten_thousand_hit_and_run_connections() {
    let mut agent = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let status_req = common::wire::encode(&request("status"), 0);
    for i in 0..10_000 {
        let s = agent.connect();
        let bytes = match i % 10 {
            0 => common::wire::encode(&with("create_session", "name", format!("hit{i}")), 0),
            1 => b"{\"v\":1,\"fds\":0,\"op\":".to_vec(),
            2 => common::wire::encode(&request("sessions"), 0),
            _ => status_req.clone(),
        };
        luo_sys::send_with_fds(s.as_fd(), &bytes, &[]).unwrap();
        if i % 100 == 5 {
            // A second request queued behind the first.
            luo_sys::send_with_fds(s.as_fd(), &status_req, &[]).unwrap();
        }
        drop(s);
    }
    // Every session was aborted (its handle went down with the reply), the
    // agent still answers, and it holds what it held before.
    let st = wait_status(&agent, &c, "sessions left over", |st| {
        num(st, "outgoing") == 0 && num(st, "connections") == 1
    });
    assert_eq!(num(&st, "files"), 0);
    agent.wait_fds(base);
    agent.assert_alive();
    let created = agent.log().matches("created").count();
    assert_eq!(created, 1000, "every create_session ran");
    assert_eq!(agent.log().matches("aborted").count(), 1000);
}

#[test]
fn a_client_that_never_reads_cannot_stall_or_bloat_the_agent() {
    let agent = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let flood = agent.connect();
    luo_sys::set_nonblocking(flood.as_fd(), true).unwrap();
    let req = common::wire::encode(&request("sessions"), 0);
    let mut sent = 0u64;
    let mut blocked_at = None;
    let start = Instant::now();
    // Keep pushing for a second: with backpressure the pipeline fills and
    // stays full; without it the agent would keep draining (and buffering).
    let mut sent_in_last_stretch = 0;
    while start.elapsed() < Duration::from_secs(1) {
        match luo_sys::send_with_fds(flood.as_fd(), &req, &[]) {
            Ok(_) => {
                sent += 1;
                if start.elapsed() > Duration::from_millis(700) {
                    sent_in_last_stretch += 1;
                }
            }
            Err(Errno::EAGAIN) => {
                blocked_at.get_or_insert(sent);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("flooding: {e}"),
        }
        assert!(sent < 200_000, "sending never blocked: no backpressure");
    }
    assert!(
        blocked_at.is_some(),
        "sending never blocked after {sent} requests"
    );
    assert!(
        sent < 20_000,
        "{sent} requests went in: the agent kept reading a client that does not read"
    );
    assert_eq!(
        sent_in_last_stretch, 0,
        "the agent kept taking requests from a client whose replies pile up"
    );
    // Another client is served promptly.
    let t = Instant::now();
    let other = agent.connect();
    ok(&call(&other, request("status"), &[]));
    let h = create(&other, "still-works");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        agent.rss_kib() < 64 * 1024,
        "agent RSS {} KiB",
        agent.rss_kib()
    );
    drop(h);
    drop(other);
    drop(flood);
    agent.wait_fds(base);
    ok(&call(&c, request("status"), &[]));
}

#[test]
fn a_client_that_dies_mid_preserve_leaves_nothing_behind() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let files: Vec<OwnedFd> = (0..3).map(|i| memfd(&[b'a' + i; 16])).collect();
    let fds: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
    for round in 0..20 {
        let conn = agent.connect();
        let h = create(&conn, &format!("dying{round}"));
        // Preserve and hang up at once, without reading the reply; the
        // agent connection goes too, with a request still queued.
        common::wire::send(
            h.as_fd(),
            &with("preserve", "tokens", tokens(&[1, 2, 3])),
            &fds,
        )
        .unwrap();
        common::wire::send(conn.as_fd(), &request("sessions"), &[]).unwrap();
        drop(h);
        drop(conn);
    }
    wait_status(&agent, &c, "aborted sessions", |st| {
        num(st, "outgoing") == 0 && num(st, "files") == 0
    });
    agent.wait_fds(base);
    // The client's own files are intact, and free to be preserved again.
    for (i, f) in files.iter().enumerate() {
        assert_eq!(read_memfd(f), vec![b'a' + i as u8; 16]);
    }
    let h = create(&c, "again");
    let m = call(&h, with("preserve", "tokens", tokens(&[1, 2, 3])), &fds);
    assert_eq!(num(ok(&m), "preserved"), 3);
    drop(h);
    agent.wait_fds(base);
}

#[test]
fn a_handed_over_session_survives_a_retriever_that_dies() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let data = memfd(b"precious bytes");
    let h = create(&c, "kv");
    let m = call(
        &h,
        with("preserve", "tokens", tokens(&[7])),
        &[data.as_fd()],
    );
    assert_eq!(num(ok(&m), "preserved"), 1);
    drop(data);
    ok(&call(&h, request("handover"), &[]));
    // The old handle is stale now.
    refused(&call(&h, request("info"), &[]), Errno::ESTALE);
    drop(h);

    // A new process retrieves, takes the file and dies without finishing:
    // the request queue is not even read.
    let mut m = call(&c, with("retrieve_session", "name", "kv"), &[]);
    ok(&m);
    let h2 = m.fds.pop().unwrap();
    let mut got = call(&h2, with("retrieve", "tokens", tokens(&[7])), &[]);
    ok(&got);
    assert_eq!(read_memfd(&got.fds.pop().unwrap()), b"precious bytes");
    // Held: nobody else may retrieve it or finish it by name.
    refused(
        &call(&c, with("retrieve_session", "name", "kv"), &[]),
        Errno::EINVAL,
    );
    refused(&call(&c, with("finish", "name", "kv"), &[]), Errno::EINVAL);
    common::wire::send(h2.as_fd(), &request("info"), &[]).unwrap();
    drop(h2);

    let start = Instant::now();
    loop {
        let m = call(&c, request("sessions"), &[]);
        let list = ok(&m).get("sessions").unwrap().as_array().unwrap().to_vec();
        assert_eq!(list.len(), 1);
        if list[0].get("state").and_then(Value::as_str) == Some("incoming") {
            assert_eq!(num(&list[0], "file_count"), 1);
            break;
        }
        assert!(start.elapsed() < PATIENCE, "still {}", list[0]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let show = call(&c, with("show", "name", "kv"), &[]);
    let s = &ok(&show).get("sessions").unwrap().as_array().unwrap()[0];
    let f = &s.get("files").unwrap().as_array().unwrap()[0];
    assert_eq!(num(f, "token"), 7);
    assert_eq!(f.get("retrieved").and_then(Value::as_str), Some("yes"));

    // The next process gets the bytes back and finishes.
    let mut m = call(&c, with("retrieve_session", "name", "kv"), &[]);
    ok(&m);
    let h3 = m.fds.pop().unwrap();
    let mut got = call(&h3, with("retrieve", "tokens", tokens(&[7, 7])), &[]);
    ok(&got);
    assert_eq!(got.fds.len(), 2);
    assert_eq!(read_memfd(&got.fds.pop().unwrap()), b"precious bytes");
    // All or nothing: an unknown token gets no descriptor at all.
    let m = call(&h3, with("retrieve", "tokens", tokens(&[7, 8])), &[]);
    refused(&m, Errno::ENOENT);
    assert_eq!(m.body.get("token").and_then(Value::as_u64), Some(8));
    ok(&call(&h3, request("finish"), &[]));
    drop(got);
    drop(h3);
    wait_status(&agent, &c, "finished session gone", |st| {
        num(st, "incoming") == 0 && num(st, "outgoing") == 0
    });
    agent.wait_fds(base);
}

#[test]
fn by_name_requests_and_update() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let f = memfd(b"x");
    let h = create(&c, "a");
    ok(&call(
        &h,
        with("preserve", "tokens", tokens(&[1])),
        &[f.as_fd()],
    ));
    refused(
        &call(&c, with("create_session", "name", "a"), &[]),
        Errno::EEXIST,
    );
    refused(
        &call(&c, with("handover", "name", "nope"), &[]),
        Errno::ENOENT,
    );
    refused(&call(&c, with("finish", "name", "a"), &[]), Errno::ENOENT);
    refused(&call(&c, with("show", "name", "nope"), &[]), Errno::ENOENT);
    // Root may name any owner; nothing is there.
    refused(
        &call(
            &c,
            with("retrieve_session", "name", "a").with("owner", 4242u32),
            &[],
        ),
        Errno::ENOENT,
    );
    ok(&call(
        &c,
        with("handover", "name", "a").with("owner", 0u32),
        &[],
    ));
    refused(&call(&h, request("name"), &[]), Errno::ESTALE);
    // An outgoing session of the same name is fine, but handing it over
    // while the incoming one waits is EEXIST.
    let h2 = create(&c, "a");
    refused(&call(&h2, request("handover"), &[]), Errno::EEXIST);
    let show = call(&c, with("show", "name", "a"), &[]);
    assert_eq!(
        ok(&show).get("sessions").unwrap().as_array().unwrap().len(),
        2
    );
    // Finish by name discards what was never retrieved.
    ok(&call(&c, with("finish", "name", "a"), &[]));
    // update: the outgoing one crosses; every handle goes stale.
    let m = call(&c, request("update"), &[]);
    assert_eq!(num(ok(&m), "epoch"), 2);
    refused(&call(&h2, request("info"), &[]), Errno::ESTALE);
    let st = status(&c);
    assert_eq!(
        (
            num(&st, "epoch"),
            num(&st, "outgoing"),
            num(&st, "incoming")
        ),
        (2, 0, 1)
    );
    ok(&call(&c, with("finish", "name", "a"), &[]));
    drop(h);
    drop(h2);
    wait_status(&agent, &c, "all gone", |st| num(st, "incoming") == 0);
    agent.wait_fds(base);
}

#[test]
fn status_reports_the_agent() {
    let agent = Agent::start_with(Opts {
        args: &["--quota-sessions", "5", "--quota-bytes", "1M"],
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let st = status(&c);
    let parsed =
        serde_json::from_value::<luo_proto::types::Status>(st.clone()).expect("status parses");
    assert_eq!(parsed.agent, format!("luod {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(parsed.protocol, 1);
    assert_eq!(parsed.backend, "emulated");
    assert_eq!(parsed.pid, agent.pid());
    assert_eq!(parsed.uid, luo_sys::geteuid());
    assert_eq!(parsed.connections, 1);
    assert_eq!(parsed.open_fds as usize, base);
    assert_eq!(parsed.nofile_soft, parsed.nofile_hard);
    assert_eq!(parsed.quota.sessions, 5);
    assert_eq!(parsed.quota.files, u64::MAX);
    assert!(st.get("quota").unwrap().get("files").unwrap().is_null());
    assert_eq!(parsed.quota.pinned_bytes, 1 << 20);
    let log = agent.log();
    assert!(log.contains("ready"), "{log}");
    assert!(log.contains("RLIMIT_NOFILE"), "{log}");
}

#[test]
fn the_socket_file_is_guarded() {
    let agent = Agent::start();
    let mode = std::fs::metadata(&agent.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666);
    // A second agent on the same socket refuses to start.
    let out = Command::new(LUOD)
        .arg("--socket")
        .arg(&agent.sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // The first is unharmed.
    let c = agent.connect();
    ok(&call(&c, request("status"), &[]));

    // A stale socket (nobody listening) is replaced; a parent directory is
    // created.
    let dir = fresh_dir();
    let stale = dir.join("sub").join("luod.sock");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(luo_sys::seqpacket_listen(&stale, 1).unwrap());
    assert!(stale.exists());
    let mut second = Agent {
        child: Command::new(LUOD)
            .arg("--socket")
            .arg(&stale)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        dir: dir.clone(),
        sock: stale.clone(),
    };
    second.wait_ready();
    drop(second);
    // A missing parent is created with mode 0755.
    let dir = fresh_dir();
    let nested = dir.join("a").join("b").join("luod.sock");
    let mut third = Agent {
        child: Command::new(LUOD)
            .arg("--socket")
            .arg(&nested)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        dir: dir.clone(),
        sock: nested.clone(),
    };
    third.wait_ready();
    let pmode = std::fs::metadata(nested.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(pmode & 0o777, 0o755);
    drop(third);
    // Not a socket: refused, and the file is left alone.
    let dir = fresh_dir();
    let file = dir.join("luod.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let out = Command::new(LUOD)
        .arg("--socket")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn command_line_errors_exit_2() {
    let help = Command::new(LUOD).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--socket",
        "--backend",
        "--quota-sessions",
        "--quota-files",
        "--quota-bytes",
        "--log-level",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    let dir = fresh_dir();
    let sock = dir.join("s.sock");
    for bad in [
        &["--bogus"][..],
        &["--backend", "kernel", "--device", "/nonexistent/liveupdate"],
        &["--backend", "magic"],
        &["--kernel-session-files", "0"],
        &["--quota-bytes", "12X"],
        &["--quota-files", "-1"],
        &["--log-level", "chatty"],
        &["--socket"],
    ] {
        let out = Command::new(LUOD)
            .args(bad)
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}: no message");
    }
    let out = Command::new(LUOD)
        .arg("--socket")
        .arg(&sock)
        .env("LUOD_LOG", "chatty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(LUOD)
        .args(["--backend", "kernel", "--device", "/nonexistent/liveupdate"])
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/liveupdate") && err.contains("liveupdate=on"),
        "{err}"
    );
    assert!(!sock.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// --- Other uids (only when the tests run as root) ---------------------------

const HELPER_ENV: &str = "LUOD_HOSTILE_HELPER";
/// The uid (and gid) helpers run as: `nobody`.
const NOBODY: u32 = 65534;

/// Not a test: the client that [`as_uid`] runs under another uid, by
/// running this test binary again with `LUOD_HOSTILE_HELPER` set. Without
/// it, this does nothing.
///
/// Each request is sent on the agent connection, or with `"_handle": i` on
/// the i-th descriptor received so far; `"_memfds": [size, ...]` attaches
/// new memfds of those sizes; `"_connect": true` sends it on a new agent
/// connection, kept open. Replies are printed as `REPLY {json}` lines.
#[test]
#[ignore = "a helper process that as_uid starts"]
fn uid_helper() {
    let spec = std::env::var(HELPER_ENV).expect("started by as_uid only");
    let spec = serde_json::from_slice::<Value>(spec.as_bytes()).unwrap();
    let sock = luo_sys::seqpacket_connect(Path::new(
        spec.get("socket").and_then(Value::as_str).unwrap(),
    ))
    .unwrap();
    let sock = sock;
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut extra: Vec<OwnedFd> = Vec::new();
    for r in spec.get("requests").and_then(Value::as_array).unwrap() {
        let files: Vec<OwnedFd> = r
            .get("_memfds")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|n| {
                let f = File::from(luo_sys::memfd_create("helper", 0).unwrap());
                f.set_len(n.as_u64().unwrap()).unwrap();
                OwnedFd::from(f)
            })
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
        if r.get("_connect").is_some() {
            let path = spec.get("socket").and_then(Value::as_str).unwrap();
            extra.push(luo_sys::seqpacket_connect(Path::new(path)).unwrap());
        }
        let target = match r.get("_handle").and_then(Value::as_u64) {
            Some(i) => &received[i as usize],
            None if r.get("_connect").is_some() => extra.last().unwrap(),
            None => &sock,
        };
        // The helper's own members ("_memfds", ...) are not the agent's.
        let mut req = r.clone();
        if let Some(o) = req.as_object_mut() {
            o.retain(|k, _| !k.starts_with('_'));
        }
        let mut m = call(target, req, &fds);
        println!("REPLY {}", m.body);
        received.append(&mut m.fds);
    }
}

/// Runs `requests` as `uid` (see [`uid_helper`]); `None` unless root.
fn as_uid(agent: &Agent, uid: u32, requests: Vec<Value>) -> Option<Vec<Value>> {
    if luo_sys::geteuid() != 0 {
        eprintln!("skipped: running clients as another uid needs root");
        return None;
    }
    let spec = common::wire::json!({
        "socket": agent.sock.to_str().unwrap(),
        "requests": requests,
    });
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "uid_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, spec.to_string())
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        stdout
            .lines()
            // libtest may print "test uid_helper ... " on the same line.
            .filter_map(|l| l.find("REPLY ").map(|i| &l[i + 6..]))
            .map(|l| serde_json::from_slice::<Value>(l.as_bytes()).unwrap())
            .collect(),
    )
}

fn errno_of(v: &Value) -> Option<&str> {
    v.get("error").and_then(Value::as_str)
}

#[test]
fn names_are_per_uid_and_only_root_crosses_them() {
    let agent = Agent::start();
    let (c, base) = baseline(&agent);
    let h = create(&c, "db");
    let Some(r) = as_uid(
        &agent,
        NOBODY,
        vec![
            request("sessions"),
            with("show", "name", "db"),
            with("show", "name", "db").with("owner", 0u32),
            with("retrieve_session", "name", "db").with("owner", 0u32),
            with("finish", "name", "db").with("owner", 0u32),
            with("handover", "name", "db").with("owner", 0u32),
            with("create_session", "name", "db"),
            with("show", "name", "db").with("owner", NOBODY),
            request("status"),
            request("update"),
        ],
    ) else {
        return;
    };
    assert_eq!(r.len(), 10, "{r:?}");
    assert_eq!(r[0].get("sessions").unwrap().as_array().unwrap().len(), 0);
    assert_eq!(errno_of(&r[1]), Some("ENOENT"));
    for v in &r[2..6] {
        assert_eq!(errno_of(v), Some("EPERM"), "{}", v);
        let msg = v.get("message").and_then(Value::as_str).unwrap();
        assert!(msg.contains("only uid 0 or root"), "{msg}");
    }
    assert_eq!(r[6].get("ok"), Some(&Value::Bool(true)), "{}", r[6]);
    assert_eq!(r[7].get("ok"), Some(&Value::Bool(true)), "{}", r[7]);
    assert_eq!(num(&r[8], "uid"), u64::from(NOBODY));
    assert_eq!(num(&r[8], "outgoing"), 1);
    assert_eq!(errno_of(&r[9]), Some("EPERM"));
    // Root's session was not touched; the helper's died with it.
    let info = call(&h, request("info"), &[]);
    assert_eq!(
        ok(&info)
            .get("session")
            .unwrap()
            .get("state")
            .and_then(Value::as_str),
        Some("open")
    );
    wait_status(&agent, &c, "the helper's session aborted", |st| {
        num(st, "outgoing") == 1
    });
    drop(h);
    agent.wait_fds(base);
}

#[test]
fn quotas_bind_other_uids_with_edquot() {
    let agent = Agent::start_with(Opts {
        args: &[
            "--quota-sessions",
            "1",
            "--quota-files",
            "3",
            "--quota-bytes",
            "8K",
        ],
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let pres = |toks: &[u64], sizes: &[u64]| {
        with("preserve", "tokens", tokens(toks))
            .with("_handle", 0u64)
            .with(
                "_memfds",
                Value::Array(sizes.iter().map(|&s| Value::from(s)).collect()),
            )
    };
    let Some(r) = as_uid(
        &agent,
        NOBODY,
        vec![
            with("create_session", "name", "a"),
            with("create_session", "name", "b"),
            pres(&[1, 2], &[4096, 4096]),
            pres(&[3], &[1]),
            pres(&[4], &[0]),
            pres(&[5], &[0]),
            request("status"),
        ],
    ) else {
        return;
    };
    let msg = |v: &Value| {
        v.get("message")
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    };
    assert_eq!(r[0].get("ok"), Some(&Value::Bool(true)));
    assert_eq!(errno_of(&r[1]), Some("EDQUOT"));
    assert!(msg(&r[1]).contains("--quota-sessions"), "{}", msg(&r[1]));
    assert_eq!(num(&r[2], "preserved"), 2);
    assert_eq!(errno_of(&r[3]), Some("EDQUOT"));
    assert!(msg(&r[3]).contains("--quota-bytes"), "{}", msg(&r[3]));
    assert_eq!(num(&r[3], "token"), 3);
    assert_eq!(num(&r[4], "preserved"), 1);
    assert_eq!(errno_of(&r[5]), Some("EDQUOT"));
    assert!(msg(&r[5]).contains("--quota-files"), "{}", msg(&r[5]));
    let usage = r[6].get("usage").unwrap();
    assert_eq!(
        (
            num(usage, "sessions"),
            num(usage, "files"),
            num(usage, "pinned_bytes")
        ),
        (1, 3, 8192)
    );
    // Root is exempt.
    let hs: Vec<OwnedFd> = (0..3).map(|i| create(&c, &format!("root{i}"))).collect();
    drop(hs);
    wait_status(&agent, &c, "everything aborted", |st| {
        num(st, "outgoing") == 0
    });
    agent.wait_fds(base);
}

#[test]
fn connections_per_uid_are_limited_and_root_is_not() {
    let agent = Agent::start_with(Opts {
        args: &["--quota-connections", "2"],
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let Some(r) = as_uid(
        &agent,
        NOBODY,
        vec![
            request("status"),
            request("status").with("_connect", true),
            request("status").with("_connect", true),
        ],
    ) else {
        return;
    };
    assert_eq!(r[0].get("ok"), Some(&Value::Bool(true)));
    assert_eq!(r[1].get("ok"), Some(&Value::Bool(true)));
    assert_eq!(errno_of(&r[2]), Some("EDQUOT"), "{}", r[2]);
    let msg = r[2].get("message").and_then(Value::as_str).unwrap();
    assert!(msg.contains("--quota-connections"), "{msg}");
    // The helper's connections closed with it: the uid may connect again.
    let r = as_uid(&agent, NOBODY, vec![request("status")]).unwrap();
    assert_eq!(r[0].get("ok"), Some(&Value::Bool(true)));
    // Root is exempt.
    let mine: Vec<OwnedFd> = (0..5).map(|_| agent.connect()).collect();
    for m in &mine {
        ok(&call(m, request("status"), &[]));
    }
    drop(mine);
    status(&c);
    agent.wait_fds(base);
}

/// A client that sends retrieves on its session handle without reading the
/// replies: they pile up until luod's send finds the socket full, and the
/// reply that waits in luod holds copies of its files (and nothing else
/// does). Once the client reads, every reply brings the right files, and
/// luod holds what it held before; finish lets go of every file.
#[test]
fn a_session_client_that_reads_its_replies_late_gets_every_file_right() {
    const FILES: u64 = 64;
    const PER: u64 = 8;
    let agent = Agent::start_with(Opts {
        log: "info",
        ..DEFAULT
    });
    let (c, base) = baseline(&agent);
    let all: Vec<u64> = (1..=FILES).collect();
    let text = |t: u64| format!("late reader's file {t}").into_bytes();
    {
        let h = create(&c, "late");
        let files: Vec<OwnedFd> = all.iter().map(|&t| memfd(&text(t))).collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
        ok(&call(&h, with("preserve", "tokens", tokens(&all)), &fds));
        ok(&call(&h, request("handover"), &[]));
    }
    let mut m = call(&c, with("retrieve_session", "name", "late"), &[]);
    ok(&m);
    let h = m.fds.pop().expect("a session handle");
    // luod: what it held, the custody files and the handle's end.
    agent.wait_fds(base + FILES as usize + 1);
    let held = agent.fds();
    let batch = |i: u64| -> Vec<u64> { (0..PER).map(|k| (i * PER + k) % FILES + 1).collect() };
    luo_sys::set_nonblocking(h.as_fd(), true).unwrap();
    let mut sent = 0u64;
    let mut stuck = None;
    while stuck.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(300)) {
        let req = common::wire::encode(&with("retrieve", "tokens", tokens(&batch(sent))), 0);
        match luo_sys::send_with_fds(h.as_fd(), &req, &[]) {
            Ok(_) => {
                sent += 1;
                stuck = None;
            }
            Err(Errno::EAGAIN) => {
                stuck.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("sending retrieve {sent}: {e}"),
        }
        assert!(sent < 100_000, "sending never blocked: no backpressure");
    }
    // One reply waits in luod, with copies of its files: its send found
    // the socket full.
    agent.wait_fds(held + PER as usize);
    for i in 0..sent {
        let m = common::wire::recv(&h);
        ok(&m);
        let want = batch(i);
        assert_eq!(m.fds.len(), want.len(), "reply {i}");
        for (&t, fd) in want.iter().zip(&m.fds) {
            assert_eq!(read_memfd(fd), text(t), "reply {i}, token {t}");
        }
    }
    agent.wait_fds(held);
    ok(&call(&h, request("finish"), &[]));
    agent.wait_fds(held - FILES as usize);
    drop(h);
    agent.wait_fds(base);
    ok(&call(&c, request("status"), &[]));
}
