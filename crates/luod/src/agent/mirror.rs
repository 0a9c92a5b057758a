//! The mirror: after every request that changes a session, the store (the
//! keeper, or systemd's fd store) holds a copy of each custody descriptor
//! and a small record of each session, so that an agent killed at any
//! instant loses nothing. A restarted agent takes them back
//! ([`reclaim`]).
//!
//! Entry names (at most 255 ASCII characters, no `:`, as systemd wants):
//!
//! - `luo.s.INC.KEY.GEN`: a session's record, a sealed memfd holding
//!   `{"owner", "name", "state", "epoch"}`; `GEN` counts its rewrites.
//! - `luo.f.INC.KEY.SEQ.TOKEN`: a custody descriptor; `SEQ` is its place in
//!   the session (preservation order).
//!
//! `INC` names the agent incarnation that wrote them (a crash-restarted
//! agent writes its own and then removes the old ones); an in-place upgrade
//! keeps it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use luo_core::{Luo, SessionState};
use luo_proto::json::{self, Value};
use luo_proto::Error;
use tracing::{info, warn};

use crate::store::Sink;

#[derive(Debug, Clone, Default)]
struct Record {
    gen: u64,
    incoming: bool,
    /// The tokens mirrored, in preservation order; a file's `SEQ` is its
    /// place here. A session's files are only ever appended, and leave
    /// all together (finish or abort), so the list follows the model's.
    tokens: Vec<u64>,
}

/// The agent's view of what the store holds.
#[derive(Debug)]
pub(crate) struct Mirror {
    pub(crate) sink: Sink,
    inc: String,
    sessions: HashMap<u64, Record>,
    /// Set when the store failed; a keeper is then replaced and given
    /// everything again ([`Mirror::replace_keeper`]).
    broken: bool,
    /// When a new keeper was last tried, so that a failing spawn is not
    /// retried on every request.
    last_try: Option<std::time::Instant>,
}

fn session_name(inc: &str, key: u64, gen: u64) -> String {
    format!("luo.s.{inc}.{key}.{gen}")
}

fn file_name(inc: &str, key: u64, seq: u64, token: u64) -> String {
    format!("luo.f.{inc}.{key}.{seq}.{token}")
}

fn record_memfd(owner: u32, name: &[u8], incoming: bool, epoch: u64) -> std::io::Result<OwnedFd> {
    let v = Value::object()
        .with("owner", owner)
        .with("name", String::from_utf8_lossy(name).into_owned())
        .with("state", if incoming { "incoming" } else { "open" })
        .with("epoch", epoch);
    let fd = luo_sys::memfd_create("luod-session", luo_sys::mfd::ALLOW_SEALING)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(v.to_json().as_bytes())?;
    use luo_sys::seal::*;
    luo_sys::add_seals(f.as_fd(), SEAL | SHRINK | GROW | WRITE)?;
    Ok(OwnedFd::from(f))
}

