//! In-place upgrade: the agent re-executes itself (same pid) with every
//! descriptor kept open, and its state in a sealed memfd.
//!
//! The old image writes the state (the model, the connections with their
//! pending replies, the kernel backend's sessions), seals it, clears
//! `FD_CLOEXEC` on every descriptor the state names and `exec`s the new
//! binary with `--upgrade-state FD`. Before that it asks the new binary
//! (`--upgrade-probe`) which state versions it reads, and refuses when ours
//! is not among them: the old agent keeps running. The new image checks the
//! envelope, then that every descriptor is the file the state says it is
//! (`st_dev`, `st_ino`), before it takes any over; if anything is wrong it
//! goes back to the old binary (`--upgrade-fallback FD`, an open descriptor
//! of it), which reads its own state.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luo_core::snapshot::{SnapFile, SnapSession, SnapSide, Snapshot};
use luo_core::{Identity, IdentityKind, Luo, RetrieveStatus, SessionHandle};
use luo_proto::ops::{Upgrade, Upgraded};
use luo_proto::{Errno, Error};
use luo_sys::epoll::{EPOLLIN, EPOLLOUT, EPOLLRDHUP};
use luo_sys::Epoll;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::{kernel, Agent, Conn, Kind, Reply, LISTENER, MAX_EVENTS};
use crate::registry::{open, seal, RegistryError};
use crate::store::Sink;
use crate::{AgentError, Backend, Config};

/// The state envelope's magic.
const MAGIC: [u8; 8] = *b"luod-upg";
/// The state format this binary writes and reads.
pub const STATE_VERSION: u32 = 1;
/// What `luod --upgrade-probe` prints, followed by the versions it reads.
pub const PROBE_ANSWER: &str = "luod-upgrade-state";
/// How long the new binary may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The command-line flags of an upgraded image, and their values.
pub const STATE_FLAG: &str = "--upgrade-state";
/// See [`STATE_FLAG`].
pub const FALLBACK_FLAG: &str = "--upgrade-fallback";

/// Descriptors the state names: raw number, `st_dev`, `st_ino`.
#[derive(Default)]
struct Fds {
    list: Vec<(RawFd, u64, u64)>,
}

impl Fds {
    /// Records `fd` with its identity and returns its index (the caller
    /// clears close-on-exec on everything the state names, just before
    /// `exec`).
    fn add(&mut self, fd: BorrowedFd<'_>) -> Result<usize, Error> {
        let st = luo_sys::fstat(fd).map_err(|e| Error::new(e, "inspecting a descriptor failed"))?;
        self.list.push((fd.as_raw_fd(), st.dev, st.ino));
        Ok(self.list.len() - 1)
    }
}

/// Bytes of one file record: token, dev, ino, data, pinned, custody
/// descriptor number (u64 each), handler index (u16), identity kind (u8),
/// indexed (u8), retrieve status (i32), then padding. The descriptor is
/// checked against dev and ino like those of the descriptor table.
const FILE_RECORD: usize = 64;
/// Bytes of one descriptor record: number, `st_dev`, `st_ino` (u64 each).
const FD_RECORD: usize = 24;

