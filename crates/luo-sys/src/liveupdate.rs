//! The kernel's Live Update Orchestrator uAPI (`/dev/liveupdate`, Linux 6.19
//! and later): the six ioctls, their structs, and `kexec_file_load` plus
//! `reboot(LINUX_REBOOT_CMD_KEXEC)` for the live update itself.
//!
//! Every ioctl passes the kernel's errno through unchanged. The structs carry
//! their own size in the first `u32`, so a newer kernel may grow them; these
//! wrappers always send the size this crate knows (`size_of`), which every
//! kernel with LUO accepts. [`raw_ioctl`] sends any bytes, for tests of the
//! kernel's size rules.
//!
//! The ioctls and `kexec_file_load` are written here against libc: rustix
//! has no `kexec_file_load`, and its `ioctl` module is as unsafe per call
//! as `libc::ioctl` (plus an `unsafe impl Ioctl`), takes the command as a
//! const generic where [`raw_ioctl`] has it at run time, and can check
//! nothing more for structs that carry their own size.

use std::ffi::CString;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{cvt, Errno, Result};

/// The device node.
pub const DEVICE: &str = "/dev/liveupdate";
/// `LIVEUPDATE_IOCTL_TYPE`.
pub const IOCTL_TYPE: u32 = 0xBA;
/// `LIVEUPDATE_SESSION_NAME_LENGTH`: the name field, NUL included.
pub const NAME_LENGTH: usize = 64;

/// `_IO(LIVEUPDATE_IOCTL_TYPE, nr)`: every LUO command is a plain `_IO`
/// number (the structs carry their own size instead).
const fn io(nr: u8) -> u32 {
    #[allow(clippy::unnecessary_cast)] // the opcode type differs by backend
    let op = rustix::ioctl::opcode::none(IOCTL_TYPE as u8, nr) as u32;
    op
}

/// `LIVEUPDATE_IOCTL_CREATE_SESSION` (on the device).
pub const CREATE_SESSION: u32 = io(0x00);
/// `LIVEUPDATE_IOCTL_RETRIEVE_SESSION` (on the device).
pub const RETRIEVE_SESSION: u32 = io(0x01);
/// `LIVEUPDATE_SESSION_PRESERVE_FD` (on an outgoing session).
pub const SESSION_PRESERVE_FD: u32 = io(0x40);
/// `LIVEUPDATE_SESSION_RETRIEVE_FD` (on a retrieved session).
pub const SESSION_RETRIEVE_FD: u32 = io(0x41);
/// `LIVEUPDATE_SESSION_FINISH` (on a retrieved session).
pub const SESSION_FINISH: u32 = io(0x42);
/// `LIVEUPDATE_SESSION_GET_NAME` (on any session). Newer than the others:
/// probe it with [`get_name`] before relying on it.
pub const SESSION_GET_NAME: u32 = io(0x43);

// The numbers are the kernel's ABI.
const _: () = assert!(CREATE_SESSION == 0xBA00 && RETRIEVE_SESSION == 0xBA01);
const _: () = assert!(SESSION_PRESERVE_FD == 0xBA40 && SESSION_RETRIEVE_FD == 0xBA41);
const _: () = assert!(SESSION_FINISH == 0xBA42 && SESSION_GET_NAME == 0xBA43);

/// `struct liveupdate_ioctl_create_session` and `..._retrieve_session`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SessionArgs {
    /// Size of this struct.
    pub size: u32,
    /// Out: the session fd.
    pub fd: i32,
    /// In: the session name, NUL-terminated.
    pub name: [u8; NAME_LENGTH],
}

/// `struct liveupdate_session_preserve_fd` and `..._retrieve_fd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FdArgs {
    /// Size of this struct.
    pub size: u32,
    /// In (preserve) or out (retrieve): the file.
    pub fd: i32,
    /// The file's token in its session.
    pub token: u64,
}

/// `struct liveupdate_session_finish`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FinishArgs {
    /// Size of this struct.
    pub size: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `struct liveupdate_session_get_name`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GetNameArgs {
    /// Size of this struct.
    pub size: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Out: the name, NUL-terminated.
    pub name: [u8; NAME_LENGTH],
}