impl Mirror {
    pub(crate) fn new(sink: Sink) -> Mirror {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Mirror {
            sink,
            inc: format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff),
            sessions: HashMap::new(),
            broken: false,
            last_try: None,
        }
    }

    /// After the keeper died: starts a new one at `path` and gives it every
    /// file again. At most once a second.
    pub(crate) fn replace_keeper(&mut self, luo: &Luo, path: &std::path::Path) {
        if !self.broken || !matches!(self.sink, Sink::Keeper { .. }) {
            return;
        }
        if self
            .last_try
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.last_try = Some(std::time::Instant::now());
        if let Sink::Keeper { pid, .. } = &self.sink {
            // It was our child: not a zombie for the rest of our life.
            let _ = luo_sys::try_reap(*pid);
        }
        match crate::store::spawn_keeper(path) {
            Ok((link, pid)) => {
                self.sink = Sink::Keeper { link, pid };
                self.sessions.clear();
                self.broken = false;
                self.sync_all(luo);
                warn!(
                    "the keeper died; started a new one (pid {pid}) and gave it every file in custody again"
                );
            }
            Err(e) => warn!("the keeper died and a new one cannot be started ({e}); retrying"),
        }
    }

    /// Brings the store in line with session `key` of the model.
    pub(crate) fn sync(&mut self, luo: &Luo, key: u64) {
        if self.broken {
            return;
        }
        if let Err(e) = self.try_sync(luo, key) {
            warn!(
                "the {} failed ({e}); an agent crash now would lose what it does not hold",
                self.sink.describe()
            );
            self.broken = true;
        }
    }

    fn try_sync(&mut self, luo: &Luo, key: u64) -> Result<(), Error> {
        let live = luo
            .session_tokens(key)
            .filter(|(_, _, st, _)| *st != SessionState::Finished);
        let Some((owner, name, state, tokens)) = live else {
            // Gone (aborted, or finished): nothing of it is kept.
            if let Some(r) = self.sessions.remove(&key) {
                let mut names: Vec<String> = r
                    .tokens
                    .iter()
                    .enumerate()
                    .map(|(seq, t)| file_name(&self.inc, key, seq as u64, *t))
                    .collect();
                names.push(session_name(&self.inc, key, r.gen));
                self.sink.remove(&names)?;
            }
            return Ok(());
        };
        let incoming = state != SessionState::Open;
        let fresh = !self.sessions.contains_key(&key);
        let r = self.sessions.entry(key).or_default();
        let mut puts: Vec<(String, BorrowedFd<'_>)> = Vec::new();
        let mut removes = Vec::new();
        let record;
        if fresh || r.incoming != incoming {
            let old = (!fresh).then(|| session_name(&self.inc, key, r.gen));
            r.gen += 1;
            r.incoming = incoming;
            record = record_memfd(owner, name, incoming, luo.epoch())
                .map_err(|e| Error::new(e.into(), "writing a session record failed"))?;
            puts.push((session_name(&self.inc, key, r.gen), record.as_fd()));
            removes.extend(old);
        }
        if !tokens.starts_with(&r.tokens) {
            // Not an append: start the file entries over.
            for (seq, t) in r.tokens.drain(..).enumerate() {
                removes.push(file_name(&self.inc, key, seq as u64, t));
            }
        }
        for &t in &tokens[r.tokens.len()..] {
            if let Some(fd) = luo.custody(key, t) {
                let seq = r.tokens.len() as u64;
                r.tokens.push(t);
                puts.push((file_name(&self.inc, key, seq, t), fd));
            }
        }
        // New entries first: a crash between the two leaves both, never
        // neither.
        self.sink.put(&puts)?;
        self.sink.remove(&removes)
    }

    /// Puts every session of the model (after a reclaim, or to rebuild a
    /// store that failed).
    pub(crate) fn sync_all(&mut self, luo: &Luo) {
        for key in luo.session_keys() {
            self.sync(luo, key);
        }
    }

    /// What `luoctl status` says.
    pub(crate) fn describe(&self) -> String {
        let mut s = self.sink.describe();
        if self.broken {
            s.push_str(" (failed: not in line with the sessions)");
        }
        s
    }

    /// The mirror's state for an in-place upgrade (the store itself and
    /// the keeper's connection are carried separately): the incarnation
    /// and, in binary (cheap at 16,000 files), per session its key,
    /// generation, state and tokens.
    pub(crate) fn state(&self) -> (Value, Vec<u8>) {
        let mut keys: Vec<&u64> = self.sessions.keys().collect();
        keys.sort_unstable();
        let mut bin = Vec::new();
        for k in keys {
            let r = &self.sessions[k];
            for v in [*k, r.gen, u64::from(r.incoming), r.tokens.len() as u64] {
                bin.extend_from_slice(&v.to_le_bytes());
            }
            for t in &r.tokens {
                bin.extend_from_slice(&t.to_le_bytes());
            }
        }
        let v = Value::object()
            .with("inc", self.inc.as_str())
            .with("broken", self.broken);
        (v, bin)
    }

    /// Rebuilds the mirror from [`Mirror::state`] around `sink`.
    pub(crate) fn from_state(sink: Sink, v: &Value, bin: &[u8]) -> Result<Mirror, String> {
        let bad = || "the mirror's state is malformed".to_string();
        let mut words = bin
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        if bin.len() % 8 != 0 {
            return Err(bad());
        }
        let mut sessions = HashMap::new();
        while let Some(k) = words.next() {
            let (gen, incoming, n) = (
                words.next().ok_or_else(bad)?,
                words.next().ok_or_else(bad)?,
                words.next().ok_or_else(bad)?,
            );
            let n = usize::try_from(n).map_err(|_| bad())?;
            if n > bin.len() / 8 {
                return Err(bad());
            }
            let tokens: Vec<u64> = (0..n)
                .map(|_| words.next().ok_or_else(bad))
                .collect::<Result<_, _>>()?;
            sessions.insert(
                k,
                Record {
                    gen,
                    incoming: incoming == 1,
                    tokens,
                },
            );
        }
        Ok(Mirror {
            sink,
            inc: v
                .get("inc")
                .and_then(Value::as_str)
                .ok_or_else(bad)?
                .to_string(),
            sessions,
            broken: v.get("broken").and_then(Value::as_bool).unwrap_or(false),
            last_try: None,
        })
    }
}

