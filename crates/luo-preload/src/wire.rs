//! One request and its reply on a socket the caller may have made
//! non-blocking.

use std::os::fd::BorrowedFd;

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use luo_proto::{Call, Errno, Error, RecvBuf};
use luo_sys::preload::{poll_one, POLLIN, POLLOUT};

/// Why a request got no answer from luod's dispatcher.
#[derive(Debug)]
pub(crate) enum Failure {
    /// luod refused it: the errno for the caller.
    Refused(Error),
    /// The exchange broke (luod gone, a malformed reply).
    Transport(Error),
    /// The request could not be sent, and nothing of it was: `EBADF` here
    /// is a descriptor it carried that is not open.
    Unsent(Error),
}

impl Failure {
    /// The errno the caller sees: luod's, or `EIO` when the exchange broke
    /// (the kernel has no such failure; EIO is its word for "the device
    /// could not do it").
    pub(crate) fn errno(&self) -> Errno {
        match self {
            Failure::Refused(e) => e.errno,
            Failure::Transport(_) | Failure::Unsent(_) => Errno::EIO,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Refused(e) => e.to_string(),
            Failure::Transport(e) | Failure::Unsent(e) => format!("talking to luod failed: {e}"),
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

thread_local! {
    /// The receive buffer, reused from one ioctl to the next.
    static BUF: RefCell<RecvBuf> = RefCell::default();
}

/// Sends `req` with `fds` and returns the successful reply and its
/// descriptors.
pub(crate) fn call<C: Call>(
    sock: BorrowedFd<'_>,
    req: &C,
    fds: &[BorrowedFd<'_>],
) -> Result<(C::Reply, Vec<OwnedFd>), Failure> {
    let bytes = luo_proto::encode_request(req, fds.len()).map_err(Failure::Transport)?;
    loop {
        match luo_proto::send(sock, &bytes, fds) {
            Ok(()) => break,
            Err(e) if e.errno == Errno::EAGAIN => wait(sock, POLLOUT)?,
            Err(e) => return Err(Failure::Unsent(e)),
        }
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => receive::<C>(sock, &mut buf),
        Err(_) => receive::<C>(sock, &mut RecvBuf::default()),
    })
}

fn receive<C: Call>(
    sock: BorrowedFd<'_>,
    buf: &mut RecvBuf,
) -> Result<(C::Reply, Vec<OwnedFd>), Failure> {
    let reply = loop {
        match luo_proto::recv(sock, buf) {
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
    reply.reply::<C::Reply>().map_err(|e| match e.errno {
        Errno::EPROTO => Failure::Transport(e),
        _ => Failure::Refused(e),
    })
}
