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
    /// A persistent outgoing session (luo's own, not the kernel's):
    /// closing its last handle does not abort it; it stays open with every
    /// file, owned by its uid and counted in its quotas, until it is
    /// reopened ([`Luo::persist_session`](crate::Luo::persist_session)), handed over (it then
    /// becomes an ordinary incoming session) or updated. Its files can be
    /// [fetched](crate::Luo::fetch) while it is open.
    pub persist: bool,
}

/// Observable state of one preserved file: what luod's `show` and `info`
/// report, member for member (with the `serde` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FileStatus {
    /// The file's token.
    pub token: u64,
    /// The handler's compatible string.
    pub handler: String,
    /// What the handler calls its files (`memfd`, `tcp-socket`, ...; see
    /// [`Descriptor::type_name`](crate::Descriptor::type_name)), else its
    /// compatible string.
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub kind: String,
    /// Whether the handler's files survive kexec.
    pub kexec_safe: bool,
    /// The identity under which the file is managed: on the wire,
    /// `identity` (`inode` or `open-file`), `dev` and `ino`.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub identity: Identity,
    /// Whether the file is in the identity index (managed) right now.
    pub managed: bool,
    /// Retrieve outcome so far: on the wire, `retrieved` (`no`, `yes`,
    /// `failed: ERRNO`).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "retrieved", with = "retrieved_text")
    )]
    pub retrieve: RetrieveStatus,
    /// `st_size` of the custody file now.
    pub size: u64,
    /// Bytes it counts against its owner's pinned-bytes quota: a memfd's
    /// size when it was preserved, 0 for files that pin no memory.
    #[cfg_attr(feature = "serde", serde(rename = "pinned_bytes"))]
    pub pinned: u64,
}

/// Observable state of one session: what luod's `sessions` (without files),
/// `show` and `info` report, member for member (with the `serde` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionInfo {
    /// The session's name (on the wire, a string; bytes that are not UTF-8
    /// are replaced).
    #[cfg_attr(feature = "serde", serde(with = "name_text"))]
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
    /// Whether it is a persistent outgoing session
    /// ([`SessionMode::persist`]). Absent on the wire when false.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "std::ops::Not::not")
    )]
    pub persistent: bool,
    /// Its files in preservation order: all of them, or the window asked
    /// for ([`Luo::session_files`](crate::Luo::session_files), [`Luo::find_files`](crate::Luo::find_files); none for
    /// [`Luo::summaries`](crate::Luo::summaries)). Absent on the wire when
    /// empty.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub files: Vec<FileStatus>,
}

impl SessionInfo {
    /// The name as text (bytes that are not UTF-8 replaced).
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The same session without its files.
    pub fn summary(&self) -> SessionInfo {
        SessionInfo {
            files: Vec::new(),
            ..self.clone()
        }
    }
}

/// A session name as a string.
#[cfg(feature = "serde")]
mod name_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(name))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// A retrieve status as its text: `no`, `yes`, `failed: ERRNO`.
#[cfg(feature = "serde")]
mod retrieved_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::RetrieveStatus;

    pub fn serialize<S: Serializer>(r: &RetrieveStatus, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RetrieveStatus, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|()| D::Error::custom(format!("unknown retrieve status {text:?}")))
    }
}