// The layouts are the kernel's ABI (kernel-luo.md 2.1, x86_64).
const _: () = assert!(size_of::<SessionArgs>() == 72 && align_of::<SessionArgs>() == 4);
const _: () = assert!(size_of::<FdArgs>() == 16 && align_of::<FdArgs>() == 8);
const _: () = assert!(size_of::<FinishArgs>() == 8 && align_of::<FinishArgs>() == 4);
const _: () = assert!(size_of::<GetNameArgs>() == 72 && align_of::<GetNameArgs>() == 4);

fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// Opens the device (`O_RDWR | O_CLOEXEC`). `ENOENT` when LUO is off,
/// `EBUSY` while another open file description of it exists.
pub fn open_device(path: &std::path::Path) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The ioctl itself, on a struct of ours.
///
/// Callers pass a `#[repr(C)]` struct from this module whose first field is
/// its own size, so the kernel reads and writes inside it.
fn ioctl_struct<T>(fd: BorrowedFd<'_>, cmd: u32, arg: &mut T) -> Result<()> {
    // Hand-written: see the module's note on rustix's ioctl.
    // SAFETY: `arg` is a live, writable struct of `size_of::<T>()` bytes whose
    // size field says exactly that, so the kernel stays inside it.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, arg as *mut T) })?;
    Ok(())
}

fn name_field(name: &[u8]) -> Result<[u8; NAME_LENGTH]> {
    let mut field = [0u8; NAME_LENGTH];
    // 64 bytes without NUL is the kernel's EINVAL case, and can be sent as
    // such; more cannot be sent at all.
    if name.len() > NAME_LENGTH {
        return Err(Errno::EINVAL);
    }
    field[..name.len()].copy_from_slice(name);
    Ok(field)
}