fn put_file(out: &mut Vec<u8>, f: &SnapFile, fd: RawFd) {
    let start = out.len();
    for v in [
        f.token,
        f.identity.dev,
        f.identity.ino,
        f.data,
        f.pinned,
        fd as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(f.handler as u16).to_le_bytes());
    out.push(u8::from(f.identity.kind == IdentityKind::Inode));
    out.push(u8::from(f.indexed));
    out.extend_from_slice(&(retrieve_code(f.retrieve) as i32).to_le_bytes());
    out.resize(start + FILE_RECORD, 0);
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn get_file(r: &[u8], handlers: usize) -> Result<SnapFile, AgentError> {
    let handler = u16::from_le_bytes([r[48], r[49]]) as usize;
    if handler >= handlers {
        return Err(bad("a file names no handler"));
    }
    Ok(SnapFile {
        token: u64_at(r, 0),
        identity: Identity {
            dev: u64_at(r, 8),
            ino: u64_at(r, 16),
            kind: if r[50] == 1 {
                IdentityKind::Inode
            } else {
                IdentityKind::OpenFile
            },
        },
        data: u64_at(r, 24),
        pinned: u64_at(r, 32),
        fd: u64_at(r, 40) as usize,
        handler,
        indexed: r[51] == 1,
        retrieve: retrieve_status(i64::from(i32::from_le_bytes([r[52], r[53], r[54], r[55]]))),
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn retrieve_code(r: RetrieveStatus) -> i64 {
    match r {
        RetrieveStatus::NotRetrieved => 0,
        RetrieveStatus::Retrieved => 1,
        RetrieveStatus::Failed(e) => -i64::from(e.0),
    }
}

fn retrieve_status(c: i64) -> RetrieveStatus {
    match c {
        0 => RetrieveStatus::NotRetrieved,
        1 => RetrieveStatus::Retrieved,
        n => RetrieveStatus::Failed(i32::try_from(-n).map_or(Errno::EIO, Errno)),
    }
}

/// The binary an upgrade executes by default: the one this process runs,
/// at its path now (a package upgrade replaces the file; `/proc/self/exe`
/// then says "(deleted)").
fn current_binary() -> Result<PathBuf, Error> {
    let p = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::new(Errno::from(e), "reading /proc/self/exe failed"))?;
    let s = p.to_string_lossy();
    Ok(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

/// Asks `binary` which state versions it reads.
fn probe(binary: &Path) -> Result<(), Error> {
    let mut child = std::process::Command::new(binary)
        .arg("--upgrade-probe")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            let m = format!(
                "cannot run {} to probe it: {e}; the agent keeps running",
                binary.display()
            );
            Error::new(Errno::from(e), m)
        })?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::new(Errno::from(e), "waiting for the probe"))?
        {
            break s;
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                Errno::ETIMEDOUT,
                format!(
                    "{} did not answer the upgrade probe within {} s; the agent keeps running",
                    binary.display(),
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let versions: Option<Vec<u32>> = out.trim().strip_prefix(PROBE_ANSWER).map(|v| {
        v.split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    });
    match versions {
        Some(v) if status.success() && v.contains(&STATE_VERSION) => Ok(()),
        Some(v) if status.success() => Err(Error::new(
            Errno::EOPNOTSUPP,
            format!(
                "{} reads upgrade state versions {v:?}, not this agent's version {STATE_VERSION}; the agent keeps running (upgrade through a release that reads both)",
                binary.display()
            ),
        )),
        _ => Err(Error::new(
            Errno::ENOEXEC,
            format!(
                "{} is not a luod that can take over (it did not answer the upgrade probe); the agent keeps running",
                binary.display()
            ),
        )),
    }
}

/// Arguments for the new image: ours without the previous upgrade's flags,
/// plus the state and fallback descriptors.
fn next_args(binary: &Path, state: RawFd, fallback: RawFd) -> Vec<String> {
    let mut args = vec![binary.to_string_lossy().into_owned()];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == STATE_FLAG || a == FALLBACK_FLAG {
            it.next();
            continue;
        }
        args.push(a);
    }
    args.extend([
        STATE_FLAG.to_string(),
        state.to_string(),
        FALLBACK_FLAG.to_string(),
        fallback.to_string(),
    ]);
    args
}

impl Agent {
    /// Every descriptor the state carries (the custody files' only with
    /// `custody`); `f` sees each once.
    fn carried(&self, custody: bool, mut f: impl FnMut(BorrowedFd<'_>)) {
        f(self.listener.as_fd());
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let c = &self.conns[&k];
            f(c.fd.as_fd());
            for o in &c.outbox {
                for d in &o.fds {
                    f(d.as_fd());
                }
            }
        }
        if let Some(k) = &self.kernel {
            kernel::lock(k).for_each_fd(&mut f);
        }
        if let Some(Sink::Keeper { link, .. }) = self.mirror.as_ref().map(|m| &m.sink) {
            f(link.as_fd());
        }
        if custody {
            for d in self.luo.custody_fds() {
                f(d);
            }
        }
    }

    fn set_carried_cloexec(&self, on: bool) {
        self.carried(false, |fd| {
            let _ = luo_sys::set_cloexec(fd, on);
        });
        // One fcntl per custody file, and there may be a million: two threads.
        let all: Vec<BorrowedFd<'_>> = self.luo.custody_fds().collect();
        let (a, b) = all.split_at(all.len() / 2);
        let set = |part: &[BorrowedFd<'_>]| {
            for fd in part {
                let _ = luo_sys::set_cloexec(*fd, on);
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| set(b));
            set(a);
        });
    }

    /// The state: `[json length: u64][json][descriptor count: u64]
    /// [descriptor records][file records' length: u64][file records]
    /// [the mirror's sessions]`, all little-endian.
    fn state(&self, reply_to: u64, previous: &str) -> Result<Vec<u8>, Error> {
        let mut fds = Fds::default();
        let listener = fds.add(self.listener.as_fd())?;
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        let mut conns = Vec::with_capacity(keys.len());
        for k in keys {
            let c = &self.conns[&k];
            let kind = match &c.kind {
                Kind::Agent { uid, pid } => {
                    Value::Array(vec!["a".into(), (*uid).into(), (*pid).into()])
                }
                // Told nothing yet; it will reconnect.
                Kind::Refused { .. } => continue,
                Kind::Handle {
                    handle,
                    name,
                    owner,
                } => Value::Array(vec![
                    "h".into(),
                    handle.0.into(),
                    name.as_str().into(),
                    (*owner).into(),
                ]),
            };
            let fd = fds.add(c.fd.as_fd())?;
            let mut outbox = Vec::new();
            for o in &c.outbox {
                let mut list = Vec::new();
                for d in &o.fds {
                    list.push(Value::from(fds.add(d.as_fd())?));
                }
                outbox.push(Value::Array(vec![hex(&o.bytes).into(), Value::Array(list)]));
            }
            conns.push(Value::Array(vec![
                k.into(),
                fd.into(),
                kind,
                Value::Array(outbox),
                c.dead.into(),
            ]));
        }
        let kernel = match &self.kernel {
            None => Value::Null,
            Some(k) => kernel::lock(k).state(&mut |fd: BorrowedFd<'_>| fds.add(fd))?,
        };
        let mut mirror_bin = Vec::new();
        let mirror = match &self.mirror {
            None => Value::Null,
            Some(m) => {
                let sink = match &m.sink {
                    Sink::Keeper { link, pid } => {
                        json!({"keeper": fds.add(link.as_fd())?, "pid": *pid})
                    }
                    Sink::Systemd(p) => json!({"systemd": p.to_string_lossy()}),
                };
                let (state, bin) = m.state();
                mirror_bin = bin;
                json!({"sink": sink, "state": state})
            }
        };
        let mut files = Vec::new();
        let model = self.model_state(&mut files)?;
        let json = json!({
            "agent": format!("luod {}", env!("CARGO_PKG_VERSION")),
            "previous": previous,
            "socket": self.socket.to_string_lossy(),
            "socket_id": self.socket_id.map(|(d, i)| [d, i]),
            "backend": self.backend.as_str(),
            "listener": listener,
            "next_key": self.next_key,
            "reply_to": reply_to,
            "conns": conns,
            "kernel": kernel,
            "devices": self.devices.state(),
            "mirror": mirror,
            "model": model,
        })
        .to_string();
        let mut out =
            Vec::with_capacity(16 + json.len() + fds.list.len() * FD_RECORD + files.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(&(fds.list.len() as u64).to_le_bytes());
        for &(n, dev, ino) in &fds.list {
            for v in [n as u64, dev, ino] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&(files.len() as u64).to_le_bytes());
        out.extend_from_slice(&files);
        out.extend_from_slice(&mirror_bin);
        Ok(out)
    }

    /// The model: sessions as JSON, their files as fixed binary records
    /// (appended to `files`), which cost little to write and read at 16,000.
    fn model_state(&self, files: &mut Vec<u8>) -> Result<Value, Error> {
        let (snap, custody) = self
            .luo
            .snapshot()
            .map_err(|e| Error::new(e.errno, e.message))?;
        let mut sessions = Vec::with_capacity(snap.sessions.len());
        for s in &snap.sessions {
            for f in &s.files {
                put_file(files, f, custody[f.fd].as_raw_fd());
            }
            let side = match s.side {
                SnapSide::Outgoing => "o",
                SnapSide::Incoming(false) => "i",
                SnapSide::Incoming(true) => "f",
            };
            sessions.push(Value::Array(vec![
                s.key.into(),
                String::from_utf8_lossy(&s.name).into_owned().into(),
                s.owner.into(),
                side.into(),
                Value::Array(s.handles.iter().map(|&h| h.into()).collect()),
                s.files.len().into(),
                s.mode.finish_on_close.into(),
                s.mode.kexec_safe_only.into(),
            ]));
        }
        let handles: Vec<Value> = snap
            .handles
            .iter()
            .map(|&(h, s, live)| Value::Array(vec![h.into(), s.into(), live.into()]))
            .collect();
        Ok(json!({
            "epoch": snap.epoch,
            "next_key": snap.next_key,
            "next_handle": snap.next_handle,
            "handlers": snap.handlers,
            "sessions": sessions,
            "handles": handles,
        }))
    }

    /// The `upgrade` request: re-executes the agent as `binary` (default:
    /// the binary at this process's path). Returns only when the upgrade
    /// was refused before `exec`, or `exec` failed (the error to answer);
    /// the agent then carries on unchanged.
    pub(super) fn upgrade(&mut self, key: u64, uid: u32, r: Upgrade) -> Error {
        match self.try_upgrade(key, uid, r) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_upgrade(
        &mut self,
        key: u64,
        uid: u32,
        r: Upgrade,
    ) -> Result<std::convert::Infallible, Error> {
        if uid != 0 && uid != self.euid {
            return Err(Error::new(
                Errno::EPERM,
                format!(
                    "only root or uid {} (the agent's) may upgrade the agent; you are uid {uid}",
                    self.euid
                ),
            ));
        }
        let binary = match r.binary {
            None => current_binary()?,
            Some(b) => PathBuf::from(b),
        };
        probe(&binary)?;
        let started = Instant::now();
        let previous = format!("luod {}", env!("CARGO_PKG_VERSION"));
        let state = self.state(key, &previous)?;
        let bytes = seal(MAGIC, STATE_VERSION, &state);
        let memfd = luo_sys::memfd_create("luod-upgrade-state", luo_sys::mfd::ALLOW_SEALING)
            .map_err(|e| Error::new(e, "creating the state memfd failed"))?;
        let mut f = std::fs::File::from(memfd);
        f.write_all(&bytes)
            .map_err(|e| Error::new(Errno::from(e), "writing the state failed"))?;
        use luo_sys::seal::*;
        luo_sys::add_seals(f.as_fd(), SEAL | SHRINK | GROW | WRITE)
            .map_err(|e| Error::new(e, "sealing the state failed"))?;
        let fallback = std::fs::File::open("/proc/self/exe")
            .map_err(|e| Error::new(Errno::from(e), "opening the running binary failed"))?;
        let args = next_args(&binary, f.as_raw_fd(), fallback.as_raw_fd());
        self.set_carried_cloexec(false);
        let _ = luo_sys::set_cloexec(f.as_fd(), false);
        let _ = luo_sys::set_cloexec(fallback.as_fd(), false);
        info!(
            "upgrading in place to {} ({} bytes of state, {} custody descriptors, prepared in {} us)",
            binary.display(),
            bytes.len(),
            self.luo.custody_count(),
            started.elapsed().as_micros()
        );
        let e = luo_sys::exec(&binary, &args);
        // Still here: nothing changed.
        self.set_carried_cloexec(true);
        error!(
            "exec of {} failed: {e}; the agent keeps running",
            binary.display()
        );
        Err(Error::new(
            e,
            format!(
                "exec of {} failed ({e}); the agent keeps running",
                binary.display()
            ),
        ))
    }
}

/// `luod --upgrade-probe`: the state versions this binary reads.
pub fn probe_answer() -> String {
    format!("{PROBE_ANSWER} {STATE_VERSION}")
}

fn bad(m: impl Into<String>) -> AgentError {
    AgentError::Upgrade(m.into())
}

fn num(v: &Value) -> Result<u64, AgentError> {
    v.as_u64().ok_or_else(|| bad("a number is missing"))
}

fn arr(v: &Value) -> Result<&[Value], AgentError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| bad("an array is missing"))
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, AgentError> {
    v.get(k).ok_or_else(|| bad(format!("\"{k}\" is missing")))
}

/// Checks that descriptor `num` is open and is the file `(dev, ino)`.
fn check_fd(what: &str, num: u64, dev: u64, ino: u64) -> Result<RawFd, AgentError> {
    let num = RawFd::try_from(num).map_err(|_| bad("a descriptor number is out of range"))?;
    let st = luo_sys::fstat_raw(num).map_err(|e| bad(format!("{what} {num} is not open ({e})")))?;
    if (st.dev, st.ino) != (dev, ino) {
        return Err(bad(format!(
            "{what} {num} is not the file the state names (inode {}:{} instead of {dev}:{ino})",
            st.dev, st.ino
        )));
    }
    Ok(num)
}

/// The state as read: the JSON part, the descriptors it names (number,
/// `st_dev`, `st_ino`) and the file records.
struct StateRead {
    json: Value,
    fds: Vec<(RawFd, u64, u64)>,
    files: Vec<u8>,
    mirror: Vec<u8>,
}

/// Reads and checks the state: the envelope, then every descriptor it
/// names (open, and the file it was). Nothing is taken over yet.
fn read_state(state: &OwnedFd) -> Result<StateRead, AgentError> {
    let mut f = std::fs::File::from(
        state
            .try_clone()
            .map_err(|e| bad(format!("duplicating the state: {e}")))?,
    );
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut bytes))
        .map_err(|e| bad(format!("reading the state failed: {e}")))?;
    let payload = open(&bytes, MAGIC, STATE_VERSION).map_err(|e| match e {
        RegistryError::BadMagic => bad("the state is not a luod upgrade state"),
        e => bad(format!(
            "the upgrade state {}",
            e.to_string().trim_start_matches("the registry ")
        )),
    })?;
    let short = || bad("the state is truncated");
    let jlen = payload
        .get(..8)
        .map(|b| u64_at(b, 0) as usize)
        .ok_or_else(short)?;
    let json = payload.get(8..8 + jlen).ok_or_else(short)?;
    let v: Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("the state is malformed: {e}")))?;
    let rest = &payload[8 + jlen..];
    let n = rest
        .get(..8)
        .map(|b| u64_at(b, 0) as usize)
        .ok_or_else(short)?;
    let table = rest
        .get(8..8 + n.checked_mul(FD_RECORD).ok_or_else(short)?)
        .ok_or_else(short)?;
    let rest = &rest[8 + table.len()..];
    let flen = rest
        .get(..8)
        .map(|b| u64_at(b, 0) as usize)
        .ok_or_else(short)?;
    let files = rest.get(8..8 + flen).ok_or_else(short)?.to_vec();
    let mirror = rest[8 + flen..].to_vec();
    if files.len() % FILE_RECORD != 0 {
        return Err(bad("the file records are truncated"));
    }
    let mut fds = Vec::with_capacity(n);
    for r in table.chunks_exact(FD_RECORD) {
        let (num, dev, ino) = (u64_at(r, 0), u64_at(r, 8), u64_at(r, 16));
        fds.push((check_fd("descriptor", num, dev, ino)?, dev, ino));
    }
    // One fstat per custody file is most of the take-over: two threads.
    let half = (files.len() / FILE_RECORD).div_ceil(2) * FILE_RECORD;
    let (a, b) = files.split_at(half.min(files.len()));
    let check = |part: &[u8]| -> Result<(), AgentError> {
        for r in part.chunks_exact(FILE_RECORD) {
            check_fd(
                "custody descriptor",
                u64_at(r, 40),
                u64_at(r, 8),
                u64_at(r, 16),
            )?;
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| check(b));
        let mine = check(a);
        mine.and(
            other
                .join()
                .unwrap_or_else(|_| Err(bad("checking descriptors failed"))),
        )
    })?;
    Ok(StateRead {
        json: v,
        fds,
        files,
        mirror,
    })
}

