//! Entry points for the fuzz targets (`fuzz/`) and for the test that
//! replays their corpus (`tests/fuzz_corpus.rs`): one function per parser
//! of untrusted bytes, taking the fuzzer's input as it is and panicking
//! when a promise of `docs/security.md` does not hold. Not a stable API.
//!
//! The first byte or two of an input choose what is parsed and how (the
//! socket kind, the reply type, the number of descriptors that arrived);
//! the rest are the bytes parsed.

use luo_proto::ops::{
    AgentRequest, Done, Epoch, HandleRequest, InfoPage, Ioctl, IoctlReply, KexecReply, Preserved,
    SessionName, SessionPage, Upgraded,
};
use luo_proto::types::Status;
use luo_proto::{Errno, Error, Value, MAX_FDS, MAX_MESSAGE};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::{Registry, HEADER, MAGIC as REGISTRY_MAGIC, VERSION as REGISTRY_VERSION};

/// A target's check: panics when a promise does not hold, and says whether
/// the input was accepted.
pub type Check = fn(&[u8]) -> bool;

/// Every target: its name (a directory under `fuzz/corpus/`) and its
/// check, which says whether the input was accepted.
pub const TARGETS: &[(&str, Check)] = &[
    ("proto", proto),
    ("upgrade_state", upgrade_state),
    ("registry", registry),
    ("keeper", keeper),
    ("ioctl", ioctl),
    ("notify", notify),
];

/// The largest errno a refusal may carry (the kernel's `MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

fn assert_errno(e: &Error, allowed: &[Errno], what: &str) {
    assert!(
        e.errno.0 > 0 && e.errno.0 <= MAX_ERRNO,
        "{what}: a refusal without an errno: {e:?}"
    );
    if !allowed.is_empty() {
        assert!(
            allowed.contains(&e.errno),
            "{what}: refused with an errno it does not promise: {e:?}"
        );
    }
}

/// The descriptor count an input says arrived: 0 to `MAX_FDS + 1`.
fn fd_count(b: u8) -> usize {
    b as usize % (MAX_FDS + 2)
}

/// Splits the selector bytes off; `None` when the input is too short or
/// longer than a datagram may be (`recv` refuses those first).
fn split(data: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    if data.len() < n || data.len() - n > MAX_MESSAGE {
        return None;
    }
    Some(data.split_at(n))
}

fn encode_agent(r: &AgentRequest, n: usize) -> luo_proto::Result<Vec<u8>> {
    use luo_proto::encode_request as e;
    use AgentRequest as A;
    match r {
        A::CreateSession(c) => e(c, n),
        A::PersistSession(c) => e(c, n),
        A::RetrieveSession(c) => e(c, n),
        A::HandoverSession(c) => e(c, n),
        A::FinishSession(c) => e(c, n),
        A::Update(c) => e(c, n),
        A::GetStatus(c) => e(c, n),
        A::ListSessions(c) => e(c, n),
        A::Show(c) => e(c, n),
        A::Kexec(c) => e(c, n),
        A::Upgrade(c) => e(c, n),
        A::OpenDevice(c) => e(c, n),
        A::Ioctl(c) => e(c, n),
        A::AbortSession(c) => e(c, n),
    }
}

fn encode_handle(r: &HandleRequest, n: usize) -> luo_proto::Result<Vec<u8>> {
    use luo_proto::encode_request as e;
    use HandleRequest as H;
    match r {
        H::Name(c) => e(c, n),
        H::Info(c) => e(c, n),
        H::Preserve(c) => e(c, n),
        H::Retrieve(c) => e(c, n),
        H::Unpreserve(c) => e(c, n),
        H::Fetch(c) => e(c, n),
        H::Handover(c) => e(c, n),
        H::Finish(c) => e(c, n),
        H::Ioctl(c) => e(c, n),
    }
}

