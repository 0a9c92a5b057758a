//! gunicorn, Debian's package unmodified, under `luoctl run`: it takes its
//! listening socket from `LISTEN_FDS` and says `READY=1` on `NOTIFY_SOCKET`
//! by itself. Twenty overlap restarts under a client that never stops
//! requesting lose no request; the same server stopped and started the
//! plain way, under the same load, is measured for comparison.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::run::{self, Load, Supervisor};
use common::Agent;

/// The WSGI application: five lines, each reply naming the gunicorn master
/// (the parent of the worker), so that every instance shows.
const APP: &str = "import os
def app(environ, start_response):
    body = ('hello from gunicorn %d\\n' % os.getppid()).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
";

const RESTARTS: usize = 20;
const PLAIN_RESTARTS: usize = 10;

#[test]
fn gunicorn_overlap_restarts_lose_no_request() {
    if !run::have_gunicorn() {
        return;
    }
    let agent = Agent::start();
    let dir = common::fresh_dir();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let chdir = dir.display().to_string();
    let port = run::free_port();
    let listen = format!("http=tcp:127.0.0.1:{port}");
    let log = dir.join("run.log");
    let mut sup = Supervisor::start(
        &agent.sock,
        &log,
        &[
            "web",
            "--listen",
            &listen,
            "--mode",
            "overlap",
            "--ready",
            "notify",
            "--",
            run::GUNICORN,
            "--chdir",
            &chdir,
            "--workers",
            "2",
            "app:app",
        ],
    );
    let context = || format!("luoctl run:\n{}", common::tail(&sup.log()));
    let first = run::wait_http(port, &context);
    assert!(first.starts_with("hello from gunicorn"), "{first:?}");

    let load = Load::start(port);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..RESTARTS {
        let t = Instant::now();
        let out = run::luoctl(&agent.sock, &["restart", "web"]);
        assert!(
            out.status.success(),
            "restart {i}: luoctl restart web failed ({}):\n{}\nluoctl run:\n{}",
            out.status,
            run::both(&out),
            common::tail(&sup.log())
        );
        slowest = slowest.max(t.elapsed());
        sup.assert_alive();
    }
    // A moment of service from the last instance too.
    std::thread::sleep(Duration::from_millis(300));
    let overlap = load.stop();
    let took = started.elapsed();
    println!(
        "luoctl run --mode overlap: {RESTARTS} restarts of gunicorn in {:.1} s (slowest restart {} ms): \
         {} requests answered, {} failed, longest request {} ms, {} gunicorn masters seen",
        took.as_secs_f64(),
        slowest.as_millis(),
        overlap.ok,
        overlap.failed,
        overlap.max_latency.as_millis(),
        overlap.bodies.len()
    );
    assert_eq!(
        overlap.failed,
        0,
        "requests failed during overlap restarts: {:?}\nluoctl run:\n{}",
        overlap.errors,
        common::tail(&sup.log())
    );
    assert!(
        overlap.bodies.len() > RESTARTS,
        "the client saw {} gunicorn masters, expected one per restart and the first: {:?}",
        overlap.bodies.len(),
        overlap.bodies
    );
    let services = run::luoctl_ok(&agent.sock, &["services", "web"]);
    assert!(services.contains("web"), "luoctl services web: {services}");
    drop(sup);

    // The same server, restarted the plain way: stop it, start it again,
    // binding the port itself.
    let port = run::free_port();
    let bind = format!("127.0.0.1:{port}");
    let spawn = || {
        Command::new(run::GUNICORN)
            .args([
                "--chdir",
                &chdir,
                "--workers",
                "2",
                "--bind",
                &bind,
                "app:app",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(common::Proc)
            .unwrap()
    };
    let mut g = spawn();
    let nothing = String::new;
    run::wait_http(port, &nothing);
    let load = Load::start(port);
    let started = Instant::now();
    for _ in 0..PLAIN_RESTARTS {
        common::terminate(g.id());
        g.wait().unwrap();
        g = spawn();
        // As a restart script would: on to the next one once it answers.
        run::wait_http(port, &nothing);
    }
    std::thread::sleep(Duration::from_millis(300));
    let plain = load.stop();
    common::terminate(g.id());
    g.wait().unwrap();
    println!(
        "plain stop and start: {PLAIN_RESTARTS} restarts of gunicorn in {:.1} s: \
         {} requests answered, {} failed ({:.1} per restart), longest request {} ms; first errors: {:?}",
        started.elapsed().as_secs_f64(),
        plain.ok,
        plain.failed,
        plain.failed as f64 / PLAIN_RESTARTS as f64,
        plain.max_latency.as_millis(),
        &plain.errors[..plain.errors.len().min(3)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
