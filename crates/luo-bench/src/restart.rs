//! `luo-bench restart`: restarting an HTTP server under load. The same
//! server restarted three ways while one client requests back to back:
//! by `luoctl run` in overlap mode, by `luoctl run` in stop-start mode (the
//! listener stays open in both), and the plain way (stop the server, start
//! it again, binding its port itself). Reported: requests answered, failed
//! requests, the longest request, and how long a restart took.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{Agent, Programs, TempDir};
use crate::cli::{positive, Failure};
use crate::machine::Machine;
use crate::report::{write_json, Num};
use crate::stats::grouped;

/// `luo-bench restart --help`'s description.
pub const ABOUT: &str = "\
Restarting an HTTP server while one client requests it back to back (each
request with a 2 s timeout), three ways: luoctl run --mode overlap (the new
instance is ready before the old one stops), luoctl run --mode stop-start
(the listener stays open in luod, connections wait in its queue), and a
plain stop and start of the same server binding its port itself. Servers: a
small Python HTTP server (python3's standard library, finishing its
requests on SIGTERM) and gunicorn with 2
workers (Debian's /usr/bin/gunicorn, when installed). Reported per way:
requests answered and failed, the longest request, and the median and
longest restart (from the request to the new server answering).";

/// `luo-bench restart`'s options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Restarts per server and way
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 10)]
    restarts: usize,
    /// Servers: python, gunicorn (default: both, gunicorn when installed)
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    servers: Vec<String>,
    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The luod binary (default: next to luo-bench, built if missing)
    #[arg(long, value_name = "PATH")]
    luod: Option<PathBuf>,
    /// The luoctl binary (default: next to luo-bench)
    #[arg(long, value_name = "PATH")]
    luoctl: Option<PathBuf>,
}

const GUNICORN: &str = "/usr/bin/gunicorn";

/// The Python server: the listener from `LISTEN_FDS` when given one (and
/// `READY=1` when there is a `NOTIFY_SOCKET`), else it binds the port. On
/// SIGTERM it stops accepting and finishes the requests it has, as
/// gunicorn does.
const PY_SERVER: &str = r#"import http.server, os, signal, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from %d\n" % os.getpid()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
activated = os.environ.get("LISTEN_PID") == str(os.getpid())
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H, bind_and_activate=not activated)
srv.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
if activated:
    srv.socket.close(); srv.socket = socket.socket(fileno=3)
if "NOTIFY_SOCKET" in os.environ:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
srv.serve_forever()
srv.server_close()
"#;

const WSGI_APP: &str = "import os
def app(environ, start_response):
    body = ('hello from %d\\n' % os.getppid()).encode()
    start_response('200 OK', [('Content-Length', str(len(body)))])
    return [body]
";

/// One way of restarting one server.
#[derive(Debug, Serialize)]
struct Row {
    server: String,
    way: &'static str,
    restarts: usize,
    requests_ok: u64,
    requests_failed: u64,
    failed_per_restart: Num,
    longest_request_ms: Num,
    median_restart_ms: Num,
    longest_restart_ms: Num,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    benchmark: &'static str,
    machine: crate::machine::MachineReport<'a>,
    rows: Vec<Row>,
}

