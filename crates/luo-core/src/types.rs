//! The model's plain public types: limits, handles and ids, session
//! states and modes, and the status of sessions and files.

use crate::{Identity, RetrieveStatus};

/// Limits that fail with `ENOSPC`. The defaults are the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most outgoing sessions at once (kernel: 10,000 blocks of 51 = 510,000).
    pub max_sessions: usize,
    /// Most files in one session (kernel: 10,000 blocks of 63 = 630,000).
    pub max_files_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 510_000,
            max_files_per_session: 630_000,
        }
    }
}

/// A handle on a session, like a session fd: [`Luo::dup`](crate::Luo::dup) copies it, and the
/// session reacts when the last copy is [closed](crate::Luo::close). After the
/// session crosses to the incoming side its old handles are stale (`ESTALE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(pub u64);

/// Index of a registered handler, in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub usize);

/// Index of a registered FLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlbId(pub usize);

/// Where a session is in its life (on luod's wire: `open`, `incoming`,
/// `retrieved`, `finished`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SessionState {
    /// Outgoing: accepting files, to be handed over.
    Open,
    /// Incoming, waiting to be retrieved.
    Incoming,
    /// Incoming and held through a handle returned by `retrieve_session`.
    Retrieved,
    /// Finished; it disappears when its last handle closes.
    Finished,
}

impl SessionState {
    /// Its word on luod's wire and in `luoctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Incoming => "incoming",
            SessionState::Retrieved => "retrieved",
            SessionState::Finished => "finished",
        }
    }
}

/// How a session follows the kernel where luo's native API deliberately
/// does not: the `/dev/liveupdate` emulation sets this on the sessions it
/// creates and retrieves ([`Luo::set_mode`](crate::Luo::set_mode)). The default is the native API's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionMode {
    /// Closing the last handle of a retrieved, unfinished session finishes
    /// it (the kernel's implicit finish): files never retrieved are
    /// discarded and the session is gone. Natively it returns to waiting.
    pub finish_on_close: bool,
    /// Preserve accepts only files whose handler is kexec-safe, which are the
    /// kernel's file types (memfd); any other file is `ENOENT`, as on the
    /// kernel, at the same point in the check order.
    pub kexec_safe_only: bool,
}

/// Observable state of one preserved file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// The file's token.
    pub token: u64,
    /// The handler's compatible string.
    pub handler: String,
    /// Whether the handler's files survive kexec.
    pub kexec_safe: bool,
    /// The identity under which the file is managed.
    pub identity: Identity,
    /// Whether the file is in the identity index (managed) right now.
    pub managed: bool,
    /// Retrieve outcome so far.
    pub retrieve: RetrieveStatus,
    /// `st_size` of the custody file now.
    pub size: u64,
    /// Bytes it counts against its owner's pinned-bytes quota: a memfd's
    /// size when it was preserved, 0 for files that pin no memory.
    pub pinned: u64,
}

/// Observable state of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's name.
    pub name: Vec<u8>,
    /// The uid that owns it.
    pub owner: u32,
    /// Its state.
    pub state: SessionState,
    /// Live handles on it.
    pub handles: usize,
    /// How many files it holds.
    pub file_count: usize,
    /// Bytes its files count against the owner's quota ([`FileStatus::pinned`]).
    pub pinned_bytes: u64,
    /// Whether every file in it survives a kexec.
    pub kexec_safe: bool,
    /// Its files in preservation order: all of them, or the window asked
    /// for ([`Luo::session_files`](crate::Luo::session_files), [`Luo::find_files`](crate::Luo::find_files); none for
    /// [`Luo::summaries`](crate::Luo::summaries)).
    pub files: Vec<FileStatus>,
}
