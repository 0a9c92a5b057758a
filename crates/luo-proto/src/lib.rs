//! The luod wire protocol (see `docs/protocol.md`).
//!
//! One JSON object per `SOCK_SEQPACKET` datagram, at most [`MAX_MESSAGE`]
//! bytes, carrying `"v"` (the protocol version) and `"fds"` (how many
//! descriptors are attached by `SCM_RIGHTS`, at most [`MAX_FDS`]). The
//! requests and their replies are Rust types ([`ops`]); serde derives their
//! JSON. [`recv`] checks the transport before anyone looks at a message,
//! [`decode_request`] and [`decode_reply`] check the envelope and the shape
//! in one parse, and every descriptor that arrived with a refused message is
//! closed.
//!
//! ```
//! use luo_proto::ops::{AgentRequest, CreateSession};
//!
//! let bytes = luo_proto::encode_request(&CreateSession { name: "kv".into() }, 0).unwrap();
//! assert_eq!(bytes, br#"{"v":1,"fds":0,"op":"create_session","name":"kv"}"#);
//! let req: AgentRequest = luo_proto::decode_request(&bytes, 0).unwrap();
//! assert!(matches!(req, AgentRequest::CreateSession(c) if c.name == "kv"));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::borrow::Cow;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod onepass;
pub mod ops;
pub mod types;
pub mod uapi;

pub use luo_sys::Errno;
pub use ops::{Call, Request};
/// A JSON value, for tools that show replies as they are (`luoctl --json`).
pub use serde_json::Value;
pub use types::{fingerprint, json_len};

/// The protocol version this crate speaks.
pub const VERSION: u64 = 1;
/// Largest datagram, in bytes, either way.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors in one datagram (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = luo_sys::SCM_MAX_FD;
/// Deepest nesting of arrays and objects a message may have.
pub const MAX_DEPTH: usize = 32;

/// A refused request or a broken exchange: the errno (the kernel's where
/// the kernel has one), a sentence for the person reading it and, for a
/// batch preserve, the refused token. The model's error type: one type, one
/// `Display`, from luo-core to the client.
pub use luo_core::Error;

/// Result of a protocol operation.
pub type Result<T> = std::result::Result<T, Error>;

fn einval(msg: impl Into<Cow<'static, str>>) -> Error {
    Error::new(Errno::EINVAL, msg)
}

/// A refusal on the wire: `"ok": false` and these members.
#[derive(Serialize, Deserialize)]
struct Refusal<'a> {
    errno: i32,
    #[serde(borrow)]
    error: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
}

/// What is sent: the envelope and, flattened into it, the body.
#[derive(Serialize)]
struct Out<'a, T: ?Sized> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    v: u64,
    fds: usize,
    #[serde(flatten)]
    body: &'a T,
}

/// What is received: the envelope checked and the body typed, in one parse.
#[derive(Deserialize)]
struct In<T> {
    v: u64,
    fds: u64,
    #[serde(flatten)]
    body: T,
}

#[derive(Deserialize)]
struct ReplyIn<T> {
    v: u64,
    fds: u64,
    ok: bool,
    #[serde(flatten)]
    body: T,
}

