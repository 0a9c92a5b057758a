//! One request, one reply: the exchange every call is made of.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;

use luo_proto::{Call, Errno, Error, RecvBuf, Result};
use serde::de::DeserializeOwned;

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

fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    loop {
        match luo_proto::send(sock, bytes, fds) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno == Errno::EAGAIN => wait_ready(sock, luo_sys::epoll::EPOLLOUT)?,
            Err(e) if matches!(e.errno, Errno::EPIPE | Errno::ECONNRESET) => return Err(hung_up()),
            Err(e) => return Err(e),
        }
    }
}

/// Sends `bytes` with `fds`, reads the reply, and returns its results if it
/// is a success carrying exactly `want_fds` descriptors. A refusal becomes
/// the [`Error`] it carries; a reply this library cannot read, or a success
/// with another number of descriptors, is `EPROTO`. Either way the
/// descriptors of a reply that is not returned are closed.
///
/// The caller holds the lock that keeps requests on `sock` one at a time,
/// and with it the receive buffer.
pub(crate) fn exchange<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    buf: &mut RecvBuf,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    want_fds: usize,
) -> Result<(T, Vec<OwnedFd>)> {
    send(sock, bytes, fds)?;
    let got = loop {
        match luo_proto::recv(sock, buf) {
            Ok(Some(d)) => break d,
            Ok(None) => return Err(hung_up()),
            Err(e) if e.errno == Errno::EAGAIN => wait_ready(sock, luo_sys::epoll::EPOLLIN)?,
            Err(e) if e.errno == Errno::ECONNRESET => return Err(hung_up()),
            // The datagram arrived but was not a valid message.
            Err(e) if matches!(e.errno, Errno::EINVAL | Errno::EMSGSIZE) => {
                return Err(unexpected(e.message))
            }
            Err(e) => return Err(e),
        }
    };
    let (reply, fds) = got.reply::<T>()?;
    if fds.len() != want_fds {
        return Err(unexpected(format_args!(
            "{} descriptors where {want_fds} were expected (they were closed)",
            fds.len()
        )));
    }
    Ok((reply, fds))
}

/// A [`Call`] on `sock`: see [`exchange`].
pub(crate) fn call<C: Call>(
    sock: BorrowedFd<'_>,
    buf: &mut RecvBuf,
    req: &C,
    fds: &[BorrowedFd<'_>],
    want_fds: usize,
) -> Result<(C::Reply, Vec<OwnedFd>)> {
    let bytes = luo_proto::encode_request(req, fds.len())?;
    exchange(sock, buf, &bytes, fds, want_fds)
}

/// A socket with the lock that keeps its requests one at a time (and the
/// receive buffer that comes with the lock): what a `Client` and a
/// `Session` make their calls on.
pub(crate) struct Line<'a> {
    pub(crate) sock: BorrowedFd<'a>,
    pub(crate) lock: &'a Mutex<RecvBuf>,
}

impl Line<'_> {
    /// A [`Call`] with `fds`, expecting `want_fds` back: see [`exchange`].
    pub(crate) fn call_with<C: Call>(
        &self,
        req: &C,
        fds: &[BorrowedFd<'_>],
        want_fds: usize,
    ) -> Result<(C::Reply, Vec<OwnedFd>)> {
        let mut buf = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        call(self.sock, &mut buf, req, fds, want_fds)
    }

    /// A [`Call`] without descriptors either way.
    pub(crate) fn call<C: Call>(&self, req: &C) -> Result<C::Reply> {
        Ok(self.call_with(req, &[], 0)?.0)
    }
}