/// One connection of the state, before its descriptors are taken over.
struct PlanConn {
    key: u64,
    fd: usize,
    kind: Kind,
    outbox: Vec<(Vec<u8>, Vec<usize>)>,
    dead: bool,
}

/// The mirror's sink (the keeper's descriptor and pid, or systemd's
/// socket) and state.
type PlanMirror = (Option<(usize, u32)>, Option<PathBuf>, Value, Vec<u8>);

/// The whole state, checked and parsed, naming descriptors by index.
struct Plan {
    previous: String,
    socket: PathBuf,
    socket_id: Option<(u64, u64)>,
    backend: Backend,
    listener: usize,
    next_key: u64,
    reply_to: u64,
    conns: Vec<PlanConn>,
    kernel: Option<kernel::Plan>,
    devices: super::uapi::Devices,
    mirror: Option<PlanMirror>,
    /// `SnapFile::fd` indexes the state's descriptor list.
    model: Snapshot,
    nums: Vec<RawFd>,
}

fn parse_plan(read: &StateRead) -> Result<Plan, AgentError> {
    let v = &read.json;
    let nums: Vec<RawFd> = read.fds.iter().map(|&(n, _, _)| n).collect();
    let socket = PathBuf::from(
        field(v, "socket")?
            .as_str()
            .ok_or_else(|| bad("\"socket\" is not a path"))?,
    );
    let socket_id = match field(v, "socket_id")? {
        Value::Null => None,
        x => match arr(x)? {
            [d, i] => Some((num(d)?, num(i)?)),
            _ => return Err(bad("\"socket_id\" is malformed")),
        },
    };
    let backend = Backend::parse(field(v, "backend")?.as_str().unwrap_or(""))
        .ok_or_else(|| bad("unknown backend"))?;
    let mut conns = Vec::new();
    for c in arr(field(v, "conns")?)? {
        let [key, fd, kind, outbox, dead] = arr(c)? else {
            return Err(bad("a connection entry is malformed"));
        };
        let kind = match arr(kind)? {
            [t, uid, pid] if t.as_str() == Some("a") => Kind::Agent {
                uid: num(uid)? as u32,
                pid: pid.as_i64().unwrap_or(0) as i32,
            },
            [t, h, name, owner] if t.as_str() == Some("h") => Kind::Handle {
                handle: SessionHandle(num(h)?),
                name: name.as_str().unwrap_or("").to_string(),
                owner: num(owner)? as u32,
            },
            _ => return Err(bad("a connection kind is malformed")),
        };
        let mut out = Vec::new();
        for o in arr(outbox)? {
            let [bytes, list] = arr(o)? else {
                return Err(bad("a pending reply is malformed"));
            };
            let bytes = bytes
                .as_str()
                .and_then(unhex)
                .ok_or_else(|| bad("a pending reply is malformed"))?;
            let list = arr(list)?
                .iter()
                .map(|i| num(i).map(|i| i as usize))
                .collect::<Result<_, _>>()?;
            out.push((bytes, list));
        }
        conns.push(PlanConn {
            key: num(key)?,
            fd: num(fd)? as usize,
            kind,
            outbox: out,
            dead: dead.as_bool().unwrap_or(false),
        });
    }
    let kernel = match field(v, "kernel")? {
        Value::Null => None,
        k => Some(kernel::Plan::parse(k).map_err(bad)?),
    };
    let mut model = parse_model(field(v, "model")?, &read.files)?;
    let mut nums = nums;
    for s in &mut model.sessions {
        for f in &mut s.files {
            // The record holds the descriptor's number; the plan, its index.
            nums.push(f.fd as RawFd);
            f.fd = nums.len() - 1;
        }
    }
    let plan = Plan {
        previous: field(v, "previous")?.as_str().unwrap_or("?").to_string(),
        socket,
        socket_id,
        backend,
        listener: num(field(v, "listener")?)? as usize,
        next_key: num(field(v, "next_key")?)?,
        reply_to: num(field(v, "reply_to")?)?,
        conns,
        kernel,
        devices: super::uapi::Devices::from_state(field(v, "devices")?).map_err(bad)?,
        mirror: match field(v, "mirror")? {
            Value::Null => None,
            m => {
                let sink = field(m, "sink")?;
                let keeper = match sink.get("keeper") {
                    Some(i) => Some((num(i)? as usize, num(field(sink, "pid")?)? as u32)),
                    None => None,
                };
                let systemd = sink
                    .get("systemd")
                    .and_then(Value::as_str)
                    .map(PathBuf::from);
                if keeper.is_none() == systemd.is_none() {
                    return Err(bad("the mirror's sink is malformed"));
                }
                let state = field(m, "state")?.clone();
                // Checked now, rebuilt after the descriptors are ours.
                super::mirror::Mirror::from_state(
                    Sink::Systemd(PathBuf::new()),
                    &state,
                    &read.mirror,
                )
                .map_err(bad)?;
                Some((keeper, systemd, state, read.mirror.clone()))
            }
        },
        model,
        nums,
    };
    // Everything the model will check, checked now: handlers this binary
    // has, tokens unique per session, names unique per owner and side.
    let known: Vec<String> = luo_core::handler::default_handlers()
        .iter()
        .map(|h| h.compatible().to_string())
        .collect();
    let mut names = std::collections::HashSet::new();
    for s in &plan.model.sessions {
        let mut tokens = std::collections::HashSet::new();
        for f in &s.files {
            let name = &plan.model.handlers[f.handler];
            if !known.contains(name) {
                return Err(bad(format!("this luod has no handler {name:?}")));
            }
            if !tokens.insert(f.token) {
                return Err(bad(format!("token {} is listed twice", f.token)));
            }
        }
        let open = s.side == SnapSide::Outgoing;
        if s.side != SnapSide::Incoming(true) && !names.insert((s.owner, s.name.clone(), open)) {
            return Err(bad("two sessions of one owner share a name"));
        }
    }
    // Every descriptor is named exactly once.
    let mut uses = vec![0u32; plan.nums.len()];
    let mut named = |i: usize| -> Result<(), AgentError> {
        *uses
            .get_mut(i)
            .ok_or_else(|| bad(format!("descriptor {i} does not exist")))? += 1;
        Ok(())
    };
    named(plan.listener)?;
    for c in &plan.conns {
        named(c.fd)?;
        for (_, l) in &c.outbox {
            l.iter().try_for_each(|&i| named(i))?;
        }
    }
    if let Some(k) = &plan.kernel {
        k.fds().try_for_each(&mut named)?;
    }
    if let Some((Some((i, _)), _, _, _)) = &plan.mirror {
        named(*i)?;
    }
    for s in &plan.model.sessions {
        s.files.iter().try_for_each(|f| named(f.fd))?;
    }
    if let Some(i) = uses.iter().position(|&n| n != 1) {
        return Err(bad(format!("descriptor {i} is named {} times", uses[i])));
    }
    Ok(plan)
}

