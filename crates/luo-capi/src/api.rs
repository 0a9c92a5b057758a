//! The safe half of the C ABI: the handles, the thread's last error, the
//! panic guard and the calls into [`luo`]. No pointer is touched here.

#![forbid(unsafe_code)]
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use luo::{Errno, Error};

/// An agent connection (`struct luo_client` in C: opaque).
#[derive(Debug)]
pub struct luo_client {
    pub(crate) inner: luo::Client,
}

/// A session handle (`struct luo_session` in C: opaque).
#[derive(Debug)]
pub struct luo_session {
    pub(crate) inner: luo::Session,
}

struct LastError {
    message: CString,
    token: Option<u64>,
}

thread_local! {
    static LAST: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// Records `e` as this thread's last error and returns its negative errno.
pub(crate) fn fail(e: &Error) -> c_int {
    let errno = if e.errno.0 > 0 { e.errno.0 } else { libc::EIO };
    LAST.with(|l| {
        *l.borrow_mut() = Some(LastError {
            message: crate::types::cstring(e.to_string()),
            token: e.token,
        });
    });
    -errno
}

/// The thread's last error message (empty if none): a pointer valid until
/// the thread's next failing call, as C callers are told.
pub(crate) fn last_message() -> *const std::ffi::c_char {
    LAST.with(|l| match &*l.borrow() {
        Some(e) => e.message.as_ptr(),
        None => c"".as_ptr(),
    })
}

/// The thread's last error's token, if it named one.
pub fn last_token() -> Option<u64> {
    LAST.with(|l| l.borrow().as_ref().and_then(|e| e.token))
}

/// An `EINVAL` for a bad argument.
pub(crate) fn invalid(what: impl std::fmt::Display) -> Error {
    Error::new(Errno::EINVAL, what.to_string())
}

/// Runs `f`, turning its error into a negative errno with the message kept,
/// and a panic into `-EIO`.
pub(crate) fn guard(f: impl FnOnce() -> luo::Result<c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => fail(&e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            fail(&Error::new(
                Errno::EIO,
                format!("internal error in libluo (a bug; please report it): {what}"),
            ))
        }
    }
}

/// Runs `f` for a function that returns nothing, swallowing a panic.
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// `value` as a JSON C string.
pub(crate) fn json<T: serde::Serialize + ?Sized>(value: &T) -> luo::Result<CString> {
    let s = serde_json::to_string(value)
        .map_err(|e| Error::new(Errno::EIO, format!("cannot write JSON: {e}")))?;
    Ok(crate::types::cstring(s))
}

/// A descriptor's number as the C caller gets it.
pub(crate) fn give(fd: std::os::fd::OwnedFd) -> c_int {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}

/// `owner` from C: negative is the caller's own.
pub(crate) fn owner(owner: i64) -> luo::Result<Option<u32>> {
    if owner < 0 {
        return Ok(None);
    }
    u32::try_from(owner)
        .map(Some)
        .map_err(|_| invalid(format!("owner {owner} is not a uid")))
}
