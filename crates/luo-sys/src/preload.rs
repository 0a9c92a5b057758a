//! What an `LD_PRELOAD` library needs and safe Rust cannot say: exported C
//! symbols that shadow libc's, the next definition of each (`dlsym(RTLD_NEXT)`),
//! `errno`, and the caller's memory, which is reached through the kernel
//! (`process_vm_readv`/`process_vm_writev` on this process), so that a bad
//! pointer is `EFAULT`, as for a syscall, and never a crash; only a struct in
//! the frames of the caller's stack, which cannot fault, is read in place.
//!
//! The exported functions are generated in the library crate by
//! [`export_preload_symbols!`](crate::export_preload_symbols): a Rust
//! dependency cannot know the library's hooks, so the symbols are written
//! here, as a macro, and instantiated there. The unsafe code is this file's;
//! the library crate stays `#![forbid(unsafe_code)]` (lints do not fire in
//! the expansion of another crate's macro).
//!
//! Built only with the `preload` feature.

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

pub use libc::{c_char, c_int, c_uint, c_ulong, c_void, AT_FDCWD};

use crate::{Errno, Result};

/// A pointer the caller of a hooked function passed: an address in this
/// process, never dereferenced by Rust; read and written through the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub usize);

/// What a hook decided: `None` lets the call through to the next
/// definition (libc's) untouched; `Some` is the call's result.
pub type Hooked = Option<Result<c_int>>;

/// The hook for `open` and its variants: the path, the flags and the mode
/// (meaningful only with `O_CREAT` or `O_TMPFILE`).
pub type OpenHook = fn(&CStr, c_int, c_uint) -> Hooked;

/// The hook for `ioctl`: the descriptor, the request as the kernel sees it
/// (an `unsigned int`) and the argument.
pub type IoctlHook = fn(RawFd, u32, Addr) -> Hooked;

/// The libc functions a preload library shadows.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Next {
    Open,
    Open64,
    Open2,
    Open64_2,
    Openat,
    Openat64,
    Openat2,
    Openat64_2,
    Ioctl,
}

const NEXT_COUNT: usize = 9;

impl Next {
    fn symbol(self) -> &'static CStr {
        match self {
            Next::Open => c"open",
            Next::Open64 => c"open64",
            Next::Open2 => c"__open_2",
            Next::Open64_2 => c"__open64_2",
            Next::Openat => c"openat",
            Next::Openat64 => c"openat64",
            Next::Openat2 => c"__openat_2",
            Next::Openat64_2 => c"__openat64_2",
            Next::Ioctl => c"ioctl",
        }
    }
}

/// The next definitions, found on first use.
static NEXT: [AtomicPtr<c_void>; NEXT_COUNT] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; NEXT_COUNT];
/// 0: not looked up; 1: found; 2: there is none (use the syscall).
static LOOKED_UP: [AtomicU8; NEXT_COUNT] = [const { AtomicU8::new(0) }; NEXT_COUNT];
/// Set while `dlsym` runs: if it opens a file itself, that call goes to the
/// syscall instead of recursing.
static RESOLVING: AtomicBool = AtomicBool::new(false);

fn next(which: Next) -> Option<*mut c_void> {
    let i = which as usize;
    match LOOKED_UP[i].load(Ordering::Acquire) {
        1 => return Some(NEXT[i].load(Ordering::Acquire)),
        2 => return None,
        _ => {}
    }
    if RESOLVING.swap(true, Ordering::AcqRel) {
        return None;
    }
    // Hand-written: dlsym is the dynamic linker's, not a syscall.
    // dlsym may change errno; the call being passed through must see the
    // caller's.
    let saved = errno();
    // SAFETY: RTLD_NEXT with a NUL-terminated symbol name is a valid query;
    // the result is only used as the function it names.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, which.symbol().as_ptr()) };
    set_errno(saved);
    RESOLVING.store(false, Ordering::Release);
    if p.is_null() {
        LOOKED_UP[i].store(2, Ordering::Release);
        None
    } else {
        NEXT[i].store(p, Ordering::Release);
        LOOKED_UP[i].store(1, Ordering::Release);
        Some(p)
    }
}

// Hand-written: the C caller's errno is libc's thread-local, which rustix
// (raw syscalls) neither reads nor sets.
fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