/// The new image's side: checks the state and every descriptor it names,
/// takes them over, and returns the agent, which answers the upgrade
/// request first thing. A refusal (`Err`) leaves every descriptor as it
/// was, for [`fall_back`].
pub fn resume(config: Config, state: &OwnedFd) -> Result<Agent, AgentError> {
    let started = Instant::now();
    let read = read_state(state)?;
    let t_read = started.elapsed();
    let mut plan = parse_plan(&read)?;
    drop(read);
    let t_plan = started.elapsed();
    // From here on the descriptors are ours; nothing below refuses.
    let fds: Vec<OwnedFd> = luo_sys::adopt_verified(&plan.nums)
        .map_err(|e| bad(format!("taking over the descriptors failed ({e})")))?;
    let t_adopt = started.elapsed();
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |i: usize| fds[i].take().expect("checked: named once");
    let listener = take(plan.listener);
    let epoll = Epoll::new().map_err(|e| AgentError::sys("creating an epoll instance", e))?;
    epoll
        .add(listener.as_fd(), LISTENER, EPOLLIN)
        .map_err(|e| AgentError::sys("watching the listening socket", e))?;
    let kernel = plan.kernel.take().map(|k| {
        std::sync::Arc::new(std::sync::Mutex::new(kernel::Kernel::from_plan(
            k, &mut take,
        )))
    });
    let mut luo = match &kernel {
        Some(k) => kernel::model(k),
        None => Luo::with_default_handlers(),
    };
    let mut model_fds = Vec::new();
    for s in &mut plan.model.sessions {
        for f in &mut s.files {
            model_fds.push(take(f.fd));
            f.fd = model_fds.len() - 1;
        }
    }
    // Checked in the plan; a failure here loses the state for good.
    luo.restore(plan.model, model_fds).map_err(|e| {
        AgentError::sys(
            format!("rebuilding the model failed: {}", e.message),
            e.errno,
        )
    })?;
    // The mirror carried over is in line with the restored sessions: they
    // are not changes to store again.
    let _ = luo.take_changes();
    luo.set_quota(config.quota);
    let t_model = started.elapsed();
    tracing::debug!(
        "upgrade take-over: state read and checked {} us, parsed {} us, descriptors adopted {} us, model rebuilt {} us",
        t_read.as_micros(),
        (t_plan - t_read).as_micros(),
        (t_adopt - t_plan).as_micros(),
        (t_model - t_adopt).as_micros()
    );
    let mut conns = HashMap::new();
    let mut conns_per_uid: HashMap<u32, u64> = HashMap::new();
    for c in plan.conns {
        if let Kind::Agent { uid, .. } = c.kind {
            *conns_per_uid.entry(uid).or_default() += 1;
        }
        let fd = take(c.fd);
        let outbox: VecDeque<Reply> = c
            .outbox
            .into_iter()
            .map(|(bytes, l)| Reply {
                bytes,
                fds: l.into_iter().map(&mut take).collect(),
            })
            .collect();
        let interest = if outbox.is_empty() {
            (EPOLLIN | EPOLLRDHUP) as u32
        } else {
            EPOLLOUT as u32
        };
        epoll
            .add(fd.as_fd(), c.key, interest as i32)
            .map_err(|e| AgentError::sys("watching a connection", e))?;
        conns.insert(
            c.key,
            Conn {
                fd,
                kind: c.kind,
                outbox,
                interest,
                dead: c.dead,
            },
        );
    }
    let mirror = plan.mirror.map(|(keeper, systemd, state, bin)| {
        let sink = match (keeper, systemd) {
            (Some((i, pid)), _) => Sink::Keeper { link: take(i), pid },
            (None, p) => Sink::Systemd(p.unwrap_or_default()),
        };
        super::mirror::Mirror::from_state(sink, &state, &bin).expect("checked in the plan")
    });
    let mut agent = Agent {
        socket: plan.socket,
        socket_id: plan.socket_id,
        backend: plan.backend,
        kernel,
        euid: luo_sys::geteuid(),
        listener,
        epoll,
        luo,
        conns,
        next_key: plan.next_key,
        paused_until: None,
        conns_per_uid,
        max_conns_per_uid: config.connections_per_uid,
        refused: 0,
        signals: None,
        stop: None,
        events: Vec::with_capacity(MAX_EVENTS),
        devices: plan.devices,
        mirror,
        rbuf: None,
    };
    info!(
        "upgraded in place from {} to luod {} (pid {}): {} connections, {} sessions, {} custody descriptors taken over in {} us",
        plan.previous,
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        agent.conns.len(),
        agent.luo.summaries().len(),
        agent.luo.custody_count(),
        started.elapsed().as_micros()
    );
    let body = Upgraded {
        pid: std::process::id(),
        agent: format!("luod {}", env!("CARGO_PKG_VERSION")),
        previous: plan.previous,
    };
    agent.reply(plan.reply_to, super::ops::reply::<Upgrade>(body, vec![]));
    agent.update_interest(plan.reply_to);
    Ok(agent)
}

