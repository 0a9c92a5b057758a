//! The results the agent reports (`status`, `sessions`, `show`), with their
//! JSON form. One definition serves the agent that writes them and the
//! clients that read them.

use crate::json::Value;
use crate::{str_field, u64_field, Errno, Error, Result};

fn bool_field(v: &Value, key: &str) -> Result<bool> {
    v.get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| Error::new(Errno::EPROTO, format!("\"{key}\" must be a boolean")))
}

fn proto<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| Error::new(Errno::EPROTO, format!("unexpected reply: {}", e.message)))
}

fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value]> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::new(Errno::EPROTO, format!("\"{key}\" must be an array")))
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Outgoing: accepting files, to be handed over.
    Open,
    /// Handed over, waiting to be retrieved.
    Incoming,
    /// Retrieved, not finished yet.
    Retrieved,
    /// Finished; gone when its last handle closes.
    Finished,
}

impl SessionState {
    /// The protocol's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Incoming => "incoming",
            SessionState::Retrieved => "retrieved",
            SessionState::Finished => "finished",
        }
    }

    /// Parses [`SessionState::as_str`].
    pub fn parse(s: &str) -> Option<SessionState> {
        Some(match s {
            "open" => SessionState::Open,
            "incoming" => SessionState::Incoming,
            "retrieved" => SessionState::Retrieved,
            "finished" => SessionState::Finished,
            _ => return None,
        })
    }
}

/// One preserved file, as `show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDetail {
    /// Its token.
    pub token: u64,
    /// The handler's compatible string, e.g. `memfd-v2`.
    pub handler: String,
    /// A short type name: `memfd`, `tcp-socket`, `udp-socket`,
    /// `unix-socket`, `eventfd`, `pipe`, or the handler's string.
    pub kind: String,
    /// `inode` (memfd: any descriptor of the inode is the same file) or
    /// `open-file` (the open file description).
    pub identity: String,
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
    /// `st_size` now.
    pub size: u64,
    /// Bytes it counts against the owner's pinned-bytes quota.
    pub pinned_bytes: u64,
    /// Whether it survives a kexec.
    pub kexec_safe: bool,
    /// Whether it is in the identity index (managed) now.
    pub managed: bool,
    /// `no`, `yes`, or `failed: ERRNO`.
    pub retrieved: String,
}

impl FileDetail {
    /// The JSON form.
    pub fn to_value(&self) -> Value {
        Value::object()
            .with("token", self.token)
            .with("handler", self.handler.as_str())
            .with("type", self.kind.as_str())
            .with("identity", self.identity.as_str())
            .with("dev", self.dev)
            .with("ino", self.ino)
            .with("size", self.size)
            .with("pinned_bytes", self.pinned_bytes)
            .with("kexec_safe", self.kexec_safe)
            .with("managed", self.managed)
            .with("retrieved", self.retrieved.as_str())
    }

    /// Parses [`FileDetail::to_value`].
    pub fn from_value(v: &Value) -> Result<FileDetail> {
        proto((|| {
            Ok(FileDetail {
                token: u64_field(v, "token")?,
                handler: str_field(v, "handler")?.to_string(),
                kind: str_field(v, "type")?.to_string(),
                identity: str_field(v, "identity")?.to_string(),
                dev: u64_field(v, "dev")?,
                ino: u64_field(v, "ino")?,
                size: u64_field(v, "size")?,
                pinned_bytes: u64_field(v, "pinned_bytes")?,
                kexec_safe: bool_field(v, "kexec_safe")?,
                managed: bool_field(v, "managed")?,
                retrieved: str_field(v, "retrieved")?.to_string(),
            })
        })())
    }
}

/// One session: a summary (`sessions`) or, with its files, a detail (`show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetail {
    /// Its name.
    pub name: String,
    /// The uid that owns it.
    pub owner: u32,
    /// Its state.
    pub state: SessionState,
    /// Live handles on it.
    pub handles: u64,
    /// How many files it holds.
    pub file_count: u64,
    /// memfd bytes its files pin.
    pub pinned_bytes: u64,
    /// Whether every file in it survives a kexec.
    pub kexec_safe: bool,
    /// Its files (empty in a summary).
    pub files: Vec<FileDetail>,
}