fn finish(r: Result<c_int>) -> c_int {
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e.0);
            -1
        }
    }
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;

/// The body of every exported `open` variant: the hook for a readable path,
/// else the next definition with the caller's arguments.
///
/// # Safety
///
/// `path` is what the C caller passed: NULL or a NUL-terminated string, as
/// `open(2)` requires. `dirfd` is `AT_FDCWD` for the variants without one.
#[doc(hidden)]
pub unsafe fn open_shim(
    which: Next,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
    hook: OpenHook,
) -> c_int {
    if !path.is_null() {
        // SAFETY: the caller of open passes a NUL-terminated path.
        let p = unsafe { CStr::from_ptr(path) };
        let saved = errno();
        if let Some(r) = hook(p, flags, mode) {
            return finish(r);
        }
        // Whatever the hook looked at, the call goes on with the caller's errno.
        set_errno(saved);
    }
    match next(which) {
        // SAFETY: each pointer is the next definition of the very function
        // the caller called, with that function's C signature; the variadic
        // ones are called as variadic, with the mode as the caller passed it
        // (an int, as it is promoted in a variadic call).
        Some(f) => unsafe {
            match which {
                Next::Open | Next::Open64 => {
                    std::mem::transmute::<*mut c_void, OpenFn>(f)(path, flags, mode)
                }
                Next::Open2 | Next::Open64_2 => {
                    std::mem::transmute::<*mut c_void, Open2Fn>(f)(path, flags)
                }
                Next::Openat | Next::Openat64 => {
                    std::mem::transmute::<*mut c_void, OpenatFn>(f)(dirfd, path, flags, mode)
                }
                Next::Openat2 | Next::Openat64_2 => {
                    std::mem::transmute::<*mut c_void, Openat2Fn>(f)(dirfd, path, flags)
                }
                Next::Ioctl => unreachable!("not an open variant"),
            }
        },
        // SAFETY: openat(2) with the caller's own arguments.
        None => unsafe {
            libc::syscall(libc::SYS_openat, dirfd, path, flags, mode as libc::c_long) as c_int
        },
    }
}

/// The body of the exported `ioctl`.
///
/// # Safety
///
/// The arguments are what the C caller passed to `ioctl`.
#[doc(hidden)]
pub unsafe fn ioctl_shim(fd: c_int, req: c_ulong, arg: *mut c_void, hook: IoctlHook) -> c_int {
    let saved = errno();
    // The kernel's ioctl takes an unsigned int command.
    if let Some(r) = hook(fd, req as u32, Addr(arg as usize)) {
        return finish(r);
    }
    set_errno(saved);
    match next(Next::Ioctl) {
        // SAFETY: the next `ioctl`, called as the variadic function it is,
        // with the caller's arguments.
        Some(f) => unsafe { std::mem::transmute::<*mut c_void, IoctlFn>(f)(fd, req, arg) },
        // SAFETY: ioctl(2) with the caller's own arguments.
        None => unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) as c_int },
    }
}

