//! The luod wire protocol (see `docs/protocol.md`).
//!
//! One JSON object per `SOCK_SEQPACKET` datagram, at most [`MAX_MESSAGE`]
//! bytes, carrying `"v"` (the protocol version) and `"fds"` (how many
//! descriptors are attached by `SCM_RIGHTS`, at most [`MAX_FDS`]). [`recv`]
//! checks all of that before anyone looks at the message, and closes every
//! descriptor that arrived with a message it refuses.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};

pub mod json;
pub mod types;
pub mod uapi;

pub use json::Value;
pub use luo_sys::Errno;

/// The protocol version this crate speaks.
pub const VERSION: u64 = 1;
/// Largest datagram, in bytes, either way.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors in one datagram (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = luo_sys::SCM_MAX_FD;

/// A refused request or a broken exchange: the errno (the kernel's where
/// the kernel has one) and a sentence for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The errno.
    pub errno: Errno,
    /// What went wrong and, where it helps, what to do.
    pub message: Cow<'static, str>,
    /// For a batch preserve: the token that was refused (the files before it
    /// in the batch were preserved).
    pub token: Option<u64>,
}

impl Error {
    /// An error with `errno` and `message`.
    pub fn new(errno: Errno, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            errno,
            message: message.into(),
            token: None,
        }
    }

    /// The errno.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The reply that carries this error to a client.
    pub fn to_reply(&self) -> Value {
        let mut v = Value::object()
            .with("ok", false)
            .with("errno", self.errno.0 as i64)
            .with("error", self.errno.name().unwrap_or("EUNKNOWN"))
            .with("message", self.message.as_ref());
        if let Some(t) = self.token {
            v.set("token", t);
        }
        v
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno.name() {
            Some(n) => write!(f, "{} ({n})", self.message),
            None => write!(f, "{} (errno {})", self.message, self.errno.0),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a protocol operation.
pub type Result<T> = std::result::Result<T, Error>;

/// A received message: a JSON object and the descriptors that came with it
/// (owned, `FD_CLOEXEC`), exactly as many as its `"fds"` said.
#[derive(Debug)]
pub struct Message {
    /// The JSON object, with `"v"` and `"fds"` checked.
    pub body: Value,
    /// The attached descriptors, in order.
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// The `"op"` of a request, or `EINVAL`.
    pub fn op(&self) -> Result<&str> {
        str_field(&self.body, "op")
    }
}

/// A required string member.
pub fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::new(
            Errno::EINVAL,
            format!("\"{key}\" must be a string, not {}", other.type_name()),
        )),
        None => Err(Error::new(Errno::EINVAL, format!("\"{key}\" is missing"))),
    }
}

/// A required unsigned integer member.
pub fn u64_field(v: &Value, key: &str) -> Result<u64> {
    match v.get(key) {
        Some(n) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or_default()),
        Some(other) => Err(Error::new(
            Errno::EINVAL,
            format!(
                "\"{key}\" must be an unsigned integer, not {}",
                other.type_name()
            ),
        )),
        None => Err(Error::new(Errno::EINVAL, format!("\"{key}\" is missing"))),
    }
}

/// An optional unsigned integer member (absent or `null`: `None`).
pub fn opt_u64_field(v: &Value, key: &str) -> Result<Option<u64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => u64_field(v, key).map(Some),
    }
}

/// A required array of unsigned integers.
pub fn u64_list(v: &Value, key: &str) -> Result<Vec<u64>> {
    let bad = || {
        Error::new(
            Errno::EINVAL,
            format!("\"{key}\" must be an array of unsigned integers"),
        )
    };
    let items = v
        .get(key)
        .ok_or_else(|| Error::new(Errno::EINVAL, format!("\"{key}\" is missing")))?
        .as_array()
        .ok_or_else(bad)?;
    items.iter().map(|x| x.as_u64().ok_or_else(bad)).collect()
}

/// Sends `body` with `fds` attached, setting its `"v"` and `"fds"` members.
/// `EINVAL` for more than [`MAX_FDS`] descriptors, `EMSGSIZE` for a body
/// over [`MAX_MESSAGE`] bytes; otherwise `sendmsg`'s errno (`EAGAIN` on a
/// full non-blocking socket, `EPIPE` when the peer is gone).
pub fn send(sock: BorrowedFd<'_>, body: &Value, fds: &[BorrowedFd<'_>]) -> Result<()> {
    let bytes = encode(body, fds.len())?;
    send_encoded(sock, &bytes, fds)
}

/// `body` with `"v"` and `"fds"` set, serialized and size-checked.
pub fn encode(body: &Value, nfds: usize) -> Result<Vec<u8>> {
    if nfds > MAX_FDS {
        return Err(Error::new(
            Errno::EINVAL,
            format!("{nfds} descriptors in one message; the limit is {MAX_FDS}"),
        ));
    }
    let mut body = body.clone();
    body.set("v", VERSION);
    body.set("fds", nfds);
    let bytes = body.to_json().into_bytes();
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

/// Sends bytes made by [`encode`], retrying on `EINTR`.
pub fn send_encoded(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    loop {
        match luo_sys::send_with_fds(sock, bytes, fds) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::new(e, "sending a message failed")),
        }
    }
}