impl SessionDetail {
    /// The JSON form; `with_files` adds the `"files"` array.
    pub fn to_value(&self, with_files: bool) -> Value {
        let mut v = Value::object()
            .with("name", self.name.as_str())
            .with("owner", self.owner)
            .with("state", self.state.as_str())
            .with("handles", self.handles)
            .with("file_count", self.file_count)
            .with("pinned_bytes", self.pinned_bytes)
            .with("kexec_safe", self.kexec_safe);
        if with_files {
            v.set(
                "files",
                self.files
                    .iter()
                    .map(FileDetail::to_value)
                    .collect::<Vec<_>>(),
            );
        }
        v
    }

    /// Parses [`SessionDetail::to_value`] (files are optional).
    pub fn from_value(v: &Value) -> Result<SessionDetail> {
        let state = str_field(v, "state")?;
        let files = match v.get("files") {
            Some(_) => list(v, "files")?
                .iter()
                .map(FileDetail::from_value)
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        proto((|| {
            Ok(SessionDetail {
                name: str_field(v, "name")?.to_string(),
                owner: u64_field(v, "owner")? as u32,
                state: SessionState::parse(state).ok_or_else(|| {
                    Error::new(Errno::EPROTO, format!("unknown session state {state:?}"))
                })?,
                handles: u64_field(v, "handles")?,
                file_count: u64_field(v, "file_count")?,
                pinned_bytes: u64_field(v, "pinned_bytes")?,
                kexec_safe: bool_field(v, "kexec_safe")?,
                files,
            })
        })())
    }
}

/// Sessions, files and pinned bytes, as counted against a quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sessions (outgoing and incoming).
    pub sessions: u64,
    /// Files in custody.
    pub files: u64,
    /// memfd bytes pinned.
    pub pinned_bytes: u64,
}

impl Usage {
    /// The JSON form; `u64::MAX` (no limit) is written as `null`.
    pub fn to_value(&self) -> Value {
        let n = |x: u64| if x == u64::MAX { Value::Null } else { x.into() };
        Value::object()
            .with("sessions", n(self.sessions))
            .with("files", n(self.files))
            .with("pinned_bytes", n(self.pinned_bytes))
    }

    /// Parses [`Usage::to_value`] (`null` is `u64::MAX`).
    pub fn from_value(v: &Value) -> Result<Usage> {
        let n = |k: &str| match v.get(k) {
            Some(Value::Null) => Ok(u64::MAX),
            _ => proto(u64_field(v, k)),
        };
        Ok(Usage {
            sessions: n("sessions")?,
            files: n("files")?,
            pinned_bytes: n("pinned_bytes")?,
        })
    }
}

/// What `status` reports. Counts cover what the caller may see: its own
/// sessions, or every session for root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The agent's name and version, e.g. `luod 0.1.0`.
    pub agent: String,
    /// The protocol version.
    pub protocol: u64,
    /// `emulated` (or `kernel`).
    pub backend: String,
    /// The agent's pid.
    pub pid: u32,
    /// The caller's uid as the agent saw it.
    pub uid: u32,
    /// The current epoch.
    pub epoch: u64,
    /// Outgoing sessions.
    pub outgoing: u64,
    /// Incoming sessions (waiting, retrieved or finished).
    pub incoming: u64,
    /// Files in custody.
    pub files: u64,
    /// memfd bytes pinned.
    pub pinned_bytes: u64,
    /// Open client connections and session handles (whole agent).
    pub connections: u64,
    /// Descriptors the agent has open (whole agent).
    pub open_fds: u64,
    /// The agent's `RLIMIT_NOFILE` soft limit.
    pub nofile_soft: u64,
    /// The agent's `RLIMIT_NOFILE` hard limit.
    pub nofile_hard: u64,
    /// The per-uid quota (`u64::MAX`: none).
    pub quota: Usage,
    /// What the caller's uid holds against it.
    pub usage: Usage,
    /// Where copies of the custody descriptors outlive the agent, e.g.
    /// `keeper (pid 42)`, `systemd fd store`, or `none`.
    pub store: String,
}