fn encode_with<T: Serialize + ?Sized>(ok: Option<bool>, body: &T, nfds: usize) -> Result<Vec<u8>> {
    if nfds > MAX_FDS {
        return Err(einval(format!(
            "{nfds} descriptors in one message; the limit is {MAX_FDS}"
        )));
    }
    let out = Out {
        ok,
        v: VERSION,
        fds: nfds,
        body,
    };
    let bytes = serde_json::to_vec(&out)
        .map_err(|e| Error::new(Errno::EINVAL, format!("cannot encode a message: {e}")))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(Error::new(
            Errno::EMSGSIZE,
            format!(
                "message of {} bytes; the limit is {MAX_MESSAGE}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// A request (any [`Call`]), with `"v"`, `"fds"` and its `"op"`,
/// serialized and size-checked. `EINVAL` for more than [`MAX_FDS`]
/// descriptors, `EMSGSIZE` over [`MAX_MESSAGE`] bytes.
pub fn encode_request<C: Call>(call: &C, nfds: usize) -> Result<Vec<u8>> {
    encode_with(None, &ops::Tagged::of(call), nfds)
}

/// A message that is not a request or a reply of the agent's protocol (the
/// keeper's messages): `body` with `"v"` and `"fds"` set.
pub fn encode_message<T: Serialize + ?Sized>(body: &T, nfds: usize) -> Result<Vec<u8>> {
    encode_with(None, body, nfds)
}

/// A successful reply: `"ok": true` and the members of `reply`.
pub fn encode_reply<T: Serialize + ?Sized>(reply: &T, nfds: usize) -> Result<Vec<u8>> {
    encode_with(Some(true), reply, nfds)
}

/// A refusal: `"ok": false`, the errno as a number and a name, the message
/// and, for a batch, the refused token.
pub fn encode_refusal(e: &Error) -> Vec<u8> {
    let r = Refusal {
        errno: e.errno.0,
        error: Cow::Borrowed(e.errno.name().unwrap_or("EUNKNOWN")),
        message: Cow::Borrowed(&e.message),
        token: e.token,
    };
    match encode_with(Some(false), &r, 0) {
        Ok(b) => b,
        // Only an absurdly long message gets here: say less.
        Err(_) => encode_refusal(&Error::new(e.errno, "the refusal's message was too long")),
    }
}

/// `EINVAL` when arrays and objects nest deeper than [`MAX_DEPTH`], or when
/// a top-level `"op"` is not a string. One pass over the bytes, before
/// parsing: serde_json's own nesting limit is 128, and serde's tagged enums
/// would also take a number as `"op"` (a variant's position), which the
/// protocol does not allow.
fn scan(bytes: &[u8]) -> Result<()> {
    if plainly_fine(bytes) {
        return Ok(());
    }
    scan_all(bytes)
}

/// Whether neither of [`scan`]'s rules can apply: no more than
/// [`MAX_DEPTH`] opening brackets, no `"op"` and no escape (which could
/// spell one). Most replies; a few passes that need no state.
fn plainly_fine(bytes: &[u8]) -> bool {
    let opening = bytes.iter().filter(|&&b| b == b'[' || b == b'{').count();
    opening <= MAX_DEPTH && !bytes.contains(&b'\\') && !bytes.windows(4).any(|w| w == b"\"op\"")
}

/// [`scan`], byte by byte.
fn scan_all(bytes: &[u8]) -> Result<()> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut start = 0;
    let next = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|p| (from + p, bytes[from + p]))
    };
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_str = false;
                    // A key of the top-level object: `"op"` must name its op
                    // with a string.
                    if depth == 1 && is_op_key(&bytes[start..=i]) {
                        if let Some((colon, b':')) = next(i + 1) {
                            if !matches!(next(colon + 1), Some((_, b'"'))) {
                                return Err(einval("\"op\" must be a string"));
                            }
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                start = i;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(einval(format!(
                        "malformed message: nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the JSON string `quoted` (quotes included) is `"op"`, escaped or
/// not.
fn is_op_key(quoted: &[u8]) -> bool {
    quoted == b"\"op\""
        || (quoted.contains(&b'\\')
            && serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == "op"))
}

fn check_envelope(v: u64, fds: u64, nfds: usize) -> Result<()> {
    if v != VERSION {
        return Err(Error::new(
            Errno::EPROTONOSUPPORT,
            format!("protocol version {v} is not supported; this side speaks version {VERSION}"),
        ));
    }
    if fds != nfds as u64 {
        return Err(einval(format!(
            "the message says {fds} descriptors but {nfds} arrived; all were closed"
        )));
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a message that did not parse as `T` was refused, in the order a
/// reader checks: JSON, an object, `"v"`, `"fds"`; then, for requests,
/// `"op"`. Only refused messages get here, so parsing again costs nothing
/// on the normal path.
fn refusal_of(bytes: &[u8], nfds: usize, typed: serde_json::Error) -> (Error, Option<String>) {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return (einval(format!("malformed message: {e}")), None),
    };
    let Value::Object(m) = &v else {
        let e = einval(format!(
            "a message must be a JSON object, not {}",
            type_name(&v)
        ));
        return (e, None);
    };
    for key in ["v", "fds"] {
        match m.get(key) {
            None => return (einval(format!("\"{key}\" is missing")), None),
            Some(x) if x.as_u64().is_none() => {
                let e = einval(format!(
                    "\"{key}\" must be an unsigned integer, not {}",
                    type_name(x)
                ));
                return (e, None);
            }
            Some(_) => {}
        }
    }
    let (ver, fds) = (m["v"].as_u64(), m["fds"].as_u64());
    if let Err(e) = check_envelope(ver.unwrap_or(0), fds.unwrap_or(0), nfds) {
        return (e, None);
    }
    let op = m.get("op").and_then(Value::as_str).map(str::to_string);
    (einval(format!("malformed message: {typed}")), op)
}

/// Parses a request of kind `R` (the requests of one kind of socket) that
/// arrived with `nfds` descriptors.
///
/// Refusals: `EINVAL` for bytes that are not one JSON object nested at most
/// [`MAX_DEPTH`] deep, a `"v"` or `"fds"` that is missing or not an
/// integer, a `"fds"` that differs from `nfds`, or arguments that are
/// missing, unknown, duplicated or of the wrong type; `EPROTONOSUPPORT` for
/// another `"v"`; `EOPNOTSUPP` for an `"op"` this kind of socket does not
/// take (saying where it belongs, if elsewhere).
pub fn decode_request<R: Request>(bytes: &[u8], nfds: usize) -> Result<R> {
    // No `scan` first: a request that reads in one pass matched its op's
    // types, none of which nests more than a few levels, and its "op" was
    // a string; anything else is scanned below.
    if let Some(r) = onepass::request(bytes, nfds) {
        return Ok(r);
    }
    scan(bytes)?;
    match serde_json::from_slice::<In<R>>(bytes) {
        Ok(m) => check_envelope(m.v, m.fds, nfds).map(|()| m.body),
        Err(typed) => {
            let (e, op) = refusal_of(bytes, nfds, typed);
            match op {
                Some(op) if e.errno == Errno::EINVAL && !R::OPS.contains(&op.as_str()) => {
                    Err(R::unknown_op(&op))
                }
                _ => Err(e),
            }
        }
    }
}

/// Parses a message that is not a request or a reply (the keeper's), with
/// the same envelope checks as [`decode_request`].
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8], nfds: usize) -> Result<T> {
    scan(bytes)?;
    match serde_json::from_slice::<In<T>>(bytes) {
        Ok(m) => check_envelope(m.v, m.fds, nfds).map(|()| m.body),
        Err(typed) => Err(refusal_of(bytes, nfds, typed).0),
    }
}

/// Parses the reply to a request: `Ok` with its results, or the refusal it
/// carries as an [`Error`]. A reply that is not what `T` expects is
/// `EPROTO`.
pub fn decode_reply<T: DeserializeOwned>(bytes: &[u8], nfds: usize) -> Result<T> {
    let proto = |what: String| Error::new(Errno::EPROTO, format!("unexpected reply: {what}"));
    scan(bytes).map_err(|e| proto(e.message.into_owned()))?;
    if let Some(t) = onepass::reply(bytes, nfds) {
        return Ok(t);
    }
    let typed = match serde_json::from_slice::<ReplyIn<T>>(bytes) {
        Ok(r) if r.ok => {
            check_envelope(r.v, r.fds, nfds).map_err(|e| proto(e.message.into_owned()))?;
            return Ok(r.body);
        }
        Ok(_) => None,
        Err(e) => Some(e),
    };
    match serde_json::from_slice::<ReplyIn<Refusal<'_>>>(bytes) {
        Ok(r) if !r.ok => {
            check_envelope(r.v, r.fds, nfds).map_err(|e| proto(e.message.into_owned()))?;
            // An errno is 1 to 4095 (the kernel's MAX_ERRNO): a refusal
            // with 0 would read as a success, a negative one as nothing.
            if !(1..=4095).contains(&r.body.errno) {
                return Err(proto(format!("a refusal with errno {}", r.body.errno)));
            }
            Err(Error {
                errno: Errno(r.body.errno),
                message: r.body.message.into_owned().into(),
                token: r.body.token,
            })
        }
        _ => Err(match typed {
            Some(e) => match refusal_of(bytes, nfds, e).0 {
                e if e.errno == Errno::EINVAL => proto(e.message.into_owned()),
                e => e,
            },
            None => proto("\"ok\" is false but the refusal is malformed".into()),
        }),
    }
}

/// Sends bytes made by one of the `encode_*` functions, with `fds`
/// attached, retrying on `EINTR`. `sendmsg`'s errno otherwise (`EAGAIN` on
/// a full non-blocking socket, `EPIPE` when the peer is gone).
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    loop {
        match luo_sys::send_with_fds(sock, bytes, fds) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::new(e, "sending a message failed")),
        }
    }
}

/// A receive buffer, reused from one message to the next.
#[derive(Debug)]
pub struct RecvBuf(Box<[u8]>);

impl Default for RecvBuf {
    fn default() -> RecvBuf {
        // One byte more than a message may have: a datagram that fills it
        // was too large.
        RecvBuf(vec![0; MAX_MESSAGE + 1].into_boxed_slice())
    }
}

/// A received datagram that passed the transport's checks: its bytes (in
/// the [`RecvBuf`]) and the descriptors that came with it (owned,
/// `FD_CLOEXEC`). Dropping it closes them.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The payload.
    pub bytes: &'a [u8],
    /// The attached descriptors, in order.
    pub fds: Vec<OwnedFd>,
}

