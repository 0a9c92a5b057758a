//! Every request of the protocol and the reply it gets, as types.
//!
//! Each op is one struct (its arguments) and one line in the request enum
//! of the socket that takes it ([`AgentRequest`], [`HandleRequest`]); that
//! line also names its reply type, which makes the struct a [`Call`]. luod
//! answers with one exhaustive `match` on the enum, so an op that is not
//! handled does not compile, and the client library sends a [`Call`] and
//! reads its `Reply`. Unknown, duplicated and mistyped members are refused.
//!
//! Every reply fits one message at any number of sessions and files:
//! `sessions`, `show`, `info` and the `kexec` preflight grow with them and
//! are paged (`start`, `next`; [`crate::types`]); the others are bounded
//! by their shape: counts and epochs, a session name (63 bytes), version
//! strings, `ioctl`'s name in hex, at most [`crate::MAX_FDS`] descriptors,
//! and refusals whose client strings are cut short ([`clip`]) and whose
//! `kexec` problems are at most three sentences with a count in each. An
//! op whose reply could grow must page it the same way.
//!
//! To add an op: its struct here, its line at the end of the enum (serde
//! also takes a variant's index as its tag: an existing op's index must
//! not change), its arm in luod's `agent/ops.rs`, its method in the client
//! library, and its row in `docs/protocol.md`. Its arguments are typed
//! (no `serde_json::Value`): a request that reads in one pass is not
//! scanned for [`crate::MAX_DEPTH`], its types being its bound.

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess};
use serde::{Deserialize, Serialize};

use crate::types::{Preflight, SessionInfo, Status};
use crate::uapi::Tail;
use crate::{Errno, Error};

/// One request: its arguments serialize to the request's members, and
/// `Reply` is what a successful answer carries.
pub trait Call: Serialize {
    /// The `"op"` on the wire.
    const OP: &'static str;
    /// The members of a successful reply.
    type Reply: Serialize + DeserializeOwned;
}

/// The requests one kind of socket takes.
pub trait Request: DeserializeOwned {
    /// Every `"op"` it takes.
    const OPS: &'static [&'static str];
    /// The refusal of an op it does not take (`EOPNOTSUPP`).
    fn unknown_op(op: &str) -> Error;
    /// The request `op` names, its arguments read from `args` (the
    /// members after `"op"`); `None` for an op it does not take.
    fn args<'de, A: MapAccess<'de>>(
        op: &str,
        args: MapAccessDeserializer<A>,
    ) -> Option<Result<Self, A::Error>>;
}

/// A [`Call`] with its `"op"`, as it is sent.
#[derive(Serialize)]
pub(crate) struct Tagged<'a, C> {
    op: &'static str,
    #[serde(flatten)]
    args: &'a C,
}

impl<'a, C: Call> Tagged<'a, C> {
    pub(crate) fn of(args: &'a C) -> Tagged<'a, C> {
        Tagged { op: C::OP, args }
    }
}

/// A client's string in a message: quoted, escaped and cut short, so that
/// it can neither forge log lines nor bloat a reply.
pub fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((i, _)) => format!("{:?}...", &s[..i]),
    }
}

fn unknown(op: &str, here: &str, ops: &[&str], there: &str, elsewhere: &[&str]) -> Error {
    let msg = if elsewhere.contains(&op) {
        format!("'{op}' is a request for {there}, not for {here}")
    } else {
        format!("unknown op {}; {here} takes {}", clip(op), ops.join(", "))
    };
    Error::new(Errno::EOPNOTSUPP, msg)
}

