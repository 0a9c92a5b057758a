//! What the supervisor keeps in luod: the listeners, the service's fd store
//! and a manifest that names them, all in one persistent session per
//! service. The supervisor holds its own copy of every descriptor too, so
//! that it can hand them to each instance and rebuild the session if luod
//! loses it.
//!
//! Tokens: listeners and stored fds get tokens from a counter kept in the
//! manifest (1, 2, ...); the manifest, a memfd (magic, CRC32, JSON), lives under
//! [`MANIFEST_BASE`]` + generation`. It is replaced by preserving the new
//! one first and then dropping the old, so that a crash in between leaves
//! one readable manifest (the highest generation wins).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use luo::{Errno, Error};
use serde::{Deserialize, Serialize};

use super::listen::{self, ListenSpec};

/// Tokens at or above this hold a manifest.
pub const MANIFEST_BASE: u64 = 1 << 62;

/// The manifest's first line.
const MAGIC: &str = "luo-run-manifest 1";
/// Largest manifest read back.
const MAX_MANIFEST: u64 = 4 << 20;

/// Where the kept descriptors live: luod's session, or memory in tests.
pub trait Backing {
    /// Keeps `fd` under `token`.
    fn preserve(&mut self, token: u64, fd: BorrowedFd<'_>) -> luo::Result<()>;
    /// Drops the files under `tokens`.
    fn unpreserve(&mut self, tokens: &[u64]) -> luo::Result<()>;
    /// Copies of the files under `tokens`, in order.
    fn fetch(&mut self, tokens: &[u64]) -> luo::Result<Vec<OwnedFd>>;
    /// Every token kept.
    fn tokens(&mut self) -> luo::Result<Vec<u64>>;
    /// Whether the backing was re-established since the last call (so what
    /// it holds must be checked against the supervisor's copies).
    fn take_reconnected(&mut self) -> bool;
}

/// Errors that mean luod (or the session) went away: reconnect.
pub fn is_disconnect(e: &Error) -> bool {
    matches!(
        e.errno,
        Errno::ECONNRESET | Errno::EPIPE | Errno::ECONNREFUSED | Errno::ESTALE | Errno::EBADF
    )
}

/// The caller's persistent session `name` in the luod at `socket`,
/// reconnected (and the session reopened, or recreated) on demand.
#[derive(Debug)]
pub struct LuodBacking {
    socket: PathBuf,
    name: String,
    session: Option<(luo::Client, luo::Session)>,
    reconnected: bool,
}

impl LuodBacking {
    /// Connects and opens (or creates) the session.
    pub fn open(socket: &Path, name: &str) -> luo::Result<LuodBacking> {
        let mut b = LuodBacking {
            socket: socket.to_path_buf(),
            name: name.to_string(),
            session: None,
            reconnected: false,
        };
        b.session()?;
        b.reconnected = false;
        Ok(b)
    }

    fn session(&mut self) -> luo::Result<&luo::Session> {
        if self.session.is_none() {
            let client = luo::Client::connect_to(&self.socket)?;
            let session = client.persist_session(&self.name)?;
            self.session = Some((client, session));
            self.reconnected = true;
        }
        Ok(&self.session.as_ref().expect("just set").1)
    }

    fn call<T>(&mut self, f: impl FnOnce(&luo::Session) -> luo::Result<T>) -> luo::Result<T> {
        let r = f(self.session()?);
        if let Err(e) = &r {
            if is_disconnect(e) {
                self.session = None;
            }
        }
        r
    }
}

impl Backing for LuodBacking {
    fn preserve(&mut self, token: u64, fd: BorrowedFd<'_>) -> luo::Result<()> {
        self.call(|s| s.preserve(token, fd))
    }
    fn unpreserve(&mut self, tokens: &[u64]) -> luo::Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.call(|s| s.unpreserve(tokens))
    }
    fn fetch(&mut self, tokens: &[u64]) -> luo::Result<Vec<OwnedFd>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|s| s.fetch(tokens))
    }
    fn tokens(&mut self) -> luo::Result<Vec<u64>> {
        self.call(|s| Ok(s.info()?.files.iter().map(|f| f.token).collect()))
    }
    fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }
}

/// A backing in memory, for tests: refuses a second copy of a file with
/// `EBUSY`, as luod does.
#[derive(Debug, Default)]
pub struct MemBacking {
    /// What is kept.
    pub files: BTreeMap<u64, OwnedFd>,
}

