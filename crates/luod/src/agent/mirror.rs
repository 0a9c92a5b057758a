//! The mirror: after every request that changes a session, the store (the
//! keeper, or systemd's fd store) holds a copy of each custody descriptor
//! and a small record of each session, so that an agent killed at any
//! instant loses nothing. A restarted agent takes them back
//! ([`reclaim`]).
//!
//! What to store comes from the model's change log
//! ([`Luo::take_changes`]). A plain open session (neither handed over nor
//! persistent) does not outlive its agent, so its files are stored only in
//! full keeper messages (253) as they fill, and the rest when it is handed
//! over, before the handover is answered. Otherwise a request that
//! preserves one file puts one entry, whatever the session holds; a
//! session's record is rewritten only when it crosses to the incoming
//! side; a session that is finished or gone has its entries removed.
//!
//! Entry names (at most 255 ASCII characters, no `:`, as systemd wants):
//!
//! - `luo.s.INC.KEY.GEN`: a session's record, a sealed memfd holding
//!   `{"owner", "name", "state", "epoch"}`, and `"persist": true` for a
//!   persistent session (absent: false, as 0.1.0 wrote them); `GEN` counts
//!   its rewrites.
//! - `luo.f.INC.KEY.SEQ.TOKEN`: a custody descriptor; `SEQ` is its place in
//!   the session (preservation order).
//!
//! `INC.KEY` is the session's prefix: `INC` names the agent incarnation
//! that first wrote the session, `KEY` its key then. When files leave a
//! session that stays (unpreserve), its entries are written again under a
//! new prefix `INC.KEY.uGEN` (record and files), then the old ones removed. A restarted agent
//! adopts the entries of every session it takes back under their old prefix
//! (nothing is stored twice: at 16,000 files twice would pass the
//! descriptor limit); an in-place upgrade keeps everything.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use foldhash::{HashMap, HashMapExt};
use luo_core::{Changes, Luo, SessionChange, SessionState};
use luo_proto::Error;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::store::{Sink, BATCH};

#[derive(Debug, Clone, Default)]
struct Record {
    /// `INC.KEY` of its entries' names.
    prefix: String,
    gen: u64,
    incoming: bool,
    /// The record says `"persist": true`.
    persist: bool,
    /// The tokens mirrored, in preservation order; a file's `SEQ` is its
    /// place here. A session's files are appended, and leave all together
    /// (finish or abort) or one by one (unpreserve, which starts the
    /// entries over under a new prefix), so the list follows the model's.
    tokens: Vec<u64>,
}

/// The pid of the keeper of this process's agent (0: none), for
/// [`super::uapi::leads_back`]: a socket whose peer it is leads back to luod.
pub(crate) static KEEPER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

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

fn session_name(prefix: &str, gen: u64) -> String {
    Name::Session(prefix, gen).to_string()
}

fn file_name(prefix: &str, seq: u64, token: u64) -> String {
    Name::File(prefix, seq, token).to_string()
}

/// An entry's name, written where it is needed (into a keeper message)
/// without a `String` of its own: a request that preserves or finishes
/// thousands of files names each of them.
#[derive(Debug, Clone, Copy)]
enum Name<'a> {
    /// `luo.s.PREFIX.GEN`
    Session(&'a str, u64),
    /// `luo.f.PREFIX.SEQ.TOKEN`
    File(&'a str, u64, u64),
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Name::Session(prefix, gen) => write!(f, "luo.s.{prefix}.{gen}"),
            Name::File(prefix, seq, token) => write!(f, "luo.f.{prefix}.{seq}.{token}"),
        }
    }
}

impl serde::Serialize for Name<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Built on the stack with itoa's digits and escaped in one pass: a
        // batch names 253 files, and `fmt`'s machinery through
        // `collect_str` was a visible share of a bulk preserve. A prefix too
        // long for the buffer (an adopted one) takes that way still.
        let mut buf = [0u8; 128];
        let mut len = 0;
        let mut put = |b: &[u8]| match buf.get_mut(len..len + b.len()) {
            Some(to) => {
                to.copy_from_slice(b);
                len += b.len();
                true
            }
            None => false,
        };
        let mut n = itoa::Buffer::new();
        let fits = match *self {
            Name::Session(prefix, gen) => {
                put(b"luo.s.")
                    && put(prefix.as_bytes())
                    && put(b".")
                    && put(n.format(gen).as_bytes())
            }
            Name::File(prefix, seq, token) => {
                put(b"luo.f.")
                    && put(prefix.as_bytes())
                    && put(b".")
                    && put(n.format(seq).as_bytes())
                    && put(b".")
                    && put(n.format(token).as_bytes())
            }
        };
        match std::str::from_utf8(&buf[..len]) {
            Ok(name) if fits => s.serialize_str(name),
            _ => s.collect_str(self),
        }
    }
}