impl Datagram<'_> {
    /// The request it carries, and its descriptors; see [`decode_request`].
    /// On a refusal the descriptors are closed.
    pub fn request<R: Request>(self) -> Result<(R, Vec<OwnedFd>)> {
        let r = decode_request(self.bytes, self.fds.len())?;
        Ok((r, self.fds))
    }

    /// The reply it carries, and its descriptors; see [`decode_reply`].
    pub fn reply<T: DeserializeOwned>(self) -> Result<(T, Vec<OwnedFd>)> {
        let r = decode_reply(self.bytes, self.fds.len())?;
        Ok((r, self.fds))
    }

    /// Another message (the keeper's); see [`decode_message`].
    pub fn message<T: DeserializeOwned>(self) -> Result<(T, Vec<OwnedFd>)> {
        let r = decode_message(self.bytes, self.fds.len())?;
        Ok((r, self.fds))
    }
}

/// Receives one datagram into `buf`. `Ok(None)` when the peer has closed
/// the socket.
///
/// A datagram is refused, with every descriptor that came with it closed,
/// when it is larger than [`MAX_MESSAGE`] (`EMSGSIZE`) or its control data
/// was truncated (`EINVAL`). Socket errors (`EAGAIN` on a non-blocking
/// socket) pass through.
pub fn recv<'a>(sock: BorrowedFd<'_>, buf: &'a mut RecvBuf) -> Result<Option<Datagram<'a>>> {
    let got = loop {
        match luo_sys::recv_with_fds(sock, &mut buf.0, MAX_FDS) {
            Ok(r) => break r,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::new(e, "receiving a message failed")),
        }
    };
    if got.len == 0 && got.fds.is_empty() && !got.truncated {
        return Ok(None);
    }
    // From here on, returning drops `got.fds`: a refused message leaves no
    // descriptor behind.
    if got.truncated || got.len > MAX_MESSAGE {
        return Err(Error::new(
            Errno::EMSGSIZE,
            format!("message larger than {MAX_MESSAGE} bytes refused"),
        ));
    }
    if got.ctrunc {
        return Err(einval(format!(
            "control data was truncated (at most {MAX_FDS} descriptors per message); the {} that arrived were closed",
            got.fds.len()
        )));
    }
    Ok(Some(Datagram {
        bytes: &buf.0[..got.len],
        fds: got.fds,
    }))
}