impl Status {
    /// The JSON form.
    pub fn to_value(&self) -> Value {
        Value::object()
            .with("agent", self.agent.as_str())
            .with("protocol", self.protocol)
            .with("backend", self.backend.as_str())
            .with("pid", self.pid)
            .with("uid", self.uid)
            .with("epoch", self.epoch)
            .with("outgoing", self.outgoing)
            .with("incoming", self.incoming)
            .with("files", self.files)
            .with("pinned_bytes", self.pinned_bytes)
            .with("connections", self.connections)
            .with("open_fds", self.open_fds)
            .with("nofile_soft", self.nofile_soft)
            .with("nofile_hard", self.nofile_hard)
            .with("quota", self.quota.to_value())
            .with("usage", self.usage.to_value())
            .with("store", self.store.as_str())
    }

    /// Parses [`Status::to_value`].
    pub fn from_value(v: &Value) -> Result<Status> {
        let sub = |k: &str| {
            v.get(k)
                .ok_or_else(|| Error::new(Errno::EPROTO, format!("\"{k}\" is missing")))
        };
        let quota = Usage::from_value(sub("quota")?)?;
        let usage = Usage::from_value(sub("usage")?)?;
        proto((|| {
            Ok(Status {
                agent: str_field(v, "agent")?.to_string(),
                protocol: u64_field(v, "protocol")?,
                backend: str_field(v, "backend")?.to_string(),
                pid: u64_field(v, "pid")? as u32,
                uid: u64_field(v, "uid")? as u32,
                epoch: u64_field(v, "epoch")?,
                outgoing: u64_field(v, "outgoing")?,
                incoming: u64_field(v, "incoming")?,
                files: u64_field(v, "files")?,
                pinned_bytes: u64_field(v, "pinned_bytes")?,
                connections: u64_field(v, "connections")?,
                open_fds: u64_field(v, "open_fds")?,
                nofile_soft: u64_field(v, "nofile_soft")?,
                nofile_hard: u64_field(v, "nofile_hard")?,
                quota,
                usage,
                // Older agents do not say.
                store: v
                    .get("store")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string(),
            })
        })())
    }
}

/// Parses the `"sessions"` array of a `sessions` or `show` reply.
pub fn sessions_from_value(v: &Value) -> Result<Vec<SessionDetail>> {
    list(v, "sessions")?
        .iter()
        .map(SessionDetail::from_value)
        .collect()
}

/// Bytes of items one paged reply may carry, leaving room for the envelope
/// and the session headers.
pub const PAGE_BYTES: usize = crate::MAX_MESSAGE - 4096;

/// One page of session summaries from index `start`: the `"sessions"`
/// array and the `"next"` index (`None` on the last page). A reply of
/// `sessions` is paged because a host may have more sessions than fit in one
/// datagram.
pub fn page_summaries(all: &[SessionDetail], start: usize) -> (Vec<Value>, Option<u64>) {
    let mut out = Vec::new();
    let mut used = 0;
    for s in all.iter().skip(start) {
        let v = s.to_value(false);
        let len = v.to_json().len() + 1;
        if !out.is_empty() && used + len > PAGE_BYTES {
            let next = (start + out.len()) as u64;
            return (out, Some(next));
        }
        used += len;
        out.push(v);
    }
    (out, None)
}

/// How many files the agent looks at to fill one page of details: more than
/// a page holds, so a page is cut by size, not by this.
pub const PAGE_WINDOW: usize = 512;

/// One page of session details. `window` is every matching session's
/// header, each with its files from index `start` of all their files taken
/// in order (the first session's, then the second's), as far as the caller
/// looked (at least [`PAGE_WINDOW`] files, or to the end). Returns the
/// sessions with the files that fit in one message, and the `"next"` file
/// index (`None` on the last page).
pub fn page_details(window: &[SessionDetail], start: usize) -> (Vec<Value>, Option<u64>) {
    let total: u64 = window.iter().map(|s| s.file_count).sum();
    let mut used = 0;
    let mut taken = 0u64;
    let mut full = false;
    let mut out = Vec::new();
    for s in window {
        let mut files = Vec::new();
        for f in &s.files {
            let v = f.to_value();
            let len = v.to_json().len() + 1;
            if full || (taken > 0 && used + len > PAGE_BYTES) {
                full = true;
                break;
            }
            used += len;
            taken += 1;
            files.push(v);
        }
        let mut v = s.to_value(false);
        v.set("files", files);
        out.push(v);
    }
    let end = start as u64 + taken;
    (out, (end < total).then_some(end))
}

