//! The kernel backend: every kexec-safe file an agent session holds is also
//! preserved in a kernel LUO session, so that it crosses a kexec; the agent
//! keeps its custody copy as well, so a handover without a reboot works as
//! on the emulated backend.
//!
//! Kernel session names are global, so agent sessions map to kernel
//! sessions named `luod/UID/N` (N counts up from 1 in each boot); the
//! registry (a memfd in the kernel session `luod/registry`) maps them back
//! to owners and names after the kexec. A kernel that refuses more files in
//! one session (`ENOSPC`; older kernels stop at 128) gets another kernel
//! session for the same agent session: one agent session spreads over
//! several "parts", which clients never see.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::{HashMap, HashMapExt};
use luo_core::handler::{Descriptor, MemfdHandler};
use luo_core::{FileHandler, FileInfo, FileOpArgs, IdentityKind, Luo};
use luo_sys::{liveupdate as lu, Errno};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::registry::{FileEntry, Registry, SessionEntry};
use crate::AgentError;

/// The kernel session holding the registry.
pub(crate) const REGISTRY_SESSION: &str = "luod/registry";
/// The registry's token in it.
const REGISTRY_TOKEN: u64 = 0;

#[derive(Debug)]
struct Part {
    name: String,
    /// `None` once closed (its files were all released).
    fd: Option<OwnedFd>,
    files: usize,
}

#[derive(Debug, Default)]
struct Parts {
    parts: Vec<Part>,
    /// token → index in `parts`.
    tokens: HashMap<u64, usize>,
}

/// The open device and the kernel sessions behind the agent's sessions.
#[derive(Debug)]
pub(crate) struct Kernel {
    dev: OwnedFd,
    sessions: HashMap<u64, Parts>,
    next_seq: u64,
    /// Most files the agent puts in one kernel session before it starts
    /// another (the kernel's own limit still applies: `ENOSPC` also
    /// starts another).
    files_per_part: usize,
    /// Whether the kernel has `LIVEUPDATE_SESSION_GET_NAME`, probed on the
    /// first kernel session (the agent does not need it; the log says).
    get_name: Option<bool>,
}

/// The kernel state, shared by the agent and the memfd handler.
pub(crate) type Shared = Arc<Mutex<Kernel>>;

pub(crate) fn lock(k: &Shared) -> MutexGuard<'_, Kernel> {
    // The agent is one thread; a poisoned lock only means a panic elsewhere
    // already reported itself.
    k.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the device cannot be used, in words an operator can act on.
pub(crate) fn device_error(path: &Path, e: Errno) -> String {
    let why = match e {
        Errno::ENOENT => "it does not exist: this kernel has no Live Update Orchestrator, or was booted without liveupdate=on (and kho=on where needed)",
        Errno::EBUSY => "another process has it open (it allows one open at a time): stop that process, or run luod --backend emulated",
        Errno::EACCES | Errno::EPERM => "permission denied: luod must run as root to use the kernel backend",
        Errno::EIO => "the kernel could not restore the previous kernel's sessions (its deserialization failed, EIO): see dmesg",
        _ => "",
    };
    if why.is_empty() {
        format!("cannot open {}: {e}", path.display())
    } else {
        format!("cannot open {}: {why} ({e})", path.display())
    }
}

impl Kernel {
    /// Opens the device. Holding it keeps other processes from creating
    /// kernel sessions behind the agent's back.
    pub(crate) fn open(path: &Path, files_per_part: usize) -> Result<Kernel, Errno> {
        let dev = lu::open_device(path)?;
        Ok(Kernel {
            dev,
            sessions: HashMap::new(),
            next_seq: 1,
            files_per_part: files_per_part.max(1),
            get_name: None,
        })
    }

