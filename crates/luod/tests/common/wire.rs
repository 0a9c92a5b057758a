//! Raw protocol exchanges for tests that build requests by hand (hostile
//! input, the uAPI requests): JSON values in, JSON values out.

#![allow(dead_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use luo_proto::uapi;
use luo_proto::{Errno, RecvBuf};
use luo_sys::epoll::EPOLLIN;
pub use serde_json::{json, Value};

use super::PATIENCE;

/// A received message: its JSON and its descriptors.
#[derive(Debug)]
pub struct Message {
    pub body: Value,
    pub fds: Vec<OwnedFd>,
}

/// Builds on a JSON object: `request("op").with("name", "kv")`.
pub trait With {
    fn with(self, key: &str, v: impl Into<Value>) -> Value;
}

impl With for Value {
    fn with(mut self, key: &str, v: impl Into<Value>) -> Value {
        self[key] = v.into();
        self
    }
}

/// `{"op": op}`.
pub fn request(op: &str) -> Value {
    json!({ "op": op })
}

/// An `ioctl` request as the preload library sends it for a readable struct.
pub fn ioctl(cmd: u32, arg: &[u8]) -> Value {
    request("ioctl")
        .with("cmd", cmd)
        .with("size", u32::from_le_bytes(arg[..4].try_into().unwrap()))
        .with(
            "arg",
            uapi::to_hex(&arg[..arg.len().min(uapi::struct_size(cmd).unwrap_or(0))]),
        )
        .with("tail", "zero")
}

/// The 72-byte struct of `CREATE_SESSION`, `RETRIEVE_SESSION` and
/// `GET_NAME`, with `name`.
pub fn session_arg(name: &str) -> Vec<u8> {
    let mut a = vec![0u8; 72];
    a[..4].copy_from_slice(&72u32.to_le_bytes());
    a[8..8 + name.len()].copy_from_slice(name.as_bytes());
    a
}

/// The 16-byte struct of `PRESERVE_FD` and `RETRIEVE_FD`, with `token`.
pub fn fd_arg(token: u64) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[..4].copy_from_slice(&16u32.to_le_bytes());
    a[8..].copy_from_slice(&token.to_le_bytes());
    a
}

/// `{"op": op, key: v}`.
pub fn with(op: &str, key: &str, v: impl Into<Value>) -> Value {
    request(op).with(key, v)
}

/// `body` with `"v"` and `"fds"` set, as bytes.
pub fn encode(body: &Value, nfds: usize) -> Vec<u8> {
    let mut body = body.clone();
    body["v"] = luo_proto::VERSION.into();
    body["fds"] = nfds.into();
    serde_json::to_vec(&body).unwrap()
}

/// Sends `body` (setting `"v"` and `"fds"`) with `fds`.
pub fn send(sock: BorrowedFd<'_>, body: &Value, fds: &[BorrowedFd<'_>]) -> luo_proto::Result<()> {
    luo_proto::send(sock, &encode(body, fds.len()), fds)
}

/// Receives one message now: `Ok(None)` at end of file.
pub fn try_recv(sock: BorrowedFd<'_>) -> luo_proto::Result<Option<Message>> {
    let mut buf = RecvBuf::default();
    let Some(d) = luo_proto::recv(sock, &mut buf)? else {
        return Ok(None);
    };
    let body = serde_json::from_slice(d.bytes).map_err(|e| {
        luo_proto::Error::new(Errno::EINVAL, format!("a reply that is not JSON: {e}"))
    })?;
    Ok(Some(Message { body, fds: d.fds }))
}

/// Receives one message, failing the test if none comes in time.
pub fn recv(sock: &OwnedFd) -> Message {
    let ep = luo_sys::Epoll::new().unwrap();
    ep.add(sock.as_fd(), 1, EPOLLIN).unwrap();
    let mut ready = Vec::new();
    ep.wait(&mut ready, 1, PATIENCE.as_millis() as i32).unwrap();
    assert!(
        !ready.is_empty(),
        "no reply from the agent within {PATIENCE:?}"
    );
    try_recv(sock.as_fd())
        .expect("receiving a reply")
        .expect("the agent closed the connection instead of replying")
}

/// Sends a request (setting "v" and "fds") and returns the reply.
pub fn call(sock: &OwnedFd, body: Value, fds: &[BorrowedFd<'_>]) -> Message {
    send(sock.as_fd(), &body, fds).expect("sending a request");
    recv(sock)
}

/// Sends raw bytes and descriptors and returns the reply.
pub fn raw(sock: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Message {
    luo_sys::send_with_fds(sock.as_fd(), bytes, fds).expect("sending raw bytes");
    recv(sock)
}

/// Asserts a success; returns its members.
pub fn ok(m: &Message) -> &Value {
    assert_eq!(
        m.body.get("ok"),
        Some(&Value::Bool(true)),
        "expected success, got {}",
        m.body
    );
    &m.body
}

/// The errno of a refusal.
pub fn errno(m: &Message) -> Errno {
    assert!(m.fds.is_empty(), "a refusal carried descriptors");
    Errno(
        m.body
            .get("errno")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("expected a refusal, got {}", m.body)) as i32,
    )
}

/// Asserts a refusal with `errno` (by number and by name); returns its message.
pub fn refused(m: &Message, errno: Errno) -> String {
    let b = &m.body;
    assert_eq!(
        b.get("ok"),
        Some(&Value::Bool(false)),
        "expected {errno:?}, got {b}"
    );
    assert_eq!(
        b.get("errno").and_then(Value::as_i64),
        Some(i64::from(errno.0)),
        "expected {errno:?}, got {b}"
    );
    assert_eq!(b.get("error").and_then(Value::as_str), errno.name(), "{b}");
    assert!(m.fds.is_empty(), "a refusal carried descriptors");
    let msg = b.get("message").and_then(Value::as_str).unwrap_or_default();
    assert!(!msg.is_empty(), "a refusal without a message: {b}");
    msg.to_string()
}

/// The `"sessions"` of a listing's reply.
pub fn sessions(v: &Value) -> Vec<luo_proto::types::SessionInfo> {
    serde_json::from_value(v["sessions"].clone()).expect("a list of sessions")
}

/// A refusal as the agent sends it.
pub fn refusal(e: &luo_proto::Error) -> Value {
    serde_json::from_slice(&luo_proto::encode_refusal(e)).unwrap()
}
