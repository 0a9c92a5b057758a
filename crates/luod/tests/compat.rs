//! Compatibility with release 0.1.0: what a user running luod 0.1.0 has
//! must survive the move to this version.
//!
//! - An in-place upgrade (`luoctl agent upgrade --binary`) from a running
//!   0.1.0 luod to this luod keeps the pid, every session in its state and
//!   every byte.
//! - This luod, started after a 0.1.0 luod crashed, takes every handed-over
//!   session back from the 0.1.0 keeper (the keeper's entries and protocol).
//! - A kernel-backend registry written by 0.1.0 before a kexec
//!   (`tests/fixtures/registry-v0.1.0.bin`) is read by this version.
//!
//! luod and luoctl 0.1.0 are built from commit 79584bd (tag v0.1.0) once
//! and cached under `target/compat/v0.1.0` (the source in `src`, the build
//! in `target`); later runs reuse the binaries. Building needs `git`, `tar`
//! and `cargo`, and the commit in the clone's history (not a shallow
//! clone). Without them the tests fail and say why, unless
//! `LUO_COMPAT_TEST=skip` is set.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use luo::SessionState;

mod common;

use common::{
    assert_pattern, client_and_keeper, fresh_dir, patterned_memfd, settled, start_kept_with, tail,
    terminate, wait_exited, LUOD,
};

/// Release 0.1.0.
const V010_COMMIT: &str = "79584bd5530d719f7ffede2afa6d85507d39574a";
const V010: &str = "0.1.0";
const LUOCTL: &str = env!("CARGO_BIN_EXE_luoctl");
/// This version, as `luoctl status` names the agent.
const THIS: &str = concat!("luod ", env!("CARGO_PKG_VERSION"));

// ------------------------------------------------------ the 0.1.0 binaries

/// luod and luoctl of 0.1.0.
#[derive(Debug)]
struct Old {
    luod: PathBuf,
    luoctl: PathBuf,
}

/// Progress on the test's stderr, past the test harness's capture: the
/// first build takes a while.
fn progress(msg: &str) {
    let _ = writeln!(std::io::stderr(), "compat: {msg}");
}

/// The 0.1.0 binaries, built on first use; `None` (after saying so) when
/// `LUO_COMPAT_TEST=skip`.
fn old() -> Option<&'static Old> {
    if std::env::var("LUO_COMPAT_TEST").as_deref() == Ok("skip") {
        progress("LUO_COMPAT_TEST=skip: not checking compatibility with luod 0.1.0");
        return None;
    }
    static OLD: OnceLock<Result<Old, String>> = OnceLock::new();
    match OLD.get_or_init(build_old) {
        Ok(old) => Some(old),
        Err(e) => panic!(
            "the compat test cannot build luod {V010}: {e}\n\
             (set LUO_COMPAT_TEST=skip to leave the compat test out)"
        ),
    }
}

/// The workspace's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// The target directory this test was built in: the first directory above
/// the test binary that cargo marked as one (`CACHEDIR.TAG` when cargo
/// made the directory, `.rustc_info.json` always).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists() || d.join(".rustc_info.json").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .unwrap_or_else(|| env!("CARGO").into())
        .into()
}

/// Runs `cmd` to see whether `tool` is there.
fn have(tool: &str, cmd: &mut Command) -> Result<(), String> {
    match cmd.stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("`{cmd:?}` failed ({st}): is {tool} installed?")),
        Err(e) => Err(format!(
            "{tool} is needed to build luod {V010} but cannot be run: {e}"
        )),
    }
}

/// Whether `src` holds the whole 0.1.0 tree (the marker is written last,
/// before the tree is renamed into place).
fn extracted(src: &Path) -> bool {
    std::fs::read_to_string(src.join(".compat-commit")).is_ok_and(|s| s.trim() == V010_COMMIT)
}

