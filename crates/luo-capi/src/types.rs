//! The C structs and constants of `luo.h`.

#![forbid(unsafe_code)]
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, CString};

/// `owner` argument meaning "the caller's own uid".
pub const LUO_OWNER_SELF: i64 = -1;

/// Bytes of `luo_status.agent`, `luo_status.backend` and
/// `luo_status.store`, NUL included (longer values are cut).
pub const LUO_STATUS_TEXT: usize = 64;

/// Where a session is in its life.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum luo_session_state {
    /// Outgoing: accepting files.
    LUO_SESSION_OPEN = 0,
    /// Handed over, waiting for the next process.
    LUO_SESSION_INCOMING = 1,
    /// Retrieved by the next process.
    LUO_SESSION_RETRIEVED = 2,
    /// Finished.
    LUO_SESSION_FINISHED = 3,
}

impl From<luo::SessionState> for luo_session_state {
    fn from(s: luo::SessionState) -> Self {
        match s {
            luo::SessionState::Open => luo_session_state::LUO_SESSION_OPEN,
            luo::SessionState::Incoming => luo_session_state::LUO_SESSION_INCOMING,
            luo::SessionState::Retrieved => luo_session_state::LUO_SESSION_RETRIEVED,
            luo::SessionState::Finished => luo_session_state::LUO_SESSION_FINISHED,
        }
    }
}

/// The agent's state, as `luoctl status` shows it (filled by
/// `luo_status`; nothing to free).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct luo_status {
    /// The agent's name and version, e.g. `"luod 0.2.0"`.
    pub agent: [c_char; LUO_STATUS_TEXT],
    /// `"emulated"` or `"kernel"`.
    pub backend: [c_char; LUO_STATUS_TEXT],
    /// Where the agent keeps its state across its own restarts.
    pub store: [c_char; LUO_STATUS_TEXT],
    /// Protocol version.
    pub protocol: u64,
    /// The agent's pid.
    pub pid: u32,
    /// The agent's uid.
    pub uid: u32,
    /// Live-update epoch.
    pub epoch: u64,
    /// Outgoing sessions the caller may see.
    pub outgoing: u64,
    /// Incoming sessions the caller may see.
    pub incoming: u64,
    /// Preserved files.
    pub files: u64,
    /// Bytes pinned by preserved files.
    pub pinned_bytes: u64,
    /// Connections to the agent.
    pub connections: u64,
    /// The agent's open descriptors.
    pub open_fds: u64,
    /// The agent's `RLIMIT_NOFILE`, soft.
    pub nofile_soft: u64,
    /// The agent's `RLIMIT_NOFILE`, hard.
    pub nofile_hard: u64,
    /// Per-uid quota on sessions (`UINT64_MAX`: none).
    pub quota_sessions: u64,
    /// Per-uid quota on files (`UINT64_MAX`: none).
    pub quota_files: u64,
    /// Per-uid quota on pinned bytes (`UINT64_MAX`: none).
    pub quota_pinned_bytes: u64,
    /// The caller's sessions counted against the quota.
    pub usage_sessions: u64,
    /// The caller's files counted against the quota.
    pub usage_files: u64,
    /// The caller's pinned bytes counted against the quota.
    pub usage_pinned_bytes: u64,
}

fn text(s: &str) -> [c_char; LUO_STATUS_TEXT] {
    let mut out = [0 as c_char; LUO_STATUS_TEXT];
    for (o, b) in out
        .iter_mut()
        .zip(s.bytes().filter(|&b| b != 0).take(LUO_STATUS_TEXT - 1))
    {
        *o = b as c_char;
    }
    out
}