#[cfg(test)]
mod tests {
    use super::ops::{AgentRequest, Done, HandleRequest, Preserve, Preserved};
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    /// Serialises tests that open descriptors with the one that counts them.
    static FDS: Mutex<()> = Mutex::new(());

    #[test]
    fn the_quick_scan_passes_only_what_the_full_scan_passes() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<String> = vec![
            r#"{"ok":true,"v":1,"fds":0,"preserved":1}"#.into(),
            r#"{"v":1,"fds":0,"op":"status"}"#.into(),
            r#"{"v":1,"fds":0,"op":1}"#.into(),
            r#"{"v":1,"fds":0,"op" : [1]}"#.into(),
            r#"{"v":1,"fds":0,"\u006fp":1}"#.into(),
            r#"{"v":1,"name":"\"op\"","x":{"op":1}}"#.into(),
            r#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#.into(),
            deep(MAX_DEPTH),
            deep(MAX_DEPTH + 1),
            format!(r#"{{"ok":true,"x":{}}}"#, deep(MAX_DEPTH - 1)),
            format!(r#"{{"ok":true,"x":{}}}"#, deep(MAX_DEPTH)),
            String::new(),
        ];
        // Every prefix too: truncated messages are malformed, not deep.
        let prefixes: Vec<String> = cases
            .iter()
            .flat_map(|c| (0..c.len()).map(move |n| c[..n].to_string()))
            .collect();
        cases.extend(prefixes);
        for c in &cases {
            let b = c.as_bytes();
            assert_eq!(scan(b).is_ok(), scan_all(b).is_ok(), "{c}");
            if plainly_fine(b) {
                assert!(scan_all(b).is_ok(), "{c}");
            }
        }
        assert!(
            plainly_fine(cases[0].as_bytes()),
            "a reply takes the quick way"
        );
        assert!(scan(deep(MAX_DEPTH + 1).as_bytes()).is_err());
        assert!(scan(br#"{"v":1,"fds":0,"op":1}"#).is_err());
        // An escaped "op" is the same key; one inside a string or deeper is not.
        assert!(scan(br#"{"v":1,"fds":0,"\u006fp":1}"#).is_err());
        assert!(scan(br#"{"v":1,"name":"\"op\"","x":{"op":1}}"#).is_ok());
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap()
    }

    fn refused(raw: &[u8], fds: &[BorrowedFd<'_>]) -> Error {
        let (a, b) = pair();
        luo_sys::send_with_fds(a.as_fd(), raw, fds).unwrap();
        let mut buf = RecvBuf::default();
        match recv(b.as_fd(), &mut buf) {
            Err(e) => e,
            Ok(m) => m.unwrap().request::<HandleRequest>().unwrap_err(),
        }
    }

    #[test]
    fn a_message_round_trips_with_its_fds() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = pair();
        let m = luo_sys::memfd_create("x", 0).unwrap();
        let bytes = encode_request(&Preserve { tokens: vec![7] }, 1).unwrap();
        send(a.as_fd(), &bytes, &[m.as_fd()]).unwrap();
        let mut buf = RecvBuf::default();
        let (req, fds) = recv(b.as_fd(), &mut buf)
            .unwrap()
            .unwrap()
            .request::<HandleRequest>()
            .unwrap();
        assert!(matches!(req, HandleRequest::Preserve(p) if p.tokens == [7]));
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn bad_messages_are_refused_with_the_right_errno() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
        let e = luo_sys::eventfd(0).unwrap();
        let deep = format!(
            r#"{{"v":1,"fds":0,"op":"name","x":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let cases: &[(&[u8], usize, Errno)] = &[
            (b"{not json", 0, Errno::EINVAL),
            (b"[1,2]", 0, Errno::EINVAL),
            (br#"{"fds":0,"op":"x"}"#, 0, Errno::EINVAL),
            (br#"{"v":2,"fds":0,"op":"x"}"#, 0, Errno::EPROTONOSUPPORT),
            (br#"{"v":2,"fds":0,"op":"name"}"#, 0, Errno::EPROTONOSUPPORT),
            (br#"{"v":1,"op":"x"}"#, 1, Errno::EINVAL),
            (br#"{"v":1,"fds":2,"op":"name"}"#, 1, Errno::EINVAL),
            (br#"{"v":1,"fds":0,"op":"name"}"#, 2, Errno::EINVAL),
            (br#"{"v":"1","fds":0}"#, 0, Errno::EINVAL),
            (br#"{"v":1.0,"fds":0,"op":"name"}"#, 0, Errno::EINVAL),
            (br#"{"v":1,"fds":0}"#, 0, Errno::EINVAL),
            (br#"{"v":1,"fds":0,"op":"nope"}"#, 0, Errno::EOPNOTSUPP),
            (br#"{"v":1,"fds":0,"op":"status"}"#, 0, Errno::EOPNOTSUPP),
            (br#"{"v":1,"fds":0,"op":"name","pad":1}"#, 0, Errno::EINVAL),
            (br#"{"v":1,"v":1,"fds":0,"op":"name"}"#, 0, Errno::EINVAL),
            (
                br#"{"v":1,"fds":0,"op":"info","start":1,"start":2}"#,
                0,
                Errno::EINVAL,
            ),
            (
                br#"{"v":1,"fds":0,"op":"preserve","tokens":[1.5]}"#,
                0,
                Errno::EINVAL,
            ),
            (
                br#"{"v":1,"fds":0,"op":"preserve","tokens":[18446744073709551616]}"#,
                0,
                Errno::EINVAL,
            ),
            (deep.as_bytes(), 0, Errno::EINVAL),
            // serde would read a number as the op's position.
            (br#"{"v":1,"fds":0,"op":0}"#, 0, Errno::EINVAL),
            (br#"{"v":1,"fds":0, "op" : 3 }"#, 0, Errno::EINVAL),
            (br#"{"v":1,"fds":0,"o\u0070":0}"#, 0, Errno::EINVAL),
        ];
        let before = luo_sys::open_fd_count().unwrap();
        for (raw, n, want) in cases {
            let fds: Vec<BorrowedFd<'_>> = (0..*n).map(|_| e.as_fd()).collect();
            let err = refused(raw, &fds);
            assert_eq!(err.errno, *want, "{}: {err}", String::from_utf8_lossy(raw));
        }
        let big = vec![b' '; MAX_MESSAGE + 1];
        assert_eq!(refused(&big, &[e.as_fd()]).errno, Errno::EMSGSIZE);
        // Every descriptor that came with a refused message was closed.
        assert_eq!(luo_sys::open_fd_count().unwrap(), before);
    }

    #[test]
    fn the_wrong_socket_is_named() {
        let raw = br#"{"v":1,"fds":0,"op":"create_session","name":"kv"}"#;
        let e = decode_request::<HandleRequest>(raw, 0).unwrap_err();
        assert_eq!(e.errno, Errno::EOPNOTSUPP);
        assert!(e.message.contains("agent connection"), "{e}");
        assert!(decode_request::<AgentRequest>(raw, 0).is_ok());
    }

    #[test]
    fn limits_are_checked_and_replies_carry_errors() {
        let huge = "x".repeat(MAX_MESSAGE);
        let big = ops::CreateSession { name: huge };
        assert_eq!(encode_request(&big, 0).unwrap_err().errno, Errno::EMSGSIZE);
        assert_eq!(
            encode_request(&ops::Name {}, MAX_FDS + 1)
                .unwrap_err()
                .errno,
            Errno::EINVAL
        );
        let e = Error::new(Errno::EBUSY, "busy").with_token(9);
        let bytes = encode_refusal(&e);
        assert_eq!(decode_reply::<Preserved>(&bytes, 0).unwrap_err(), e);
        assert_eq!(decode_reply::<Done>(&bytes, 0).unwrap_err(), e);
        let ok = encode_reply(&Preserved { preserved: 3 }, 0).unwrap();
        assert_eq!(decode_reply::<Preserved>(&ok, 0).unwrap().preserved, 3);
        assert_eq!(
            decode_reply::<Preserved>(&encode_reply(&Done {}, 0).unwrap(), 0)
                .unwrap_err()
                .errno,
            Errno::EPROTO
        );
        assert_eq!(
            decode_reply::<Done>(&ok, 1).unwrap_err().errno,
            Errno::EPROTO
        );
    }
}