/// A request decodes, re-encodes and decodes to the same value, or is
/// refused with one of the errnos `decode_request` promises.
fn request<R>(
    bytes: &[u8],
    n: usize,
    encode: fn(&R, usize) -> luo_proto::Result<Vec<u8>>,
    op: fn(&R) -> &'static str,
) -> bool
where
    R: luo_proto::Request + PartialEq + std::fmt::Debug,
{
    match luo_proto::decode_request::<R>(bytes, n) {
        // What is taken is the op the message names, by its name.
        Ok(r)
            if serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_string))
                != Some(op(&r).to_string()) =>
        {
            panic!("taken as {:?}: {}", op(&r), String::from_utf8_lossy(bytes))
        }
        Ok(r) => match encode(&r, n) {
            Ok(again) => {
                let back = luo_proto::decode_request::<R>(&again, n);
                assert_eq!(back.as_ref(), Ok(&r), "re-encoded as {again:?}");
            }
            // Defaults written out can make it longer than it came.
            Err(e) => assert_eq!(e.errno, Errno::EMSGSIZE, "{e:?}"),
        },
        Err(e) => {
            assert_errno(
                &e,
                &[Errno::EINVAL, Errno::EPROTONOSUPPORT, Errno::EOPNOTSUPP],
                "decode_request",
            );
            return false;
        }
    }
    true
}

/// A reply decodes to its results, which re-encode and decode to the same
/// value, or to an error with an errno (the refusal it carries, or
/// `EPROTO`), which re-encodes as a refusal and decodes to the same error.
fn reply<T>(bytes: &[u8], n: usize) -> bool
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    match luo_proto::decode_reply::<T>(bytes, n) {
        Ok(t) => match luo_proto::encode_reply(&t, n) {
            Ok(again) => {
                let back = luo_proto::decode_reply::<T>(&again, n);
                assert_eq!(back.as_ref(), Ok(&t), "re-encoded as {again:?}");
            }
            Err(e) => assert_eq!(e.errno, Errno::EMSGSIZE, "{e:?}"),
        },
        Err(e) => {
            assert_errno(&e, &[], "decode_reply");
            let again = luo_proto::encode_refusal(&e);
            let back = luo_proto::decode_reply::<T>(&again, 0).unwrap_err();
            if back.message != "the refusal's message was too long" {
                assert_eq!(back, e, "re-encoded as {again:?}");
            }
            // A refusal the peer sent is a reply all the same.
            return e.errno != Errno::EPROTO;
        }
    }
    true
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// Any other message (`decode_message`, the keeper's envelope), as a JSON
/// object: re-encodes and decodes to the same value.
fn message(bytes: &[u8], n: usize) -> bool {
    match luo_proto::decode_message::<Value>(bytes, n) {
        Ok(v) => match luo_proto::encode_message(&v, n) {
            Ok(again) => {
                let back = luo_proto::decode_message::<Value>(&again, n);
                // The protocol has no floats, and serde_json's parsing of
                // one may differ from its printing in the last bit.
                if !has_float(&v) {
                    assert_eq!(back.as_ref(), Ok(&v), "re-encoded as {again:?}");
                }
            }
            Err(e) => assert_eq!(e.errno, Errno::EMSGSIZE, "{e:?}"),
        },
        Err(e) => {
            assert_errno(
                &e,
                &[Errno::EINVAL, Errno::EPROTONOSUPPORT],
                "decode_message",
            );
            return false;
        }
    }
    true
}

/// The protocol decoder. `data[0]` chooses the decoder (and, for a reply,
/// its type), `data[1]` the number of descriptors that arrived.
pub fn proto(data: &[u8]) -> bool {
    let Some((sel, bytes)) = split(data, 2) else {
        return false;
    };
    let n = fd_count(sel[1]);
    match sel[0] % 13 {
        0 => request::<AgentRequest>(bytes, n, encode_agent, AgentRequest::op),
        1 => request::<HandleRequest>(bytes, n, encode_handle, HandleRequest::op),
        2 => message(bytes, n),
        3 => reply::<Done>(bytes, n),
        4 => reply::<Epoch>(bytes, n),
        5 => reply::<Status>(bytes, n),
        6 => reply::<SessionPage>(bytes, n),
        7 => reply::<InfoPage>(bytes, n),
        8 => reply::<SessionName>(bytes, n),
        9 => reply::<Preserved>(bytes, n),
        10 => reply::<KexecReply>(bytes, n),
        11 => reply::<Upgraded>(bytes, n),
        _ => reply::<IoctlReply>(bytes, n),
    }
}

