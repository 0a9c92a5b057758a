//! The upgrade state's layout: the envelope (magic and version), the JSON
//! part, the descriptor records and the file records; writing it from the
//! agent, and reading, checking and parsing it into a [`Plan`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use luo_core::snapshot::{SnapFile, SnapSession, SnapSide, Snapshot};
use luo_core::{Identity, IdentityKind, RetrieveStatus, SessionHandle};
use luo_proto::{Errno, Error};
use serde_json::{json, Value};

use crate::agent::{kernel, mirror, uapi, Agent, Kind};
use crate::registry::{open, RegistryError};
use crate::store::Sink;
use crate::{AgentError, Backend};

/// The state envelope's magic.
pub(crate) const MAGIC: [u8; 8] = *b"luod-upg";
/// The state format this binary writes and reads.
pub const STATE_VERSION: u32 = 1;

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
impl Agent {
    /// The state: `[json length: u64][json][descriptor count: u64]
    /// [descriptor records][file records' length: u64][file records]
    /// [the mirror's sessions]`, all little-endian.
    pub(super) fn state(&self, reply_to: u64, previous: &str) -> Result<Vec<u8>, Error> {
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
                    Sink::Keeper {
                        link, pid, origin, ..
                    } => {
                        json!({"keeper": fds.add(link.as_fd())?, "pid": *pid, "origin": origin.as_str()})
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
                // Added after 0.1.0: absent means false.
                s.mode.persist.into(),
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
}

pub(super) fn bad(m: impl Into<String>) -> AgentError {
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
pub(super) struct StateRead {
    json: Value,
    fds: Vec<(RawFd, u64, u64)>,
    files: Vec<u8>,
    mirror: Vec<u8>,
}

/// Reads and checks the state: the envelope, then every descriptor it
/// names (open, and the file it was). Nothing is taken over yet.
pub(super) fn read_state(state: &OwnedFd) -> Result<StateRead, AgentError> {
    let bytes = luo_sys::read_all(state.as_fd())
        .map_err(|e| bad(format!("reading the state failed: {e}")))?;
    let read = split_state(&bytes)?;
    for &(num, dev, ino) in &read.fds {
        check_fd("descriptor", num as u64, dev, ino)?;
    }
    // One fstat per custody file is most of the take-over: two threads.
    let files = &read.files;
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
    Ok(read)
}

/// The state's envelope and layout checked and split, without looking at
/// any descriptor it names (their numbers only range-checked).
pub(super) fn split_state(bytes: &[u8]) -> Result<StateRead, AgentError> {
    let payload = open(bytes, MAGIC, STATE_VERSION).map_err(|e| match e {
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
    let json = payload.get(8..jlen.saturating_add(8)).ok_or_else(short)?;
    let v: Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("the state is malformed: {e}")))?;
    let rest = &payload[8 + jlen..];
    let n = rest
        .get(..8)
        .map(|b| u64_at(b, 0) as usize)
        .ok_or_else(short)?;
    let table = rest
        .get(8..n.saturating_mul(FD_RECORD).saturating_add(8))
        .ok_or_else(short)?;
    let rest = &rest[8 + table.len()..];
    let flen = rest
        .get(..8)
        .map(|b| u64_at(b, 0) as usize)
        .ok_or_else(short)?;
    let files = rest
        .get(8..flen.saturating_add(8))
        .ok_or_else(short)?
        .to_vec();
    let mirror = rest[8 + flen..].to_vec();
    if files.len() % FILE_RECORD != 0 {
        return Err(bad("the file records are truncated"));
    }
    let mut fds = Vec::with_capacity(n);
    for r in table.chunks_exact(FD_RECORD) {
        let (num, dev, ino) = (u64_at(r, 0), u64_at(r, 8), u64_at(r, 16));
        let num = RawFd::try_from(num).map_err(|_| bad("a descriptor number is out of range"))?;
        fds.push((num, dev, ino));
    }
    Ok(StateRead {
        json: v,
        fds,
        files,
        mirror,
    })
}

/// One connection of the state, before its descriptors are taken over.
pub(super) struct PlanConn {
    pub(super) key: u64,
    pub(super) fd: usize,
    pub(super) kind: Kind,
    pub(super) outbox: Vec<(Vec<u8>, Vec<usize>)>,
    pub(super) dead: bool,
}

/// The mirror's sink (the keeper's descriptor and pid, or systemd's
/// socket) and state.
pub(super) type PlanMirror = (
    Option<(usize, u32, crate::store::Origin)>,
    Option<PathBuf>,
    Value,
    Vec<u8>,
);

/// The whole state, checked and parsed, naming descriptors by index.
pub(super) struct Plan {
    pub(super) previous: String,
    pub(super) socket: PathBuf,
    pub(super) socket_id: Option<(u64, u64)>,
    pub(super) backend: Backend,
    pub(super) listener: usize,
    pub(super) next_key: u64,
    pub(super) reply_to: u64,
    pub(super) conns: Vec<PlanConn>,
    pub(super) kernel: Option<kernel::Plan>,
    pub(super) devices: uapi::Devices,
    pub(super) mirror: Option<PlanMirror>,
    /// `SnapFile::fd` indexes the state's descriptor list.
    pub(super) model: Snapshot,
    pub(super) nums: Vec<RawFd>,
}

pub(super) fn parse_plan(read: &StateRead) -> Result<Plan, AgentError> {
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
        devices: uapi::Devices::from_state(field(v, "devices")?).map_err(bad)?,
        mirror: match field(v, "mirror")? {
            Value::Null => None,
            m => {
                let sink = field(m, "sink")?;
                let keeper = match sink.get("keeper") {
                    Some(i) => Some((
                        num(i)? as usize,
                        num(field(sink, "pid")?)? as u32,
                        // Older states do not say.
                        crate::store::Origin::parse(
                            sink.get("origin").and_then(Value::as_str).unwrap_or(""),
                        ),
                    )),
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
                mirror::Mirror::from_state(Sink::Systemd(PathBuf::new()), &state, &read.mirror)
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
    if let Some((Some((i, _, _)), _, _, _)) = &plan.mirror {
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
        // 0.1.0 wrote 8 elements; `persist` came after.
        let (key, name, owner, side, handles, count, finish_on_close, kexec_safe_only, persist) =
            match arr(s)? {
                [key, name, owner, side, handles, count, f, k] => {
                    (key, name, owner, side, handles, count, f, k, None)
                }
                [key, name, owner, side, handles, count, f, k, p] => {
                    (key, name, owner, side, handles, count, f, k, Some(p))
                }
                _ => return Err(bad("a session entry is malformed")),
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
                persist: persist.and_then(Value::as_bool).unwrap_or(false),
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

/// The pure part of taking over a state, for `crate::fuzzing`: the
/// envelope, the layout and the whole plan, with no descriptor looked at.
pub(crate) fn parse_only(bytes: &[u8]) -> Result<(), AgentError> {
    parse_plan(&split_state(bytes)?).map(drop)
}

/// The sealed state `agent` would hand over now, for `crate::fuzzing`.
pub(crate) fn sealed_state(agent: &Agent) -> Result<Vec<u8>, Error> {
    let state = agent.state(0, "luod fuzz-seed")?;
    Ok(crate::registry::seal(MAGIC, STATE_VERSION, &state))
}
