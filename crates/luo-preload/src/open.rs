//! `open("/dev/liveupdate")`: a connection to luod that holds the device.

use std::ffi::CStr;
use std::os::fd::{AsFd, IntoRawFd};

use luo_proto::ops::{Handlers, OpenDevice};
use luo_proto::Errno;
use luo_sys::preload::{c_int, c_uint, Hooked};

use crate::config::{self, config};
use crate::wire;

/// The one path the library answers for.
pub(crate) const DEVICE: &[u8] = b"/dev/liveupdate";

/// The hook of every `open` variant.
pub(crate) fn open(path: &CStr, flags: c_int, _mode: c_uint) -> Hooked {
    // O_PATH opens nothing (the kernel does not call the driver): libc's.
    if path.to_bytes() != DEVICE || flags & libc::O_PATH != 0 {
        return None;
    }
    Some(open_device(flags).map_err(|(errno, why)| {
        config::debug(|| format!("open(\"/dev/liveupdate\"): {why}"));
        errno
    }))
}

fn open_device(flags: c_int) -> Result<c_int, (Errno, String)> {
    // What the VFS answers for an existing character device.
    if flags & libc::O_DIRECTORY != 0 {
        return Err((Errno::ENOTDIR, "a device is not a directory".into()));
    }
    if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        return Err((Errno::EEXIST, "the device exists (O_CREAT|O_EXCL)".into()));
    }
    let cfg = config();
    let sock = luo_sys::seqpacket_connect(&cfg.socket).map_err(|e| {
        let why = format!(
            "cannot connect to luod at {}: {e:?} (is luod running? set LUOD_SOCKET)",
            cfg.socket.display()
        );
        // Without luod there is no device, as without LUO in the kernel;
        // only a lack of resources or permission says otherwise.
        let errno = match e {
            Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOBUFS => e,
            Errno::EACCES | Errno::EPERM => Errno::EACCES,
            _ => Errno::ENOENT,
        };
        (errno, why)
    })?;
    if let Ok(c) = luo_sys::peer_cred(sock.as_fd()) {
        config::set_luod_pid(c.pid);
    }
    config::activate();
    let handlers = if cfg.all_handlers {
        Handlers::All
    } else {
        Handlers::Kernel
    };
    let body = OpenDevice {
        handlers: Some(handlers),
    };
    match wire::call(sock.as_fd(), &body, &[]) {
        Ok(_) => {}
        Err(f) => {
            let errno = match f.errno() {
                Errno::EBUSY => Errno::EBUSY,
                Errno::EDQUOT => Errno::EBUSY,
                // An agent that does not know open_device has no device.
                _ => Errno::ENOENT,
            };
            return Err((errno, f.message()));
        }
    }
    if flags & libc::O_CLOEXEC == 0 {
        luo_sys::preload::set_cloexec(sock.as_fd(), false)
            .map_err(|e| (e, "clearing FD_CLOEXEC failed".to_string()))?;
    }
    Ok(sock.into_raw_fd())
}