/// Defines the exported `open`, `open64`, `openat`, `openat64`, their
/// fortified `__*_2` forms, and `ioctl`, each calling its hook first and the
/// next definition (libc's) when the hook returns `None`. Use it once, in
/// the `cdylib`.
///
/// C declares `open`, `openat` and `ioctl` variadic, and stable Rust cannot
/// define a variadic function. On x86_64 (System V) a variadic callee reads
/// its integer and pointer arguments from the same registers as a
/// non-variadic one, so defining them with the optional argument as a fixed
/// last parameter is ABI-compatible with every caller; when a caller passes
/// no mode, the register holds garbage that is used, as by libc, only with
/// `O_CREAT`/`O_TMPFILE`. Other architectures are refused at compile time.
#[macro_export]
macro_rules! export_preload_symbols {
    (open: $open:path, ioctl: $ioctl:path $(,)?) => {
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        compile_error!("the preload shims rely on the x86_64 System V calling convention");

        $crate::export_preload_symbols!(@open open, Open, $open);
        $crate::export_preload_symbols!(@open open64, Open64, $open);
        $crate::export_preload_symbols!(@open2 __open_2, Open2, $open);
        $crate::export_preload_symbols!(@open2 __open64_2, Open64_2, $open);
        $crate::export_preload_symbols!(@openat openat, Openat, $open);
        $crate::export_preload_symbols!(@openat openat64, Openat64, $open);
        $crate::export_preload_symbols!(@openat2 __openat_2, Openat2, $open);
        $crate::export_preload_symbols!(@openat2 __openat64_2, Openat64_2, $open);

        /// `ioctl(2)`, shadowed.
        ///
        /// # Safety
        ///
        /// As `ioctl(2)`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn ioctl(
            fd: $crate::preload::c_int,
            req: $crate::preload::c_ulong,
            arg: *mut $crate::preload::c_void,
        ) -> $crate::preload::c_int {
            // SAFETY: the C caller's arguments, passed on as they came.
            unsafe { $crate::preload::ioctl_shim(fd, req, arg, $ioctl) }
        }
    };
    (@open $name:ident, $next:ident, $open:path) => {
        /// Shadowed; see `export_preload_symbols!`.
        ///
        /// # Safety
        ///
        /// As `open(2)`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            path: *const $crate::preload::c_char,
            flags: $crate::preload::c_int,
            mode: $crate::preload::c_uint,
        ) -> $crate::preload::c_int {
            // SAFETY: the C caller's arguments, passed on as they came.
            unsafe {
                $crate::preload::open_shim(
                    $crate::preload::Next::$next,
                    $crate::preload::AT_FDCWD,
                    path,
                    flags,
                    mode,
                    $open,
                )
            }
        }
    };
    (@open2 $name:ident, $next:ident, $open:path) => {
        /// Shadowed; see `export_preload_symbols!`.
        ///
        /// # Safety
        ///
        /// As `open(2)`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            path: *const $crate::preload::c_char,
            flags: $crate::preload::c_int,
        ) -> $crate::preload::c_int {
            // SAFETY: the C caller's arguments, passed on as they came.
            unsafe {
                $crate::preload::open_shim(
                    $crate::preload::Next::$next,
                    $crate::preload::AT_FDCWD,
                    path,
                    flags,
                    0,
                    $open,
                )
            }
        }
    };
    (@openat $name:ident, $next:ident, $open:path) => {
        /// Shadowed; see `export_preload_symbols!`.
        ///
        /// # Safety
        ///
        /// As `openat(2)`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            dirfd: $crate::preload::c_int,
            path: *const $crate::preload::c_char,
            flags: $crate::preload::c_int,
            mode: $crate::preload::c_uint,
        ) -> $crate::preload::c_int {
            // SAFETY: the C caller's arguments, passed on as they came.
            unsafe {
                $crate::preload::open_shim(
                    $crate::preload::Next::$next,
                    dirfd,
                    path,
                    flags,
                    mode,
                    $open,
                )
            }
        }
    };
    (@openat2 $name:ident, $next:ident, $open:path) => {
        /// Shadowed; see `export_preload_symbols!`.
        ///
        /// # Safety
        ///
        /// As `openat(2)`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            dirfd: $crate::preload::c_int,
            path: *const $crate::preload::c_char,
            flags: $crate::preload::c_int,
        ) -> $crate::preload::c_int {
            // SAFETY: the C caller's arguments, passed on as they came.
            unsafe {
                $crate::preload::open_shim(
                    $crate::preload::Next::$next,
                    dirfd,
                    path,
                    flags,
                    0,
                    $open,
                )
            }
        }
    };
}

/// Whether `process_vm_readv` on ourselves works (a seccomp filter may
/// refuse it); 0 unknown, 1 yes, 2 no.
static VM_RW: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// The mapping that holds this thread's stack, `(start, end)`, as
    /// `/proc/self/maps` said when last asked; `(0, 0)`: not asked yet;
    /// `(usize::MAX, 0)`: the lookup failed (no `/proc`), not asked again.
    static STACK: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// Whether `[addr, addr + len)` lies between this frame and the end of the