/// What [`reclaim`] did.
#[derive(Debug, Default)]
pub(crate) struct Reclaimed {
    pub(crate) sessions: usize,
    pub(crate) files: usize,
    pub(crate) aborted: usize,
    /// The names taken back, to remove once the new agent's own are in.
    pub(crate) old_names: Vec<String>,
}

#[derive(Default)]
struct Found {
    record: Option<(u64, OwnedFd)>,
    files: BTreeMap<u64, (u64, OwnedFd)>,
}

/// Restores the sessions a previous agent left in the store: each session
/// handed over (waiting, or retrieved and not finished) comes back waiting;
/// a session still open when that agent died is dropped, as if its owner's
/// connection had closed.
pub(crate) fn reclaim(luo: &mut Luo, entries: Vec<(String, OwnedFd)>) -> Reclaimed {
    let mut out = Reclaimed::default();
    let mut found: BTreeMap<(String, u64), Found> = BTreeMap::new();
    for (name, fd) in entries {
        out.old_names.push(name.clone());
        let parts: Vec<&str> = name.split('.').collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        match parts.as_slice() {
            ["luo", "s", inc, ..] => {
                if let (Some(key), Some(gen)) = (num(3), num(4)) {
                    let f = found.entry((inc.to_string(), key)).or_default();
                    if f.record.as_ref().is_none_or(|(g, _)| *g < gen) {
                        f.record = Some((gen, fd));
                    }
                }
            }
            ["luo", "f", inc, ..] => {
                if let (Some(key), Some(seq), Some(token)) = (num(3), num(4), num(5)) {
                    let f = found.entry((inc.to_string(), key)).or_default();
                    f.files.insert(seq, (token, fd));
                }
            }
            _ => warn!("ignoring an unknown entry {name:?} in the store"),
        }
    }
    let mut epoch = luo.epoch();
    for ((inc, key), f) in found {
        let Some((_, rec)) = f.record else {
            warn!(
                "{} files of session {key} (incarnation {inc}) have no session record: dropped",
                f.files.len()
            );
            continue;
        };
        let mut text = String::new();
        let mut file = std::fs::File::from(rec);
        if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_string(&mut text).is_err() {
            warn!("the record of session {key} cannot be read: dropped");
            continue;
        }
        let Ok(v) = json::parse(text.as_bytes()) else {
            warn!("the record of session {key} is malformed: dropped");
            continue;
        };
        let owner = v.get("owner").and_then(Value::as_u64).unwrap_or(0) as u32;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let incoming = v.get("state").and_then(Value::as_str) == Some("incoming");
        if let Some(e) = v.get("epoch").and_then(Value::as_u64) {
            epoch = epoch.max(e);
        }
        let label = format!("session '{}' of uid {owner}", name.escape_debug());
        if !incoming {
            info!(
                "{label} was open when the previous agent stopped: dropped, as if its owner's connection had closed ({} files released)",
                f.files.len()
            );
            out.aborted += 1;
            continue;
        }
        let h = match luo.create_session(owner, name.as_bytes()) {
            Ok(h) => h,
            Err(e) => {
                warn!(
                    "{label} cannot be recreated ({e}); its {} files are dropped",
                    f.files.len()
                );
                continue;
            }
        };
        for (_, (token, fd)) in f.files {
            match luo.preserve(h, fd, token) {
                Ok(()) => out.files += 1,
                Err(e) => warn!("{label}: token {token} cannot be taken back ({e})"),
            }
        }
        match luo.handover(h) {
            Ok(()) => out.sessions += 1,
            Err(e) => warn!("{label} cannot wait for its owner again ({e}); dropped"),
        }
        let _ = luo.close(h);
    }
    luo.set_epoch(epoch);
    out
}
