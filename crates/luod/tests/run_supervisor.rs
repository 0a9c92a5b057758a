//! `luoctl run`, `restart` and `services` against a real luod, with a tiny
//! Python service that speaks sd_notify (without python3 the tests fail as
//! root and are skipped otherwise, as the other `luoctl run` tests).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::run::{free_port, LUOCTL};
use common::{Agent, Opts, DEFAULT, PATIENCE};

/// Checks socket activation as a library does, serves "GEN PID STATE" on
/// its listener, keeps a memfd named `state` in the fd store (written by
/// the first instance), and fails on demand (`crash`, `hang`).
const SERVICE: &str = r#"
import array, os, signal, socket, sys, time
gen, mode = sys.argv[1], sys.argv[2]
pid = os.getpid()
n = int(os.environ.get("LISTEN_FDS", "0"))
assert os.environ["LISTEN_PID"] == str(pid)
names = os.environ["LISTEN_FDNAMES"].split(":")
assert len(names) == n, names
def notify(msg, fds=()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    s.sendmsg([msg.encode()], anc, 0, os.environ["NOTIFY_SOCKET"])
listener = socket.socket(fileno=3 + names.index("web"))
if "state" in names:
    state = os.pread(3 + names.index("state"), 64, 0).decode()
else:
    m = os.memfd_create("state")
    os.write(m, ("written by " + gen).encode())
    notify("FDSTORE=1\nFDNAME=state\nFDPOLL=0", [m])
    state = "new"
if mode == "crash":
    notify("STATUS=broken on purpose\nFDSTORE=1\nFDNAME=junk", [os.memfd_create("junk")])
    print("giving up: " + gen, file=sys.stderr, flush=True)
    time.sleep(0.2)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
notify("READY=1\nSTATUS=serving " + gen)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
listener.settimeout(0.05)
while not stop:
    try:
        c, _ = listener.accept()
    except (socket.timeout, InterruptedError):
        continue
    c.setblocking(True)
    c.sendall(f"{gen} {pid} {state}\n".encode())
    c.close()
"#;

/// Whether python3 is here; as [`common::run::have`]: missing, the test
/// fails as root and is skipped otherwise.
fn python() -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import socket, os; os.memfd_create")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    common::run::have(ok, "python3 (3.8 or later)", "python3")
}

struct Sup {
    child: Child,
    err: PathBuf,
}