/// How many of a session's `total` files (`stored` of them stored) the
/// store should hold now: all, except for a plain open session (`plain`:
/// neither handed over nor persistent), which no restarted agent takes
/// back (it is dropped, as if its owner's connection had closed). Its files
/// go in full messages as they fill, so that a bulk preserve still hands
/// them to the keeper while the client sends the next batch, and the rest
/// at its handover, before the handover is answered; a program preserving
/// one file per request does not wait for the keeper on each.
fn due(stored: usize, total: usize, plain: bool) -> usize {
    if plain {
        stored + (total - stored) / BATCH * BATCH
    } else {
        total
    }
}

/// Puts `files` of the session stored under `prefix` after the `stored`
/// tokens of its entries (a file's `SEQ` is its place there).
fn append<'a>(
    prefix: &'a str,
    stored: &mut Vec<u64>,
    files: impl Iterator<Item = (u64, BorrowedFd<'a>)>,
    puts: &mut Vec<(Name<'a>, BorrowedFd<'a>)>,
) {
    for (t, fd) in files {
        puts.push((Name::File(prefix, stored.len() as u64, t), fd));
        stored.push(t);
    }
}

fn record_memfd(
    owner: u32,
    name: &[u8],
    incoming: bool,
    persist: bool,
    epoch: u64,
) -> std::io::Result<OwnedFd> {
    let mut v = json!({
        "owner": owner,
        "name": String::from_utf8_lossy(name),
        "state": if incoming { "incoming" } else { "open" },
        "epoch": epoch,
    });
    if persist {
        v["persist"] = Value::Bool(true);
    }
    let fd = luo_sys::memfd_create("luod-session", luo_sys::mfd::ALLOW_SEALING)?;
    luo_sys::write_all(fd.as_fd(), v.to_string().as_bytes())?;
    use luo_sys::seal::*;
    luo_sys::add_seals(fd.as_fd(), SEAL | SHRINK | GROW | WRITE)?;
    Ok(fd)
}