fn build_old() -> Result<Old, String> {
    let root = repo_root();
    let cache = target_dir().join("compat").join(format!("v{V010}"));
    let src = cache.join("src");
    let bin = cache.join("target").join("debug");
    let old = Old {
        luod: bin.join("luod"),
        luoctl: bin.join("luoctl"),
    };
    let stamp = cache.join("built");
    let built = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == V010_COMMIT);
    if built && old.luod.exists() && old.luoctl.exists() {
        progress(&format!(
            "reusing luod and luoctl {V010} from {}",
            bin.display()
        ));
        return Ok(old);
    }
    let started = Instant::now();
    have("git", Command::new("git").arg("--version"))?;
    have("tar", Command::new("tar").arg("--version"))?;
    let cargo = cargo();
    have("cargo", Command::new(&cargo).arg("--version"))?;
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("running git: {e}"))
    };
    let shallow = git(&["rev-parse", "--is-shallow-repository"])?;
    if !shallow.status.success() {
        return Err(format!(
            "{} is not a git checkout: the compat test takes luod {V010}'s source \
             from commit {V010_COMMIT} of the repository",
            root.display()
        ));
    }
    let commit = format!("{V010_COMMIT}^{{commit}}");
    if !git(&["cat-file", "-e", &commit])?.status.success() {
        let hint = if String::from_utf8_lossy(&shallow.stdout).trim() == "true" {
            "this is a shallow clone: `git fetch --unshallow` brings the history"
        } else {
            "fetch the history that holds it"
        };
        return Err(format!(
            "commit {V010_COMMIT} (release {V010}) is not in the history of the git \
             repository at {} ({hint})",
            root.display()
        ));
    }

    // The source, extracted beside and renamed into place, so that test
    // processes running at once never see half of it.
    if !extracted(&src) {
        progress(&format!(
            "extracting commit {} (luod {V010}) into {}",
            &V010_COMMIT[..7],
            src.display()
        ));
        std::fs::create_dir_all(&cache)
            .map_err(|e| format!("creating {}: {e}", cache.display()))?;
        let tmp = cache.join(format!("src.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let mut git = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["archive", "--format=tar", V010_COMMIT])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running git archive: {e}"))?;
        let tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&tmp)
            .stdin(git.stdout.take().expect("git's stdout"))
            .status()
            .map_err(|e| format!("running tar: {e}"))?;
        let archived = git.wait().map_err(|e| format!("waiting for git: {e}"))?;
        if !archived.success() || !tar.success() {
            return Err(format!(
                "`git archive {V010_COMMIT} | tar -x` failed (git: {archived}, tar: {tar})"
            ));
        }
        std::fs::write(tmp.join(".compat-commit"), V010_COMMIT)
            .map_err(|e| format!("writing in {}: {e}", tmp.display()))?;
        if std::fs::rename(&tmp, &src).is_err() {
            if extracted(&src) {
                // Another test process put its copy there first, and may be
                // building in it.
                let _ = std::fs::remove_dir_all(&tmp);
            } else {
                // Something else is in the way: replace it.
                let _ = std::fs::remove_dir_all(&src);
                std::fs::rename(&tmp, &src)
                    .map_err(|e| format!("moving {} to {}: {e}", tmp.display(), src.display()))?;
            }
        }
    }

    // Its own target directory: cargo's lock serialises test processes that
    // build at once, and the later ones find everything fresh.
    progress(&format!(
        "building luod and luoctl {V010} in {} (once: later runs reuse it)",
        src.display()
    ));
    let status = Command::new(&cargo)
        .args(["build", "--locked", "--bins", "-p", "luod"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", cache.join("target"))
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --locked --bins -p luod` in {} failed ({status}); its errors are above",
            src.display()
        ));
    }
    if !(old.luod.exists() && old.luoctl.exists()) {
        return Err(format!(
            "no luod and luoctl in {} after the build",
            bin.display()
        ));
    }
    std::fs::write(&stamp, V010_COMMIT).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    progress(&format!(
        "built luod and luoctl {V010} in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(old)
}

// ------------------------------------------------------------------ helpers

/// The binary process `pid` runs.
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("reading /proc/PID/exe")
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("luod.log")).unwrap_or_default()
}

/// Runs a luoctl against the agent at `sock`.
fn ctl(luoctl: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(luoctl)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", luoctl.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The sessions the agent lists, as (name, state, files), sorted by name.
fn sessions(c: &luo::Client) -> Vec<(String, SessionState, u64)> {
    let mut v: Vec<_> = c
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| (s.name_lossy().into_owned(), s.state, s.file_count as u64))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The descriptors an idle luod of this version holds with its keeper and
/// one client connected: what an upgraded or restarted agent must come
/// back to once its sessions are gone.
fn idle_fds_of_this_luod() -> usize {
    let dir = fresh_dir();
    let sock = dir.join("luod.sock");
    let child = start_kept_with(Path::new(LUOD), &dir, &sock, &["--backend", "emulated"]);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    c.status().unwrap();
    let n = settled(child.id());
    drop(c);
    terminate(child.id());
    wait_exited(child.id(), "a fresh luod");
    wait_exited(keeper, "a fresh luod's keeper");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    n
}

/// Sizes of the memfds: several pages and a partial one, so that a lost,
/// zeroed or swapped page, or a wrong size, shows.
const SIZE: u64 = (1 << 20) + 123;

fn pipe_read_end() -> OwnedFd {
    let (r, _w) = luo_sys::pipe().unwrap();
    r
}

// ---------------------------------------------------------------- scenarios

#[test]
fn a_0_1_0_luod_upgrades_in_place_to_this_luod_and_keeps_every_session() {
    let Some(old) = old() else { return };
    let dir = fresh_dir();
    let sock = dir.join("luod.sock");
    let mut agent = start_kept_with(&old.luod, &dir, &sock, &["--backend", "emulated"]);
    let pid = agent.id();
    let (c, keeper, _guard) = client_and_keeper(&sock);
    assert_eq!(exe_of(pid), canonical(&old.luod), "the agent runs 0.1.0");
    assert_eq!(
        exe_of(keeper),
        canonical(&old.luod),
        "the keeper runs 0.1.0"
    );
    let st = c.status().unwrap();
    assert_eq!(st.agent, format!("luod {V010}"));
    let keeper_fds = settled(keeper);

    // Made with this version's client library, held by this process (a
    // live client): one open, one handed over and waiting, one retrieved
    // and not finished.
    let open = c.create_session("open").unwrap();
    open.preserve(1, patterned_memfd(1, SIZE)).unwrap();
    open.preserve(2, luo_sys::eventfd(7).unwrap()).unwrap();
    let w = c.create_session("waiting").unwrap();
    w.preserve(1, patterned_memfd(2, SIZE)).unwrap();
    w.preserve(2, pipe_read_end()).unwrap();
    w.handover().unwrap();
    drop(w);
    let h = c.create_session("held").unwrap();
    h.preserve(1, patterned_memfd(3, SIZE)).unwrap();
    h.preserve(2, patterned_memfd(4, SIZE)).unwrap();
    h.handover().unwrap();
    drop(h);
    let held = c.retrieve_session("held").unwrap();
    let held_1 = held.retrieve_fd(1).unwrap();
    assert_pattern(&held_1, 3, SIZE, "held token 1 before the upgrade");
    let before = sessions(&c);

    // The upgrade, asked for by 0.1.0's luoctl (the one that speaks the
    // running agent's protocol for sure).
    let out = ctl(&old.luoctl, &sock, &["agent", "upgrade", "--binary", LUOD]);
    let said = text(&out.stdout);
    assert!(
        out.status.success()
            && said.contains(&format!(
                "luod upgraded in place: luod {V010} -> {THIS}, pid {pid} (unchanged)"
            )),
        "luoctl {V010} agent upgrade: {}\nstdout: {said}\nstderr: {}\nlog:\n{}",
        out.status,
        text(&out.stderr),
        tail(&log_of(&dir))
    );
    common::assert_alive(&mut agent, &dir);

    // The same process runs this version's binary, on the same keeper.
    let st = c.status().unwrap();
    assert_eq!(st.pid, pid, "the upgrade changed the pid");
    assert_eq!(
        exe_of(pid),
        canonical(Path::new(LUOD)),
        "the agent still runs 0.1.0"
    );
    assert_eq!(st.agent, THIS);
    assert_eq!(st.store, format!("keeper (pid {keeper})"));
    let out = ctl(Path::new(LUOCTL), &sock, &["status"]);
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains(THIS) && said.contains(&pid.to_string()),
        "luoctl status after the upgrade: {}\n{said}{}",
        out.status,
        text(&out.stderr)
    );

    // Every session is there, in its state, with its files.
    assert_eq!(sessions(&c), before);
    assert_eq!(
        before,
        vec![
            ("held".to_string(), SessionState::Retrieved, 2),
            ("open".to_string(), SessionState::Open, 2),
            ("waiting".to_string(), SessionState::Incoming, 2),
        ]
    );

    // The open session, through the handle made before the upgrade, still
    // takes files and hands over.
    open.preserve(3, patterned_memfd(5, SIZE)).unwrap();
    open.handover().unwrap();
    drop(open);
    let o = c.retrieve_session("open").unwrap();
    assert_pattern(o.retrieve_fd(1).unwrap(), 1, SIZE, "open token 1");
    assert_pattern(o.retrieve_fd(3).unwrap(), 5, SIZE, "open token 3");
    let ev = o.retrieve_fd(2).unwrap();
    let mut count = [0u8; 8];
    assert_eq!(
        std::io::Read::read(&mut std::fs::File::from(ev), &mut count).unwrap(),
        8
    );
    assert_eq!(u64::from_ne_bytes(count), 7, "the eventfd's counter");
    o.finish().unwrap();

    let w = c.retrieve_session("waiting").unwrap();
    assert_pattern(w.retrieve_fd(1).unwrap(), 2, SIZE, "waiting token 1");
    let r = w.retrieve_fd(2).unwrap();
    assert!(
        luo_sys::fstat(r.as_fd()).unwrap().is_fifo(),
        "waiting token 2 is a pipe"
    );
    w.finish().unwrap();

    // The retrieved session, through its handle from before the upgrade.
    assert_pattern(&held_1, 3, SIZE, "held token 1 after the upgrade");
    assert_pattern(held.retrieve_fd(2).unwrap(), 4, SIZE, "held token 2");
    held.finish().unwrap();
    drop((held, held_1, o, w, r));

    // Nothing is left and nothing leaked, in the agent or in the keeper.
    assert_eq!(sessions(&c), vec![]);
    assert_eq!(c.status().unwrap().files, 0);
    let want = idle_fds_of_this_luod();
    assert_eq!(
        settled(pid),
        want,
        "the upgraded agent holds other descriptors than a fresh one:\n{}",
        common::fd_listing(pid)
    );
    assert_eq!(
        settled(keeper),
        keeper_fds,
        "the keeper leaked descriptors:\n{}",
        common::fd_listing(keeper)
    );
    drop(c);
    terminate(pid);
    agent.wait().unwrap();
    wait_exited(keeper, "the 0.1.0 keeper, released by this luod");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn this_luod_takes_every_session_back_from_the_keeper_of_a_crashed_0_1_0_luod() {
    let Some(old) = old() else { return };
    let dir = fresh_dir();
    let sock = dir.join("luod.sock");
    let mut agent = start_kept_with(&old.luod, &dir, &sock, &["--backend", "emulated"]);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    assert_eq!(
        exe_of(keeper),
        canonical(&old.luod),
        "the keeper runs 0.1.0"
    );
    let keeper_fds = settled(keeper);

    // Handed over: a memfd, an eventfd and a pipe; three memfds under
    // extreme tokens.
    let a = c.create_session("a").unwrap();
    a.preserve(1, patterned_memfd(11, SIZE)).unwrap();
    a.preserve(2, luo_sys::eventfd(3).unwrap()).unwrap();
    a.preserve(3, pipe_read_end()).unwrap();
    a.handover().unwrap();
    drop(a);
    let b = c.create_session("b").unwrap();
    for (t, seed) in [(0, 12), (1 << 40, 13), (u64::MAX, 14)] {
        b.preserve(t, patterned_memfd(seed, SIZE + seed)).unwrap();
    }
    b.handover().unwrap();
    drop(b);
    // Retrieved and not finished: comes back waiting.
    let h = c.create_session("held").unwrap();
    h.preserve(1, patterned_memfd(15, SIZE)).unwrap();
    h.preserve(2, patterned_memfd(16, SIZE)).unwrap();
    h.handover().unwrap();
    drop(h);
    let held = c.retrieve_session("held").unwrap();
    assert_pattern(held.retrieve_fd(1).unwrap(), 15, SIZE, "held token 1");
    // Open: dropped by the next agent, as its owner is gone.
    let open = c.create_session("open").unwrap();
    open.preserve(1, patterned_memfd(17, SIZE)).unwrap();
    // Finished: gone for good.
    let f = c.create_session("finished").unwrap();
    f.preserve(1, patterned_memfd(18, SIZE)).unwrap();
    f.handover().unwrap();
    drop(f);
    let f = c.retrieve_session("finished").unwrap();
    f.retrieve_fd(1).unwrap();
    f.finish().unwrap();
    drop(f);
    c.status().unwrap();

    // 0.1.0 crashes; this luod starts on its socket and finds its keeper.
    agent.kill().unwrap();
    agent.wait().unwrap();
    drop((held, open, c));
    let mut agent = start_kept_with(Path::new(LUOD), &dir, &sock, &["--backend", "emulated"]);
    common::assert_alive(&mut agent, &dir);
    let c = luo::Client::connect_to(&sock).unwrap();
    let st = c.status().unwrap();
    assert_eq!(st.agent, THIS);
    assert_eq!(exe_of(agent.id()), canonical(Path::new(LUOD)));
    assert_eq!(
        st.store,
        format!("keeper (pid {keeper})"),
        "this luod did not take the 0.1.0 keeper over:\n{}",
        tail(&log_of(&dir))
    );
    assert_eq!(
        exe_of(keeper),
        canonical(&old.luod),
        "the keeper still runs 0.1.0"
    );
    let log = log_of(&dir);
    assert!(
        log.contains("of a previous agent answered"),
        "{}",
        tail(&log)
    );

    assert_eq!(
        sessions(&c),
        vec![
            ("a".to_string(), SessionState::Incoming, 3),
            ("b".to_string(), SessionState::Incoming, 3),
            ("held".to_string(), SessionState::Incoming, 2),
        ],
        "{}",
        tail(&log)
    );
    let a = c.retrieve_session("a").unwrap();
    assert_pattern(a.retrieve_fd(1).unwrap(), 11, SIZE, "a token 1");
    let ev = std::fs::File::from(a.retrieve_fd(2).unwrap());
    let mut count = [0u8; 8];
    assert_eq!(std::io::Read::read(&mut &ev, &mut count).unwrap(), 8);
    assert_eq!(u64::from_ne_bytes(count), 3, "the eventfd's counter");
    let r = a.retrieve_fd(3).unwrap();
    assert!(
        luo_sys::fstat(r.as_fd()).unwrap().is_fifo(),
        "a token 3 is a pipe"
    );
    a.finish().unwrap();
    let b = c.retrieve_session("b").unwrap();
    for (t, seed) in [(0, 12), (1 << 40, 13), (u64::MAX, 14)] {
        assert_pattern(
            b.retrieve_fd(t).unwrap(),
            seed,
            SIZE + seed,
            &format!("b token {t}"),
        );
    }
    b.finish().unwrap();
    let h = c.retrieve_session("held").unwrap();
    assert_pattern(h.retrieve_fd(1).unwrap(), 15, SIZE, "held token 1");
    assert_pattern(h.retrieve_fd(2).unwrap(), 16, SIZE, "held token 2");
    h.finish().unwrap();
    drop((a, b, h, ev, r));

    // Nothing is left: the 0.1.0 keeper let go of every entry, and lets
    // go of itself when this luod stops.
    assert_eq!(sessions(&c), vec![]);
    assert_eq!(c.status().unwrap().files, 0);
    assert_eq!(
        settled(keeper),
        keeper_fds,
        "the 0.1.0 keeper still holds entries:\n{}",
        common::fd_listing(keeper)
    );
    let want = idle_fds_of_this_luod();
    assert_eq!(
        settled(agent.id()),
        want,
        "the restarted agent holds other descriptors than a fresh one:\n{}",
        common::fd_listing(agent.id())
    );
    drop(c);
    terminate(agent.id());
    agent.wait().unwrap();
    wait_exited(keeper, "the 0.1.0 keeper, released by this luod");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_registry_written_by_0_1_0_is_read_whole() {
    use luod::registry::{FileEntry, Registry, SessionEntry};

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry-v0.1.0.bin");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"luod-reg");
    let reg =
        Registry::decode(&bytes).unwrap_or_else(|e| panic!("the 0.1.0 registry is refused: {e}"));
    let file = |token, handler: &str, part| FileEntry {
        token,
        handler: handler.to_string(),
        part,
    };
    let session = |owner, name: &str, state: &str, parts: &[&str], files| SessionEntry {
        owner,
        name: name.to_string(),
        state: state.to_string(),
        persist: false,
        parts: parts.iter().map(|p| p.to_string()).collect(),
        files,
    };
    let want = Registry {
        epoch: 7,
        agent: "luod 0.1.0".to_string(),
        sessions: vec![
            session(
                0,
                "db",
                "incoming",
                &["luod/0/1", "luod/0/2"],
                vec![
                    file(1, "memfd-v2", Some(0)),
                    file(2, "memfd-v2", Some(1)),
                    file(3, "luo-tcp-socket-v1", None),
                ],
            ),
            session(
                1000,
                "cache",
                "open",
                &["luod/1000/3"],
                vec![
                    file(10, "memfd-v2", Some(0)),
                    file(11, "luo-eventfd-v1", None),
                    file(12, "luo-pipe-v1", None),
                ],
            ),
            session(
                1000,
                "db",
                "retrieved",
                &["luod/1000/4"],
                vec![
                    file(u64::MAX, "memfd-v2", Some(0)),
                    file(0, "luo-unix-socket-v1", None),
                ],
            ),
            session(65534, "empty", "incoming", &[], vec![]),
            session(
                4_000_000_000,
                "q \"quoted\" \\ ünï/cödé",
                "open",
                &["luod/4000000000/5"],
                vec![
                    file(5, "memfd-v2", Some(0)),
                    file(6, "luo-udp-socket-v1", None),
                ],
            ),
        ],
    };
    // Field by field first, for a readable failure, then the whole.
    assert_eq!(reg.epoch, want.epoch);
    assert_eq!(reg.agent, want.agent);
    assert_eq!(reg.sessions.len(), want.sessions.len());
    for (got, want) in reg.sessions.iter().zip(&want.sessions) {
        assert_eq!(got, want, "session {:?} of uid {}", want.name, want.owner);
    }
    assert_eq!(reg, want);
    // Damage is still caught in the 0.1.0 bytes: the envelope's checks are
    // the same.
    let mut bad = bytes.clone();
    let last = bad.len() - 2;
    bad[last] ^= 1;
    assert!(Registry::decode(&bad).is_err());
}

#[test]
fn a_0_1_0_luod_refuses_the_persistent_session_ops_as_unknown() {
    let Some(old) = old() else { return };
    let dir = fresh_dir();
    let sock = dir.join("luod.sock");
    let mut agent = start_kept_with(&old.luod, &dir, &sock, &["--backend", "emulated"]);
    let (c, keeper, _guard) = client_and_keeper(&sock);
    let e = c.persist_session("svc").unwrap_err();
    assert_eq!(e.errno, luo_proto::Errno::EOPNOTSUPP, "{e}");
    let s = c.create_session("plain").unwrap();
    s.preserve(1, patterned_memfd(1, SIZE)).unwrap();
    let e = s.unpreserve(&[1]).unwrap_err();
    assert_eq!(e.errno, luo_proto::Errno::EOPNOTSUPP, "{e}");
    let e = s.fetch(&[1]).unwrap_err();
    assert_eq!(e.errno, luo_proto::Errno::EOPNOTSUPP, "{e}");
    // Nothing changed: the file is still there.
    assert_eq!(s.info().unwrap().file_count, 1);
    drop((s, c));
    terminate(agent.id());
    agent.wait().unwrap();
    wait_exited(keeper, "the 0.1.0 keeper");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_small_preflight_reads_the_same_across_0_1_0_and_this_version() {
    let Some(old) = old() else { return };
    let this_luoctl = Path::new(LUOCTL);
    for agent_bin in [old.luod.as_path(), Path::new(LUOD)] {
        let dir = fresh_dir();
        let sock = dir.join("luod.sock");
        let image = dir.join("bzImage");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let mut agent = start_kept_with(agent_bin, &dir, &sock, &["--backend", "emulated"]);
        let (c, keeper, _guard) = client_and_keeper(&sock);
        let s = c.create_session("k").unwrap();
        s.preserve(1, patterned_memfd(1, 4096)).unwrap();
        s.preserve(2, luo_sys::eventfd(0).unwrap()).unwrap();
        s.handover().unwrap();
        drop(s);
        let who = c.status().unwrap().agent;
        // Either luoctl against either agent: one page, read whole.
        for luoctl in [old.luoctl.as_path(), this_luoctl] {
            let args = |json: bool| {
                let mut a = vec![];
                if json {
                    a.push("--json");
                }
                a.extend(["update", "--kexec", "--kernel"]);
                a.push(image.to_str().unwrap());
                a.extend(["--append", "liveupdate=on", "--dry-run"]);
                a
            };
            let what = format!("{} against {who}", luoctl.display());
            let out = ctl(luoctl, &sock, &args(true));
            assert!(out.status.success(), "{what}: {}", text(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let p = &v["preflight"];
            assert_eq!(
                p["sessions"].as_array().map(Vec::len),
                Some(1),
                "{what}: {v}"
            );
            assert_eq!(p["sessions"][0]["name"], "k", "{what}");
            assert_eq!(p["sessions"][0]["lost"][0]["token"], 2, "{what}");
            assert_eq!(p["carried_files"], 1, "{what}");
            assert_eq!(p["lost_files"], 1, "{what}");
            assert!(p.get("next").is_none(), "{what}: {v}");
            let out = ctl(luoctl, &sock, &args(false));
            let shown = text(&out.stdout);
            assert!(out.status.success(), "{what}: {}", text(&out.stderr));
            for needle in ["token 2 (luo-eventfd-v1)", "1 file in 1 session cross"] {
                assert!(
                    shown.contains(needle),
                    "{what}: {needle:?} missing:\n{shown}"
                );
            }
        }
        // This client library against either agent.
        let kernel = std::fs::File::open(&image).unwrap();
        let p = c
            .preflight(&luo::KexecPlan {
                kernel: kernel.as_fd(),
                initrd: None,
                cmdline: "liveupdate=on",
                force: false,
            })
            .unwrap();
        assert_eq!(p.sessions.len(), 1, "{who}");
        assert_eq!(p.sessions[0].lost.len(), 1, "{who}");
        c.finish("k", None).unwrap();
        drop(c);
        terminate(agent.id());
        agent.wait().unwrap();
        wait_exited(keeper, "the keeper");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