    /// Kernel sessions open now (the registry's excluded).
    pub(crate) fn open_parts(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|p| &p.parts)
            .filter(|p| p.fd.is_some())
            .count()
    }

    fn new_part(&mut self, owner: u32) -> Result<Part, Errno> {
        loop {
            let name = format!("luod/{owner}/{}", self.next_seq);
            self.next_seq += 1;
            match lu::create_session(self.dev.as_fd(), name.as_bytes()) {
                Ok(fd) => {
                    if self.get_name.is_none() {
                        let ok = lu::get_name(fd.as_fd()).is_ok_and(|n| n == name.as_bytes());
                        info!(
                            "the kernel {} LIVEUPDATE_SESSION_GET_NAME",
                            if ok { "has" } else { "lacks (or garbles)" }
                        );
                        self.get_name = Some(ok);
                    }
                    return Ok(Part {
                        name,
                        fd: Some(fd),
                        files: 0,
                    });
                }
                // A name left by someone else: take the next number.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Preserves `file` (agent session `key`, `token`) in a kernel session;
    /// returns the part's index.
    fn preserve(
        &mut self,
        key: u64,
        owner: u32,
        file: BorrowedFd<'_>,
        token: u64,
    ) -> Result<usize, Errno> {
        let per = self.files_per_part;
        let current = self.sessions.get(&key).and_then(|p| {
            p.parts
                .iter()
                .rposition(|x| x.fd.is_some() && x.files < per)
                .filter(|&i| i + 1 == p.parts.len())
        });
        let (idx, fresh) = match current {
            Some(i) => (i, false),
            None => {
                let part = self.new_part(owner)?;
                let p = self.sessions.entry(key).or_default();
                p.parts.push(part);
                (p.parts.len() - 1, true)
            }
        };
        match self.preserve_in(key, idx, file, token) {
            Ok(()) => Ok(idx),
            // This kernel caps files per session: spread over another.
            Err(Errno::ENOSPC) if !fresh => {
                let part = self.new_part(owner)?;
                let p = self.sessions.entry(key).or_default();
                p.parts.push(part);
                let idx = p.parts.len() - 1;
                match self.preserve_in(key, idx, file, token) {
                    Ok(()) => {
                        info!(
                            "the kernel refused more files in one session (ENOSPC); agent session continues in kernel session {}",
                            self.sessions[&key].parts[idx].name
                        );
                        Ok(idx)
                    }
                    Err(e) => {
                        self.drop_if_empty(key, idx);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                if fresh {
                    self.drop_if_empty(key, idx);
                }
                Err(e)
            }
        }
    }

    fn preserve_in(
        &mut self,
        key: u64,
        idx: usize,
        file: BorrowedFd<'_>,
        token: u64,
    ) -> Result<(), Errno> {
        let p = self.sessions.get_mut(&key).expect("parts");
        let part = &mut p.parts[idx];
        let fd = part.fd.as_ref().ok_or(Errno::EBADF)?;
        lu::preserve_fd(fd.as_fd(), file, token)?;
        part.files += 1;
        p.tokens.insert(token, idx);
        Ok(())
    }

    fn drop_if_empty(&mut self, key: u64, idx: usize) {
        if let Some(p) = self.sessions.get_mut(&key) {
            if p.parts[idx].files == 0 {
                // Closing an outgoing kernel session unpreserves it.
                p.parts[idx].fd = None;
                if idx + 1 == p.parts.len() {
                    p.parts.pop();
                }
            }
            if p.tokens.is_empty() && p.parts.iter().all(|x| x.fd.is_none()) {
                self.sessions.remove(&key);
            }
        }
    }

    /// A file left custody (finished or unpreserved). When its kernel
    /// session holds no more files it is closed, which unpreserves it.
    fn release(&mut self, key: u64, token: u64) {
        let Some(p) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(idx) = p.tokens.remove(&token) else {
            return;
        };
        let part = &mut p.parts[idx];
        part.files -= 1;
        if part.files == 0 {
            part.fd = None;
        }
        if p.tokens.is_empty() {
            self.sessions.remove(&key);
        }
    }

    /// The open kernel sessions of agent session `key` (compacted) and,
    /// for each token, its index in that list.
    pub(crate) fn parts_of(&self, key: u64) -> (Vec<String>, HashMap<u64, usize>) {
        let Some(p) = self.sessions.get(&key) else {
            return (Vec::new(), HashMap::new());
        };
        let mut names = Vec::new();
        let mut remap = HashMap::new();
        for (i, part) in p.parts.iter().enumerate() {
            if part.fd.is_some() {
                remap.insert(i, names.len());
                names.push(part.name.clone());
            }
        }
        let tokens = p
            .tokens
            .iter()
            .filter_map(|(t, i)| remap.get(i).map(|j| (*t, *j)))
            .collect();
        (names, tokens)
    }

    /// Writes the registry into a memfd and preserves it in the kernel
    /// session [`REGISTRY_SESSION`]; returns that session (closing it
    /// withdraws the registry).
    pub(crate) fn preserve_registry(&mut self, reg: &Registry) -> Result<OwnedFd, (Errno, String)> {
        let bytes = reg.encode();
        let memfd = luo_sys::memfd_create("luod-registry", luo_sys::mfd::ALLOW_SEALING)
            .map_err(|e| (e, "creating the registry memfd failed".to_string()))?;
        let mut f = std::fs::File::from(memfd);
        f.write_all(&bytes)
            .map_err(|e| (Errno::from(e), "writing the registry failed".to_string()))?;
        let session =
            lu::create_session(self.dev.as_fd(), REGISTRY_SESSION.as_bytes()).map_err(|e| {
                (
                    e,
                    format!("creating the kernel session {REGISTRY_SESSION} failed"),
                )
            })?;
        lu::preserve_fd(session.as_fd(), f.as_fd(), REGISTRY_TOKEN)
            .map_err(|e| (e, "preserving the registry memfd failed".to_string()))?;
        Ok(session)
    }
}

/// The kernel state of an upgrade, parsed, naming descriptors by index.
#[derive(Debug)]
pub(crate) struct Plan {
    dev: usize,
    next_seq: u64,
    files_per_part: usize,
    get_name: Option<bool>,
    sessions: Vec<PlanSession>,
}

/// An agent session's parts `(name, descriptor, files)` and its tokens'
/// part indexes.
type PlanSession = (u64, Vec<(String, Option<usize>, usize)>, Vec<(u64, usize)>);

fn plan_err(m: &str) -> String {
    format!("the kernel backend's state is malformed: {m}")
}

impl Plan {
    /// Parses what [`Kernel::state`] wrote.
    pub(crate) fn parse(v: &Value) -> Result<Plan, String> {
        let n =
            |v: Option<&Value>, what: &str| v.and_then(Value::as_u64).ok_or_else(|| plan_err(what));
        let mut sessions = Vec::new();
        for s in v
            .get("sessions")
            .and_then(Value::as_array)
            .ok_or_else(|| plan_err("sessions"))?
        {
            let s = s.as_array().ok_or_else(|| plan_err("session"))?;
            let [key, parts, tokens] = s.as_slice() else {
                return Err(plan_err("session"));
            };
            let mut ps = Vec::new();
            for p in parts.as_array().ok_or_else(|| plan_err("parts"))? {
                let [name, fd, files] = p.as_array().ok_or_else(|| plan_err("part"))?.as_slice()
                else {
                    return Err(plan_err("part"));
                };
                let fd = match fd {
                    Value::Null => None,
                    x => Some(n(Some(x), "part descriptor")? as usize),
                };
                ps.push((
                    name.as_str()
                        .ok_or_else(|| plan_err("part name"))?
                        .to_string(),
                    fd,
                    n(Some(files), "part files")? as usize,
                ));
            }
            let mut ts = Vec::new();
            for t in tokens.as_array().ok_or_else(|| plan_err("tokens"))? {
                let [t, i] = t.as_array().ok_or_else(|| plan_err("token"))?.as_slice() else {
                    return Err(plan_err("token"));
                };
                let i = n(Some(i), "token part")? as usize;
                if i >= ps.len() {
                    return Err(plan_err("a token names a part that does not exist"));
                }
                ts.push((n(Some(t), "token")?, i));
            }
            sessions.push((n(Some(key), "session key")?, ps, ts));
        }
        Ok(Plan {
            dev: n(v.get("dev"), "dev")? as usize,
            next_seq: n(v.get("next_seq"), "next_seq")?,
            files_per_part: n(v.get("files_per_part"), "files_per_part")? as usize,
            get_name: v.get("get_name").and_then(Value::as_bool),
            sessions,
        })
    }

    /// The descriptors it names.
    pub(crate) fn fds(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.dev).chain(
            self.sessions
                .iter()
                .flat_map(|(_, ps, _)| ps.iter().filter_map(|p| p.1)),
        )
    }
}

impl Kernel {
    /// Every descriptor the kernel backend holds, in [`Kernel::state`]'s order.
    pub(crate) fn for_each_fd(&self, f: &mut impl FnMut(BorrowedFd<'_>)) {
        f(self.dev.as_fd());
        for (_, p) in self.sorted() {
            for part in &p.parts {
                if let Some(fd) = &part.fd {
                    f(fd.as_fd());
                }
            }
        }
    }

    fn sorted(&self) -> Vec<(u64, &Parts)> {
        let mut v: Vec<(u64, &Parts)> = self.sessions.iter().map(|(k, p)| (*k, p)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// The upgrade state; `add` records a descriptor and returns its index.
    pub(crate) fn state(
        &self,
        add: &mut dyn FnMut(BorrowedFd<'_>) -> Result<usize, luo_proto::Error>,
    ) -> Result<Value, luo_proto::Error> {
        let dev = add(self.dev.as_fd())?;
        let mut sessions = Vec::new();
        for (key, p) in self.sorted() {
            let mut parts = Vec::new();
            for part in &p.parts {
                let fd = match &part.fd {
                    Some(fd) => Value::from(add(fd.as_fd())?),
                    None => Value::Null,
                };
                parts.push(Value::Array(vec![
                    part.name.as_str().into(),
                    fd,
                    part.files.into(),
                ]));
            }
            let tokens: Vec<Value> = p
                .tokens
                .iter()
                .map(|(t, i)| Value::Array(vec![(*t).into(), (*i).into()]))
                .collect();
            sessions.push(Value::Array(vec![
                key.into(),
                Value::Array(parts),
                Value::Array(tokens),
            ]));
        }
        let mut v = json!({
            "dev": dev,
            "next_seq": self.next_seq,
            "files_per_part": self.files_per_part,
            "sessions": sessions,
        });
        if let Some(g) = self.get_name {
            v["get_name"] = g.into();
        }
        Ok(v)
    }

    /// Rebuilds the kernel backend from a plan; `take` hands over the
    /// descriptor of each index.
    pub(crate) fn from_plan(plan: Plan, take: &mut impl FnMut(usize) -> OwnedFd) -> Kernel {
        let dev = take(plan.dev);
        let sessions = plan
            .sessions
            .into_iter()
            .map(|(key, ps, ts)| {
                let parts = ps
                    .into_iter()
                    .map(|(name, fd, files)| Part {
                        name,
                        fd: fd.map(&mut *take),
                        files,
                    })
                    .collect();
                (
                    key,
                    Parts {
                        parts,
                        tokens: ts.into_iter().collect(),
                    },
                )
            })
            .collect();
        Kernel {
            dev,
            sessions,
            next_seq: plan.next_seq,
            files_per_part: plan.files_per_part.max(1),
            get_name: plan.get_name,
        }
    }
}

/// memfd on the kernel backend: the emulated memfd handler's rules, plus
/// the file is preserved in the agent session's kernel session.
#[derive(Debug)]
pub(crate) struct KernelMemfd(pub(crate) Shared);

impl FileHandler for KernelMemfd {
    fn compatible(&self) -> &str {
        MemfdHandler.compatible()
    }
    fn descriptor(&self) -> Descriptor {
        MemfdHandler.descriptor()
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        MemfdHandler.can_preserve(file)
    }
    fn identity(&self, file: &FileInfo<'_>) -> IdentityKind {
        MemfdHandler.identity(file)
    }
    fn preserve(&self, args: &FileOpArgs<'_>) -> Result<u64, Errno> {
        let idx = lock(&self.0).preserve(args.session, args.owner, args.file, args.token)?;
        Ok(idx as u64)
    }
    fn unpreserve(&self, args: &FileOpArgs<'_>) {
        lock(&self.0).release(args.session, args.token);
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        MemfdHandler.retrieve(args)
    }
    fn finish(&self, args: &FileOpArgs<'_>) {
        lock(&self.0).release(args.session, args.token);
    }
}

/// A model whose memfd handler is [`KernelMemfd`], followed by the
/// built-in userspace handlers.
pub(crate) fn model(k: &Shared) -> Luo {
    let mut luo = Luo::new(luo_core::Limits::default());
    luo.register_handler(Box::new(KernelMemfd(k.clone())))
        .expect("a valid handler");
    for h in luo_core::handler::default_handlers() {
        if h.compatible() != MemfdHandler.compatible() {
            luo.register_handler(h)
                .expect("built-in handlers are valid");
        }
    }
    luo
}

/// The registry for a kexec: every session (all cross to the next epoch),
/// with which kernel session holds each kexec-safe file. Files that do not
/// cross are listed without a part, so the next agent can report them.
pub(crate) fn registry(luo: &Luo, k: &Kernel) -> Registry {
    let sessions = luo
        .sessions_keyed()
        .into_iter()
        .filter(|(_, s)| s.state != luo_core::SessionState::Finished)
        .map(|(key, s)| {
            let (parts, tokens) = k.parts_of(key);
            SessionEntry {
                owner: s.owner,
                name: String::from_utf8_lossy(&s.name).into_owned(),
                state: s.state.as_str().to_string(),
                persist: s.persistent,
                parts,
                files: s
                    .files
                    .iter()
                    .map(|f| FileEntry {
                        token: f.token,
                        handler: f.handler.clone(),
                        part: tokens.get(&f.token).copied(),
                    })
                    .collect(),
            }
        })
        .collect();
    Registry {
        epoch: luo.epoch(),
        agent: format!("luod {}", env!("CARGO_PKG_VERSION")),
        sessions,
    }
}

/// What [`restore`] brought back.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Sessions waiting for their owners again, and their files.
    pub(crate) sessions: usize,
    pub(crate) files: usize,
    /// Persistent sessions open again, and their files.
    pub(crate) persistent: usize,
    pub(crate) persistent_files: usize,
    /// One line per file that did not come back, and why.
    pub(crate) lost: Vec<String>,
}

/// The file beside the socket that records a refused registry: this
/// boot's id, then why. While it names the current boot, a start that finds
/// no registry refuses too (the refused one was consumed: retrieving a
/// kernel session is once per boot), so the previous kernel's sessions are
/// not silently left behind by a later luod.
pub(crate) const REFUSED_MARKER: &str = "registry.refused";
/// The refused registry's bytes, beside the socket.
pub(crate) const REJECTED_BYTES: &str = "registry.rejected";

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Records a refusal (best effort: the refusal stands either way) and
/// returns the error; `saved` is where the registry's bytes went.
fn refused(save_dir: &Path, why: String, saved: Option<&Path>) -> AgentError {
    let marker = save_dir.join(REFUSED_MARKER);
    let why = match std::fs::write(&marker, format!("{}\n{why}\n", boot_id())) {
        Ok(()) => why,
        Err(e) => format!(
            "{why}; recording the refusal in {} failed: {e}",
            marker.display()
        ),
    };
    let file = saved.map_or_else(|| "FILE".to_string(), |p| p.display().to_string());
    AgentError::Registry(format!(
        "{why}; the previous kernel's other sessions stay in the kernel, untouched, until the next kexec: recover them with a luod that reads the registry, started with --registry {file}, or remove {} to start without them",
        marker.display()
    ))
}

/// This boot's live update number, from KHO's debugfs view of the outgoing
/// `LUO` blob (`liveupdate_num`, bytes 8..16: 1 on a cold boot, one more
/// per live update since); `None` when debugfs or the blob is not there.
/// (The incoming blob is not kept readable, and the kernel lists no
/// session names: this is all userspace can learn without retrieving.)
fn liveupdate_number() -> Option<u64> {
    [
        "/sys/kernel/debug/kho/out/sub_fdts/LUO",
        "/sys/kernel/debug/liveupdate/kho_out/sub_fdts/LUO",
    ]
    .into_iter()
    .find_map(|p| std::fs::read(p).ok())
    .filter(|b| b.len() >= 16 && b.starts_with(b"luo-"))
    .map(|b| u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")))
}

/// No `luod/registry` in the kernel: a cold boot, unless a luod of this
/// boot already refused the registry (then refuse again), or this boot
/// is a live update (then say so loudly: luod's sessions may be in
/// the kernel with their registry lost; they are left untouched).
fn no_registry(save_dir: &Path) -> Result<Option<Restored>, AgentError> {
    let marker = save_dir.join(REFUSED_MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let mut lines = text.lines();
        let boot = boot_id();
        if !boot.is_empty() && lines.next() == Some(boot.as_str()) {
            let why = lines.collect::<Vec<_>>().join(" ");
            return Err(AgentError::Registry(format!(
                "a luod of this boot already refused the previous kernel's registry ({why}); the previous kernel's other sessions are still in the kernel, untouched: recover them with a luod that reads that registry, started with --registry FILE, or remove {} to start without them (they are dropped at the next kexec)",
                marker.display()
            )));
        }
        // A refusal of an earlier boot: its sessions are gone by now.
        let _ = std::fs::remove_file(&marker);
    }
    match liveupdate_number() {
        Some(n) if n > 1 => warn!(
            "this boot is a live update (live update number {n}) but the previous kernel left no {REGISTRY_SESSION}: if luod held sessions there (kernel sessions luod/UID/N; a kexec not made by `luoctl update --kexec` carries them without a registry), luod cannot name them; they stay in the kernel, untouched, until the next kexec"
        ),
        Some(_) => {}
        None => info!(
            "no {REGISTRY_SESSION} from a previous kernel (whether this boot is a live update is unknown: KHO's debugfs is not mounted)"
        ),
    }
    Ok(None)
}

/// After a kexec: finds the previous agent's registry and restores every
/// session it lists as an incoming session of the next epoch (a persistent
/// one as a persistent open session), its memfds
/// preserved again in new kernel sessions (so they cross the next kexec
/// too). `Ok(None)` when there is no registry (a cold boot). A registry that
/// is unreadable, corrupt or of another version, or a registry session
/// without the registry, refuses the start; the bytes are saved beside the
/// socket for inspection, the refusal is recorded there
/// ([`REFUSED_MARKER`]) so that later starts in this boot refuse as well,
/// and the other kernel sessions are not touched.
///
/// With `from` (luod `--registry FILE`) the registry is read from that file
/// instead, and the kernel session `luod/registry`, if any, is not touched.
pub(crate) fn restore(
    luo: &mut Luo,
    k: &Shared,
    save_dir: &Path,
    from: Option<&Path>,
) -> Result<Option<Restored>, AgentError> {
    if let Some(file) = from {
        let bytes = std::fs::read(file).map_err(|e| {
            AgentError::Registry(format!(
                "--registry {}: cannot read it: {e}",
                file.display()
            ))
        })?;
        let reg = Registry::decode(&bytes).map_err(|e| {
            AgentError::Registry(format!(
                "--registry {}: {e}; the previous kernel's sessions stay in the kernel, untouched",
                file.display()
            ))
        })?;
        let out = restore_all(luo, k, &reg);
        info!(
            "the registry came from {} (--registry), not from the kernel session {REGISTRY_SESSION}",
            file.display()
        );
        // The refusal it answers is settled.
        let _ = std::fs::remove_file(save_dir.join(REFUSED_MARKER));
        return Ok(Some(out));
    }
    let refuse = |m: String| refused(save_dir, m, None);
    let reg_session = {
        let g = lock(k);
        match lu::retrieve_session(g.dev.as_fd(), REGISTRY_SESSION.as_bytes()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return no_registry(save_dir),
            Err(e) => {
                return Err(refuse(format!(
                    "the kernel session {REGISTRY_SESSION} from the previous kernel cannot be retrieved ({e}); another agent may hold it"
                )))
            }
        }
    };
    let memfd = lu::retrieve_fd(reg_session.as_fd(), REGISTRY_TOKEN).map_err(|e| {
        refuse(format!(
            "the kernel session {REGISTRY_SESSION} holds no registry (token {REGISTRY_TOKEN}: {e}); the previous agent's sessions cannot be named"
        ))
    })?;
    let mut f = std::fs::File::from(memfd);
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut bytes))
        .map_err(|e| refuse(format!("reading the registry failed: {e}")))?;
    let reg = match Registry::decode(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let saved = save_dir.join(REJECTED_BYTES);
            let (where_, kept) = match std::fs::write(&saved, &bytes) {
                Ok(()) => (
                    format!("its {} bytes are saved in {}", bytes.len(), saved.display()),
                    Some(saved.as_path()),
                ),
                Err(w) => (
                    format!("saving it to {} failed: {w}", saved.display()),
                    None,
                ),
            };
            return Err(refused(save_dir, format!("{e}; {where_}"), kept));
        }
    };
    let out = restore_all(luo, k, &reg);
    if let Err(e) = lu::finish(reg_session.as_fd()) {
        warn!("finishing the kernel session {REGISTRY_SESSION} failed: {e}");
    }
    drop(reg_session);
    Ok(Some(out))
}

/// Restores every session `reg` lists and moves to the next epoch.
fn restore_all(luo: &mut Luo, k: &Shared, reg: &Registry) -> Restored {
    let mut out = Restored::default();
    for s in &reg.sessions {
        restore_session(luo, k, s, &mut out);
    }
    luo.set_epoch(reg.epoch + 1);
    info!(
        "restored {} sessions with {} files from the registry of {} (epoch {} -> {})",
        out.sessions,
        out.files,
        reg.agent,
        reg.epoch,
        reg.epoch + 1
    );
    if out.persistent > 0 {
        info!(
            "{} persistent sessions with {} files are open again",
            out.persistent, out.persistent_files
        );
    }
    for l in &out.lost {
        warn!("{l}");
    }
    out
}

fn restore_session(luo: &mut Luo, k: &Shared, s: &SessionEntry, out: &mut Restored) {
    let label = format!("session '{}' of uid {}", s.name.escape_debug(), s.owner);
    // Take every file out of its kernel session first, then finish those
    // (each file is ours from then on).
    let mut files: Vec<(u64, OwnedFd)> = Vec::new();
    let parts: Vec<Option<OwnedFd>> = s
        .parts
        .iter()
        .map(|name| {
            let g = lock(k);
            match lu::retrieve_session(g.dev.as_fd(), name.as_bytes()) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    out.lost.push(format!(
                        "{label}: its kernel session {name} cannot be retrieved ({e}); its files are lost"
                    ));
                    None
                }
            }
        })
        .collect();
    for f in &s.files {
        let Some(p) = f.part else {
            out.lost.push(format!(
                "{label}: token {} ({}) did not cross the kexec: its handler is not kexec-safe",
                f.token, f.handler
            ));
            continue;
        };
        let Some(Some(part)) = parts.get(p) else {
            continue;
        };
        match lu::retrieve_fd(part.as_fd(), f.token) {
            Ok(fd) => files.push((f.token, fd)),
            Err(e) => out.lost.push(format!(
                "{label}: token {} cannot be retrieved from {} ({e})",
                f.token, s.parts[p]
            )),
        }
    }
    for (i, p) in parts.iter().enumerate() {
        if let Some(p) = p {
            if let Err(e) = lu::finish(p.as_fd()) {
                warn!("finishing kernel session {} failed: {e}", s.parts[i]);
            }
        }
    }
    drop(parts);
    // A persistent session comes back open and persistent; any other
    // waits for its owner.
    let made = if s.persist {
        luo.persist_session(s.owner, s.name.as_bytes())
    } else {
        luo.create_session(s.owner, s.name.as_bytes())
    };
    let h = match made {
        Ok(h) => h,
        Err(e) => {
            out.lost.push(format!(
                "{label}: cannot be recreated ({e}); its {} files are lost",
                files.len()
            ));
            return;
        }
    };
    for (token, fd) in files {
        match luo.preserve(h, fd, token) {
            Ok(()) if s.persist => out.persistent_files += 1,
            Ok(()) => out.files += 1,
            Err(e) => out.lost.push(format!(
                "{label}: token {token} cannot be preserved again ({e})"
            )),
        }
    }
    if s.persist {
        out.persistent += 1;
    } else if let Err(e) = luo.handover(h) {
        out.lost
            .push(format!("{label}: cannot be made incoming ({e})"));
    } else {
        out.sessions += 1;
    }
    let _ = luo.close(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("luod-kernel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_refusal_of_this_boot_refuses_a_start_without_a_registry() {
        let d = dir("refused");
        let e = refused(&d, "the registry is corrupt".into(), None);
        assert!(e.to_string().contains("--registry FILE"), "{e}");
        let AgentError::Registry(m) = no_registry(&d).unwrap_err() else {
            panic!("not a registry refusal");
        };
        assert!(
            m.contains("already refused") && m.contains("the registry is corrupt"),
            "{m}"
        );
        assert!(d.join(REFUSED_MARKER).exists(), "the marker stays");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_refusal_of_another_boot_is_forgotten() {
        let d = dir("stale");
        std::fs::write(d.join(REFUSED_MARKER), "another-boot\nold reason\n").unwrap();
        assert!(no_registry(&d).unwrap().is_none());
        assert!(!d.join(REFUSED_MARKER).exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