/// Declares a socket's request enum from one line per op; `-> Reply` makes
/// the op's struct a [`Call`] (an op taken on two sockets declares it once).
macro_rules! requests {
    (
        $(#[$meta:meta])*
        $name:ident on $here:literal, else $other:ident on $there:literal {
            $( $(#[$vmeta:meta])* $op:literal => $variant:ident $(-> $reply:ty)?, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(tag = "op")]
        pub enum $name {
            $(
                #[doc = concat!("`", $op, "`: [`", stringify!($variant), "`].")]
                $(#[$vmeta])*
                #[serde(rename = $op)]
                $variant($variant),
            )*
        }

        impl $name {
            /// Its `"op"`.
            pub fn op(&self) -> &'static str {
                match self {
                    $( $name::$variant(_) => $op, )*
                }
            }
        }

        impl Request for $name {
            const OPS: &'static [&'static str] = &[$($op),*];
            fn unknown_op(op: &str) -> Error {
                unknown(op, $here, Self::OPS, $there, $other::OPS)
            }
            fn args<'de, A: MapAccess<'de>>(
                op: &str,
                args: MapAccessDeserializer<A>,
            ) -> Option<Result<Self, A::Error>> {
                match op {
                    $( $op => Some($variant::deserialize(args).map($name::$variant)), )*
                    _ => None,
                }
            }
        }

        $($(
            impl Call for $variant {
                const OP: &'static str = $op;
                type Reply = $reply;
            }
        )?)*
    };
}

requests! {
    /// The requests of the agent connection (what `connect(2)` to the
    /// socket path gives): the counterpart of `/dev/liveupdate`.
    AgentRequest on "the agent connection (connect to the socket path)",
    else HandleRequest on "a session handle (the descriptor create_session or retrieve_session returned)" {
        /// Reply: 1 fd, the handle.
        "create_session" => CreateSession -> Done,
        /// Reply: 1 fd, the handle.
        "retrieve_session" => RetrieveSession -> Done,
        "handover" => HandoverSession -> Done,
        "finish" => FinishSession -> Done,
        "update" => Update -> Epoch,
        "status" => GetStatus -> Status,
        "sessions" => ListSessions -> SessionPage,
        "show" => Show -> SessionPage,
        /// 1 fd (the kernel image), or 2 with `initrd`.
        "kexec" => Kexec -> KexecReply,
        "upgrade" => Upgrade -> Upgraded,
        "open_device" => OpenDevice -> Done,
        /// On the connection that holds the device.
        "ioctl" => Ioctl -> IoctlReply,
        // New ops go last: serde also takes a variant's index as its tag,
        // and an old index must not name another op.
        /// Reply: 1 fd, the handle.
        "persist_session" => PersistSession -> Done,
        "abort" => AbortSession -> Done,
    }
}

requests! {
    /// The requests of a session handle.
    HandleRequest on "a session handle (the descriptor create_session or retrieve_session returned)",
    else AgentRequest on "the agent connection (connect to the socket path)" {
        "name" => Name -> SessionName,
        "info" => Info -> InfoPage,
        /// One fd per token.
        "preserve" => Preserve -> Preserved,
        /// Reply: one fd per token.
        "retrieve" => Retrieve -> Done,
        "handover" => Handover -> Done,
        "finish" => Finish -> Done,
        "ioctl" => Ioctl,
        // New ops go last (see above).
        "unpreserve" => Unpreserve -> Done,
        /// Reply: one fd per token.
        "fetch" => Fetch -> Done,
    }
}

/// Shared shape of the optional members.
macro_rules! args {
    ($(#[$meta:meta])* $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }
    };
}

args! {
    /// `create_session`: a new outgoing session.
    CreateSession {
        /// 1 to 63 bytes, no NUL.
        name: String,
    }
}

args! {
    /// `retrieve_session`: an incoming session by name.
    RetrieveSession {
        /// Its name.
        name: String,
        /// Another uid's session (root only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
    }
}

args! {
    /// `persist_session`: the caller's persistent outgoing session of that
    /// name, reopened, or created persistent.
    PersistSession {
        /// 1 to 63 bytes, no NUL.
        name: String,
    }
}

args! {
    /// `handover` on the agent connection: an outgoing session by name.
    HandoverSession {
        /// Its name.
        name: String,
        /// Another uid's session (root only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
    }
}

args! {
    /// `finish` on the agent connection: retrieve and finish by name.
    FinishSession {
        /// Its name.
        name: String,
        /// Another uid's session (root only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
    }
}

args! {
    /// `abort` on the agent connection: abort an open session or discard a
    /// waiting one, by name, whoever holds it.
    AbortSession {
        /// Its name.
        name: String,
        /// Another uid's session (root only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
    }
}

args! {
    /// `update`: every outgoing session crosses at once.
    Update {}
}

args! {
    /// `status`: the agent's state.
    GetStatus {}
}

args! {
    /// `sessions`: summaries, paged.
    ListSessions {
        /// The `"next"` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u64>,
    }
}

args! {
    /// `show`: details of the sessions of one name, paged over their files.
    Show {
        /// Their name.
        name: String,
        /// Another uid's sessions (root only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
        /// The `"next"` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u64>,
    }
}

args! {
    /// `kexec`: the preflight (`dry_run`) or the kernel live update.
    Kexec {
        /// The new kernel's command line.
        cmdline: String,
        /// A second descriptor, the initramfs, is attached.
        #[serde(default)]
        initrd: bool,
        /// Only the preflight.
        #[serde(default)]
        dry_run: bool,
        /// Go ahead despite problems.
        #[serde(default)]
        force: bool,
        /// With `dry_run`: the `"next"` of the previous preflight page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u64>,
    }
}

args! {
    /// `upgrade`: luod re-executes itself in place.
    Upgrade {
        /// The new binary (default: luod's own path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    }
}

/// Which handlers sessions created through the emulated device take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handlers {
    /// The kernel's file types only.
    #[default]
    Kernel,
    /// Every file luo has a handler for.
    All,
}

args! {
    /// `open_device`: this connection becomes the emulated `/dev/liveupdate`.
    OpenDevice {
        /// Absent or `null`: `kernel`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handlers: Option<Handlers>,
    }
}

args! {
    /// `ioctl`: one ioctl of the kernel's uAPI, as the program issued it
    /// (`docs/protocol.md`).
    Ioctl {
        /// The request number.
        cmd: u32,
        /// The struct's first u32; `None` when it could not be read.
        size: Option<u32>,
        /// The struct's bytes in hex; `None` when they could not be read.
        #[serde(default)]
        arg: Option<String>,
        /// The bytes past the struct.
        tail: Tail,
        /// The caller has no descriptor free.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        emfile: bool,
    }
}

args! {
    /// `name`: the session's name.
    Name {}
}

args! {
    /// `info`: the session's detail, paged over its files.
    Info {
        /// The `"next"` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u64>,
    }
}

args! {
    /// `preserve`: the attached files, one per token, in order.
    Preserve {
        /// 1 to 253 tokens.
        tokens: Vec<u64>,
    }
}

args! {
    /// `retrieve`: one descriptor per token, all or nothing.
    Retrieve {
        /// 1 to 253 tokens.
        tokens: Vec<u64>,
    }
}

args! {
    /// `unpreserve`: these files leave the outgoing session, in order.
    Unpreserve {
        /// 1 to 253 tokens.
        tokens: Vec<u64>,
    }
}

args! {
    /// `fetch`: a new descriptor of each file of a persistent session, all
    /// or nothing, without retrieving them.
    Fetch {
        /// 1 to 253 tokens.
        tokens: Vec<u64>,
    }
}

args! {
    /// `handover` on a session handle.
    Handover {}
}

args! {
    /// `finish` on a session handle.
    Finish {}
}

/// Replies with no members beyond `"ok"` (their descriptors, if any, say
/// the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Done {}

/// The reply to `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// The new epoch.
    pub epoch: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPage {
    /// Summaries (`sessions`) or details (`show`).
    pub sessions: Vec<SessionInfo>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<u64>,
}

/// One page of `info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoPage {
    /// The session, with one page of its files.
    pub session: SessionInfo,
    /// Where the next page starts; `None` after the last.
    pub next: Option<u64>,
}

/// The reply to `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionName {
    /// The session's name.
    pub name: String,
}

/// The reply to `preserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preserved {
    /// How many files were preserved (all that were sent).
    pub preserved: u64,
}

/// The reply to `kexec`: one page of the preflight with `dry_run` (its
/// `next` says where the following page starts); nothing otherwise (the
/// machine reboots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KexecReply {
    /// What the update would carry and lose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Preflight>,
}

