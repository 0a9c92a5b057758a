//! The notification socket's rules, as systemd's: a datagram from a
//! process outside the service is ignored and logged (`--notify-access
//! main`, the default); `FDSTORE=1` over `--fdstore-max` is refused; a
//! malformed datagram changes nothing. The services are small Python
//! programs (`tests/run/svc.py`) that write what they were given at each
//! start, so what the fd store holds is read where a service sees it: in
//! `LISTEN_FDNAMES` at its next start.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::run::{self, Supervisor};
use common::Agent;

/// A Python service under `luoctl run web` with one listener named `http`.
struct Web {
    // Dropped in this order: the supervisor stops the service first.
    sup: Supervisor,
    agent: Agent,
    dir: std::path::PathBuf,
    report: std::path::PathBuf,
}

impl Web {
    fn start(options: &[&str], mode: &[&str]) -> Web {
        let agent = Agent::start();
        let dir = common::fresh_dir();
        let report = dir.join("report");
        let listen = format!("http=tcp:127.0.0.1:{}", run::free_port());
        let svc = run::svc_py();
        let mut args = vec!["web", "--listen", &listen];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--", run::python(), &svc]);
        args.extend_from_slice(mode);
        let report_s = report.to_str().unwrap().to_string();
        args.push(&report_s);
        let sup = Supervisor::start(&agent.sock, &dir.join("run.log"), &args);
        let web = Web {
            sup,
            agent,
            dir,
            report,
        };
        web.wait_starts(1);
        web
    }

    fn ctx(&self) -> String {
        format!("luoctl run:\n{}", common::tail(&self.sup.log()))
    }

    /// The `start` lines of the report, once there are `n`.
    fn wait_starts(&self, n: usize) -> Vec<String> {
        run::wait_lines(
            &self.report,
            n,
            |l| l.starts_with("start "),
            "service start",
            &|| self.ctx(),
        )
    }

    fn wait_line(&self, line: &str) {
        run::wait_lines(&self.report, 1, |l| l == line, line, &|| self.ctx());
    }

    /// The pid of the service's latest start.
    fn pid(&self) -> u32 {
        let starts = self.wait_starts(1);
        let last = starts.last().unwrap();
        last.split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The fd names the latest start was given.
    fn names(&self) -> String {
        let starts = self.wait_starts(1);
        starts
            .last()
            .unwrap()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("names="))
            .unwrap_or("")
            .to_string()
    }

    fn services(&self) -> String {
        run::luoctl_ok(&self.agent.sock, &["services", "web"])
    }

    fn restart(&self) {
        let n = self.wait_starts(1).len();
        let out = run::luoctl(&self.agent.sock, &["restart", "web"]);
        assert!(
            out.status.success(),
            "luoctl restart web: {}\n{}",
            run::both(&out),
            self.ctx()
        );
        self.wait_starts(n + 1);
    }

    /// Waits until `luoctl services web` mentions `what`.
    fn wait_services(&self, what: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let s = self.services();
            if s.contains(what) {
                return s;
            }
            assert!(
                start.elapsed() < run::SLOW,
                "luoctl services web never said {what:?}:\n{s}\n{}",
                self.ctx()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn send(path: &str, data: &[u8]) {
    let path = match path.strip_prefix('@') {
        Some(_) => panic!("abstract notification sockets are not handled by this test: {path}"),
        None => Path::new(path),
    };
    let s = UnixDatagram::unbound().unwrap();
    s.send_to(data, path).expect("sending to NOTIFY_SOCKET");
}

#[test]
fn a_notification_from_outside_the_service_is_ignored_and_logged() {
    if !run::have_python() {
        return;
    }
    let web = Web::start(&["--notify-access", "main"], &["serve", "v1"]);
    web.wait_services("serving v1");
    let pid = web.pid();
    let notify = run::environ_of(pid, "NOTIFY_SOCKET")
        .unwrap_or_else(|| panic!("the service has no NOTIFY_SOCKET\n{}", web.ctx()));
    // This test's process is not the service's main process.
    send(&notify, b"STATUS=intruder\nREADY=1\nSTOPPING=1");
    let me = std::process::id().to_string();
    let start = std::time::Instant::now();
    while !web.sup.log().contains(&me) {
        assert!(
            start.elapsed() < run::SLOW,
            "luoctl run did not log the notification from pid {me}:\n{}",
            web.ctx()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = web.services();
    assert!(!s.contains("intruder"), "{s}");
    assert!(
        web.sup
            .log()
            .contains(&format!("notification from pid {me} ignored")),
        "{}",
        web.ctx()
    );
    assert!(s.contains("serving v1"), "{s}");
    // STOPPING=1 from outside did not stop anything.
    assert!(
        common::fd_count(pid) > 0,
        "the service is gone\n{}",
        web.ctx()
    );
    println!(
        "ignored and logged: {}",
        web.sup
            .log()
            .lines()
            .filter(|l| l.contains(&me))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn fdstore_over_the_limit_is_refused() {
    if !run::have_python() {
        return;
    }
    let web = Web::start(&["--fdstore-max", "2"], &["store", "3"]);
    web.wait_line("stored 3");
    // The store keeps the first two; the third is refused and logged.
    let start = std::time::Instant::now();
    while !web
        .sup
        .log()
        .contains("fd store full (2 of --fdstore-max 2): closing the fd named 'm2'")
    {
        assert!(
            start.elapsed() < run::SLOW,
            "luoctl run did not log the refused fd m2:\n{}",
            web.ctx()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    web.restart();
    let names = web.names();
    println!("--fdstore-max 2, three memfds stored: the next start was given {names:?}");
    let mut stored: Vec<&str> = names.split(':').filter(|n| *n != "http").collect();
    stored.sort();
    assert_eq!(
        stored,
        ["m0", "m1"],
        "LISTEN_FDNAMES={names}\n{}",
        web.ctx()
    );
    assert!(
        names.starts_with("http"),
        "the listener comes first: {names}"
    );
}

#[test]
fn a_malformed_notification_changes_nothing() {
    if !run::have_python() {
        return;
    }
    let web = Web::start(&[], &["malformed"]);
    web.wait_line("malformed sent");
    // The service sent STATUS=malformed sent after the malformed ones.
    let s = web.wait_services("malformed sent");
    assert!(!s.contains("evil"), "{s}");
    assert!(
        common::fd_count(web.pid()) > 0,
        "the service is gone\n{}",
        web.ctx()
    );
    web.restart();
    assert_eq!(
        web.names(),
        "http",
        "a malformed notification stored a descriptor\n{}",
        web.ctx()
    );
}