impl Backing for MemBacking {
    fn preserve(&mut self, token: u64, fd: BorrowedFd<'_>) -> luo::Result<()> {
        if self.files.contains_key(&token) {
            return Err(Error::new(Errno::EEXIST, "token in use"));
        }
        for f in self.files.values() {
            if luo_sys::same_file(f.as_fd(), fd).unwrap_or(false) {
                return Err(Error::new(Errno::EBUSY, "already preserved"));
            }
        }
        let copy = fd
            .try_clone_to_owned()
            .map_err(|e| Error::new(Errno::EMFILE, e.to_string()))?;
        self.files.insert(token, copy);
        Ok(())
    }
    fn unpreserve(&mut self, tokens: &[u64]) -> luo::Result<()> {
        for t in tokens {
            self.files.remove(t);
        }
        Ok(())
    }
    fn fetch(&mut self, tokens: &[u64]) -> luo::Result<Vec<OwnedFd>> {
        tokens
            .iter()
            .map(|t| {
                self.files
                    .get(t)
                    .ok_or_else(|| Error::new(Errno::ENOENT, "no such token"))?
                    .try_clone()
                    .map_err(|e| Error::new(Errno::EMFILE, e.to_string()))
            })
            .collect()
    }
    fn tokens(&mut self) -> luo::Result<Vec<u64>> {
        Ok(self.files.keys().copied().collect())
    }
    fn take_reconnected(&mut self) -> bool {
        false
    }
}

/// The state that outlives the supervisor, as the manifest holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The next token to give out.
    pub next_token: u64,
    /// The listeners.
    pub listeners: Vec<ManifestListener>,
    /// The fd store.
    pub store: Vec<ManifestEntry>,
    /// Restarts so far (crashes and requested restarts).
    pub restarts: u64,
    /// Restarts that were rolled back.
    pub rollbacks: u64,
    /// The instances running when the manifest was written (the serving
    /// one, a new one being started, old ones being stopped).
    pub instances: Vec<ServiceRecord>,
}

/// A listener in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestListener {
    /// Its token.
    pub token: u64,
    /// What it is.
    pub spec: ListenSpec,
}

/// A stored fd in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Its token.
    pub token: u64,
    /// Its `FDNAME=`.
    pub name: String,
    /// Dropped when it hangs up (`FDPOLL=1`, the default).
    pub poll: bool,
}

/// The running instance, so that a new supervisor can stop it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// Its main pid (also its process group).
    pub pid: i32,
    /// Its start time (`/proc/PID/stat`), which tells a reused pid apart.
    pub start_time: u64,
    /// Its command.
    pub command: Vec<String>,
}

/// Seals and frames a manifest: magic, CRC32 of the JSON, the JSON.
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let json = serde_json::to_vec(m).unwrap_or_default();
    let mut out = format!("{MAGIC}\n{:08x}\n", crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Reads [`encode_manifest`]'s output back.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let rest = text
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix('\n'))
        .ok_or("no magic (another version?)")?;
    let (crc, json) = rest.split_once('\n').ok_or("truncated")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field")?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// Whose change a store entry is: committed, or an instance's that is not
/// ready yet (dropped if that instance is rolled back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// In the store for good.
    Committed,
    /// Stored by instance `n`, which is not yet ready.
    Added(u64),
    /// Removed by instance `n`, which is not yet ready: still passed on if
    /// the instance is rolled back.
    Removed(u64),
}

/// One stored fd.
#[derive(Debug)]
pub struct Entry {
    /// Its token in the session.
    pub token: u64,
    /// `FDNAME=`, `stored` when none was given.
    pub name: String,
    /// Dropped when it hangs up.
    pub poll: bool,
    /// The supervisor's copy.
    pub fd: OwnedFd,
    /// What kind of file, for people.
    pub kind: String,
    /// Committed or pending.
    pub change: Change,
}

/// One listener.
#[derive(Debug)]
pub struct Listener {
    /// Its token in the session.
    pub token: u64,
    /// What it is.
    pub spec: ListenSpec,
    /// The supervisor's copy.
    pub fd: OwnedFd,
}

