//! `Errno`: a kernel error number, passed through unchanged.

use std::fmt;

/// A Linux error number (`errno`), as the kernel returned it.
///
/// ```
/// use luo_sys::Errno;
///
/// assert_eq!(Errno::EBUSY.name(), Some("EBUSY"));
/// assert_eq!(Errno::from_name("EDQUOT"), Some(Errno::EDQUOT));
/// assert_eq!(format!("{:?}", Errno::ENOENT), "ENOENT");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*

            /// The symbolic name, e.g. `"EBUSY"`, or `None` for a number luo
            /// does not name.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $(libc::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The number for a symbolic name, e.g. `"EBUSY"`.
            pub fn from_name(name: &str) -> Option<Errno> {
                match name {
                    $(stringify!($name) => Some(Errno::$name),)*
                    _ => None,
                }
            }
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENODEV,
    ENOTDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EPIPE,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENODATA,
    EPROTO,
    EBADMSG,
    EOVERFLOW,
    ENOTSOCK,
    EMSGSIZE,
    EPROTONOSUPPORT,
    EOPNOTSUPP,
    ECONNRESET,
    ENOBUFS,
    ETIMEDOUT,
    ECONNREFUSED,
    ESTALE,
    EDQUOT,
    ECANCELED,
    EXDEV,
    ENOEXEC,
    EADDRNOTAVAIL,
    EKEYREJECTED,
);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The kernel's one-line description (`strerror`).
    pub fn description(self) -> String {
        let s = std::io::Error::from_raw_os_error(self.0).to_string();
        // std appends " (os error N)"; the name is shown separately.
        match s.find(" (os error") {
            Some(i) => s[..i].to_string(),
            None => s,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.description()),
            None => write!(f, "errno {} ({})", self.0, self.description()),
        }
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// rustix's errno, at the boundary of the wrappers that use rustix.
impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}