/// The client: GET / back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<(u64, u64, Duration)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn get(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err("not a 200 reply".into())
    }
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new((0, 0, Duration::ZERO)));
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(3600);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let t0 = Instant::now();
                let ok = get(port, Duration::from_secs(2)).is_ok();
                let took = t0.elapsed();
                let mut t = t.lock().unwrap();
                t.2 = t.2.max(took);
                if ok {
                    t.0 += 1;
                } else {
                    t.1 += 1;
                    drop(t);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Load {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.tally.lock().unwrap()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn free_port() -> Result<u16, Failure> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_http(port: u16, what: &str) -> Result<(), Failure> {
    let t = Instant::now();
    while get(port, Duration::from_secs(2)).is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(Failure::run(format!(
                "{what}: port {port} does not answer after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A child in its own process group, stopped on drop: SIGTERM (a `luoctl
/// run` supervisor then stops its service, which leads a process group of
/// its own), and after 15 s SIGKILL for what is left, the service's group
/// too.
struct Group(Child);

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILL to every process of group `pgid`.
fn kill9(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = luo_sys::service::kill_group(pgid, luo_sys::signal::SIGKILL);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id();
        let mut groups = children(pid);
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = luo_sys::service::kill(pid, luo_sys::signal::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                groups.extend(children(pid));
                if !matches!(self.0.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill9(pid);
        for g in groups {
            kill9(g);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Group, Failure> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(Group)
        .map_err(|e| Failure::run(format!("starting {what}: {e}")))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn row(
    server: &str,
    way: &'static str,
    restarts: usize,
    tally: (u64, u64, Duration),
    mut took: Vec<Duration>,
) -> Row {
    let longest = took.iter().max().copied().unwrap_or_default();
    Row {
        server: server.to_string(),
        way,
        restarts,
        requests_ok: tally.0,
        requests_failed: tally.1,
        failed_per_restart: Num(tally.1 as f64 / restarts as f64),
        longest_request_ms: Num(tally.2.as_secs_f64() * 1e3),
        median_restart_ms: Num(median(&mut took).as_secs_f64() * 1e3),
        longest_restart_ms: Num(longest.as_secs_f64() * 1e3),
    }
}

/// The server's command: with `port` it binds the port itself.
fn command(server: &str, dir: &Path, port: Option<u16>) -> Vec<String> {
    let d = dir.display().to_string();
    match server {
        "gunicorn" => {
            let mut c = vec![GUNICORN.into(), "--chdir".into(), d];
            c.extend(["--workers".into(), "2".into()]);
            if let Some(p) = port {
                c.extend(["--bind".into(), format!("127.0.0.1:{p}")]);
            }
            c.push("app:app".into());
            c
        }
        _ => vec![
            "python3".into(),
            dir.join("server.py").display().to_string(),
            port.unwrap_or(0).to_string(),
        ],
    }
}

fn luo_run(
    luoctl: &Path,
    agent: &Agent,
    server: &str,
    dir: &Path,
    mode: &'static str,
    restarts: usize,
) -> Result<Row, Failure> {
    let port = free_port()?;
    let name = format!("bench-{server}-{mode}");
    let listen = format!("http=tcp:127.0.0.1:{port}");
    let mut cmd = Command::new(luoctl);
    cmd.arg("--socket")
        .arg(&agent.socket)
        .args(["run", &name, "--listen", &listen, "--mode", mode, "--"])
        .args(command(server, dir, None));
    let _sup = spawn(&mut cmd, "luoctl run")?;
    wait_http(port, "luoctl run")?;
    let load = Load::start(port);
    let mut took = Vec::new();
    for _ in 0..restarts {
        let t = Instant::now();
        let out = Command::new(luoctl)
            .arg("--socket")
            .arg(&agent.socket)
            .args(["restart", &name])
            .output()?;
        if !out.status.success() {
            return Err(Failure::run(format!(
                "luoctl restart {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // stop-start returns once the new instance is ready; both ways are
        // timed to the first answer.
        wait_http(port, "after luoctl restart")?;
        took.push(t.elapsed());
    }
    std::thread::sleep(Duration::from_millis(200));
    let tally = load.stop();
    Ok(row(
        server,
        if mode == "overlap" {
            "luoctl run, overlap"
        } else {
            "luoctl run, stop-start"
        },
        restarts,
        tally,
        took,
    ))
}

fn plain(server: &str, dir: &Path, restarts: usize) -> Result<Row, Failure> {
    let port = free_port()?;
    let argv = command(server, dir, Some(port));
    let start = || spawn(Command::new(&argv[0]).args(&argv[1..]), server);
    let mut g = start()?;
    wait_http(port, server)?;
    let load = Load::start(port);
    let mut took = Vec::new();
    for _ in 0..restarts {
        let t = Instant::now();
        let _ = Command::new("kill").arg(g.0.id().to_string()).status();
        let _ = g.0.wait();
        drop(g);
        g = start()?;
        wait_http(port, server)?;
        took.push(t.elapsed());
    }
    std::thread::sleep(Duration::from_millis(200));
    let tally = load.stop();
    drop(g);
    Ok(row(server, "plain stop and start", restarts, tally, took))
}

pub fn main(o: Options) -> Result<(), Failure> {
    let machine = Machine::setup()?;
    let exe = std::env::current_exe()?;
    let luoctl = o
        .luoctl
        .clone()
        .unwrap_or_else(|| exe.parent().unwrap_or(Path::new(".")).join("luoctl"));
    let progs = Programs::locate(o.luod.clone(), None)?;
    if !luoctl.is_file() {
        return Err(Failure::run(format!(
            "{} is missing: build it with `cargo build --release -p luod`, or pass --luoctl PATH",
            luoctl.display()
        )));
    }
    let mut servers = o.servers.clone();
    if servers.is_empty() {
        servers.push("python".into());
        if Path::new(GUNICORN).exists() {
            servers.push("gunicorn".into());
        } else {
            eprintln!("{GUNICORN} is not installed (apt-get install gunicorn): python only");
        }
    }
    for s in &servers {
        if s != "python" && s != "gunicorn" {
            return Err(Failure::usage(format!(
                "unknown server {s:?}: python or gunicorn"
            )));
        }
    }
    let dir = TempDir::new("restart")?;
    std::fs::write(dir.0.join("server.py"), PY_SERVER)?;
    std::fs::write(dir.0.join("app.py"), WSGI_APP)?;
    let agent = Agent::start(&progs.luod, "restart-luod")?;
    println!("restart under load: {}", machine.describe());
    println!(
        "{:<9} {:<23} {:>9} {:>10} {:>7} {:>11} {:>12} {:>12} {:>12}",
        "server",
        "way",
        "restarts",
        "answered",
        "failed",
        "failed/rst",
        "longest req",
        "median rst",
        "longest rst"
    );
    let mut rows = Vec::new();
    for s in &servers {
        for r in [
            luo_run(&luoctl, &agent, s, &dir.0, "overlap", o.restarts)?,
            luo_run(&luoctl, &agent, s, &dir.0, "stop-start", o.restarts)?,
            plain(s, &dir.0, o.restarts)?,
        ] {
            println!(
                "{:<9} {:<23} {:>9} {:>10} {:>7} {:>11.1} {:>9.0} ms {:>9.0} ms {:>9.0} ms",
                r.server,
                r.way,
                r.restarts,
                grouped(r.requests_ok),
                grouped(r.requests_failed),
                r.failed_per_restart.0,
                r.longest_request_ms.0,
                r.median_restart_ms.0,
                r.longest_restart_ms.0
            );
            rows.push(r);
        }
    }
    if let Some(path) = &o.json {
        let report = Report {
            benchmark: "restart",
            machine: machine.report(),
            rows,
        };
        write_json(path, &report)?;
    }
    Ok(())
}