impl From<&luo::Status> for luo_status {
    fn from(s: &luo::Status) -> Self {
        luo_status {
            agent: text(&s.agent),
            backend: text(&s.backend),
            store: text(&s.store),
            protocol: s.protocol,
            pid: s.pid,
            uid: s.uid,
            epoch: s.epoch,
            outgoing: s.outgoing,
            incoming: s.incoming,
            files: s.files,
            pinned_bytes: s.pinned_bytes,
            connections: s.connections,
            open_fds: s.open_fds,
            nofile_soft: s.nofile_soft,
            nofile_hard: s.nofile_hard,
            quota_sessions: s.quota.sessions,
            quota_files: s.quota.files,
            quota_pinned_bytes: s.quota.pinned_bytes,
            usage_sessions: s.usage.sessions,
            usage_files: s.usage.files,
            usage_pinned_bytes: s.usage.pinned_bytes,
        }
    }
}

/// One preserved file of a session (in `luo_session_info.files`).
#[repr(C)]
#[derive(Debug)]
pub struct luo_file_info {
    /// The token it was preserved under.
    pub token: u64,
    /// The handler that keeps it, e.g. `"memfd-v2"`.
    pub handler: *mut c_char,
    /// What it is, e.g. `"memfd"`, `"socket"`.
    pub kind: *mut c_char,
    /// Device of the file's identity.
    pub dev: u64,
    /// Inode of the file's identity.
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes it pins.
    pub pinned: u64,
    /// Whether it crosses a kexec.
    pub kexec_safe: bool,
    /// Whether a handler manages its contents.
    pub managed: bool,
    /// `0` not retrieved, `1` retrieved, a negative errno: its retrieval
    /// failed.
    pub retrieved: c_int,
}

/// A session, in the arrays `luo_sessions` and `luo_show` return and
/// `luo_session_info_free` frees (with every string and file in it).
#[repr(C)]
#[derive(Debug)]
pub struct luo_session_info {
    /// The name (NUL-terminated; a name with bytes that are not UTF-8 is
    /// given as is).
    pub name: *mut c_char,
    /// The owner's uid.
    pub owner: u32,
    /// Where it is in its life.
    pub state: luo_session_state,
    /// Open handles on it.
    pub handles: usize,
    /// Files in it.
    pub file_count: usize,
    /// Bytes its files pin.
    pub pinned_bytes: u64,
    /// Whether every file crosses a kexec.
    pub kexec_safe: bool,
    /// Whether it is a persistent outgoing session (`luo_persist_session`).
    pub persistent: bool,
    /// Its files (`luo_show` and `luo_session_info`; `NULL` in
    /// `luo_sessions`' summaries).
    pub files: *mut luo_file_info,
    /// Entries in `files`.
    pub files_len: usize,
}

/// A C string of `s`, NUL bytes dropped.
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> CString {
    let mut v: Vec<u8> = s.into();
    v.retain(|&b| b != 0);
    CString::new(v).unwrap_or_default()
}

impl From<luo::FileStatus> for luo_file_info {
    fn from(f: luo::FileStatus) -> Self {
        luo_file_info {
            token: f.token,
            handler: cstring(f.handler).into_raw(),
            kind: cstring(f.kind).into_raw(),
            dev: f.identity.dev,
            ino: f.identity.ino,
            size: f.size,
            pinned: f.pinned,
            kexec_safe: f.kexec_safe,
            managed: f.managed,
            retrieved: match f.retrieve {
                luo::RetrieveStatus::NotRetrieved => 0,
                luo::RetrieveStatus::Retrieved => 1,
                luo::RetrieveStatus::Failed(e) => -e.0.abs(),
            },
        }
    }
}

impl From<luo::SessionInfo> for luo_session_info {
    fn from(s: luo::SessionInfo) -> Self {
        let files: Box<[luo_file_info]> = s.files.into_iter().map(Into::into).collect();
        let files_len = files.len();
        luo_session_info {
            name: cstring(s.name).into_raw(),
            owner: s.owner,
            state: s.state.into(),
            handles: s.handles,
            file_count: s.file_count,
            pinned_bytes: s.pinned_bytes,
            kexec_safe: s.kexec_safe,
            persistent: s.persistent,
            files: if files_len == 0 {
                std::ptr::null_mut()
            } else {
                Box::into_raw(files).cast()
            },
            files_len,
        }
    }
}