/// The listeners, the fd store and the counters, kept in a backing.
pub struct Store {
    backing: Box<dyn Backing>,
    epoll: Option<Arc<luo_sys::Epoll>>,
    /// The most fds stored (`--fdstore-max`).
    pub max: usize,
    /// The listeners, in `--listen` order.
    pub listeners: Vec<Listener>,
    /// The stored fds, oldest first.
    pub entries: Vec<Entry>,
    next_token: u64,
    manifest_token: Option<u64>,
    /// Restarts so far.
    pub restarts: u64,
    /// Rollbacks so far.
    pub rollbacks: u64,
    /// The running instances, as recorded.
    pub instances: Vec<ServiceRecord>,
    /// The session is out of step with these copies (luod unreachable).
    pub dirty: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("listeners", &self.listeners)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// The epoll key of a stored fd watched for hang-ups: the token with this
/// bit set.
pub const POLL_KEY: u64 = 1 << 63;

/// What kind of file `fd` is, in a word.
pub fn describe(fd: BorrowedFd<'_>) -> String {
    use luo_sys::sock::*;
    if let Ok(k) = luo_sys::socket_kind(fd) {
        let ty = match k.ty {
            t if t == SOCK_STREAM => "stream",
            t if t == SOCK_DGRAM => "dgram",
            t if t == SOCK_SEQPACKET => "seqpacket",
            _ => "socket",
        };
        return match k.domain {
            d if d == AF_INET || d == AF_INET6 => match k.ty {
                t if t == SOCK_STREAM => "tcp".into(),
                t if t == SOCK_DGRAM => "udp".into(),
                _ => format!("inet-{ty}"),
            },
            d if d == AF_UNIX => format!("unix-{ty}"),
            _ => format!("socket-{ty}"),
        };
    }
    let target = luo_sys::fd_target(fd)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if target.starts_with("/memfd:") {
        return "memfd".into();
    }
    if let Some(a) = target.strip_prefix("anon_inode:") {
        return a.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    match luo_sys::fstat(fd) {
        Ok(st) if st.is_fifo() => "pipe".into(),
        Ok(st) if st.is_regular() => "file".into(),
        _ => "other".into(),
    }
}

fn err_text(e: &Error) -> String {
    e.to_string()
}

impl Store {
    /// Opens the store in `backing`: reads the manifest, takes back the
    /// listeners still wanted (`specs`, by name and address) and binds the
    /// others, takes back the stored fds, drops whatever else the session
    /// holds. Returns the store and what it logged.
    pub fn open(
        mut backing: Box<dyn Backing>,
        specs: &[ListenSpec],
        max: usize,
        epoll: Option<Arc<luo_sys::Epoll>>,
    ) -> Result<(Store, Vec<String>), String> {
        let mut log = Vec::new();
        let tokens = backing.tokens().map_err(|e| err_text(&e))?;
        let mut manifest = Manifest::default();
        let mut manifests: Vec<u64> = tokens
            .iter()
            .copied()
            .filter(|&t| t >= MANIFEST_BASE)
            .collect();
        manifests.sort_unstable();
        let mut manifest_token = None;
        while let Some(t) = manifests.pop() {
            match backing
                .fetch(&[t])
                .map_err(|e| err_text(&e))
                .and_then(|mut v| read_memfd(v.pop().ok_or("nothing fetched")?))
                .and_then(|b| decode_manifest(&b))
            {
                Ok(m) => {
                    manifest = m;
                    manifest_token = Some(t);
                    break;
                }
                Err(e) => log.push(format!(
                    "manifest under token {t} unreadable ({e}); trying an older one"
                )),
            }
        }
        let mut store = Store {
            backing,
            epoll,
            max,
            listeners: Vec::new(),
            entries: Vec::new(),
            next_token: manifest.next_token.max(1),
            manifest_token,
            restarts: manifest.restarts,
            rollbacks: manifest.rollbacks,
            instances: manifest.instances.clone(),
            dirty: false,
        };
        let kept: BTreeSet<u64> = tokens.iter().copied().collect();
        let mut wanted = BTreeSet::new();
        if let Some(t) = manifest_token {
            wanted.insert(t);
        }
        for spec in specs {
            let old = manifest
                .listeners
                .iter()
                .find(|l| &l.spec == spec && kept.contains(&l.token) && !wanted.contains(&l.token));
            let fd = match old {
                Some(l) => match store.backing.fetch(&[l.token]) {
                    Ok(mut v) if v.len() == 1 => {
                        wanted.insert(l.token);
                        log.push(format!("listener {spec}: taken back from the session"));
                        Some((l.token, v.pop().expect("one")))
                    }
                    _ => None,
                },
                None => None,
            };
            let (token, fd) = match fd {
                Some(x) => x,
                None => {
                    let fd = listen::bind(spec).map_err(|e| format!("cannot bind {spec}: {e}"))?;
                    let token = store.token();
                    store
                        .backing
                        .preserve(token, fd.as_fd())
                        .map_err(|e| format!("cannot keep {spec} in luod: {e}"))?;
                    wanted.insert(token);
                    log.push(format!("listener {spec}: bound"));
                    (token, fd)
                }
            };
            store.listeners.push(Listener {
                token,
                spec: spec.clone(),
                fd,
            });
        }
        for e in &manifest.store {
            if !kept.contains(&e.token) {
                log.push(format!(
                    "stored fd '{}' (token {}) is gone from the session",
                    e.name, e.token
                ));
                continue;
            }
            match store.backing.fetch(&[e.token]) {
                Ok(mut v) if v.len() == 1 => {
                    let fd = v.pop().expect("one");
                    wanted.insert(e.token);
                    let kind = describe(fd.as_fd());
                    store.entries.push(Entry {
                        token: e.token,
                        name: e.name.clone(),
                        poll: e.poll,
                        fd,
                        kind,
                        change: Change::Committed,
                    });
                    let last = store.entries.len() - 1;
                    store.watch(last);
                }
                Ok(_) => {}
                Err(err) => log.push(format!(
                    "stored fd '{}' cannot be taken back: {err}",
                    e.name
                )),
            }
        }
        let extra: Vec<u64> = kept.difference(&wanted).copied().collect();
        if !extra.is_empty() {
            log.push(format!(
                "dropping {} file(s) no longer wanted from the session",
                extra.len()
            ));
            store.backing.unpreserve(&extra).map_err(|e| err_text(&e))?;
        }
        store.backing.take_reconnected();
        store.save();
        Ok((store, log))
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn watch(&self, i: usize) {
        let e = &self.entries[i];
        if let (true, Some(ep)) = (e.poll, &self.epoll) {
            // Files that cannot be polled (memfds, regular files) are
            // refused with EPERM: they never hang up.
            let _ = ep.add(
                e.fd.as_fd(),
                POLL_KEY | e.token,
                luo_sys::epoll::EPOLLHUP | luo_sys::epoll::EPOLLERR,
            );
        }
    }

    fn unwatch(&self, e: &Entry) {
        if let (true, Some(ep)) = (e.poll, &self.epoll) {
            let _ = ep.delete(e.fd.as_fd());
        }
    }

    /// The manifest as it stands (pending changes left out).
    pub fn manifest(&self) -> Manifest {
        Manifest {
            next_token: self.next_token,
            listeners: self
                .listeners
                .iter()
                .map(|l| ManifestListener {
                    token: l.token,
                    spec: l.spec.clone(),
                })
                .collect(),
            store: self
                .entries
                .iter()
                .filter(|e| !matches!(e.change, Change::Added(_)))
                .map(|e| ManifestEntry {
                    token: e.token,
                    name: e.name.clone(),
                    poll: e.poll,
                })
                .collect(),
            restarts: self.restarts,
            rollbacks: self.rollbacks,
            instances: self.instances.clone(),
        }
    }

    /// Writes the manifest to the session (new one first, then the old one
    /// dropped). Failures are left for [`Store::resync`].
    pub fn save(&mut self) -> Option<String> {
        self.resync_if_reconnected();
        let bytes = encode_manifest(&self.manifest());
        let generation = self.manifest_token.map_or(0, |t| t - MANIFEST_BASE) + 1;
        let token = MANIFEST_BASE + generation;
        let r = write_memfd(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|fd| {
                self.backing
                    .preserve(token, fd.as_fd())
                    .map_err(|e| err_text(&e))
            });
        match r {
            Ok(()) => {
                if let Some(old) = self.manifest_token.replace(token) {
                    if let Err(e) = self.backing.unpreserve(&[old]) {
                        self.dirty = true;
                        return Some(format!("cannot drop the old manifest: {e}"));
                    }
                }
                None
            }
            Err(e) => {
                self.dirty = true;
                Some(format!("cannot write the manifest to luod: {e}"))
            }
        }
    }

    fn resync_if_reconnected(&mut self) {
        if self.backing.take_reconnected() {
            self.dirty = true;
        }
    }

    /// Brings the session in step with the supervisor's copies after luod
    /// came back (or a call failed): preserves what is missing, drops what
    /// is not ours, writes the manifest. Returns what happened, or an error
    /// while luod is still unreachable.
    pub fn resync(&mut self) -> Result<Vec<String>, String> {
        let kept = self.kept()?;
        self.backing.take_reconnected();
        self.resync_with(&kept)
    }

    /// The tokens the session holds now.
    fn kept(&mut self) -> Result<BTreeSet<u64>, String> {
        Ok(self
            .backing
            .tokens()
            .map_err(|e| err_text(&e))?
            .into_iter()
            .collect())
    }

    /// [`Store::resync`] against `kept`, the tokens the session was just
    /// found to hold.
    fn resync_with(&mut self, kept: &BTreeSet<u64>) -> Result<Vec<String>, String> {
        let mut log = Vec::new();
        let ours: Vec<(u64, BorrowedFd<'_>)> = self
            .listeners
            .iter()
            .map(|l| (l.token, l.fd.as_fd()))
            .chain(self.entries.iter().map(|e| (e.token, e.fd.as_fd())))
            .collect();
        let mut missing = 0;
        for &(t, fd) in &ours {
            if !kept.contains(&t) {
                self.backing.preserve(t, fd).map_err(|e| err_text(&e))?;
                missing += 1;
            }
        }
        let ours: BTreeSet<u64> = ours.iter().map(|&(t, _)| t).collect();
        let extra: Vec<u64> = kept
            .iter()
            .copied()
            .filter(|t| !ours.contains(t) && Some(*t) != self.manifest_token)
            .collect();
        self.backing.unpreserve(&extra).map_err(|e| err_text(&e))?;
        if missing > 0 {
            log.push(format!("put {missing} file(s) back into the session"));
        }
        if !kept.contains(&self.manifest_token.unwrap_or(0)) {
            self.manifest_token = None;
        }
        self.dirty = false;
        if let Some(e) = self.save() {
            return Err(e);
        }
        Ok(log)
    }

    /// Checks the session against the supervisor's copies (luod may have
    /// restarted and lost it, or been unreachable): resynchronises when
    /// anything is missing. Returns what happened.
    pub fn check(&mut self) -> Result<Vec<String>, String> {
        // Until this succeeds, retried often.
        self.dirty = true;
        let kept = self.kept()?;
        let reconnected = self.backing.take_reconnected();
        let expected: BTreeSet<u64> = self
            .listeners
            .iter()
            .map(|l| l.token)
            .chain(self.entries.iter().map(|e| e.token))
            .chain(self.manifest_token)
            .collect();
        let complete = kept == expected;
        if complete && !reconnected {
            self.dirty = false;
            return Ok(Vec::new());
        }
        // The tokens were just read: no second round trip to luod.
        let mut log = self.resync_with(&kept)?;
        if reconnected {
            log.insert(0, "reconnected to luod".to_string());
        }
        Ok(log)
    }

    /// `FDSTORE=1`: stores `fds` under `name` for instance `by` (`None`:
    /// committed at once). Returns the warnings to log.
    pub fn store(
        &mut self,
        fds: Vec<OwnedFd>,
        name: &str,
        poll: bool,
        by: Option<u64>,
    ) -> Vec<String> {
        let mut warn = Vec::new();
        let mut changed = false;
        for fd in fds {
            let live = self
                .entries
                .iter()
                .filter(|e| !matches!(e.change, Change::Removed(_)))
                .count();
            if live >= self.max {
                warn.push(format!(
                    "fd store full ({} of --fdstore-max {}): closing the fd named '{name}'",
                    live, self.max
                ));
                continue;
            }
            let dup = self
                .entries
                .iter()
                .map(|e| e.fd.as_fd())
                .chain(self.listeners.iter().map(|l| l.fd.as_fd()))
                .any(|f| luo_sys::same_file(f, fd.as_fd()).unwrap_or(false));
            if dup {
                warn.push(format!(
                    "fd named '{name}' is already in the store (EBUSY): not stored twice"
                ));
                continue;
            }
            let token = self.token();
            match self.backing.preserve(token, fd.as_fd()) {
                Ok(()) => {}
                Err(e) if is_disconnect(&e) => {
                    self.dirty = true;
                    warn.push(format!(
                        "luod unreachable ({e}); '{name}' is kept here until it is back"
                    ));
                }
                Err(e) => {
                    warn.push(format!("luod refused the fd named '{name}': {e}; closed"));
                    continue;
                }
            }
            let kind = describe(fd.as_fd());
            self.entries.push(Entry {
                token,
                name: name.to_string(),
                poll,
                fd,
                kind,
                change: by.map_or(Change::Committed, Change::Added),
            });
            self.watch(self.entries.len() - 1);
            changed = true;
        }
        if changed {
            if let Some(w) = self.save() {
                warn.push(w);
            }
        }
        warn
    }

    fn drop_entries(&mut self, mut pick: impl FnMut(&Entry) -> bool) -> usize {
        let (gone, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| pick(e));
        self.entries = keep;
        for e in &gone {
            self.unwatch(e);
        }
        let tokens: Vec<u64> = gone.iter().map(|e| e.token).collect();
        if let Err(e) = self.backing.unpreserve(&tokens) {
            if is_disconnect(&e) {
                self.dirty = true;
            }
        }
        gone.len()
    }

    /// `FDSTOREREMOVE=1`: removes every fd named `name` (for a pending
    /// instance `by`, only marks them). Returns how many.
    pub fn remove(&mut self, name: &str, by: Option<u64>) -> usize {
        let mut n = self.drop_entries(|e| {
            e.name == name && (by.is_none() || e.change == Change::Added(by.unwrap_or(0)))
        });
        if let Some(g) = by {
            for e in self
                .entries
                .iter_mut()
                .filter(|e| e.name == name && e.change == Change::Committed)
            {
                e.change = Change::Removed(g);
                n += 1;
            }
        }
        self.save();
        n
    }

    /// A watched fd hung up: drops it. Returns its name.
    pub fn hangup(&mut self, token: u64) -> Option<String> {
        let name = self
            .entries
            .iter()
            .find(|e| e.token == token && e.poll)?
            .name
            .clone();
        self.drop_entries(|e| e.token == token);
        self.save();
        Some(name)
    }

    /// Instance `g` became ready: its changes are final.
    pub fn commit(&mut self, g: u64) {
        self.drop_entries(|e| e.change == Change::Removed(g));
        for e in &mut self.entries {
            if e.change == Change::Added(g) {
                e.change = Change::Committed;
            }
        }
        self.save();
    }

    /// Instance `g` was rolled back: the store is as it was before it.
    pub fn rollback(&mut self, g: u64) -> usize {
        let n = self.drop_entries(|e| e.change == Change::Added(g));
        for e in &mut self.entries {
            if e.change == Change::Removed(g) {
                e.change = Change::Committed;
            }
        }
        self.save();
        n
    }

    /// What an instance receives: the listeners, then the stored fds, each
    /// with its name.
    pub fn passed(&self) -> Vec<(&str, BorrowedFd<'_>)> {
        self.listeners
            .iter()
            .map(|l| (l.spec.name.as_str(), l.fd.as_fd()))
            .chain(
                self.entries
                    .iter()
                    .filter(|e| !matches!(e.change, Change::Added(_)))
                    .map(|e| (e.name.as_str(), e.fd.as_fd())),
            )
            .collect()
    }
}

fn write_memfd(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = luo::memfd_create("luo-run-manifest")?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    Ok(f.into())
}

fn read_memfd(fd: OwnedFd) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::from(fd);
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len > MAX_MANIFEST {
        return Err(format!("{len} bytes, more than {MAX_MANIFEST}"));
    }
    f.rewind().map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(len as usize);
    f.read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backing shared between two stores, as a session outlives its
    /// supervisor.
    #[derive(Clone, Default)]
    struct Shared(std::rc::Rc<std::cell::RefCell<MemBacking>>);

    impl Backing for Shared {
        fn preserve(&mut self, token: u64, fd: BorrowedFd<'_>) -> luo::Result<()> {
            self.0.borrow_mut().preserve(token, fd)
        }
        fn unpreserve(&mut self, tokens: &[u64]) -> luo::Result<()> {
            self.0.borrow_mut().unpreserve(tokens)
        }
        fn fetch(&mut self, tokens: &[u64]) -> luo::Result<Vec<OwnedFd>> {
            self.0.borrow_mut().fetch(tokens)
        }
        fn tokens(&mut self) -> luo::Result<Vec<u64>> {
            self.0.borrow_mut().tokens()
        }
        fn take_reconnected(&mut self) -> bool {
            false
        }
    }

    fn memfd(name: &str) -> OwnedFd {
        luo::memfd_create(name).unwrap()
    }

    fn spec() -> ListenSpec {
        listen::parse_spec("tcp:127.0.0.1:0", "web").unwrap()
    }

    #[test]
    fn manifest_round_trip_and_damage() {
        let m = Manifest {
            next_token: 9,
            restarts: 2,
            ..Default::default()
        };
        let b = encode_manifest(&m);
        assert_eq!(decode_manifest(&b).unwrap(), m);
        let mut bad = b.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert!(decode_manifest(&bad).is_err());
        assert!(decode_manifest(b"junk").is_err());
    }

    #[test]
    fn a_second_supervisor_takes_everything_back() {
        let shared = Shared::default();
        let (mut s, _) = Store::open(Box::new(shared.clone()), &[spec()], 64, None).unwrap();
        assert!(s.store(vec![memfd("a")], "state", false, None).is_empty());
        s.restarts = 3;
        s.save();
        let port = std::net::TcpListener::from(s.listeners[0].fd.try_clone().unwrap())
            .local_addr()
            .unwrap();
        drop(s);
        // The listener spec is the same (port 0 would bind anew, so compare
        // with what the manifest holds).
        let (s2, log) = Store::open(Box::new(shared.clone()), &[spec()], 64, None).unwrap();
        assert!(log.iter().any(|l| l.contains("taken back")), "{log:?}");
        let again = std::net::TcpListener::from(s2.listeners[0].fd.try_clone().unwrap())
            .local_addr()
            .unwrap();
        assert_eq!(port, again);
        assert_eq!(s2.entries.len(), 1);
        assert_eq!(s2.entries[0].name, "state");
        assert_eq!(s2.entries[0].kind, "memfd");
        assert_eq!(s2.restarts, 3);
        // One listener, one fd, one manifest in the session.
        assert_eq!(shared.0.borrow().files.len(), 3);
    }

    #[test]
    fn limit_duplicates_and_removal() {
        let (mut s, _) = Store::open(Box::<MemBacking>::default(), &[], 2, None).unwrap();
        let a = memfd("a");
        assert!(s
            .store(vec![a.try_clone().unwrap()], "x", true, None)
            .is_empty());
        let w = s.store(vec![a], "x", true, None);
        assert!(w[0].contains("EBUSY"), "{w:?}");
        assert!(s.store(vec![memfd("b")], "y", true, None).is_empty());
        let w = s.store(vec![memfd("c")], "z", true, None);
        assert!(w[0].contains("full"), "{w:?}");
        assert_eq!(s.remove("x", None), 1);
        assert_eq!(s.passed().iter().map(|p| p.0).collect::<Vec<_>>(), ["y"]);
    }

    #[test]
    fn a_rolled_back_instance_leaves_the_store_as_it_was() {
        let (mut s, _) = Store::open(Box::<MemBacking>::default(), &[], 64, None).unwrap();
        s.store(vec![memfd("old")], "old", true, None);
        s.store(vec![memfd("new")], "new", true, Some(7));
        assert_eq!(s.remove("old", Some(7)), 1);
        // Neither change is seen by the next instance or the manifest yet.
        assert_eq!(s.passed().iter().map(|p| p.0).collect::<Vec<_>>(), ["old"]);
        assert_eq!(s.manifest().store.len(), 1);
        assert_eq!(s.rollback(7), 1);
        assert_eq!(s.passed().iter().map(|p| p.0).collect::<Vec<_>>(), ["old"]);
        s.store(vec![memfd("new")], "new", true, Some(8));
        s.remove("old", Some(8));
        s.commit(8);
        assert_eq!(s.passed().iter().map(|p| p.0).collect::<Vec<_>>(), ["new"]);
    }
}
