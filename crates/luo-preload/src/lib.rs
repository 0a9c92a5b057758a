//! `libluo_preload.so`: the kernel's `/dev/liveupdate` and its six ioctls on
//! any kernel, backed by `luod`, for programs written against the kernel's
//! LUO uAPI and run unchanged:
//!
//! ```text
//! LD_PRELOAD=/path/libluo_preload.so LUOD_SOCKET=/path/luod.sock program
//! ```
//!
//! What is emulated, what differs and why: `docs/uapi-emulation.md`.
//!
//! # How
//!
//! - `open`, `open64`, `openat`, `openat64` and glibc's fortified `__open_2`
//!   forms of exactly `"/dev/liveupdate"` connect to `luod` and claim the
//!   device (`open_device`); the descriptor returned is that connection.
//!   Every other path goes to libc untouched.
//! - `ioctl` on a socket whose peer is `luod` (the device, or a session
//!   handle, which is a socketpair end whose other end `luod` holds) is sent
//!   to `luod` as one `ioctl` request with the caller's struct as read; `luod`
//!   runs the kernel's dispatcher and the reply is written back to the struct.
//!   Any other `ioctl` goes to libc untouched.
//!
//! A process that never opens `/dev/liveupdate` (and never issues a LUO
//! ioctl, type `0xBA`) runs as without the library: no connection, no
//! thread, no descriptor, no allocation; its `ioctl` calls cost one compare.
//!
//! # Unsafe code
//!
//! None here (`#![forbid(unsafe_code)]`): the exported C symbols, the calls
//! to libc's own definitions, `errno` and the reads and writes of the
//! caller's structs are in `luo_sys::preload`, whose
//! `export_preload_symbols!` defines the symbols in this crate.

#![forbid(unsafe_code)]

mod config;
mod ioctl;
mod lock;
mod open;
mod wire;

#[cfg(not(test))]
luo_sys::export_preload_symbols!(open: crate::open::open, ioctl: crate::ioctl::ioctl);

// Unit tests run without the exported symbols (they would shadow libc in
// the test binary itself); they call the hooks directly.
#[cfg(test)]
mod tests {
    use luo_sys::preload::Addr;

    #[test]
    fn other_paths_and_other_ioctls_pass_through() {
        assert_eq!(super::open::open(c"/dev/null", libc::O_RDWR, 0), None);
        assert_eq!(super::open::open(c"/dev/liveupdate", libc::O_PATH, 0), None);
        assert_eq!(super::open::open(c"dev/liveupdate", libc::O_RDWR, 0), None);
        // Not a LUO request, and the device never opened here.
        assert_eq!(super::ioctl::ioctl(0, libc::TCGETS as u32, Addr(0)), None);
        // A LUO request on something that is not luod's: libc answers.
        assert_eq!(super::ioctl::ioctl(-1, 0xBA00, Addr(0)), None);
        let (r, _w) = luo_sys::pipe().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(super::ioctl::ioctl(r.as_raw_fd(), 0xBA40, Addr(0)), None);
    }
}