fn parse_model(m: &Value, records: &[u8]) -> Result<Snapshot, AgentError> {
    let handlers: Vec<String> = arr(field(m, "handlers")?)?
        .iter()
        .map(|h| {
            h.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a handler is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let mut records = records.chunks_exact(FILE_RECORD);
    let mut sessions = Vec::new();
    for s in arr(field(m, "sessions")?)? {
        let [key, name, owner, side, handles, count, finish_on_close, kexec_safe_only] = arr(s)?
        else {
            return Err(bad("a session entry is malformed"));
        };
        let side = match side.as_str() {
            Some("o") => SnapSide::Outgoing,
            Some("i") => SnapSide::Incoming(false),
            Some("f") => SnapSide::Incoming(true),
            _ => return Err(bad("a session side is malformed")),
        };
        let mut list = Vec::new();
        for _ in 0..num(count)? {
            let r = records
                .next()
                .ok_or_else(|| bad("a file record is missing"))?;
            list.push(get_file(r, handlers.len())?);
        }
        sessions.push(SnapSession {
            key: num(key)?,
            name: name.as_str().unwrap_or("").as_bytes().to_vec(),
            owner: num(owner)? as u32,
            side,
            handles: arr(handles)?.iter().map(num).collect::<Result<_, _>>()?,
            mode: luo_core::SessionMode {
                finish_on_close: finish_on_close.as_bool().unwrap_or(false),
                kexec_safe_only: kexec_safe_only.as_bool().unwrap_or(false),
            },
            files: list,
        });
    }
    if records.next().is_some() {
        return Err(bad("file records are left over"));
    }
    let handles = arr(field(m, "handles")?)?
        .iter()
        .map(|h| match arr(h)? {
            [h, s, live] => Ok((num(h)?, num(s)?, live.as_bool().unwrap_or(false))),
            _ => Err(bad("a handle entry is malformed")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Snapshot {
        handlers,
        epoch: num(field(m, "epoch")?)?,
        next_key: num(field(m, "next_key")?)?,
        next_handle: num(field(m, "next_handle")?)?,
        sessions,
        handles,
    })
}

/// What `main` does when [`resume`] refuses the state: go back to the
/// binary that wrote it (its descriptor is `fallback`), which reads its
/// own state. Returns only if that `exec` failed.
pub fn fall_back(state: OwnedFd, fallback: OwnedFd, why: &AgentError) -> Errno {
    warn!("{why}; going back to the previous binary");
    let args = {
        let mut a: Vec<String> = std::env::args().collect();
        // The previous binary gets the same state; without a fallback of
        // its own, so that a state nobody reads ends here.
        if let Some(i) = a.iter().position(|x| x == FALLBACK_FLAG) {
            a.drain(i..(i + 2).min(a.len()));
        }
        if let Some(i) = a.iter().position(|x| x == STATE_FLAG) {
            if let Some(n) = a.get_mut(i + 1) {
                *n = state.as_raw_fd().to_string();
            }
        }
        a
    };
    let _ = luo_sys::set_cloexec(state.as_fd(), false);
    let e = luo_sys::exec_fd(fallback.as_fd(), &args);
    error!("going back to the previous binary failed too ({e})");
    e
}