/// The bytes as they are when `data[0]` is even, else sealed in a valid
/// envelope (so that the fuzzer reaches the payload's parser without
/// having to forge a CRC).
fn envelope(data: &[u8], magic: [u8; 8], version: u32) -> Option<Vec<u8>> {
    let (&sel, rest) = data.split_first()?;
    Some(match sel & 1 {
        0 => rest.to_vec(),
        _ => crate::registry::seal(magic, version, rest),
    })
}

/// luod's in-place upgrade state, as the new image checks and parses it
/// before it takes over any descriptor: accepted or refused with
/// [`AgentError::Upgrade`](crate::AgentError::Upgrade), never a panic.
pub fn upgrade_state(data: &[u8]) -> bool {
    use crate::agent::upgrade::{codec, STATE_VERSION};
    let Some(bytes) = envelope(data, codec::MAGIC, STATE_VERSION) else {
        return false;
    };
    match codec::parse_only(&bytes) {
        Ok(()) => true,
        Err(e) => {
            assert!(matches!(e, crate::AgentError::Upgrade(_)), "{e:?}");
            false
        }
    }
}

/// The kernel backend's registry: what decodes re-encodes and decodes to
/// the same value.
pub fn registry(data: &[u8]) -> bool {
    let Some(bytes) = envelope(data, REGISTRY_MAGIC, REGISTRY_VERSION) else {
        return false;
    };
    let Ok(r) = Registry::decode(&bytes) else {
        return false;
    };
    let again = r.encode();
    assert!(again.len() >= HEADER);
    assert_eq!(Registry::decode(&again), Ok(r), "re-encoded as {again:?}");
    true
}

/// The keeper's messages: `data[0]` odd for what the keeper reads from its
/// agent, even for what the agent reads from its keeper; `data[1]` the
/// number of descriptors. What decodes re-encodes and decodes the same.
pub fn keeper(data: &[u8]) -> bool {
    let Some((sel, bytes)) = split(data, 2) else {
        return false;
    };
    let (to_keeper, n) = (sel[0] & 1 == 1, fd_count(sel[1]));
    match crate::store::decode_keeper(bytes, n, to_keeper) {
        Ok(again) => {
            assert_eq!(
                crate::store::decode_keeper(&again, n, to_keeper).as_ref(),
                Ok(&again)
            );
            true
        }
        Err(e) => {
            assert_errno(&e, &[], "a keeper message");
            false
        }
    }
}

/// The `ioctl` request of the preload library, as luod checks it:
/// `data[0]` bit 0 for the device (else a session handle), bit 1 for a
/// session of the wrong side (its `valid` refuses). The rest is the
/// request, decoded on the socket it is sent to; an `ioctl` goes through
/// the kernel's dispatcher checks and the reads of its fields.
pub fn ioctl(data: &[u8]) -> bool {
    let Some((sel, bytes)) = split(data, 1) else {
        return false;
    };
    let (device, wrong_side) = (sel[0] & 1 == 1, sel[0] & 2 == 2);
    let r: Ioctl = if device {
        match luo_proto::decode_request::<AgentRequest>(bytes, 0) {
            Ok(AgentRequest::Ioctl(r)) => r,
            _ => return false,
        }
    } else {
        match luo_proto::decode_request::<HandleRequest>(bytes, 0) {
            Ok(HandleRequest::Ioctl(r)) => r,
            _ => return false,
        }
    };
    let refuse = wrong_side.then(|| Error::new(Errno::EINVAL, "the wrong side"));
    use luo_proto::uapi;
    match crate::agent::uapi::decode_ioctl(&r, device, refuse) {
        Ok((cmd, arg)) => {
            assert!(!wrong_side, "admitted past a refusing `valid`: {r:?}");
            assert_eq!(Some(arg.len()), uapi::struct_size(cmd), "{r:?}");
            let admitted: &[u32] = if device {
                &[uapi::CREATE_SESSION, uapi::RETRIEVE_SESSION]
            } else {
                &[
                    uapi::PRESERVE_FD,
                    uapi::RETRIEVE_FD,
                    uapi::FINISH,
                    uapi::GET_NAME,
                ]
            };
            assert!(admitted.contains(&cmd), "{cmd:#x} admitted: {r:?}");
            true
        }
        Err(e) => {
            assert_errno(
                &e,
                &[Errno::EINVAL, Errno::EFAULT, Errno::ENOTTY, Errno::E2BIG],
                "ioctl",
            );
            false
        }
    }
}

