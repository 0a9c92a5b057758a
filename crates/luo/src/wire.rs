//! One request, one reply: the exchange every call is made of.

use std::os::fd::BorrowedFd;

use luo_proto::{Errno, Error, Message, Result, Value};

/// The error for an agent that hung up in the middle of a request.
pub(crate) fn hung_up() -> Error {
    Error::new(
        Errno::ECONNRESET,
        "luod closed the connection (did it exit?)",
    )
}

/// An `EPROTO` error: the agent's reply was not what this library expects.
pub(crate) fn unexpected(what: impl std::fmt::Display) -> Error {
    Error::new(Errno::EPROTO, format!("unexpected reply from luod: {what}"))
}

/// Waits until `sock` is ready for `events` (for a handle someone made
/// non-blocking: requests on it still block).
fn wait_ready(sock: BorrowedFd<'_>, events: i32) -> Result<()> {
    let fail = |e: Errno| Error::new(e, "waiting for luod's socket failed");
    let ep = luo_sys::Epoll::new().map_err(fail)?;
    ep.add(sock, 0, events).map_err(fail)?;
    let mut ready = Vec::with_capacity(1);
    loop {
        match ep.wait(&mut ready, 1, -1) {
            Ok(()) if !ready.is_empty() => return Ok(()),
            Ok(()) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail(e)),
        }
    }
}

fn send(sock: BorrowedFd<'_>, body: &Value, fds: &[BorrowedFd<'_>]) -> Result<()> {
    let bytes = luo_proto::encode(body, fds.len())?;
    loop {
        match luo_proto::send_encoded(sock, &bytes, fds) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno == Errno::EAGAIN => wait_ready(sock, luo_sys::epoll::EPOLLOUT)?,
            Err(e) if matches!(e.errno, Errno::EPIPE | Errno::ECONNRESET) => return Err(hung_up()),
            Err(e) => return Err(e),
        }
    }
}

fn recv(sock: BorrowedFd<'_>) -> Result<Message> {
    loop {
        match luo_proto::recv(sock) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => return Err(hung_up()),
            Err(e) if e.errno == Errno::EAGAIN => wait_ready(sock, luo_sys::epoll::EPOLLIN)?,
            Err(e) if e.errno == Errno::ECONNRESET => return Err(hung_up()),
            // The datagram arrived but was not a valid message.
            Err(e) if matches!(e.errno, Errno::EINVAL | Errno::EMSGSIZE) => {
                return Err(unexpected(e.message))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends `body` with `fds`, reads the reply, and returns it if it is a
/// success carrying exactly `want_fds` descriptors. A refusal becomes the
/// [`Error`] it carries; a success with another number of descriptors is
/// `EPROTO`. Either way the descriptors of a reply that is not returned are
/// closed.
///
/// The caller holds the lock that keeps requests on `sock` one at a time.
pub(crate) fn call(
    sock: BorrowedFd<'_>,
    body: &Value,
    fds: &[BorrowedFd<'_>],
    want_fds: usize,
) -> Result<Message> {
    send(sock, body, fds)?;
    let reply = recv(sock)?;
    if reply.body.get("ok").and_then(Value::as_bool).is_none() {
        return Err(unexpected("\"ok\" is missing or not a boolean"));
    }
    let reply = luo_proto::check_reply(reply)?;
    if reply.fds.len() != want_fds {
        return Err(unexpected(format_args!(
            "{} descriptors where {want_fds} were expected (they were closed)",
            reply.fds.len()
        )));
    }
    Ok(reply)
}

/// Maps a missing or mistyped result member to `EPROTO`.
pub(crate) fn field<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| unexpected(e.message))
}

/// The `"next"` of a paged reply: where the next page starts, or `None`
/// after the last page.
pub(crate) fn next_page(reply: &Message) -> Result<Option<u64>> {
    luo_proto::opt_u64_field(&reply.body, "next").map_err(|e| unexpected(e.message))
}