fn owned(fd: i32) -> Result<OwnedFd> {
    // Hand-written: the descriptor comes back inside the ioctl's struct.
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: the ioctl succeeded and returned this new descriptor in the
    // struct; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `LIVEUPDATE_IOCTL_CREATE_SESSION`: a new outgoing session (fd is CLOEXEC).
pub fn create_session(dev: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd> {
    let mut a = SessionArgs {
        size: size::<SessionArgs>(),
        fd: -1,
        name: name_field(name)?,
    };
    ioctl_struct(dev, CREATE_SESSION, &mut a)?;
    owned(a.fd)
}

/// `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`: takes hold of an incoming session.
pub fn retrieve_session(dev: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd> {
    let mut a = SessionArgs {
        size: size::<SessionArgs>(),
        fd: -1,
        name: name_field(name)?,
    };
    ioctl_struct(dev, RETRIEVE_SESSION, &mut a)?;
    owned(a.fd)
}

/// `LIVEUPDATE_SESSION_PRESERVE_FD`: preserves `fd` under `token`.
pub fn preserve_fd(session: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: u64) -> Result<()> {
    let mut a = FdArgs {
        size: size::<FdArgs>(),
        fd: fd.as_raw_fd(),
        token,
    };
    ioctl_struct(session, SESSION_PRESERVE_FD, &mut a)
}

/// `LIVEUPDATE_SESSION_PRESERVE_FD` with a raw descriptor number, for tests
/// of bad descriptors (`-1`, a closed one): the kernel answers `EBADF`.
pub fn preserve_raw_fd(session: BorrowedFd<'_>, fd: i32, token: u64) -> Result<()> {
    let mut a = FdArgs {
        size: size::<FdArgs>(),
        fd,
        token,
    };
    ioctl_struct(session, SESSION_PRESERVE_FD, &mut a)
}

/// `LIVEUPDATE_SESSION_RETRIEVE_FD`: the file preserved under `token`.
pub fn retrieve_fd(session: BorrowedFd<'_>, token: u64) -> Result<OwnedFd> {
    let mut a = FdArgs {
        size: size::<FdArgs>(),
        fd: -1,
        token,
    };
    ioctl_struct(session, SESSION_RETRIEVE_FD, &mut a)?;
    owned(a.fd)
}

/// `LIVEUPDATE_SESSION_FINISH`.
pub fn finish(session: BorrowedFd<'_>) -> Result<()> {
    let mut a = FinishArgs {
        size: size::<FinishArgs>(),
        reserved: 0,
    };
    ioctl_struct(session, SESSION_FINISH, &mut a)
}

/// `LIVEUPDATE_SESSION_GET_NAME`. A kernel without it answers `EINVAL` (the
/// number is out of its range) or `ENOTTY`.
pub fn get_name(session: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let mut a = GetNameArgs {
        size: size::<GetNameArgs>(),
        reserved: 0,
        name: [0; NAME_LENGTH],
    };
    ioctl_struct(session, SESSION_GET_NAME, &mut a)?;
    let len = a.name.iter().position(|&b| b == 0).unwrap_or(NAME_LENGTH);
    Ok(a.name[..len].to_vec())
}

/// Sends `cmd` with `buf` as the argument, for tests of the kernel's rules
/// (sizes too small, non-zero tails, wrong numbers). The size field (the
/// first `u32` of `buf`) must not exceed `buf.len()`, so that the kernel
/// stays inside `buf`; otherwise `EINVAL` without a syscall. Returns the
/// ioctl's return value.
pub fn raw_ioctl(fd: BorrowedFd<'_>, cmd: u64, buf: &mut [u8]) -> Result<i32> {
    if buf.len() < 4 {
        return Err(Errno::EINVAL);
    }
    // Hand-written: see the module's note on rustix's ioctl.
    let claimed = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if claimed > buf.len() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the kernel reads and writes at most `claimed` bytes (its own
    // struct size if smaller), and `buf` is writable for all of them.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, buf.as_mut_ptr()) })
}

/// Sends `cmd` with a NULL argument: the kernel must answer `EFAULT` (or
/// `EINVAL` for a number out of range, which it checks first).
pub fn null_ioctl(fd: BorrowedFd<'_>, cmd: u64) -> Result<i32> {
    // Hand-written: see the module's note on rustix's ioctl.
    // SAFETY: a NULL argument makes the kernel fail its user copy; no memory
    // of ours is touched.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            cmd as libc::c_ulong,
            std::ptr::null_mut::<u8>(),
        )
    })
}

/// `kexec_file_load(2)`: loads `kernel` (and `initrd`) to boot with
/// `cmdline` at the next `reboot(LINUX_REBOOT_CMD_KEXEC)`. Needs
/// `CAP_SYS_BOOT`. This is the only kexec path that carries LUO state.
pub fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &str,
) -> Result<()> {
    // Hand-written: rustix has no kexec_file_load.
    let c = CString::new(cmdline).map_err(|_| Errno::EINVAL)?;
    // The length counts the NUL: the kernel insists the last byte is one.
    let len = c.as_bytes_with_nul().len() as libc::c_ulong;
    let (initrd_fd, flags) = match initrd {
        Some(fd) => (fd.as_raw_fd(), 0),
        None => (-1, libc::KEXEC_FILE_NO_INITRAMFS),
    };
    // SAFETY: both descriptors are open for the call's duration and `c` is a
    // NUL-terminated buffer of `len` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            len,
            c.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Unloads an image loaded by [`kexec_file_load`] (`KEXEC_FILE_UNLOAD`).
pub fn kexec_file_unload() -> Result<()> {
    // Hand-written: rustix has no kexec_file_load.
    // SAFETY: with KEXEC_FILE_UNLOAD the kernel reads no descriptor or buffer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0 as libc::c_ulong,
            std::ptr::null::<u8>(),
            libc::KEXEC_FILE_UNLOAD,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Whether a kexec image is loaded (`/sys/kernel/kexec_loaded`).
pub fn kexec_loaded() -> bool {
    std::fs::read_to_string("/sys/kernel/kexec_loaded").is_ok_and(|s| s.trim() == "1")
}

/// `sync(2)` then `reboot(LINUX_REBOOT_CMD_KEXEC)`: boots the loaded image.
/// It returns only on failure, with the kernel's errno; on a LUO kernel
/// that includes a failed freeze of a preserved file.
pub fn reboot_kexec() -> Errno {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Kexec) {
        Err(e) => e.into(),
        // reboot(KEXEC) does not return on success; if it did, say so.
        Ok(()) => Errno::EIO,
    }
}
