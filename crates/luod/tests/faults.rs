//! Fault injection at the system-call layer (luo-sys's `fault-injection`
//! feature, `LUO_FAULT`; docs/security.md, "Fault injection"): for each
//! scenario (a preserve batch, a retrieve batch, a handover, an update, a
//! mirror sync after a crash, an in-place upgrade), one run counts the
//! system calls of each kind that luod, its keeper and an upgraded image
//! make during the scenario; then one run per call (sampled evenly when
//! there are more than [`CAP`]) makes that call fail, with an errno the
//! call can really return, each on a fresh luod with its keeper.
//!
//! After each run: the request was answered (no hang) with success or a
//! clear error; luod is alive, or, where a fault can legitimately stop it
//! (its start, an upgraded image), a luod started again takes every file
//! back from the keeper; every file handed over before the fault, or whose
//! handover succeeded, comes back with its bytes; and luod, the keeper and
//! this client hold the descriptors they held before.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{
    fd_count, fd_listing, keeper_pid, memfd, read_memfd, spawn_kept_env, tail, KeeperGuard, Proc,
    LUOD, PATIENCE,
};

/// Most runs per (scenario, process, kind): more calls than this are
/// sampled, spread evenly from the first to the last.
const CAP: u64 = 12;

/// Errnos each kind of call can really return (from the EMFILE,
/// ENFILE, ENOMEM, EINTR, EAGAIN, EPIPE, ENOSPC), used in turn. Calls
/// whose real failures are none of those (fstat, fcntl, kcmp, a pread of
/// a memfd) get ENOMEM, as an unexpected failure.
fn errnos(kind: &str) -> &'static [&'static str] {
    match kind {
        "send" => &["EPIPE", "EAGAIN", "ENOMEM", "EINTR"],
        "recv" => &["ENOMEM", "EINTR", "EAGAIN"],
        "socket" => &["EMFILE", "ENFILE", "ENOMEM"],
        "accept" => &["EMFILE", "ENFILE", "ENOMEM", "EAGAIN", "EINTR"],
        "epoll" => &["ENOMEM", "ENOSPC", "EMFILE"],
        "epoll_wait" => &["EINTR"],
        "memfd" => &["EMFILE", "ENFILE", "ENOMEM"],
        "write" => &["ENOSPC", "ENOMEM"],
        "fdinfo" => &["EMFILE", "ENFILE", "ENOMEM"],
        _ => &["ENOMEM"],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    PreserveBatch,
    RetrieveBatch,
    Handover,
    Update,
    MirrorSync,
    Upgrade,
}

/// The fault of one run.
#[derive(Debug, Clone)]
struct Fault {
    role: String,
    kind: String,
    n: u64,
    errno: &'static str,
}

impl Fault {
    fn spec(&self) -> String {
        format!("{}:{}:{}:{}", self.role, self.kind, self.n, self.errno)
    }
}

/// A luod with its keeper in a fresh directory; fault injection armed
/// (the file `fault/armed`) only around the scenario's request.
struct Lab {
    dir: PathBuf,
    sock: PathBuf,
    fault_dir: PathBuf,
    spec: Option<String>,
    luod: Proc,
    keepers: Vec<KeeperGuard>,
}

impl Lab {
    fn new(fault: Option<&Fault>) -> Lab {
        let dir = common::fresh_dir();
        let sock = dir.join("luod.sock");
        let fault_dir = dir.join("fault");
        std::fs::create_dir(&fault_dir).unwrap();
        let spec = fault.map(Fault::spec);
        let luod = spawn(&dir, &sock, &fault_dir, spec.as_deref());
        let mut lab = Lab {
            dir,
            sock,
            fault_dir,
            spec,
            luod,
            keepers: Vec::new(),
        };
        assert!(lab.wait_ready(), "luod did not start:\n{}", lab.log());
        lab
    }

    fn log(&self) -> String {
        tail(&std::fs::read_to_string(self.dir.join("luod.log")).unwrap_or_default()).to_string()
    }

    /// Waits until luod answers a request: false when it exited first.
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        loop {
            if luo::Client::connect_to(&self.sock).is_ok_and(|c| c.status().is_ok()) {
                return true;
            }
            if let Ok(Some(_)) = self.luod.try_wait() {
                return false;
            }
            assert!(start.elapsed() < PATIENCE, "luod hangs:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether luod answers a request; if not, waits until it has exited
    /// (a luod that neither answers nor exits fails the test).
    fn answers(&mut self) -> bool {
        if luo::Client::connect_to(&self.sock).is_ok_and(|c| c.status().is_ok()) {
            return true;
        }
        let start = Instant::now();
        while self.luod.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < PATIENCE,
                "{:?}: luod neither answers nor exits:\n{}",
                self.spec,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Starts luod again (the fault is disarmed by then).
    fn restart(&mut self) {
        self.luod = spawn(&self.dir, &self.sock, &self.fault_dir, self.spec.as_deref());
        assert!(
            self.wait_ready(),
            "luod did not start again:\n{}",
            self.log()
        );
    }

    fn client(&mut self) -> luo::Client {
        let c = luo::Client::connect_to(&self.sock)
            .unwrap_or_else(|e| panic!("{:?}: connecting to luod: {e}\n{}", self.spec, self.log()));
        let status = c
            .status()
            .unwrap_or_else(|e| panic!("{:?}: status: {e}\n{}", self.spec, self.log()));
        let k = status
            .store
            .strip_prefix("keeper (pid ")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{:?}: no keeper: {status:?}\n{}", self.spec, self.log()));
        if !self.keepers.iter().any(|g| g.0 == k) {
            self.keepers.push(KeeperGuard(k));
        }
        c
    }

    fn arm(&self) {
        std::fs::write(self.fault_dir.join("armed"), "").unwrap();
    }

    fn disarm(&self) {
        std::fs::remove_file(self.fault_dir.join("armed")).unwrap();
    }

    /// Calls counted per process role and kind, and whether a fault fired.
    fn counts(&self) -> (BTreeMap<(String, String), u64>, bool) {
        let mut out = BTreeMap::new();
        let mut fired = false;
        for e in std::fs::read_dir(&self.fault_dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((role, _pid)) = name.split_once('.') else {
                continue;
            };
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                match line.split_once(' ') {
                    Some((kind, n)) => {
                        *out.entry((role.to_string(), kind.to_string())).or_default() +=
                            n.parse::<u64>().unwrap()
                    }
                    None => fired |= line == "fired",
                }
            }
        }
        (out, fired)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.luod.kill();
        let _ = self.luod.wait();
        self.keepers.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn spawn(dir: &Path, sock: &Path, fault_dir: &Path, spec: Option<&str>) -> Proc {
    let fault_dir = fault_dir.to_str().unwrap();
    let mut env = vec![("LUO_FAULT_DIR", fault_dir)];
    if let Some(s) = spec {
        env.push(("LUO_FAULT", s));
    }
    spawn_kept_env(Path::new(LUOD), dir, sock, &[], &env)
}

/// Runs `f` on its own thread: a request that gets no answer fails the
/// test instead of hanging it.
fn timed<T: Send + 'static>(lab: &Lab, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
        panic!(
            "no answer within {PATIENCE:?} ({:?}):\n{}",
            lab.spec,
            lab.log()
        )
    })
}

/// Waits until process `pid` holds no more than `want` descriptors (one
/// fewer is an agent whose signalfd could not be watched after an
/// upgrade: it carries on without).
fn wait_fds(pid: u32, want: usize, what: &str, lab: &Lab) {
    let start = Instant::now();
    loop {
        let n = fd_count(pid);
        if n <= want {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{:?}: {what} holds {n} descriptors, {want} before:\n{}\nlog:\n{}",
            lab.spec,
            fd_listing(pid),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn text(name: &str, token: u64) -> String {
    format!("bytes of {name} token {token}")
}

fn memfds(name: &str, tokens: &[u64]) -> Vec<(u64, OwnedFd)> {
    tokens.iter().map(|&t| (t, memfd(&text(name, t)))).collect()
}

/// Creates session `name` with `tokens` and hands it over.
fn handed_over(c: &luo::Client, name: &str, tokens: &[u64]) {
    let s = c.create_session(name).unwrap();
    let files = memfds(name, tokens);
    let batch: Vec<_> = files.iter().map(|(t, f)| (*t, f.as_fd())).collect();
    s.preserve_batch(&batch).unwrap();
    s.handover().unwrap();
}

/// Checks that `fds` hold the bytes of `name`'s `tokens`.
fn check_bytes(spec: &Option<String>, name: &str, tokens: &[u64], fds: &[OwnedFd]) {
    assert_eq!(fds.len(), tokens.len(), "{spec:?}: {name}");
    for (t, fd) in tokens.iter().zip(fds) {
        assert_eq!(
            read_memfd(fd),
            text(name, *t).as_bytes(),
            "{spec:?}: {name} token {t}: its bytes changed"
        );
    }
}

/// A refusal says what went wrong.
fn check_error(spec: &Option<String>, e: &luo::Error) {
    assert!(e.errno.0 != 0, "{spec:?}: an error without errno: {e:?}");
    assert!(
        !e.message.trim().is_empty(),
        "{spec:?}: an error without message: {e:?}"
    );
}

/// What one run saw.
#[derive(Debug, Default)]
struct Seen {
    fired: bool,
    refused: Option<String>,
    luod_stopped: bool,
}

/// The descriptor counts of an idle luod and keeper with one client.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    luod: usize,
    keeper: usize,
}

/// One run of `sc` with `fault` (none: the counting run). Returns what it
/// saw, the baseline, and the calls counted.
fn run(
    sc: Scenario,
    fault: Option<&Fault>,
    baseline: Option<Baseline>,
) -> (Seen, Baseline, BTreeMap<(String, String), u64>) {
    let client_fds = luo_sys::open_fd_count().unwrap();
    let mut lab = Lab::new(fault);
    let spec = lab.spec.clone();
    let c = lab.client();
    let keeper = keeper_pid(&c);
    let base = baseline.unwrap_or_else(|| Baseline {
        luod: common::settled(lab.luod.id()),
        keeper: common::settled(keeper),
    });
    if baseline.is_some() {
        wait_fds(lab.luod.id(), base.luod, "luod (at start)", &lab);
        wait_fds(keeper, base.keeper, "the keeper (at start)", &lab);
    }
    // Handed over before the fault: must come back whatever happens.
    let mut expected: Vec<(String, Vec<u64>)> = vec![("kept".into(), vec![1, 2, 3])];
    handed_over(&c, "kept", &[1, 2, 3]);
    let mut seen = Seen::default();
    let refused = |e: &luo::Error| {
        check_error(&spec, e);
        Some(format!("{}", e.errno))
    };

    match sc {
        Scenario::PreserveBatch => {
            let s = c.create_session("p").unwrap();
            let files = memfds("p", &[1, 2, 3, 4]);
            lab.arm();
            let (r, s, files) = timed(&lab, move || {
                let batch: Vec<_> = files.iter().map(|(t, f)| (*t, f.as_fd())).collect();
                (s.preserve_batch(&batch), s, files)
            });
            lab.disarm();
            drop(files);
            if let Err(e) = &r {
                seen.refused = refused(e);
            }
            // The files before a refused one stay preserved (in order).
            let n = s.info().unwrap().file_count as u64;
            assert!(r.is_ok() == (n == 4), "{spec:?}: {r:?} with {n} files");
            s.handover().unwrap();
            expected.push(("p".into(), (1..=n).collect()));
            drop((s, c));
        }
        Scenario::RetrieveBatch => {
            handed_over(&c, "out", &[1, 2, 3, 4]);
            let s = c.retrieve_session("out").unwrap();
            lab.arm();
            let r = timed(&lab, move || s.retrieve_batch(&[1, 2, 3, 4]));
            lab.disarm();
            match r {
                Ok(fds) => check_bytes(&spec, "out", &[1, 2, 3, 4], &fds),
                Err(e) => seen.refused = refused(&e),
            }
            expected.push(("out".into(), vec![1, 2, 3, 4]));
            drop(c);
        }
        Scenario::Handover => {
            let s = c.create_session("h").unwrap();
            let files = memfds("h", &[1, 2, 3, 4]);
            let batch: Vec<_> = files.iter().map(|(t, f)| (*t, f.as_fd())).collect();
            s.preserve_batch(&batch).unwrap();
            drop(batch);
            drop(files);
            lab.arm();
            let (r, s) = timed(&lab, move || (s.handover(), s));
            lab.disarm();
            match &r {
                Ok(()) => expected.push(("h".into(), vec![1, 2, 3, 4])),
                Err(e) => {
                    seen.refused = refused(e);
                    // Refused: still open, and ours to hand over again.
                    s.handover().unwrap_or_else(|e| {
                        panic!("{spec:?}: handing over again after a refusal: {e}")
                    });
                    expected.push(("h".into(), vec![1, 2, 3, 4]));
                }
            }
            drop((s, c));
        }
        Scenario::Update => {
            lab.arm();
            let r = timed(&lab, move || {
                let r = c.update();
                (r, c)
            });
            lab.disarm();
            if let Err(e) = &r.0 {
                seen.refused = refused(e);
            }
            drop(r);
        }
        Scenario::MirrorSync => {
            handed_over(&c, "more", &[1, 2]);
            expected.push(("more".into(), vec![1, 2]));
            drop(c);
            // A crash: the next luod takes everything back from the keeper.
            let _ = lab.luod.kill();
            let _ = lab.luod.wait();
            lab.arm();
            lab.luod = spawn(&lab.dir, &lab.sock, &lab.fault_dir, lab.spec.as_deref());
            let ready = lab.wait_ready();
            lab.disarm();
            if !ready {
                // Its start failed (the fault was in it): said so, exited.
                seen.luod_stopped = true;
                lab.restart();
            }
        }
        Scenario::Upgrade => {
            let open = c.create_session("open").unwrap();
            open.preserve(1, memfd(&text("open", 1))).unwrap();
            lab.arm();
            let pid = lab.luod.id();
            let (r, c, open) = timed(&lab, move || (c.upgrade_agent(None), c, open));
            lab.disarm();
            match &r {
                Ok(u) => assert_eq!(u.pid, pid, "{spec:?}"),
                Err(e) => seen.refused = refused(e),
            }
            // The open session lives on, unless its connection was lost (then
            // it is aborted, as when its owner closes it): never handed over,
            // nothing to find.
            match open.handover() {
                Ok(()) => expected.push(("open".into(), vec![1])),
                Err(e) => check_error(&spec, &e),
            }
            drop((c, open));
        }
    }

    if !lab.answers() {
        // Only luod's start (a mirror sync) and an upgraded image's may
        // fail for good; then luod is started again, and the keeper gives
        // every file back.
        assert!(
            matches!(
                (sc, fault.map(|f| f.role.as_str())),
                (Scenario::MirrorSync, Some("luod")) | (Scenario::Upgrade, Some("upgraded"))
            ),
            "{spec:?}: luod died:\n{}",
            lab.log()
        );
        seen.luod_stopped = true;
        lab.restart();
    }

    // Everything expected comes back with its bytes; nothing else is left.
    let c = lab.client();
    for (name, tokens) in &expected {
        let s = c
            .retrieve_session(name)
            .unwrap_or_else(|e| panic!("{spec:?}: {name} was lost: {e}\n{}", lab.log()));
        let fds = s
            .retrieve_batch(tokens)
            .unwrap_or_else(|e| panic!("{spec:?}: {name}: {e}\n{}", lab.log()));
        check_bytes(&spec, name, tokens, &fds);
        s.finish().unwrap();
    }
    for s in c.sessions().unwrap() {
        let name = s.name_lossy();
        match s.state {
            luo::SessionState::Open => c.abort(&name, None).unwrap(),
            _ => c.finish(&name, None).unwrap(),
        }
    }
    let status = c.status().unwrap();
    assert_eq!(status.files, 0, "{spec:?}: {status:?}");
    let keeper = keeper_pid(&c);
    wait_fds(lab.luod.id(), base.luod, "luod", &lab);
    wait_fds(keeper, base.keeper, "the keeper", &lab);
    let (counts, fired) = lab.counts();
    seen.fired = fired;
    if let Some(f) = fault {
        let logged = lab.log().contains("luo-sys fault injection");
        assert_eq!(fired, logged, "{f:?}: fired but not logged, or the reverse");
    }
    drop(c);
    drop(lab);
    assert_eq!(
        luo_sys::open_fd_count().unwrap(),
        client_fds,
        "{spec:?}: the client leaked descriptors"
    );
    (seen, base, counts)
}

/// `count` calls, or [`CAP`] of them spread evenly (first and last
/// included).
fn sample(count: u64) -> Vec<u64> {
    if count <= CAP {
        return (1..=count).collect();
    }
    let mut v: Vec<u64> = (0..CAP).map(|i| 1 + i * (count - 1) / (CAP - 1)).collect();
    v.dedup();
    v
}

/// The client's descriptors are counted per process: under `cargo test`,
/// whose tests share one, the sweeps take turns (nextest runs each alone).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sweep(sc: Scenario) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let (_, base, counts) = run(sc, None, None);
    assert!(
        !counts.is_empty(),
        "{sc:?}: no call was counted: {} has no fault injection (a `cargo build` \
         without --features fault-injection, such as the C API tests' in the same run, \
         relinked it; scripts/test runs this test on its own)",
        common::LUOD
    );
    let mut runs = 0;
    let mut fired = 0;
    let mut refused = BTreeMap::<String, usize>::new();
    let mut stopped = Vec::new();
    for ((role, kind), &count) in &counts {
        if count == 0 {
            continue;
        }
        let list = errnos(kind);
        for n in sample(count) {
            let f = Fault {
                role: role.clone(),
                kind: kind.clone(),
                n,
                errno: list[(n as usize) % list.len()],
            };
            let (seen, _, _) = run(sc, Some(&f), Some(base));
            runs += 1;
            fired += usize::from(seen.fired);
            if seen.luod_stopped {
                stopped.push(f.spec());
            }
            if let Some(e) = seen.refused {
                *refused.entry(e).or_default() += 1;
            }
        }
    }
    let counted: Vec<String> = counts
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|((r, k), n)| format!("{r}:{k}={n}"))
        .collect();
    eprintln!(
        "{sc:?}: calls {}; {runs} runs, {fired} faults fired, refusals {refused:?}, luod stopped {} times {stopped:?}; {:.1} s",
        counted.join(" "),
        stopped.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(fired > 0, "{sc:?}: no fault fired in {runs} runs");
}

#[test]
fn faults_in_a_preserve_batch() {
    sweep(Scenario::PreserveBatch);
}

#[test]
fn faults_in_a_retrieve_batch() {
    sweep(Scenario::RetrieveBatch);
}

#[test]
fn faults_in_a_handover() {
    sweep(Scenario::Handover);
}

#[test]
fn faults_in_an_update() {
    sweep(Scenario::Update);
}

#[test]
fn faults_in_a_mirror_sync() {
    sweep(Scenario::MirrorSync);
}

#[test]
fn faults_in_an_in_place_upgrade() {
    sweep(Scenario::Upgrade);
}

/// The reply of a retrieve goes out with the custody descriptors
/// themselves, borrowed, when it can be sent at once; a send that fails
/// makes it wait with copies (EAGAIN, ENOMEM, ENOBUFS) or ends the
/// connection (the rest). The sweep above fails that send with one errno;
/// here each: luod stays healthy, the files come back with their bytes (at
/// once, or retrieved again), and no descriptor is left behind.
#[test]
fn every_failure_of_a_retrieve_reply_send() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_, base, counts) = run(Scenario::RetrieveBatch, None, None);
    let sends = counts
        .get(&("luod".to_string(), "send".to_string()))
        .copied()
        .unwrap_or(0);
    assert_eq!(sends, 1, "one reply, one send: {counts:?}");
    let mut refused = Vec::new();
    for errno in [
        "EAGAIN",
        "ENOMEM",
        "ENOBUFS",
        "EINTR",
        "EPIPE",
        "ECONNRESET",
    ] {
        let f = Fault {
            role: "luod".into(),
            kind: "send".into(),
            n: 1,
            errno,
        };
        let (seen, _, _) = run(Scenario::RetrieveBatch, Some(&f), Some(base));
        assert!(seen.fired, "{f:?}: did not fire");
        assert!(!seen.luod_stopped, "{f:?}: luod stopped");
        if let Some(e) = seen.refused {
            refused.push(format!("{errno}: {e}"));
        }
    }
    eprintln!("failed sends of a retrieve reply; the client saw {refused:?}");
}

/// Where luod keys eventfds by their id, a failed read of an eventfd's
/// fdinfo at preserve is never answered by filing it with the other
/// eventfds: the handlers' check is tried once more (a passing shortage is
/// not taken for an answer) and the eventfd is keyed by its id, so its copy
/// is refused with `EBUSY` without a single `kcmp`; a read that failed
/// again would refuse the preserve with its errno (luo-core's
/// `tests/eventfd_ids.rs` runs a process out of descriptors for that).
#[test]
fn a_failed_fdinfo_read_leaves_an_eventfd_keyed_by_its_id() {
    let fault = Fault {
        role: "luod".to_string(),
        kind: "fdinfo".to_string(),
        n: 1,
        errno: "EMFILE",
    };
    let mut lab = Lab::new(Some(&fault));
    let c = lab.client();
    let s = c.create_session("ev").unwrap();
    let other = c.create_session("other").unwrap();
    let e = luo_sys::eventfd(0).unwrap();
    lab.arm();
    let first = s.preserve(1, e.try_clone().unwrap());
    let copy = other.preserve(1, e.try_clone().unwrap());
    lab.disarm();
    let (counts, fired) = lab.counts();
    match first {
        Err(err) => {
            assert_eq!(err.errno, luo_proto::Errno::EMFILE, "{err}");
            assert!(err.to_string().contains("fdinfo"), "{err}");
        }
        Ok(()) => {
            let err = copy.unwrap_err();
            assert_eq!(err.errno, luo_proto::Errno::EBUSY, "{err}");
        }
    }
    if fired {
        let kcmp = counts.get(&("luod".to_string(), "kcmp".to_string()));
        assert_eq!(kcmp.copied().unwrap_or(0), 0, "{counts:?}");
    }
    assert!(lab.answers());
}
