//! One request and its reply on a socket the caller may have made
//! non-blocking.

use std::os::fd::BorrowedFd;

use luo_proto::{Errno, Error, Message, Value};
use luo_sys::preload::{poll_one, POLLIN, POLLOUT};

/// Why a request got no answer from luod's dispatcher.
#[derive(Debug)]
pub(crate) enum Failure {
    /// luod refused it: the errno for the caller.
    Refused(Error),
    /// The exchange broke (luod gone, a malformed reply).
    Transport(Error),
}

impl Failure {
    /// The errno the caller sees: luod's, or `EIO` when the exchange broke
    /// (the kernel has no such failure; EIO is its word for "the device
    /// could not do it").
    pub(crate) fn errno(&self) -> Errno {
        match self {
            Failure::Refused(e) => e.errno,
            Failure::Transport(_) => Errno::EIO,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Refused(e) => e.to_string(),
            Failure::Transport(e) => format!("talking to luod failed: {e}"),
        }
    }
}

fn wait(sock: BorrowedFd<'_>, events: i16) -> Result<(), Failure> {
    loop {
        match poll_one(sock, events, -1) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Failure::Transport(Error::new(e, "poll failed"))),
        }
    }
}

/// Sends `body` with `fds` and returns the successful reply.
pub(crate) fn call(
    sock: BorrowedFd<'_>,
    body: &Value,
    fds: &[BorrowedFd<'_>],
) -> Result<Message, Failure> {
    let bytes = luo_proto::encode(body, fds.len()).map_err(Failure::Transport)?;
    loop {
        match luo_proto::send_encoded(sock, &bytes, fds) {
            Ok(()) => break,
            Err(e) if e.errno == Errno::EAGAIN => wait(sock, POLLOUT)?,
            Err(e) => return Err(Failure::Transport(e)),
        }
    }
    let reply = loop {
        match luo_proto::recv(sock) {
            Ok(Some(m)) => break m,
            Ok(None) => {
                return Err(Failure::Transport(Error::new(
                    Errno::ECONNRESET,
                    "luod closed the connection",
                )))
            }
            Err(e) if e.errno == Errno::EAGAIN => wait(sock, POLLIN)?,
            Err(e) => return Err(Failure::Transport(e)),
        }
    };
    match reply.body.get("ok").and_then(Value::as_bool) {
        Some(_) => luo_proto::check_reply(reply).map_err(Failure::Refused),
        None => Err(Failure::Transport(Error::new(
            Errno::EPROTO,
            "a reply without \"ok\"",
        ))),
    }
}