/// mapping that holds the stack: the frames of this call's callers (a C
/// caller's struct on its stack, the common case), mapped, readable and
/// writable. There a read cannot fault and costs no system call.
fn in_callers_frames(addr: usize, len: usize) -> bool {
    let here = 0u8;
    // Below every caller's frame: the stack grows down.
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let (mut start, mut end) = STACK.get();
    if start == usize::MAX {
        return false;
    }
    if !(start..end).contains(&sp) {
        // First use on this thread, or a signal handler's stack.
        (start, end) = mapping_of(sp).unwrap_or((usize::MAX, 0));
        STACK.set((start, end));
        if !(start..end).contains(&sp) {
            return false;
        }
    }
    addr >= sp && addr.checked_add(len).is_some_and(|last| last <= end)
}

/// The readable and writable mapping of `/proc/self/maps` that holds
/// `at` (a mapping's permissions are the same throughout). Raw reads into
/// a buffer on the stack: no allocation, as a hook may run in a signal
/// handler.
fn mapping_of(at: usize) -> Option<(usize, usize)> {
    use rustix::fs::{Mode, OFlags};
    let maps = rustix::fs::open(
        c"/proc/self/maps",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 4096];
    // The start of the current line: "start-end perms ...", with room for
    // 57-bit addresses.
    let mut line = [0u8; 64];
    let mut used = 0;
    loop {
        let n = match rustix::io::read(&maps, &mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        };
        for &b in &buf[..n] {
            if b != b'\n' {
                if used < line.len() {
                    line[used] = b;
                    used += 1;
                }
                continue;
            }
            if let Some(found) = parse_mapping(&line[..used]).filter(|&(s, e)| (s..e).contains(&at))
            {
                return Some(found);
            }
            used = 0;
        }
    }
}

/// `(start, end)` of a `/proc/self/maps` line that begins
/// `start-end rw`, else `None`.
fn parse_mapping(line: &[u8]) -> Option<(usize, usize)> {
    let line = std::str::from_utf8(line).ok()?;
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    if !rest.starts_with("rw") {
        return None;
    }
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

fn vm_rw(addr: Addr, local: *mut c_void, len: usize, write: bool) -> Result<()> {
    // Hand-written: rustix has no process_vm_readv/process_vm_writev.
    if len == 0 {
        return Ok(());
    }
    if !write && in_callers_frames(addr.0, len) {
        // SAFETY: `addr..addr + len` lies in the frames of this call's
        // callers (see `in_callers_frames`), mapped and readable; `local`
        // is ours for `len` bytes (`copy`: a wild pointer may even point
        // into it).
        unsafe { std::ptr::copy(addr.0 as *const u8, local as *mut u8, len) };
        return Ok(());
    }
    if VM_RW.load(Ordering::Relaxed) != 2 {
        let liov = libc::iovec {
            iov_base: local,
            iov_len: len,
        };
        let riov = libc::iovec {
            iov_base: addr.0 as *mut c_void,
            iov_len: len,
        };
        let pid = crate::getpid();
        // SAFETY: the local iovec covers memory we own for `len` bytes; the
        // remote one is only an address the kernel checks, in this process.
        let n = unsafe {
            if write {
                libc::process_vm_writev(pid, &liov, 1, &riov, 1, 0)
            } else {
                libc::process_vm_readv(pid, &liov, 1, &riov, 1, 0)
            }
        };
        if n >= 0 {
            VM_RW.store(1, Ordering::Relaxed);
            return if n as usize == len {
                Ok(())
            } else {
                Err(Errno::EFAULT)
            };
        }
        match Errno::last() {
            Errno::ENOSYS | Errno::EPERM if VM_RW.load(Ordering::Relaxed) == 0 => {
                VM_RW.store(2, Ordering::Relaxed);
            }
            e => return Err(e),
        }
    }
    // Without process_vm_*: NULL and the first page are EFAULT, anything
    // else is used as the C caller gave it.
    if addr.0 < 4096 || addr.0.checked_add(len).is_none() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller of ioctl promised `addr` points to its struct,
    // as the kernel's uAPI requires; a bad pointer faults as it would in C.
    unsafe {
        if write {
            std::ptr::copy_nonoverlapping(local as *const u8, addr.0 as *mut u8, len);
        } else {
            std::ptr::copy_nonoverlapping(addr.0 as *const u8, local as *mut u8, len);
        }
    }
    Ok(())
}

/// Reads `buf.len()` bytes of this process's memory at `addr`; `EFAULT`
/// when any of it is not readable.
pub fn read_memory(addr: Addr, buf: &mut [u8]) -> Result<()> {
    vm_rw(addr, buf.as_mut_ptr().cast(), buf.len(), false)
}

/// Writes `data` to this process's memory at `addr`; `EFAULT` when any of
/// it is not writable (read-only pages included).
pub fn write_memory(addr: Addr, data: &[u8]) -> Result<()> {
    vm_rw(addr, data.as_ptr() as *mut c_void, data.len(), true)
}

/// Writes `data` back at `addr`, where `read` was read, as the kernel
/// copies a struct back. When nothing changed and the struct lies in the
/// caller's stack frames, which are writable, the copy would succeed and
/// change nothing: it is skipped, and costs no system call.
pub fn write_back(addr: Addr, read: &[u8], data: &[u8]) -> Result<()> {
    if read == data && in_callers_frames(addr.0, data.len()) {
        return Ok(());
    }
    write_memory(addr, data)
}

/// Runs `f` on the caller's descriptor `fd` and its `fstat`, if it is open
/// (`EBADF` if not): the `fstat` is both the check and the answer.
///
/// The descriptor belongs to the C caller; if another of its threads closes
/// it meanwhile, `f`'s syscalls fail with `EBADF` or act on whatever took
/// the number, as the same race does in C.
pub fn with_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>, crate::FileStat) -> R) -> Result<R> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    let st = crate::fstat_raw(fd)?;
    // SAFETY: `fd` was open just now and the borrow does not outlive `f`;
    // see the race above, which cannot corrupt memory.
    Ok(f(unsafe { BorrowedFd::borrow_raw(fd) }, st))
}