/// Adds one page of [`page_details`] to what earlier pages gave. `EAGAIN`
/// when the sessions changed between pages (the listing is not a snapshot:
/// ask again).
pub fn merge_details(acc: &mut Vec<SessionDetail>, page: Vec<SessionDetail>) -> Result<()> {
    if acc.is_empty() {
        *acc = page;
        return Ok(());
    }
    let same = acc.len() == page.len()
        && acc
            .iter()
            .zip(&page)
            .all(|(a, b)| a.name == b.name && a.owner == b.owner && a.state == b.state);
    if !same {
        return Err(Error::new(
            Errno::EAGAIN,
            "the session changed while its files were being listed; ask again",
        ));
    }
    for (a, b) in acc.iter_mut().zip(page) {
        a.files.extend(b.files);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(token: u64) -> FileDetail {
        FileDetail {
            token,
            handler: "memfd-v2".into(),
            kind: "memfd".into(),
            identity: "inode".into(),
            dev: 1,
            ino: token,
            size: 4096,
            pinned_bytes: 4096,
            kexec_safe: true,
            managed: true,
            retrieved: "no".into(),
        }
    }

    fn session(name: &str, files: u64) -> SessionDetail {
        SessionDetail {
            name: name.into(),
            owner: 1000,
            state: SessionState::Open,
            handles: 1,
            file_count: files,
            pinned_bytes: 4096 * files,
            kexec_safe: true,
            files: (0..files).map(file).collect(),
        }
    }

    fn fits(items: &[Value]) {
        let body = crate::ok_reply()
            .with("sessions", items.to_vec())
            .with("next", 1u64);
        assert!(
            crate::encode(&body, 0).is_ok(),
            "a page must fit in one message"
        );
    }

    /// What the agent gives `page_details`: headers, and `len` files from
    /// `start` across the sessions.
    fn window(all: &[SessionDetail], start: usize, len: usize) -> Vec<SessionDetail> {
        let mut skip = start;
        let mut left = len;
        all.iter()
            .map(|s| {
                let from = skip.min(s.files.len());
                skip -= from;
                let n = left.min(s.files.len() - from);
                left -= n;
                SessionDetail {
                    files: s.files[from..from + n].to_vec(),
                    ..s.clone()
                }
            })
            .collect()
    }

    #[test]
    fn details_of_thousands_of_files_come_back_whole_in_pages() {
        let all = vec![session("a", 3000), session("b", 1500)];
        let mut acc = Vec::new();
        let mut start = 0;
        let mut pages = 0;
        loop {
            let (items, next) = page_details(&window(&all, start, PAGE_WINDOW), start);
            fits(&items);
            let page = items
                .iter()
                .map(SessionDetail::from_value)
                .collect::<Result<Vec<_>>>()
                .unwrap();
            merge_details(&mut acc, page).unwrap();
            pages += 1;
            match next {
                Some(n) => start = n as usize,
                None => break,
            }
        }
        assert!(pages > 10, "{pages} pages");
        assert_eq!(acc, all);
    }

    #[test]
    fn summaries_page_and_a_changed_session_is_eagain() {
        let all: Vec<SessionDetail> = (0..2000).map(|i| session(&format!("s{i}"), 0)).collect();
        let mut got = Vec::new();
        let mut start = 0;
        loop {
            let (items, next) = page_summaries(&all, start);
            fits(&items);
            got.extend(items.iter().map(|v| SessionDetail::from_value(v).unwrap()));
            match next {
                Some(n) => start = n as usize,
                None => break,
            }
        }
        assert_eq!(got, all);
        let mut acc = vec![session("a", 1)];
        let mut moved = session("a", 1);
        moved.state = SessionState::Incoming;
        assert_eq!(
            merge_details(&mut acc, vec![moved]).unwrap_err().errno,
            Errno::EAGAIN
        );
    }
}