/// Receives one message. `Ok(None)` when the peer has closed the socket.
///
/// A datagram is refused, with every descriptor that came with it closed,
/// when it is larger than [`MAX_MESSAGE`] (`EMSGSIZE`), when its control data
/// was truncated (`EINVAL`), when it is not a JSON object or its `"v"` is
/// missing (`EINVAL`), when `"v"` is another version (`EPROTONOSUPPORT`), or
/// when `"fds"` is missing or differs from the descriptors that arrived
/// (`EINVAL`). Socket errors (`EAGAIN` on a non-blocking socket) pass through.
pub fn recv(sock: BorrowedFd<'_>) -> Result<Option<Message>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let got = loop {
        match luo_sys::recv_with_fds(sock, &mut buf, MAX_FDS) {
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
        return Err(Error::new(
            Errno::EINVAL,
            format!(
                "control data was truncated (at most {MAX_FDS} descriptors per message); the {} that arrived were closed",
                got.fds.len()
            ),
        ));
    }
    let body = json::parse(&buf[..got.len])
        .map_err(|e| Error::new(Errno::EINVAL, format!("malformed message: {e}")))?;
    if !matches!(body, Value::Object(_)) {
        return Err(Error::new(
            Errno::EINVAL,
            format!("a message must be a JSON object, not {}", body.type_name()),
        ));
    }
    let v = u64_field(&body, "v")?;
    if v != VERSION {
        return Err(Error::new(
            Errno::EPROTONOSUPPORT,
            format!("protocol version {v} is not supported; this side speaks version {VERSION}"),
        ));
    }
    let n = u64_field(&body, "fds")?;
    if n != got.fds.len() as u64 {
        return Err(Error::new(
            Errno::EINVAL,
            format!(
                "the message says {n} descriptors but {} arrived; all were closed",
                got.fds.len()
            ),
        ));
    }
    Ok(Some(Message { body, fds: got.fds }))
}

/// Turns a reply into `Ok(message)` or the error it carries.
pub fn check_reply(m: Message) -> Result<Message> {
    match m.body.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(m),
        Some(false) => {
            let errno = m
                .body
                .get("errno")
                .and_then(Value::as_i64)
                .map(|e| Errno(e as i32))
                .unwrap_or(Errno::EPROTO);
            let message = m
                .body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the agent refused the request")
                .to_string();
            Err(Error {
                errno,
                message: message.into(),
                token: m.body.get("token").and_then(Value::as_u64),
            })
        }
        None => Err(Error::new(Errno::EPROTO, "reply without \"ok\"")),
    }
}

/// A request: `{"op": op}`; add arguments with [`Value::with`].
pub fn request(op: &str) -> Value {
    Value::object().with("op", op)
}

/// A successful reply: `{"ok": true}`; add results with [`Value::with`].
pub fn ok_reply() -> Value {
    Value::object().with("ok", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    /// Serialises tests that open descriptors with the one that counts them.
    static FDS: Mutex<()> = Mutex::new(());

    fn pair() -> (OwnedFd, OwnedFd) {
        luo_sys::socketpair(luo_sys::sock::SOCK_SEQPACKET).unwrap()
    }

    fn refused(raw: &[u8], fds: &[BorrowedFd<'_>]) -> Error {
        let (a, b) = pair();
        luo_sys::send_with_fds(a.as_fd(), raw, fds).unwrap();
        recv(b.as_fd()).unwrap_err()
    }

    #[test]
    fn a_message_round_trips_with_its_fds() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = pair();
        let m = luo_sys::memfd_create("x", 0).unwrap();
        send(
            a.as_fd(),
            &request("preserve").with("tokens", vec![Value::from(7u64)]),
            &[m.as_fd()],
        )
        .unwrap();
        let got = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(got.op().unwrap(), "preserve");
        assert_eq!(u64_list(&got.body, "tokens").unwrap(), vec![7]);
        assert_eq!(got.fds.len(), 1);
        drop(a);
        assert!(recv(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn bad_messages_are_refused_with_the_right_errno() {
        let _serial = FDS.lock().unwrap_or_else(|e| e.into_inner());
        let e = luo_sys::eventfd(0).unwrap();
        let cases: &[(&[u8], usize, Errno)] = &[
            (b"{not json", 0, Errno::EINVAL),
            (b"[1,2]", 0, Errno::EINVAL),
            (br#"{"fds":0,"op":"x"}"#, 0, Errno::EINVAL),
            (br#"{"v":2,"fds":0,"op":"x"}"#, 0, Errno::EPROTONOSUPPORT),
            (br#"{"v":1,"op":"x"}"#, 1, Errno::EINVAL),
            (br#"{"v":1,"fds":2,"op":"x"}"#, 1, Errno::EINVAL),
            (br#"{"v":1,"fds":0,"op":"x"}"#, 2, Errno::EINVAL),
            (br#"{"v":"1","fds":0}"#, 0, Errno::EINVAL),
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
    fn encode_checks_limits_and_replies_carry_errors() {
        let huge = "x".repeat(MAX_MESSAGE);
        assert_eq!(
            encode(&request("name").with("pad", huge.as_str()), 0)
                .unwrap_err()
                .errno,
            Errno::EMSGSIZE
        );
        assert_eq!(
            encode(&request("name"), MAX_FDS + 1).unwrap_err().errno,
            Errno::EINVAL
        );
        let mut e = Error::new(Errno::EBUSY, "busy");
        e.token = Some(9);
        let reply = Message {
            body: e.to_reply(),
            fds: Vec::new(),
        };
        assert_eq!(check_reply(reply).unwrap_err(), e);
    }
}