/// Runs `f` on the caller's descriptor `fd` without checking that it is
/// open (`EBADF` only for a negative number): for a number that is only
/// passed on to one syscall, which answers `EBADF` itself when nothing is
/// open there, so that the check costs no syscall of its own.
pub fn with_unchecked_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Result<R> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: `f` only hands the number to syscalls (the kernel checks it:
    // a closed number is EBADF) and never closes it; the borrow does not
    // outlive `f`. As with [`with_fd`], a racing close in the caller cannot
    // corrupt memory.
    Ok(f(unsafe { BorrowedFd::borrow_raw(fd) }))
}

/// Sets or clears `FD_CLOEXEC`.
pub use crate::set_cloexec;

thread_local! {
    /// This thread's `(pid, tid)`, once asked: a thread's id never changes,
    /// and after `fork` the pid (cached by [`getpid`](crate::getpid), which
    /// forgets it in the child) no longer matches, so the child asks again.
    static TID: std::cell::Cell<(i32, i32)> = const { std::cell::Cell::new((0, 0)) };
}

/// The calling thread's id, without a syscall after the first time.
pub fn gettid() -> i32 {
    let pid = crate::getpid();
    let (known_pid, tid) = TID.get();
    if known_pid == pid && tid != 0 {
        return tid;
    }
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    TID.set((pid, tid));
    tid
}

/// `poll(2)` on one descriptor: true when one of `events` is ready within
/// `timeout_ms` (-1: no limit). `EINTR` is returned as is.
pub fn poll_one(fd: BorrowedFd<'_>, events: i16, timeout_ms: i32) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    let mut p = [PollFd::from_borrowed_fd(
        fd,
        PollFlags::from_bits_retain(events as u16),
    )];
    let timeout = crate::timespec_ms(timeout_ms);
    Ok(rustix::event::poll(&mut p, timeout.as_ref())? > 0)
}