/// The reply to `upgrade`, from the new agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgraded {
    /// The agent's pid (unchanged).
    pub pid: u32,
    /// The new agent's name and version.
    pub agent: String,
    /// The version it replaced.
    pub previous: String,
}

/// The reply to `ioctl`: `GET_NAME`'s name in hex; commands that return a
/// descriptor attach it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IoctlReply {
    /// `GET_NAME`: the name's bytes in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_taken_on_its_socket_and_named_on_the_other() {
        for op in AgentRequest::OPS {
            let e = HandleRequest::unknown_op(op);
            assert_eq!(e.errno, Errno::EOPNOTSUPP);
            if !HandleRequest::OPS.contains(op) {
                assert!(e.message.contains("agent connection"), "{op}: {e}");
            }
        }
        for op in HandleRequest::OPS {
            if !AgentRequest::OPS.contains(op) {
                assert!(AgentRequest::unknown_op(op)
                    .message
                    .contains("session handle"));
            }
        }
        assert!(AgentRequest::unknown_op("x\ny")
            .message
            .contains("\"x\\ny\""));
    }

    #[test]
    fn calls_carry_their_op() {
        let bytes = crate::encode_request(
            &Show {
                name: "kv".into(),
                owner: Some(7),
                start: None,
            },
            0,
        )
        .unwrap();
        let req: AgentRequest = crate::decode_request(&bytes, 0).unwrap();
        assert_eq!(req.op(), Show::OP);
        let bytes = crate::encode_request(&Update {}, 0).unwrap();
        assert_eq!(bytes, br#"{"v":1,"fds":0,"op":"update"}"#);
    }
}