impl Mirror {
    pub(crate) fn new(sink: Sink) -> Mirror {
        if let Sink::Keeper { pid, .. } = &sink {
            KEEPER_PID.store(*pid, std::sync::atomic::Ordering::Relaxed);
        }
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

    /// After the keeper died: starts a new one beside luod's `socket` and
    /// gives it every file again. At most once a second.
    pub(crate) fn replace_keeper(&mut self, luo: &Luo, socket: &std::path::Path) {
        if !self.broken || !matches!(self.sink, Sink::Keeper { .. }) {
            return;
        }
        let path = &crate::store::keeper_path(socket);
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
                KEEPER_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
                self.sink = Sink::keeper(link, pid, crate::store::Origin::Started);
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

    /// Brings the store in line with what changed in the model, with work
    /// proportional to the change.
    pub(crate) fn apply(&mut self, luo: &Luo, changes: &Changes) {
        if self.broken {
            return;
        }
        for (&key, change) in &changes.sessions {
            if let Err(e) = self.try_apply(luo, key, change) {
                self.fail(&e);
                return;
            }
        }
    }

    /// Logs a failed write to the store and marks the mirror broken: it
    /// writes nothing more (a keeper store is rebuilt by
    /// [`Mirror::replace_keeper`]).
    fn fail(&mut self, e: &Error) {
        warn!(
            "the {} failed ({e}); an agent crash now would lose what it does not hold",
            self.sink.describe()
        );
        self.broken = true;
    }

    fn try_apply(&mut self, luo: &Luo, key: u64, change: &SessionChange) -> Result<(), Error> {
        let live = luo
            .session_state(key)
            .filter(|(_, _, st)| *st != SessionState::Finished);
        let Some((owner, name, state)) = live else {
            return self.forget(key);
        };
        let Some(r) = self.sessions.get_mut(&key) else {
            // New to the store: everything it holds is in the change.
            return self.try_sync(luo, key);
        };
        if !change.removed.is_empty() {
            // Files left a session that stays (unpreserve): its entries
            // start over under a new prefix.
            return self.try_sync(luo, key);
        }
        let incoming = state != SessionState::Open;
        let persist = luo.is_persistent(key);
        let mut puts: Vec<(Name<'_>, BorrowedFd<'_>)> = Vec::new();
        let mut removes = Vec::new();
        let record;
        if r.incoming != incoming || r.persist != persist {
            removes.push(Name::Session(&r.prefix, r.gen));
            r.gen += 1;
            r.incoming = incoming;
            r.persist = persist;
            record = record_memfd(owner, name, incoming, persist, luo.epoch())
                .map_err(|e| Error::new(e.into(), "writing a session record failed"))?;
            puts.push((Name::Session(&r.prefix, r.gen), record.as_fd()));
        }
        // Files are appended (a removal went to `try_sync` above), so the
        // new ones are those past what is stored, up to what is due.
        let stored = r.tokens.len();
        let upto = due(stored, luo.file_count_of(key), !incoming && !persist);
        append(
            &r.prefix,
            &mut r.tokens,
            luo.files_in(key, stored..upto),
            &mut puts,
        );
        // New entries first: a crash between the two leaves both, never
        // neither.
        self.sink.put(&puts)?;
        self.sink.remove(&removes)
    }

    /// Removes every entry of session `key` (aborted, or finished).
    fn forget(&mut self, key: u64) -> Result<(), Error> {
        if let Some(r) = self.sessions.remove(&key) {
            if let Some(done) = self.sink.forget(&r.prefix) {
                return done;
            }
            let mut names: Vec<Name<'_>> = r
                .tokens
                .iter()
                .enumerate()
                .map(|(seq, t)| Name::File(&r.prefix, seq as u64, *t))
                .collect();
            names.push(Name::Session(&r.prefix, r.gen));
            self.sink.remove(&names)?;
        }
        Ok(())
    }

    /// Brings the store in line with session `key` of the model, all of
    /// it (a session new to the store, or the whole store rebuilt).
    pub(crate) fn sync(&mut self, luo: &Luo, key: u64) {
        if self.broken {
            return;
        }
        if let Err(e) = self.try_sync(luo, key) {
            self.fail(&e);
        }
    }

    fn try_sync(&mut self, luo: &Luo, key: u64) -> Result<(), Error> {
        // Nothing of a plain open session is due before it has a full
        // message of files (see `due`). Asked by key, without the token
        // list: every preserve into such a session lands here.
        let open = luo
            .session_state(key)
            .is_some_and(|(_, _, st)| st == SessionState::Open);
        let plain = open && !luo.is_persistent(key);
        if plain && !self.sessions.contains_key(&key) && luo.file_count_of(key) < BATCH {
            return Ok(());
        }
        let live = luo
            .session_tokens(key)
            .filter(|(_, _, st, _)| *st != SessionState::Finished);
        let Some((owner, name, state, tokens)) = live else {
            // Gone (aborted, or finished): nothing of it is kept.
            return self.forget(key);
        };
        let incoming = state != SessionState::Open;
        let persist = luo.is_persistent(key);
        let fresh = !self.sessions.contains_key(&key);
        let r = self.sessions.entry(key).or_default();
        if fresh {
            r.prefix = format!("{}.{key}", self.inc);
        }
        let mut puts: Vec<(Name<'_>, BorrowedFd<'_>)> = Vec::new();
        let mut removes = Vec::new();
        let record;
        // Not an append (files left): every entry starts over under a new
        // prefix, the record included (a reclaim groups files with the
        // record of their prefix). `uGEN` was never used: the generation
        // only grows, and no first prefix has a `u`.
        let restart = !fresh && !tokens.starts_with(&r.tokens);
        if restart {
            for (seq, t) in r.tokens.drain(..).enumerate() {
                removes.push(file_name(&r.prefix, seq as u64, t));
            }
            removes.push(session_name(&r.prefix, r.gen));
            r.prefix = format!("{}.{key}.u{}", self.inc, r.gen + 1);
        }
        if fresh || restart || r.incoming != incoming || r.persist != persist {
            if !fresh && !restart {
                removes.push(session_name(&r.prefix, r.gen));
            }
            r.gen += 1;
            r.incoming = incoming;
            r.persist = persist;
            record = record_memfd(owner, name, incoming, persist, luo.epoch())
                .map_err(|e| Error::new(e.into(), "writing a session record failed"))?;
            puts.push((Name::Session(&r.prefix, r.gen), record.as_fd()));
        }
        let stored = r.tokens.len();
        let upto = due(stored, tokens.len(), plain);
        append(
            &r.prefix,
            &mut r.tokens,
            luo.files_in(key, stored..upto),
            &mut puts,
        );
        // New entries first: a crash between the two leaves both, never
        // neither.
        self.sink.put(&puts)?;
        self.sink.remove(&removes)
    }

    /// Takes over the entries a previous agent stored for a session it
    /// restored as `key`: its prefix, record generation and tokens in
    /// preservation order (`SEQ` = place). Nothing is put or removed.
    pub(crate) fn adopt(&mut self, a: Adopted) {
        self.sessions.insert(
            a.key,
            Record {
                prefix: a.prefix,
                gen: a.gen,
                incoming: !a.persist,
                persist: a.persist,
                tokens: a.tokens,
            },
        );
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
    /// generation, state, tokens and prefix.
    pub(crate) fn state(&self) -> (Value, Vec<u8>) {
        let mut keys: Vec<&u64> = self.sessions.keys().collect();
        keys.sort_unstable();
        let mut bin = Vec::new();
        for k in keys {
            let r = &self.sessions[k];
            let p = r.prefix.as_bytes();
            // Bit 0: incoming; bit 1 (after 0.1.0): persist.
            for v in [
                *k,
                r.gen,
                u64::from(r.incoming) | (u64::from(r.persist) << 1),
                r.tokens.len() as u64,
                p.len() as u64,
            ] {
                bin.extend_from_slice(&v.to_le_bytes());
            }
            for t in &r.tokens {
                bin.extend_from_slice(&t.to_le_bytes());
            }
            // The prefix, padded to whole words.
            bin.extend_from_slice(p);
            bin.resize(bin.len().next_multiple_of(8), 0);
        }
        let v = json!({"inc": self.inc, "broken": self.broken});
        (v, bin)
    }

    /// Rebuilds the mirror from [`Mirror::state`] around `sink`.
    pub(crate) fn from_state(sink: Sink, v: &Value, bin: &[u8]) -> Result<Mirror, String> {
        let bad = || "the mirror's state is malformed".to_string();
        if bin.len() % 8 != 0 {
            return Err(bad());
        }
        let word = |at: usize| -> Result<u64, String> {
            bin.get(at..at + 8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .ok_or_else(bad)
        };
        let mut sessions = HashMap::new();
        let mut at = 0;
        while at < bin.len() {
            let (k, gen, incoming, n, plen) = (
                word(at)?,
                word(at + 8)?,
                word(at + 16)?,
                word(at + 24)? as usize,
                word(at + 32)? as usize,
            );
            at += 40;
            if n > bin.len() / 8 || plen > bin.len() {
                return Err(bad());
            }
            let tokens: Vec<u64> = (0..n).map(|i| word(at + 8 * i)).collect::<Result<_, _>>()?;
            at += 8 * n;
            let prefix = bin
                .get(at..at + plen)
                .and_then(|p| std::str::from_utf8(p).ok())
                .ok_or_else(bad)?
                .to_string();
            at += plen.next_multiple_of(8);
            sessions.insert(
                k,
                Record {
                    prefix,
                    gen,
                    incoming: incoming & 1 == 1,
                    persist: incoming & 2 == 2,
                    tokens,
                },
            );
        }
        if let Sink::Keeper { pid, .. } = &sink {
            KEEPER_PID.store(*pid, std::sync::atomic::Ordering::Relaxed);
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
    /// Persistent sessions restored open.
    pub(crate) persistent: usize,
    /// Restored sessions whose entries the new agent takes over as they
    /// are.
    pub(crate) adopted: Vec<Adopted>,
    /// Entries nothing takes over (dropped sessions, older records, files
    /// that did not come back), to remove once the new agent's are in.
    pub(crate) stale: Vec<String>,
}

/// A restored session whose entries the new agent takes over as they are.
#[derive(Debug)]
pub(crate) struct Adopted {
    /// Its key in the new model.
    pub(crate) key: u64,
    /// The prefix of its entries.
    pub(crate) prefix: String,
    /// Its record's generation.
    pub(crate) gen: u64,
    /// Restored as a persistent open session (else incoming).
    pub(crate) persist: bool,
    /// Its tokens in preservation order (`SEQ` = place).
    pub(crate) tokens: Vec<u64>,
}

#[derive(Default)]
struct Found {
    /// Every record generation: the newest counts.
    records: BTreeMap<u64, OwnedFd>,
    /// seq → (token, descriptor)
    files: BTreeMap<u64, (u64, OwnedFd)>,
}

/// Splits `luo.s.PREFIX.GEN` and `luo.f.PREFIX.SEQ.TOKEN`.
pub(crate) enum Entry<'a> {
    Record(&'a str, u64),
    File(&'a str, u64, u64),
}

impl<'a> Entry<'a> {
    /// The prefix of the session the entry belongs to.
    pub(crate) fn prefix(&self) -> &'a str {
        match *self {
            Entry::Record(prefix, _) | Entry::File(prefix, ..) => prefix,
        }
    }
}

pub(crate) fn parse_name(name: &str) -> Option<Entry<'_>> {
    if let Some(rest) = name.strip_prefix("luo.s.") {
        let (prefix, gen) = rest.rsplit_once('.')?;
        return Some(Entry::Record(prefix, gen.parse().ok()?));
    }
    let rest = name.strip_prefix("luo.f.")?;
    let (rest, token) = rest.rsplit_once('.')?;
    let (prefix, seq) = rest.rsplit_once('.')?;
    Some(Entry::File(prefix, seq.parse().ok()?, token.parse().ok()?))
}

/// Restores the sessions a previous agent left in the store: each session
/// handed over (waiting, or retrieved and not finished) comes back waiting;
/// a persistent session comes back persistent and open, with every file;
/// any other session still open when that agent died is dropped, as if its
/// owner's connection had closed.
///
/// A file refused for want of a resource (`ENOMEM`, `EMFILE`, ...) fails
/// the whole reclaim instead of being dropped: the store still holds every
/// entry, and an agent started again takes them all back.
pub(crate) fn reclaim(luo: &mut Luo, entries: Vec<(String, OwnedFd)>) -> Result<Reclaimed, Error> {
    let mut out = Reclaimed::default();
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (name, fd) in entries {
        match parse_name(&name) {
            Some(Entry::Record(prefix, gen)) => {
                found
                    .entry(prefix.to_string())
                    .or_default()
                    .records
                    .insert(gen, fd);
            }
            Some(Entry::File(prefix, seq, token)) => {
                found
                    .entry(prefix.to_string())
                    .or_default()
                    .files
                    .insert(seq, (token, fd));
            }
            None => {
                warn!("ignoring an unknown entry {name:?} in the store");
                out.stale.push(name);
            }
        }
    }
    let mut epoch = luo.epoch();
    for (prefix, mut f) in found {
        let file_names: Vec<String> = f
            .files
            .iter()
            .map(|(seq, (t, _))| file_name(&prefix, *seq, *t))
            .collect();
        let Some((gen, rec)) = f.records.pop_last() else {
            warn!(
                "{} files of session {prefix} have no session record: dropped",
                f.files.len()
            );
            out.stale.extend(file_names);
            continue;
        };
        // Older generations of the record are left over from a crash
        // between writing a new one and removing the old.
        out.stale
            .extend(f.records.keys().map(|g| session_name(&prefix, *g)));
        let record = session_name(&prefix, gen);
        let mut text = String::new();
        let mut file = std::fs::File::from(rec);
        let parsed = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text))
            .ok()
            .and_then(|_| serde_json::from_str::<Value>(&text).ok());
        let Some(v) = parsed else {
            warn!("the record of session {prefix} cannot be read: dropped");
            out.stale.push(record);
            out.stale.extend(file_names);
            continue;
        };
        let owner = v.get("owner").and_then(Value::as_u64).unwrap_or(0) as u32;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let incoming = v.get("state").and_then(Value::as_str) == Some("incoming");
        // Absent (0.1.0's records): false.
        let persist = !incoming && v.get("persist").and_then(Value::as_bool) == Some(true);
        if let Some(e) = v.get("epoch").and_then(Value::as_u64) {
            epoch = epoch.max(e);
        }
        let label = format!("session '{}' of uid {owner}", name.escape_debug());
        if !incoming && !persist {
            info!(
                "{label} was open when the previous agent stopped: dropped, as if its owner's connection had closed ({} files released)",
                f.files.len()
            );
            out.aborted += 1;
            out.stale.push(record);
            out.stale.extend(file_names);
            continue;
        }
        let made = if persist {
            luo.persist_session(owner, name.as_bytes())
        } else {
            luo.create_session(owner, name.as_bytes())
        };
        let h = match made {
            Ok(h) => h,
            Err(e) => {
                warn!(
                    "{label} cannot be recreated ({e}); its {} files are dropped",
                    f.files.len()
                );
                out.stale.push(record);
                out.stale.extend(file_names);
                continue;
            }
        };
        // Its entries can be taken over as they are only if every file came
        // back, numbered 0, 1, 2, ... as the mirror numbers them.
        let contiguous = f.files.keys().copied().eq(0..f.files.len() as u64);
        let mut tokens = Vec::with_capacity(f.files.len());
        let mut all = contiguous;
        for (_, (token, fd)) in std::mem::take(&mut f.files) {
            match luo.preserve(h, fd, token) {
                Ok(()) => {
                    out.files += 1;
                    tokens.push(token);
                }
                Err(e) if is_transient(e.errno) => {
                    return Err(Error::new(
                        e.errno,
                        format!("{label}: token {token} cannot be taken back for now ({e})"),
                    ));
                }
                Err(e) => {
                    warn!("{label}: token {token} cannot be taken back ({e})");
                    all = false;
                }
            }
        }
        let key = luo.session_key(h).ok();
        // A persistent session stays open; closing the handle keeps it.
        let crossed = if persist { Ok(()) } else { luo.handover(h) };
        match crossed {
            Ok(()) => {
                out.sessions += 1;
                out.persistent += usize::from(persist);
                match key {
                    Some(key) if all => out.adopted.push(Adopted {
                        key,
                        prefix: prefix.clone(),
                        gen,
                        persist,
                        tokens,
                    }),
                    // The new agent stores it afresh; the old entries go.
                    _ => {
                        out.stale.push(record);
                        out.stale.extend(file_names);
                    }
                }
            }
            Err(e) => {
                warn!("{label} cannot wait for its owner again ({e}); dropped");
                out.stale.push(record);
                out.stale.extend(file_names);
            }
        }
        let _ = luo.close(h);
    }
    luo.set_epoch(epoch);
    // The caller adopts the restored sessions' entries as they are, or
    // stores the sessions afresh: not changes to apply again.
    let _ = luo.take_changes();
    Ok(out)
}

/// A failure for want of a resource, which may pass: not the file's fault.
fn is_transient(e: luo_core::Errno) -> bool {
    use luo_core::Errno as E;
    matches!(
        e,
        E::ENOMEM | E::EMFILE | E::ENFILE | E::ENOBUFS | E::EAGAIN | E::EINTR
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_serializes_as_it_displays() {
        let long = "p".repeat(200);
        let names = [
            Name::Session("1a2b.3", 0),
            Name::Session("1a2b.3.u4", u64::MAX),
            Name::File("1a2b.3", 7, 0),
            Name::File("1a2b.3.u9", u64::MAX, u64::MAX),
            Name::File(&long, 1, 2),
            Name::File("\"é\\", 1, 2),
        ];
        for n in names {
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(
                serde_json::from_str::<String>(&json).unwrap(),
                n.to_string()
            );
        }
        assert_eq!(
            serde_json::to_string(&Name::File("ab.3", 12, 345)).unwrap(),
            r#""luo.f.ab.3.12.345""#
        );
    }

    /// What the keeper would receive: each message's op and names, and
    /// how many descriptors came with it.
    fn sent(keeper: BorrowedFd<'_>) -> Vec<(String, Vec<String>, usize)> {
        let mut out = Vec::new();
        let mut buf = luo_proto::RecvBuf::default();
        while let Ok(Some(m)) = luo_proto::recv(keeper, &mut buf) {
            let body: Value = serde_json::from_slice(m.bytes).unwrap();
            let op = body.get("op").and_then(Value::as_str).unwrap_or("");
            // A `forget` names its prefix.
            let names = body
                .get("names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(body.get("prefix"))
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            out.push((op.to_string(), names, m.fds.len()));
        }
        out
    }

    /// A mirror whose keeper is the returned socket's other end; `forgets`:
    /// whether the keeper takes `forget`.
    fn with_keeper(forgets: bool) -> (Mirror, OwnedFd) {
        let (ours, keeper) = luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap();
        luo_sys::set_nonblocking(keeper.as_fd(), true).unwrap();
        let m = Mirror::new(Sink::Keeper {
            link: ours,
            pid: 0,
            origin: crate::store::Origin::Started,
            forgets,
        });
        (m, keeper)
    }

    fn flush(m: &mut Mirror, luo: &mut Luo) {
        let changes = luo.take_changes();
        m.apply(luo, &changes);
    }

    #[test]
    fn each_change_costs_the_store_what_it_changed_and_no_more() {
        let (mut m, keeper) = with_keeper(false);
        let inc = m.inc.clone();
        let mut luo = Luo::with_default_handlers();
        let h = luo.create_session(1000, b"s").unwrap();
        let key = luo.session_key(h).unwrap();
        let prefix = format!("{inc}.{key}");
        // An open session costs the store nothing: no agent would take it
        // back.
        flush(&mut m, &mut luo);
        for t in 0..40u64 {
            let fd = luo_sys::memfd_create("m", 0).unwrap();
            luo.preserve(h, fd, 100 + t).unwrap();
            flush(&mut m, &mut luo);
        }
        let h2 = luo.dup(h).unwrap();
        luo.close(h2).unwrap();
        flush(&mut m, &mut luo);
        assert!(sent(keeper.as_fd()).is_empty());
        // Handed over: stored whole, in one message.
        luo.handover(h).unwrap();
        flush(&mut m, &mut luo);
        let mut all = vec![format!("luo.s.{prefix}.1")];
        all.extend((0..40u64).map(|t| format!("luo.f.{prefix}.{t}.{}", 100 + t)));
        assert_eq!(sent(keeper.as_fd()), [("put".to_string(), all, 41)]);
        // Retrieved and finished: every entry of the session goes at once.
        let r = luo.retrieve_session(1000, b"s").unwrap();
        flush(&mut m, &mut luo);
        assert!(sent(keeper.as_fd()).is_empty());
        luo.finish(r).unwrap();
        flush(&mut m, &mut luo);
        let mut want: Vec<String> = (0..40u64)
            .map(|t| format!("luo.f.{prefix}.{t}.{}", 100 + t))
            .collect();
        want.push(format!("luo.s.{prefix}.1"));
        assert_eq!(sent(keeper.as_fd()), [("remove".to_string(), want, 0)]);
        luo.close(r).unwrap();
        flush(&mut m, &mut luo);
        assert!(sent(keeper.as_fd()).is_empty());
        // A persistent session outlives its agent: stored from the start,
        // one preserve one entry, however many files the session holds.
        let p = luo.persist_session(1000, b"p").unwrap();
        let key = luo.session_key(p).unwrap();
        let prefix = format!("{inc}.{key}");
        flush(&mut m, &mut luo);
        assert_eq!(
            sent(keeper.as_fd()),
            [("put".to_string(), vec![format!("luo.s.{prefix}.1")], 1)]
        );
        for t in 0..40u64 {
            let fd = luo_sys::memfd_create("m", 0).unwrap();
            luo.preserve(p, fd, t).unwrap();
            flush(&mut m, &mut luo);
            assert_eq!(
                sent(keeper.as_fd()),
                [(
                    "put".to_string(),
                    vec![format!("luo.f.{prefix}.{t}.{t}")],
                    1
                )]
            );
        }
        // Crossing over: a new record, then the old one goes.
        luo.handover(p).unwrap();
        flush(&mut m, &mut luo);
        assert_eq!(
            sent(keeper.as_fd()),
            [
                ("put".to_string(), vec![format!("luo.s.{prefix}.2")], 1),
                ("remove".to_string(), vec![format!("luo.s.{prefix}.1")], 0),
            ]
        );
        assert!(!m.broken);
    }

    #[test]
    fn a_plain_open_session_goes_to_the_store_in_full_messages_and_whole_at_its_handover() {
        let (mut m, keeper) = with_keeper(false);
        let mut luo = Luo::with_default_handlers();
        let h = luo.create_session(1000, b"b").unwrap();
        // (op, entries, descriptors) of each message since the last look.
        let look = || -> Vec<(String, usize, usize)> {
            sent(keeper.as_fd())
                .into_iter()
                .map(|(op, names, n)| (op, names.len(), n))
                .collect()
        };
        // One file per request: nothing until a full message is due.
        for t in 1..=600u64 {
            luo.preserve(h, luo_sys::memfd_create("m", 0).unwrap(), t)
                .unwrap();
            flush(&mut m, &mut luo);
            let got = look();
            match t {
                // The record and the first 253 files.
                253 => assert_eq!(got, [("put".into(), 253, 253), ("put".into(), 1, 1)]),
                506 => assert_eq!(got, [("put".into(), 253, 253)]),
                _ => assert!(got.is_empty(), "after {t}: {got:?}"),
            }
        }
        // Handed over: the other 94, and the record rewritten.
        luo.handover(h).unwrap();
        flush(&mut m, &mut luo);
        assert_eq!(look(), [("put".into(), 95, 95), ("remove".into(), 1, 0)]);
        assert_eq!(
            m.sessions.values().map(|r| r.tokens.len()).sum::<usize>(),
            600
        );
        assert!(!m.broken);
    }

    #[test]
    fn a_keeper_that_forgets_drops_a_finished_session_in_one_message() {
        let (mut m, keeper) = with_keeper(true);
        let inc = m.inc.clone();
        let mut luo = Luo::with_default_handlers();
        let h = luo.create_session(1000, b"f").unwrap();
        let key = luo.session_key(h).unwrap();
        let files: Vec<_> = (1..=300u64)
            .map(|t| (t, luo_sys::memfd_create("m", 0).unwrap()))
            .collect();
        for (t, fd) in files {
            luo.preserve(h, fd, t).unwrap();
        }
        luo.handover(h).unwrap();
        luo.close(h).unwrap();
        flush(&mut m, &mut luo);
        sent(keeper.as_fd());
        let r = luo.retrieve_session(1000, b"f").unwrap();
        luo.finish(r).unwrap();
        flush(&mut m, &mut luo);
        // 301 entries, one message, no name of its own.
        assert_eq!(
            sent(keeper.as_fd()),
            [("forget".to_string(), vec![format!("{inc}.{key}")], 0)]
        );
        assert!(!m.broken);
    }

    #[test]
    fn an_unpreserve_writes_the_session_again_under_a_new_prefix() {
        let (mut m, keeper) = with_keeper(false);
        let inc = m.inc.clone();
        let mut luo = Luo::with_default_handlers();
        let h = luo.persist_session(1000, b"p").unwrap();
        let key = luo.session_key(h).unwrap();
        let old = format!("{inc}.{key}");
        for t in 1..=3u64 {
            luo.preserve(h, luo_sys::memfd_create("m", 0).unwrap(), t)
                .unwrap();
        }
        flush(&mut m, &mut luo);
        sent(keeper.as_fd());
        // The last close changes nothing the store keeps.
        luo.close(h).unwrap();
        flush(&mut m, &mut luo);
        assert!(sent(keeper.as_fd()).is_empty());
        let h = luo.persist_session(1000, b"p").unwrap();
        luo.unpreserve(h, 2).unwrap();
        flush(&mut m, &mut luo);
        let new = format!("{inc}.{key}.u2");
        assert_eq!(
            sent(keeper.as_fd()),
            [
                (
                    "put".to_string(),
                    vec![
                        format!("luo.s.{new}.2"),
                        format!("luo.f.{new}.0.1"),
                        format!("luo.f.{new}.1.3"),
                    ],
                    3
                ),
                (
                    "remove".to_string(),
                    vec![
                        format!("luo.f.{old}.0.1"),
                        format!("luo.f.{old}.1.2"),
                        format!("luo.f.{old}.2.3"),
                        format!("luo.s.{old}.1"),
                    ],
                    0
                ),
            ]
        );
        // Appends go on under the new prefix.
        luo.preserve(h, luo_sys::memfd_create("m", 0).unwrap(), 4)
            .unwrap();
        flush(&mut m, &mut luo);
        assert_eq!(
            sent(keeper.as_fd()),
            [("put".to_string(), vec![format!("luo.f.{new}.2.4")], 1)]
        );
        assert!(!m.broken);
    }

    #[test]
    fn a_persistent_session_comes_back_open_and_an_old_record_means_not_persistent() {
        let mut entries = Vec::new();
        for (prefix, persist) in [("old.1", true), ("old.2", false)] {
            let rec = record_memfd(1000, prefix.as_bytes(), false, persist, 3).unwrap();
            entries.push((session_name(prefix, 1), rec));
            let f = luo_sys::memfd_create("m", 0).unwrap();
            entries.push((file_name(prefix, 0, 7), f));
        }
        let mut luo = Luo::with_default_handlers();
        let r = reclaim(&mut luo, entries).unwrap();
        assert_eq!((r.sessions, r.persistent, r.aborted), (1, 1, 1));
        let all = luo.sessions();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, b"old.1");
        assert!(all[0].persistent);
        assert_eq!(all[0].state, SessionState::Open);
        assert_eq!(all[0].handles, 0);
        assert_eq!(r.adopted.len(), 1);
        assert!(r.adopted[0].persist);
        assert_eq!(r.adopted[0].tokens, [7]);
        // The record without "persist" (as 0.1.0 wrote it) was open: dropped.
        assert!(r.stale.contains(&session_name("old.2", 1)));
    }
}