/// `POLLIN`, for [`poll_one`].
pub const POLLIN: i16 = rustix::event::PollFlags::IN.bits() as i16;
/// `POLLOUT`, for [`poll_one`].
pub const POLLOUT: i16 = rustix::event::PollFlags::OUT.bits() as i16;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn memory_is_reached_through_the_kernel_and_bad_pointers_fault() {
        let _serial = crate::fd_serial();
        let mut src = [1u8, 2, 3, 4];
        let mut buf = [0u8; 4];
        read_memory(Addr(src.as_ptr() as usize), &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        write_memory(Addr(src.as_mut_ptr() as usize), &[9, 9]).unwrap();
        assert_eq!(src, [9, 9, 3, 4]);
        assert_eq!(read_memory(Addr(0), &mut buf), Err(Errno::EFAULT));
        assert_eq!(write_memory(Addr(8), &[1]), Err(Errno::EFAULT));
        // Read-only memory cannot be written, as copy_to_user finds.
        static RO: [u8; 4] = [0; 4];
        assert_eq!(
            write_memory(Addr(RO.as_ptr() as usize), &[1]),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn the_callers_frames_are_read_and_written_in_place() {
        let _serial = crate::fd_serial();
        // On the stack, in this caller's frame.
        let mut st = [1u8, 2, 3, 4];
        let at = Addr(std::hint::black_box(&mut st).as_mut_ptr() as usize);
        assert!(in_callers_frames(at.0, 4));
        let mut buf = [0u8; 4];
        read_memory(at, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        write_back(at, &buf[..2], &[7, 8]).unwrap();
        assert_eq!(st, [7, 8, 3, 4]);
        write_back(at, &[7, 8], &[7, 8]).unwrap();
        assert_eq!(st, [7, 8, 3, 4]);
        // Read-only memory still refuses an unchanged write back.
        static RO_BACK: [u8; 2] = [5, 6];
        let ro = Addr(RO_BACK.as_ptr() as usize);
        assert_eq!(write_back(ro, &[5, 6], &[5, 6]), Err(Errno::EFAULT));
        // The heap and statics are not, nor a range past the stack's end.
        let heap = Box::new([0u8; 4]);
        assert!(!in_callers_frames(heap.as_ptr() as usize, 4));
        static RO: [u8; 4] = [0; 4];
        assert!(!in_callers_frames(RO.as_ptr() as usize, 4));
        let (_, end) = STACK.get();
        assert!(!in_callers_frames(end - 2, 4));
        assert!(!in_callers_frames(usize::MAX - 1, 4));
        // Each thread has its own.
        let other = std::thread::spawn(move || in_callers_frames(at.0, 4))
            .join()
            .unwrap();
        assert!(!other);
    }

    #[test]
    fn maps_lines_are_parsed() {
        assert_eq!(
            parse_mapping(b"7ffd1000-7ffd3000 rw-p 00000000 00:00 0  "),
            Some((0x7ffd_1000, 0x7ffd_3000))
        );
        assert_eq!(
            parse_mapping(b"1ffffffffff000-1ffffffffff2000 rw-p"),
            Some((0x1f_ffff_ffff_f000, 0x1ff_ffff_ffff_2000))
        );
        assert_eq!(parse_mapping(b"1000-2000 r--p 0000"), None);
        assert_eq!(parse_mapping(b"10x0-2000 rw-p"), None);
        assert_eq!(parse_mapping(b""), None);
    }

    #[test]
    fn with_fd_refuses_closed_descriptors() {
        let _serial = crate::fd_serial();
        assert_eq!(with_fd(-1, |_, _| ()), Err(Errno::EBADF));
        let e = crate::eventfd(0).unwrap();
        let raw = e.as_raw_fd();
        let ino = crate::fstat(e.as_fd()).unwrap().ino;
        assert_eq!(
            with_fd(raw, |fd, st| (fd.as_raw_fd(), st.ino)),
            Ok((raw, ino))
        );
        drop(e);
        assert_eq!(with_fd(raw, |_, _| ()), Err(Errno::EBADF));
    }

    #[test]
    fn an_unchecked_closed_descriptor_is_ebadf_at_its_syscall() {
        let _serial = crate::fd_serial();
        assert_eq!(with_unchecked_fd(-1, |_| ()), Err(Errno::EBADF));
        let e = crate::eventfd(0).unwrap();
        let raw = e.as_raw_fd();
        drop(e);
        assert_eq!(
            with_unchecked_fd(raw, crate::fcntl_getfl),
            Ok(Err(Errno::EBADF))
        );
    }

    #[test]
    fn the_thread_id_is_each_threads_own() {
        let me = gettid();
        assert_eq!(gettid(), me);
        assert_eq!(me, rustix::thread::gettid().as_raw_nonzero().get());
        let other = std::thread::spawn(gettid).join().unwrap();
        assert_ne!(other, me);
    }
}