/// `m` as a service would send it.
fn notify_text(m: &crate::run::notify::Message) -> String {
    let mut lines = Vec::new();
    let flags = [
        ("READY", m.ready),
        ("RELOADING", m.reloading),
        ("STOPPING", m.stopping),
        ("BARRIER", m.barrier),
        ("FDSTORE", m.fdstore),
        ("FDSTOREREMOVE", m.fdstoreremove),
    ];
    for (k, on) in flags {
        if on {
            lines.push(format!("{k}=1"));
        }
    }
    let values = [
        ("STATUS", m.status.clone()),
        ("ERRNO", m.errno.map(|n| n.to_string())),
        ("MAINPID", m.mainpid.map(|n| n.to_string())),
        ("WATCHDOG", m.watchdog.then(|| "1".to_string())),
        (
            "WATCHDOG",
            m.watchdog_trigger.then(|| "trigger".to_string()),
        ),
        ("WATCHDOG_USEC", m.watchdog_usec.map(|n| n.to_string())),
        (
            "EXTEND_TIMEOUT_USEC",
            m.extend_timeout_usec.map(|n| n.to_string()),
        ),
        ("FDNAME", m.fdname.clone()),
        ("FDPOLL", m.fdpoll.map(|p| u8::from(p).to_string())),
        ("X_LUO_EXEC_ERRNO", m.exec_errno.map(|n| n.to_string())),
    ];
    for (k, v) in values {
        if let Some(v) = v {
            lines.push(format!("{k}={v}"));
        }
    }
    lines.join("\n")
}

/// The `sd_notify` messages `luoctl run` reads from the services it
/// supervises: `data[0]` the number of descriptors that came with it. What
/// is accepted keeps its bounds (a status of at most `MAX_STATUS` bytes, a
/// valid descriptor name, `BARRIER=1` with one descriptor, a removal with a
/// name, a positive pid and watchdog interval) and, written out again,
/// parses to the same message.
pub fn notify(data: &[u8]) -> bool {
    use crate::run::notify::{fdname_is_valid, parse, MAX_STATUS};
    let Some((&n, bytes)) = data.split_first() else {
        return false;
    };
    let n = fd_count(n);
    let Ok(m) = parse(bytes, n) else {
        return false;
    };
    assert!(
        m.status.as_ref().is_none_or(|s| s.len() <= MAX_STATUS),
        "{m:?}"
    );
    assert!(m.fdname.as_deref().is_none_or(fdname_is_valid), "{m:?}");
    assert!(!m.barrier || n == 1, "{m:?}");
    assert!(!m.fdstoreremove || m.fdname.is_some(), "{m:?}");
    assert!(m.mainpid.is_none_or(|p| p > 0), "{m:?}");
    assert!(m.errno.is_none_or(|e| e >= 0), "{m:?}");
    assert!(m.watchdog_usec.is_none_or(|u| u > 0), "{m:?}");
    let again = notify_text(&m);
    assert_eq!(
        parse(again.as_bytes(), n),
        Ok(m),
        "written out as {again:?}"
    );
    true
}

/// The sealed upgrade state `agent` would hand over now (the codec's
/// writer), for seeding the corpus.
pub fn upgrade_state_of(agent: &crate::Agent) -> luo_proto::Result<Vec<u8>> {
    crate::agent::upgrade::codec::sealed_state(agent)
}