impl Drop for Sup {
    /// SIGTERM: the supervisor stops its service and exits.
    fn drop(&mut self) {
        let _ = luo_sys::service::kill(self.child.id() as i32, libc_sigterm());
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn libc_sigterm() -> i32 {
    luo_sys::service::signal_from_name("TERM").unwrap()
}

fn service_file(dir: &Path) -> PathBuf {
    let p = dir.join("svc.py");
    std::fs::write(&p, SERVICE).unwrap();
    p
}

fn run(agent: &Agent, name: &str, args: &[&str], cmd: &[&str]) -> Sup {
    run_as(agent, None, name, args, cmd)
}

/// As [`run`], as `uid` when given.
fn run_as(agent: &Agent, uid: Option<u32>, name: &str, args: &[&str], cmd: &[&str]) -> Sup {
    let err = agent.dir.join(format!("{name}.{}.err", std::process::id()));
    let mut c = Command::new(LUOCTL);
    if let Some(u) = uid {
        use std::os::unix::process::CommandExt;
        c.uid(u).gid(u);
    }
    let child = c
        .arg("--socket")
        .arg(&agent.sock)
        .arg("run")
        .arg(name)
        .args(args)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    Sup { child, err }
}

fn luoctl(agent: &Agent, args: &[&str]) -> Output {
    Command::new(LUOCTL)
        .arg("--socket")
        .arg(&agent.sock)
        .args(args)
        .output()
        .unwrap()
}

fn services(agent: &Agent, name: &str) -> serde_json::Value {
    let o = luoctl(agent, &["--json", "services", name]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()[0].clone()
}

fn wait_state(agent: &Agent, name: &str, sup: &Sup, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = services(agent, name);
        if s["state"] == state {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{name} not {state}: {s}\n{}",
            std::fs::read_to_string(&sup.err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ask(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Asks until the instance `gen` answers: while instances overlap, the
/// old one may still take a connection.
fn ask_gen(port: u16, gen: &str) -> String {
    let start = Instant::now();
    loop {
        let a = ask(port);
        if a.starts_with(&format!("{gen} ")) {
            return a;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{gen} never answered; last: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn overlap_restart_keeps_the_listener_and_the_store_and_a_failed_one_rolls_back() {
    if !python() {
        return;
    }
    let agent = Agent::start();
    let svc = service_file(&agent.dir);
    let svc = svc.to_str().unwrap();
    let port = free_port();
    let listen = format!("web=tcp:127.0.0.1:{port}");
    let sup = run(
        &agent,
        "web",
        &["--listen", &listen, "--ready-timeout", "3s"],
        &["python3", svc, "one", "ok"],
    );
    let s = wait_state(&agent, "web", &sup, "ready");
    assert_eq!(s["status"], "serving one");
    assert!(ask(port).starts_with("one "));

    // A new command; the new instance gets the listener and the store.
    let o = luoctl(
        &agent,
        &["restart", "web", "--", "python3", svc, "two", "ok"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let answer = ask_gen(port, "two");
    assert!(
        answer.starts_with("two ") && answer.ends_with("written by one\n"),
        "{answer}"
    );

    // A restart that crashes is rolled back: "two" keeps serving, the fd
    // the failed instance stored is dropped, and the message says why.
    let o = luoctl(
        &agent,
        &["restart", "web", "--", "python3", svc, "three", "crash"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "exited with status 3",
        "STATUS=broken on purpose",
        "giving up: three",
        "keeps serving",
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(ask(port).starts_with("two "));
    let s = services(&agent, "web");
    assert_eq!(s["rollbacks"], 1);
    assert_eq!(s["command"][2], "two");
    let stored: Vec<&str> = s["stored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ["state"]);

    // Not ready in time: rolled back too.
    let o = luoctl(
        &agent,
        &["restart", "web", "--", "python3", svc, "four", "hang"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(sup);
}

#[test]
fn a_new_supervisor_takes_over_from_a_killed_one() {
    if !python() {
        return;
    }
    let agent = Agent::start();
    let svc = service_file(&agent.dir);
    let svc = svc.to_str().unwrap();
    let port = free_port();
    let listen = format!("web=tcp:127.0.0.1:{port}");
    let mut sup = run(
        &agent,
        "svc",
        &["--listen", &listen],
        &["python3", svc, "a", "ok"],
    );
    let old = wait_state(&agent, "svc", &sup, "ready")["pid"]
        .as_i64()
        .unwrap();
    // A restart in progress when the supervisor dies: its new instance is
    // an orphan too.
    let mut restart = Command::new(LUOCTL)
        .arg("--socket")
        .arg(&agent.sock)
        .args(["restart", "svc", "--", "python3", svc, "hung", "hang"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let hung = loop {
        if let Some(p) = services(&agent, "svc")["restarting"].as_i64() {
            break p;
        }
        assert!(start.elapsed() < PATIENCE, "no restart in progress");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Recorded in the manifest at the next tick.
    std::thread::sleep(Duration::from_millis(300));
    sup.child.kill().unwrap();
    sup.child.wait().unwrap();
    // The service keeps serving without its supervisor.
    assert!(ask(port).starts_with("a "));
    // The listener is not bound again (it is in use): it comes from the
    // session, and the old instance is stopped once the new one is ready.
    let sup = run(
        &agent,
        "svc",
        &["--listen", &listen],
        &["python3", svc, "b", "ok"],
    );
    wait_state(&agent, "svc", &sup, "ready");
    let start = Instant::now();
    while !common::exited(old as u32) || !common::exited(hung as u32) {
        assert!(start.elapsed() < PATIENCE, "an old instance still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        restart.wait().unwrap().code(),
        Some(3),
        "luoctl restart: the supervisor hung up"
    );
    let answer = ask_gen(port, "b");
    assert!(
        answer.starts_with("b ") && answer.ends_with("written by a\n"),
        "{answer}"
    );
    let log = std::fs::read_to_string(&sup.err).unwrap();
    assert!(log.contains("taken back from the session"), "{log}");
}

#[test]
fn the_trampoline_passes_fds_as_systemd_does_and_restart_no_exits_with_the_status() {
    let agent = Agent::start();
    let out = agent.dir.join("env.txt");
    let port = free_port();
    let script = format!(
        "echo \"$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES\" > {out}; ls -l /proc/$$/fd/3 >> {out}; test -S /proc/$$/fd/3 || test -e /proc/$$/fd/3; exit 5",
        out = out.display()
    );
    let listen = format!("http=tcp:127.0.0.1:{port}");
    let unix = format!("unix:{}/env.sock", agent.dir.display());
    let o = Command::new(LUOCTL)
        .arg("--socket")
        .arg(&agent.sock)
        .args([
            "run",
            "env",
            "--restart",
            "no",
            "--listen",
            &listen,
            "--listen",
            &unix,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
    assert_eq!(
        first[0], first[1],
        "LISTEN_PID is the service's pid: {text}"
    );
    // Listeners in --listen order; a listener without FDNAME= is named
    // after the service.
    assert_eq!(&first[2..], ["2", "http:env"]);
    assert!(text.contains("socket:"), "{text}");
}

/// A command that cannot be run (a typo, a file that is not executable)
/// is not restarted forever as if it had crashed: `luoctl run` exits at
/// once with the shell's status and the errno, said once. A command that
/// ran and exited 127 itself is still restarted (`--restart on-failure`).
#[test]
fn a_command_that_cannot_be_run_ends_luoctl_run_with_its_errno() {
    let agent = Agent::start();
    for (cmd, status, errno) in [
        ("/nonexistent/luo-service", 127, "ENOENT"),
        ("/etc/passwd", 126, "EACCES"),
    ] {
        let o = Command::new(LUOCTL)
            .arg("--socket")
            .arg(&agent.sock)
            .args(["run", "typo", "--", cmd])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(status), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(
            last,
            format!("luoctl: service 'typo' did not start: cannot run {cmd} ({errno})"),
            "{err}"
        );
        assert_eq!(err.matches("started instance").count(), 1, "{err}");
        // The trampoline's own line says it once, with its errno.
        assert_eq!(err.matches(&format!("({errno})")).count(), 2, "{err}");
    }
    // Exiting 127 after running is a failure like any other.
    let sup = run(
        &agent,
        "ran",
        &["--ready", "after:0s"],
        &["sh", "-c", "exit 127"],
    );
    let start = Instant::now();
    while std::fs::read_to_string(&sup.err)
        .unwrap_or_default()
        .matches("started instance")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < PATIENCE,
            "not started again: {}",
            std::fs::read_to_string(&sup.err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A helper that sends `READY=1` from a process other than the main one.
const CHILD_READY: &str = r#"
import os, socket, subprocess, sys, time
code = "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1\\nSTATUS=from a child', os.environ['NOTIFY_SOCKET'])"
subprocess.run([sys.executable, "-c", code], check=True)
# Malformed and foreign-looking messages change nothing.
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=should not show\nMAINPID=abc", os.environ["NOTIFY_SOCKET"])
time.sleep(3600)
"#;

#[test]
fn notify_access_decides_who_may_say_ready() {
    if !python() {
        return;
    }
    let agent = Agent::start();
    let helper = agent.dir.join("child_ready.py");
    std::fs::write(&helper, CHILD_READY).unwrap();
    let helper = helper.to_str().unwrap();
    let sup = run(
        &agent,
        "main",
        &["--stop-timeout", "1s"],
        &["python3", helper],
    );
    // Wait until the child's notifications have been refused (however
    // long Python takes to start here), then check they changed nothing.
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&sup.err).unwrap_or_default();
        if log.contains("ignored (--notify-access main)")
            && log.contains("malformed notification ignored")
        {
            break log;
        }
        assert!(start.elapsed() < PATIENCE, "nothing refused yet: {log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = services(&agent, "main");
    assert_eq!(s["state"], "starting", "{s}\n{log}");
    assert!(s["status"].is_null(), "{s}");
    drop(sup);

    let sup = run(
        &agent,
        "all",
        &["--notify-access", "all", "--stop-timeout", "1s"],
        &["python3", helper],
    );
    let s = wait_state(&agent, "all", &sup, "ready");
    assert_eq!(s["status"], "from a child");
}

#[test]
fn a_missed_watchdog_keep_alive_is_a_failure_and_the_service_is_started_again() {
    let agent = Agent::start();
    let sup = run(
        &agent,
        "dog",
        &["--ready", "after:10ms", "--watchdog", "300ms"],
        &[
            "sh",
            "-c",
            "echo \"usec=$WATCHDOG_USEC pid=$WATCHDOG_PID self=$$\" >&2; exec sleep 100",
        ],
    );
    let start = Instant::now();
    loop {
        let s = services(&agent, "dog");
        if s["restarts"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "never restarted: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&sup.err).unwrap();
    assert!(log.contains("missed its watchdog keep-alive"), "{log}");
    assert!(log.contains("killed by signal ABRT"), "{log}");
    let line = log.lines().find(|l| l.starts_with("dog[")).unwrap();
    let pid = line.split("self=").nth(1).unwrap();
    assert!(
        line.contains("usec=300000 ") && line.contains(&format!("pid={pid} ")),
        "{line}"
    );
}

#[test]
fn stop_start_on_sighup_and_a_failed_one_starts_the_old_command_again() {
    if !python() {
        return;
    }
    let agent = Agent::start();
    let svc = service_file(&agent.dir);
    let svc = svc.to_str().unwrap();
    let port = free_port();
    let listen = format!("web=tcp:127.0.0.1:{port}");
    let sup = run(
        &agent,
        "ss",
        &["--listen", &listen, "--mode", "stop-start"],
        &["python3", svc, "one", "ok"],
    );
    let first = wait_state(&agent, "ss", &sup, "ready")["pid"].clone();
    // SIGHUP: the same command, stopped first, then started.
    luo_sys::service::kill(
        sup.child.id() as i32,
        luo_sys::service::signal_from_name("HUP").unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let s = services(&agent, "ss");
        if s["state"] == "ready" && s["pid"] != first {
            assert_eq!(s["restarts"], 1);
            break;
        }
        assert!(start.elapsed() < PATIENCE, "no restart: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ask(port).ends_with("written by one\n"));
    let o = luoctl(
        &agent,
        &["restart", "ss", "--", "python3", svc, "two", "crash"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the old command is started again"), "{err}");
    wait_state(&agent, "ss", &sup, "ready");
    assert!(ask_gen(port, "one").ends_with("written by one\n"));
    let s = services(&agent, "ss");
    assert_eq!(s["command"][2], "one");
    assert_eq!(s["rollbacks"], 1);
}

/// A user who is not root runs a service against a luod of its own: the
/// supervisor, the session (owned by that uid) and a restart asked for by
/// that user.
#[test]
fn an_unprivileged_user_runs_a_service_against_its_own_luod() {
    if !python() {
        return;
    }
    if luo_sys::geteuid() != 0 {
        eprintln!("skipped: becoming uid 65534 needs root (run as an ordinary user, every test here is unprivileged)");
        return;
    }
    const USER: u32 = 65534;
    let agent = Agent::start_with(Opts {
        uid: Some(USER),
        dir_mode: 0o777,
        ..DEFAULT
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&USER.to_string())),
        "luod does not run as uid {USER}:\n{status}"
    );
    let svc = service_file(&agent.dir);
    let svc = svc.to_str().unwrap();
    let port = free_port();
    let listen = format!("web=tcp:127.0.0.1:{port}");
    let sup = run_as(
        &agent,
        Some(USER),
        "web",
        &["--listen", &listen],
        &["python3", svc, "g1", "serve"],
    );
    wait_state(&agent, "web", &sup, "ready");
    assert!(ask_gen(port, "g1").ends_with(" new\n"));
    // The user restarts it, with a new command.
    let o = {
        use std::os::unix::process::CommandExt;
        Command::new(LUOCTL)
            .uid(USER)
            .gid(USER)
            .arg("--socket")
            .arg(&agent.sock)
            .args(["restart", "web", "--", "python3", svc, "g2", "serve"])
            .output()
            .unwrap()
    };
    assert!(
        o.status.success(),
        "restart as uid {USER}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The new instance found the store the first one wrote.
    assert!(ask_gen(port, "g2").ends_with(" written by g1\n"));
    // The session is the user's, and persistent.
    let o = luoctl(&agent, &["--json", "sessions"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let web = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap_or_else(|| panic!("no session 'web': {v}"))
        .clone();
    assert_eq!(web["owner"], USER, "{web}");
    assert_eq!(web["persistent"], true, "{web}");
    drop(sup);
}
