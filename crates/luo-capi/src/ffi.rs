//! The exported C functions: the pointers C passes are checked (NULL is
//! `-EINVAL`, never a crash) and turned into Rust references here; the
//! work is done by [`luo`] under [`guard`], which catches panics.
//!
//! Every function's contract for C callers is in its doc comment, which
//! cbindgen copies into `luo.h`. A pointer that is not NULL must be valid
//! as the C declaration says (a handle from this library not yet closed, a
//! NUL-terminated string, an array of the stated length): that is the part
//! no check can make for the caller.

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use luo::{Errno, Error};

use crate::api::{give, guard, guard_void, invalid, luo_client, luo_session, owner};
use crate::types::{luo_file_info, luo_session_info, luo_status};

/// `p` as a `&str`.
///
/// # Safety
///
/// `p` is NULL or a NUL-terminated string that outlives the call.
unsafe fn string<'a>(p: *const c_char, what: &str) -> luo::Result<&'a str> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// The client `p` points to.
///
/// # Safety
///
/// `p` is NULL or a live handle from `luo_connect`.
unsafe fn client<'a>(p: *const luo_client) -> luo::Result<&'a luo::Client> {
    // SAFETY: NULL or a live handle (Box::into_raw), by the contract.
    unsafe { p.as_ref() }
        .map(|c| &c.inner)
        .ok_or_else(|| invalid("the client is NULL"))
}

/// The session `p` points to.
///
/// # Safety
///
/// `p` is NULL or a live handle from this library.
unsafe fn session<'a>(p: *const luo_session) -> luo::Result<&'a luo::Session> {
    // SAFETY: NULL or a live handle (Box::into_raw), by the contract.
    unsafe { p.as_ref() }
        .map(|s| &s.inner)
        .ok_or_else(|| invalid("the session is NULL"))
}

/// Stores `v` at `out`.
///
/// # Safety
///
/// `out` is NULL or valid for writing a `T`.
unsafe fn put<T>(out: *mut T, v: T, what: &str) -> luo::Result<()> {
    if out.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL and writable by the contract; `T` here is a plain C
    // value (a pointer, an integer, a struct of them) with nothing to drop.
    unsafe { out.write(v) };
    Ok(())
}

/// Stores `v` at `out` if `out` is not NULL (optional results).
///
/// # Safety
///
/// As [`put`].
unsafe fn put_opt<T>(out: *mut T, v: T) {
    if !out.is_null() {
        // SAFETY: not NULL and writable by the contract.
        unsafe { out.write(v) };
    }
}

/// The `n` elements at `p`.
///
/// # Safety
///
/// `p` is NULL or points to `n` initialised elements that outlive the call.
unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> luo::Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, `n` elements, by the contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The descriptor `fd`, borrowed for the call, if it is open.
fn borrow_fd<'a>(fd: RawFd) -> luo::Result<BorrowedFd<'a>> {
    if fd < 0 || luo_sys::fstat_raw(fd).is_err() {
        return Err(Error::new(
            Errno::EBADF,
            format!("descriptor {fd} is not open"),
        ));
    }
    // SAFETY: the descriptor is open, and the C caller keeps it open for the
    // duration of the call (the contract of every function taking an fd).
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// A new handle for C.
fn boxed<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// A Rust-allocated C string for C, freed by `luo_string_free`.
fn give_string(s: CString) -> *mut c_char {
    s.into_raw()
}

/// An array of session infos for C, freed by `luo_session_info_free`.
fn give_infos(v: Vec<luo::SessionInfo>) -> (*mut luo_session_info, usize) {
    let infos: Box<[luo_session_info]> = v.into_iter().map(Into::into).collect();
    let n = infos.len();
    if n == 0 {
        return (std::ptr::null_mut(), 0);
    }
    (Box::into_raw(infos).cast(), n)
}

/// The library's version, e.g. `"0.2.0"`. A static string: never freed.
#[no_mangle]
pub extern "C" fn luo_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last call that failed on this thread (`""` if none
/// did), e.g. `"an outgoing session named 'kv' already exists (EEXIST)"`.
/// Owned by the library: valid until the thread's next failing call.
#[no_mangle]
pub extern "C" fn luo_last_error() -> *const c_char {
    crate::api::last_message()
}

/// The token the last failed call on this thread named (a batch preserve's
/// first file not preserved, a batch retrieve's failing token): stores it
/// at `token` and returns 1, or returns 0 when the error named none.
///
/// # Safety
///
/// `token` is NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn luo_last_error_token(token: *mut u64) -> c_int {
    match crate::api::last_token() {
        Some(t) => {
            // SAFETY: NULL or writable, by the contract.
            unsafe { put_opt(token, t) };
            1
        }
        None => 0,
    }
}

/// Writes the socket path `luo_connect` uses (`$LUOD_SOCKET` if set and
/// not empty; else `/run/luod/luod.sock` for root; else
/// `$XDG_RUNTIME_DIR/luod.sock`; else `/run/user/<euid>/luod.sock`) into
/// `buf` of `len` bytes, NUL-terminated. Returns its length, or `-ERANGE`
/// when `buf` is too small.
///
/// # Safety
///
/// `buf` is valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn luo_default_socket_path(buf: *mut c_char, len: usize) -> c_int {
    guard(|| {
        let path = luo::default_socket_path();
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        if bytes.len() >= len || bytes.len() > c_int::MAX as usize {
            return Err(Error::new(
                Errno::ERANGE,
                format!("the path needs {} bytes", bytes.len() + 1),
            ));
        }
        if buf.is_null() {
            return Err(invalid("buf is NULL"));
        }
        // SAFETY: `buf` holds `len` > bytes.len() bytes by the contract.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), bytes.len() + 1) };
        out[..bytes.len()].copy_from_slice(bytes);
        out[bytes.len()] = 0;
        Ok(bytes.len() as c_int)
    })
}

/// Connects to luod at the default socket (see `luo_default_socket_path`)
/// and stores the new client at `*out`. Close it with `luo_client_close`.
///
/// Errors: `connect(2)`'s: `-ENOENT` (luod is not running there),
/// `-ECONNREFUSED` (a stale socket), `-EACCES`.
///
/// # Safety
///
/// `out` is valid for writing.
#[no_mangle]
pub unsafe extern "C" fn luo_connect(out: *mut *mut luo_client) -> c_int {
    guard(|| {
        let inner = luo::Client::connect()?;
        // SAFETY: writable by the contract.
        unsafe { put(out, boxed(luo_client { inner }), "out") }?;
        Ok(0)
    })
}

/// As `luo_connect`, to the socket at `path`.
///
/// # Safety
///
/// `path` is a NUL-terminated string; `out` is valid for writing.
#[no_mangle]
pub unsafe extern "C" fn luo_connect_to(path: *const c_char, out: *mut *mut luo_client) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: NUL-terminated by the contract.
        let path = unsafe { string(path, "path") }?;
        let inner = luo::Client::connect_to(Path::new(path))?;
        // SAFETY: writable by the contract.
        unsafe { put(out, boxed(luo_client { inner }), "out") }?;
        Ok(0)
    })
}

/// Closes the connection and frees the client. Sessions created or
/// retrieved through it live on in their handles. NULL is ignored.
///
/// # Safety
///
/// `client` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn luo_client_close(client: *mut luo_client) {
    guard_void(|| {
        if !client.is_null() {
            // SAFETY: a handle from Box::into_raw, given back once.
            drop(unsafe { Box::from_raw(client) });
        }
    })
}

fn session_out(out: *mut *mut luo_session, f: impl FnOnce() -> luo::Result<luo::Session>) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let inner = f()?;
        // SAFETY: not NULL, writable by the caller's contract (every caller
        // of this function is an exported function with that contract).
        unsafe { put(out, boxed(luo_session { inner }), "out") }?;
        Ok(0)
    })
}

/// [`session_out`] for a session that `client` opens by `name`.
///
/// # Safety
///
/// `client` is NULL or a live handle from `luo_connect`, `name` NULL or a
/// NUL-terminated string that outlives the call.
unsafe fn named_session(
    client: *const luo_client,
    name: *const c_char,
    out: *mut *mut luo_session,
    f: impl FnOnce(&luo::Client, &str) -> luo::Result<luo::Session>,
) -> c_int {
    session_out(out, || {
        // SAFETY: by this function's contract.
        let (c, name) = unsafe { (self::client(client)?, string(name, "name")?) };
        f(c, name)
    })
}

/// Creates an outgoing session named `name` (1 to 63 bytes), owned by the
/// caller, and stores its handle at `*out`. Closing the handle before
/// `luo_session_handover` aborts the session.
///
/// Errors: `-EINVAL` a bad name, `-EEXIST` an outgoing session of that
/// name exists, `-ENOSPC` too many sessions, `-EDQUOT` over quota.
///
/// # Safety
///
/// `client` is a live handle, `name` a NUL-terminated string, `out` valid
/// for writing.
#[no_mangle]
pub unsafe extern "C" fn luo_create_session(
    client: *const luo_client,
    name: *const c_char,
    out: *mut *mut luo_session,
) -> c_int {
    // SAFETY: by the contract.
    unsafe { named_session(client, name, out, |c, name| c.create_session(name)) }
}

/// Opens the caller's persistent outgoing session named `name`, or creates
/// it persistent when the caller has no outgoing session of that name, and
/// stores a handle at `*out`. Closing the last handle does not abort a
/// persistent session: it keeps every file until it is opened again, for
/// a supervisor that may die at any moment. Its files are taken back with
/// `luo_session_fetch` and let go with `luo_session_unpreserve`.
///
/// Errors: `-EINVAL` a bad name, `-EEXIST` an outgoing session of that name
/// that is not persistent, `-ENOSPC`, `-EDQUOT`; `-EOPNOTSUPP` from an
/// agent without persistent sessions (luod 0.1.0).
///
/// # Safety
///
/// As `luo_create_session`.
#[no_mangle]
pub unsafe extern "C" fn luo_persist_session(
    client: *const luo_client,
    name: *const c_char,
    out: *mut *mut luo_session,
) -> c_int {
    // SAFETY: by the contract.
    unsafe { named_session(client, name, out, |c, name| c.persist_session(name)) }
}

/// Retrieves the caller's incoming session named `name` and stores its
/// handle at `*out`.
///
/// Errors: `-ENOENT` no incoming session of that name, `-EINVAL` it is
/// already retrieved (a handle on it is open).
///
/// # Safety
///
/// As `luo_create_session`.
#[no_mangle]
pub unsafe extern "C" fn luo_retrieve_session(
    client: *const luo_client,
    name: *const c_char,
    out: *mut *mut luo_session,
) -> c_int {
    // SAFETY: by the contract.
    unsafe { named_session(client, name, out, |c, name| c.retrieve_session(name)) }
}

/// As `luo_retrieve_session`, for the session of uid `owner`: only root
/// may name another uid (`-EPERM`).
///
/// # Safety
///
/// As `luo_create_session`.
#[no_mangle]
pub unsafe extern "C" fn luo_retrieve_session_of(
    client: *const luo_client,
    owner: u32,
    name: *const c_char,
    out: *mut *mut luo_session,
) -> c_int {
    // SAFETY: by the contract.
    unsafe {
        named_session(client, name, out, |c, name| {
            c.retrieve_session_of(owner, name)
        })
    }
}

/// Hands over the outgoing session named `name` of uid `owner`
/// (`LUO_OWNER_SELF` for the caller's) without holding its handle.
///
/// Errors: `-ENOENT` no such outgoing session, `-EEXIST` an incoming
/// session of that name is unfinished, `-EPERM` another uid's for a caller
/// other than root, or a handler's errno.
///
/// # Safety
///
/// `client` is a live handle, `name` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn luo_handover(
    client: *const luo_client,
    name: *const c_char,
    owner: i64,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (c, name) = unsafe { (self::client(client)?, string(name, "name")?) };
        c.handover(name, self::owner(owner)?)?;
        Ok(0)
    })
}

/// Retrieves and finishes the incoming session named `name` of uid `owner`
/// (`LUO_OWNER_SELF` for the caller's) in one step; files never retrieved
/// are discarded.
///
/// Errors: `-ENOENT` no such incoming session, `-EINVAL` a process holds it,
/// `-EBUSY` a handler cannot finish, `-EPERM`.
///
/// # Safety
///
/// As `luo_handover`.
#[no_mangle]
pub unsafe extern "C" fn luo_finish(
    client: *const luo_client,
    name: *const c_char,
    owner: i64,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (c, name) = unsafe { (self::client(client)?, string(name, "name")?) };
        c.finish(name, self::owner(owner)?)?;
        Ok(0)
    })
}

/// An emulated live update: every outgoing session crosses at once. Stores
/// the new epoch at `*epoch` unless `epoch` is NULL. Handles on crossed
/// sessions become stale (`-ESTALE`).
///
/// Errors: `-EPERM` unless root or the agent's uid, `-EEXIST` an incoming
/// session of the same name and owner is unfinished, a handler's errno.
///
/// # Safety
///
/// `client` is a live handle; `epoch` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn luo_update(client: *const luo_client, epoch: *mut u64) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let e = unsafe { self::client(client) }?.update()?;
        // SAFETY: NULL or writable by the contract.
        unsafe { put_opt(epoch, e) };
        Ok(0)
    })
}

/// Upgrades the agent in place to `binary` (NULL: the binary at its own
/// path). Stores the agent's pid at `*pid` unless `pid` is NULL.
///
/// Errors: `-EPERM` unless root or the agent's uid, `-ENOEXEC` not a luod,
/// `-EOPNOTSUPP` it cannot read this agent's state, `exec`'s errno.
///
/// # Safety
///
/// `client` is a live handle; `binary` is NULL or a NUL-terminated string;
/// `pid` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn luo_upgrade_agent(
    client: *const luo_client,
    binary: *const c_char,
    pid: *mut u32,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let c = unsafe { self::client(client) }?;
        let binary = if binary.is_null() {
            None
        } else {
            // SAFETY: NUL-terminated by the contract.
            Some(Path::new(unsafe { string(binary, "binary") }?))
        };
        let up = c.upgrade_agent(binary)?;
        // SAFETY: NULL or writable by the contract.
        unsafe { put_opt(pid, up.pid) };
        Ok(0)
    })
}

fn plan<'a>(
    kernel_fd: c_int,
    initrd_fd: c_int,
    cmdline: &'a str,
    force: bool,
) -> luo::Result<luo::KexecPlan<'a>> {
    Ok(luo::KexecPlan {
        kernel: borrow_fd(kernel_fd)?,
        initrd: if initrd_fd < 0 {
            None
        } else {
            Some(borrow_fd(initrd_fd)?)
        },
        cmdline,
        force,
    })
}

/// The preflight of a kernel live update of the kernel image open at
/// `kernel_fd`, the initramfs at `initrd_fd` (-1: none) and `cmdline`, as a
/// JSON object (docs/protocol.md, `kexec`) stored at `*json`; free it with
/// `luo_string_free`. Root only (`-EPERM`). luod sends a large preflight in
/// pages; this reads them all (`-EAGAIN` when the sessions kept changing
/// meanwhile).
///
/// # Safety
///
/// `client` is a live handle, `cmdline` a NUL-terminated string, `json`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn luo_preflight_json(
    client: *const luo_client,
    kernel_fd: c_int,
    initrd_fd: c_int,
    cmdline: *const c_char,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (c, cmdline) = unsafe { (self::client(client)?, string(cmdline, "cmdline")?) };
        let p = c.preflight(&plan(kernel_fd, initrd_fd, cmdline, false)?)?;
        let s = crate::api::json(&p)?;
        // SAFETY: writable by the contract.
        unsafe { put(json, give_string(s), "json") }?;
        Ok(0)
    })
}

/// A kernel live update: load the kernel at `kernel_fd` (and the initramfs
/// at `initrd_fd`, -1 for none) with `cmdline` and reboot into it; on
/// success this does not return. Root only.
///
/// Errors: `-ECANCELED` the preflight found problems and `force` is false,
/// `-EOPNOTSUPP` on the emulated backend, `kexec_file_load`'s errno.
///
/// # Safety
///
/// `client` is a live handle, `cmdline` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn luo_kexec(
    client: *const luo_client,
    kernel_fd: c_int,
    initrd_fd: c_int,
    cmdline: *const c_char,
    force: bool,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (c, cmdline) = unsafe { (self::client(client)?, string(cmdline, "cmdline")?) };
        c.kexec(&plan(kernel_fd, initrd_fd, cmdline, force)?)?;
        Ok(0)
    })
}

/// Fills `*status` with the agent's state (nothing to free).
///
/// # Safety
///
/// `client` is a live handle, `status` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_status(client: *const luo_client, status: *mut luo_status) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let s = unsafe { self::client(client) }?.status()?;
        // SAFETY: writable by the contract.
        unsafe { put(status, luo_status::from(&s), "status") }?;
        Ok(0)
    })
}

/// The agent's state as the JSON object `luoctl status --json` prints,
/// stored at `*json`; free it with `luo_string_free`.
///
/// # Safety
///
/// `client` is a live handle, `json` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_status_json(
    client: *const luo_client,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let s = unsafe { self::client(client) }?.status()?;
        let s = crate::api::json(&s)?;
        // SAFETY: writable by the contract.
        unsafe { put(json, give_string(s), "json") }?;
        Ok(0)
    })
}

/// Summaries (no files) of the caller's sessions, or every session for
/// root: an array of `*count` entries stored at `*sessions` (NULL when
/// there are none). Free it with `luo_session_info_free(*sessions, *count)`.
///
/// # Safety
///
/// `client` is a live handle; `sessions` and `count` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_sessions(
    client: *const luo_client,
    sessions: *mut *mut luo_session_info,
    count: *mut usize,
) -> c_int {
    guard(|| {
        if sessions.is_null() || count.is_null() {
            return Err(invalid("sessions or count is NULL"));
        }
        // SAFETY: by the contract.
        let v = unsafe { self::client(client) }?.sessions()?;
        let (p, n) = give_infos(v);
        // SAFETY: both checked not NULL, writable by the contract.
        unsafe {
            sessions.write(p);
            count.write(n);
        }
        Ok(0)
    })
}

/// The sessions `luo_sessions` lists, as a JSON array stored at `*json`;
/// free it with `luo_string_free`.
///
/// # Safety
///
/// `client` is a live handle, `json` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_sessions_json(
    client: *const luo_client,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let v = unsafe { self::client(client) }?.sessions()?;
        let s = crate::api::json(&v)?;
        // SAFETY: writable by the contract.
        unsafe { put(json, give_string(s), "json") }?;
        Ok(0)
    })
}

/// Details, with files, of the sessions named `name` of uid `owner`
/// (`LUO_OWNER_SELF` for the caller's): one, or two when an outgoing and an
/// incoming session share the name. Stored as for `luo_sessions`; free with
/// `luo_session_info_free`.
///
/// Errors: `-ENOENT` no session of that name, `-EPERM` another uid's for a
/// caller other than root.
///
/// # Safety
///
/// `client` is a live handle, `name` a NUL-terminated string, `sessions`
/// and `count` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_show(
    client: *const luo_client,
    name: *const c_char,
    owner: i64,
    sessions: *mut *mut luo_session_info,
    count: *mut usize,
) -> c_int {
    guard(|| {
        if sessions.is_null() || count.is_null() {
            return Err(invalid("sessions or count is NULL"));
        }
        // SAFETY: by the contract.
        let (c, name) = unsafe { (self::client(client)?, string(name, "name")?) };
        let v = c.show(name, self::owner(owner)?)?;
        let (p, n) = give_infos(v);
        // SAFETY: both checked not NULL, writable by the contract.
        unsafe {
            sessions.write(p);
            count.write(n);
        }
        Ok(0)
    })
}

/// What `luo_show` gives, as a JSON array stored at `*json`; free it with
/// `luo_string_free`.
///
/// # Safety
///
/// As `luo_show`, with `json` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_show_json(
    client: *const luo_client,
    name: *const c_char,
    owner: i64,
    json: *mut *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (c, name) = unsafe { (self::client(client)?, string(name, "name")?) };
        let v = c.show(name, self::owner(owner)?)?;
        let s = crate::api::json(&v)?;
        // SAFETY: writable by the contract.
        unsafe { put(json, give_string(s), "json") }?;
        Ok(0)
    })
}

/// Frees an array of `count` session infos from `luo_sessions`,
/// `luo_show` or `luo_session_info` with everything in it. NULL is
/// ignored.
///
/// # Safety
///
/// `sessions` is NULL or an array this library returned with exactly
/// `count` entries, not used again.
#[no_mangle]
pub unsafe extern "C" fn luo_session_info_free(sessions: *mut luo_session_info, count: usize) {
    guard_void(|| {
        if sessions.is_null() {
            return;
        }
        // SAFETY: a Box<[luo_session_info]> of `count` entries leaked by
        // give_infos, given back once.
        let infos = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(sessions, count)) };
        for s in infos.iter() {
            // SAFETY: made by CString::into_raw, freed once.
            drop(unsafe { CString::from_raw(s.name) });
            if s.files.is_null() {
                continue;
            }
            // SAFETY: a Box<[luo_file_info]> of `files_len` entries leaked
            // when the info was made, freed once.
            let files =
                unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(s.files, s.files_len)) };
            for f in files.iter() {
                free_file_strings(f);
            }
        }
    })
}

fn free_file_strings(f: &luo_file_info) {
    // SAFETY: both made by CString::into_raw when the info was made, freed
    // once, with the array that holds them.
    unsafe {
        drop(CString::from_raw(f.handler));
        drop(CString::from_raw(f.kind));
    }
}

/// Frees a string this library returned (the `_json` functions,
/// `luo_session_name`). NULL is ignored.
///
/// # Safety
///
/// `s` is NULL or a string this library returned, not used again.
#[no_mangle]
pub unsafe extern "C" fn luo_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: made by CString::into_raw, given back once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Adopts the session handle descriptor `fd` (inherited across `exec`,
/// received over `SCM_RIGHTS`, or from `luo_session_into_fd`): stores a new
/// handle at `*out` that owns `fd` from now on (`luo_session_close` closes
/// it). On failure `fd` is left alone.
///
/// Errors: `-EBADF` `fd` is not open, `-ENOTSOCK` it is not a session
/// handle.
///
/// # Safety
///
/// `out` is writable; nothing else owns `fd` once this returns 0.
#[no_mangle]
pub unsafe extern "C" fn luo_session_from_fd(fd: c_int, out: *mut *mut luo_session) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let borrowed = borrow_fd(fd)?;
        let st = luo_sys::fstat(borrowed).map_err(|e| Error::new(e, "fstat failed"))?;
        if st.mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(Error::new(
                Errno::ENOTSOCK,
                format!("descriptor {fd} is not a session handle (not a socket)"),
            ));
        }
        // SAFETY: `fd` is open, and the caller hands its ownership over.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let inner = luo::Session::from(owned);
        // SAFETY: checked not NULL, writable by the contract.
        unsafe { out.write(boxed(luo_session { inner })) };
        Ok(0)
    })
}

/// The session handle's descriptor, still owned by `session` (to pass it
/// to a child across `exec`, clear its `FD_CLOEXEC`; to send it over
/// `SCM_RIGHTS`, send it as is). `-EINVAL` for NULL.
///
/// # Safety
///
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn luo_session_fd(session: *const luo_session) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let s = unsafe { self::session(session) }?;
        Ok(std::os::fd::AsRawFd::as_raw_fd(s))
    })
}

/// Frees `session` and returns its descriptor, now the caller's: the
/// session stays alive as long as the descriptor (or another copy) is open.
///
/// # Safety
///
/// `session` is NULL or a live handle, not used again after success.
#[no_mangle]
pub unsafe extern "C" fn luo_session_into_fd(session: *mut luo_session) -> c_int {
    guard(|| {
        if session.is_null() {
            return Err(invalid("the session is NULL"));
        }
        // SAFETY: a handle from Box::into_raw, given back once.
        let s = unsafe { Box::from_raw(session) };
        Ok(give(OwnedFd::from(s.inner)))
    })
}

/// A second handle on the same session (`dup`), stored at `*out`: the
/// session lives until both are closed.
///
/// # Safety
///
/// `session` is a live handle, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_session_dup(
    session: *const luo_session,
    out: *mut *mut luo_session,
) -> c_int {
    session_out(out, || {
        // SAFETY: by the contract.
        let s = unsafe { self::session(session) }?;
        s.try_clone()
            .map_err(|e| Error::new(Errno(e.raw_os_error().unwrap_or(libc::EIO)), e.to_string()))
    })
}

/// Closes the handle and frees it. Closing the last handle on an outgoing
/// session aborts it (its files are let go); on a retrieved, unfinished
/// session it goes back to waiting. NULL is ignored.
///
/// # Safety
///
/// `session` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn luo_session_close(session: *mut luo_session) {
    guard_void(|| {
        if !session.is_null() {
            // SAFETY: a handle from Box::into_raw, given back once.
            drop(unsafe { Box::from_raw(session) });
        }
    })
}

/// The session's name, stored at `*name`; free it with `luo_string_free`.
///
/// Errors: `-ESTALE` once the session has crossed.
///
/// # Safety
///
/// `session` is a live handle, `name` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_session_name(
    session: *const luo_session,
    name: *mut *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let n = unsafe { self::session(session) }?.name()?;
        // SAFETY: writable by the contract.
        unsafe { put(name, give_string(crate::types::cstring(n)), "name") }?;
        Ok(0)
    })
}

/// The session's detail with its files: one `luo_session_info` stored at
/// `*info`; free it with `luo_session_info_free(*info, 1)`.
///
/// Errors: `-ESTALE` once the session has crossed.
///
/// # Safety
///
/// `session` is a live handle, `info` writable.
#[no_mangle]
pub unsafe extern "C" fn luo_session_info(
    session: *const luo_session,
    info: *mut *mut luo_session_info,
) -> c_int {
    guard(|| {
        if info.is_null() {
            return Err(invalid("info is NULL"));
        }
        // SAFETY: by the contract.
        let i = unsafe { self::session(session) }?.info()?;
        let (p, _) = give_infos(vec![i]);
        // SAFETY: checked not NULL, writable by the contract.
        unsafe { info.write(p) };
        Ok(0)
    })
}

/// Preserves the file open at `fd` under `token`. The agent keeps its own
/// reference: the caller may close `fd` afterwards.
///
/// Errors (the kernel's, in its order): `-EINVAL` the session is not
/// outgoing, `-EEXIST` the token is in use, `-ENOSPC` the session is full,
/// `-EBADF` a bad or `O_PATH` descriptor, `-ENOENT` no handler for this kind
/// of file, `-EDQUOT` over quota, `-EBUSY` the file is in a session
/// already; then the handler's errno. `-ESTALE` once the session crossed.
///
/// # Safety
///
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn luo_session_preserve(
    session: *const luo_session,
    token: u64,
    fd: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let s = unsafe { self::session(session) }?;
        s.preserve(token, borrow_fd(fd)?)?;
        Ok(0)
    })
}

/// Preserves `count` files, `fds[i]` under `tokens[i]`, in order. Stops at
/// the first refusal; the files before it stay preserved, and
/// `luo_last_error_token` names the first that was not.
///
/// # Safety
///
/// `session` is a live handle; `tokens` and `fds` hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn luo_session_preserve_batch(
    session: *const luo_session,
    tokens: *const u64,
    fds: *const c_int,
    count: usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (s, tokens, fds) = unsafe {
            (
                self::session(session)?,
                slice(tokens, count, "tokens")?,
                slice(fds, count, "fds")?,
            )
        };
        let mut files = Vec::with_capacity(count);
        for (&t, &fd) in tokens.iter().zip(fds) {
            let fd = borrow_fd(fd).map_err(|mut e| {
                e.token = Some(t);
                e
            })?;
            files.push((t, fd));
        }
        s.preserve_batch(&files)?;
        Ok(0)
    })
}

/// A new descriptor (the caller's, `O_CLOEXEC`) of the file preserved
/// under `token` in a retrieved session: returns it (`>= 0`).
///
/// Errors: `-EINVAL` an outgoing session, `-ENOENT` an unknown token, the
/// handler's errno, `-ESTALE` once the session crossed.
///
/// # Safety
///
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn luo_session_retrieve(session: *const luo_session, token: u64) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let s = unsafe { self::session(session) }?;
        Ok(give(s.retrieve_fd(token)?))
    })
}

/// New descriptors of the files under `tokens`, stored in `fds` (both of
/// `count` entries), in order. On failure no descriptor is left open, every
/// entry of `fds` is -1, and `luo_last_error_token` names the failing token.
///
/// # Safety
///
/// `session` is a live handle; `tokens` holds `count` entries and `fds`
/// has room for `count`.
#[no_mangle]
pub unsafe extern "C" fn luo_session_retrieve_batch(
    session: *const luo_session,
    tokens: *const u64,
    fds: *mut c_int,
    count: usize,
) -> c_int {
    // SAFETY: by the contract.
    unsafe { fds_batch(session, tokens, fds, count, |s, t| s.retrieve_batch(t)) }
}

/// Lets go of the files preserved under `tokens` (`count` of them) in an
/// outgoing session. Stops at the first refusal; the files before it are
/// let go, and `luo_last_error_token` names the refused token.
///
/// Errors: `-EINVAL` not outgoing, `-ENOENT` a token it does not hold,
/// `-ESTALE`, `-EOPNOTSUPP` from an agent without persistent sessions.
///
/// # Safety
///
/// `session` is a live handle; `tokens` holds `count` entries.
#[no_mangle]
pub unsafe extern "C" fn luo_session_unpreserve(
    session: *const luo_session,
    tokens: *const u64,
    count: usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let (s, tokens) = unsafe { (self::session(session)?, slice(tokens, count, "tokens")?) };
        s.unpreserve(tokens)?;
        Ok(0)
    })
}

/// New descriptors of the files under `tokens` in a persistent session,
/// without retrieving them (they stay preserved), stored in `fds` (both of
/// `count` entries). On failure no descriptor is left open, every entry of
/// `fds` is -1, and `luo_last_error_token` names the failing token.
///
/// Errors: `-EINVAL` a session that is not persistent, `-ENOENT` an
/// unknown token, `-ESTALE`, `-EOPNOTSUPP`.
///
/// # Safety
///
/// As `luo_session_retrieve_batch`.
#[no_mangle]
pub unsafe extern "C" fn luo_session_fetch(
    session: *const luo_session,
    tokens: *const u64,
    fds: *mut c_int,
    count: usize,
) -> c_int {
    // SAFETY: by the contract.
    unsafe { fds_batch(session, tokens, fds, count, |s, t| s.fetch(t)) }
}

/// Hands the outgoing session over: it waits for the next process to
/// retrieve it by name. This handle is stale from now on (close it).
///
/// Errors: `-EINVAL` not outgoing, `-EEXIST` an incoming session of that
/// name is unfinished, a handler's errno (the session stays outgoing).
///
/// # Safety
///
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn luo_session_handover(session: *const luo_session) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        unsafe { self::session(session) }?.handover()?;
        Ok(0)
    })
}

/// Finishes the retrieved session: the agent lets go of every file (the
/// descriptors retrieved stay open).
///
/// Errors: `-EINVAL` an outgoing session, `-EBUSY` a handler cannot finish
/// yet, `-ESTALE`.
///
/// # Safety
///
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn luo_session_finish(session: *const luo_session) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        unsafe { self::session(session) }?.finish()?;
        Ok(0)
    })
}

/// A new memfd (`MFD_CLOEXEC`) named `name`: returns its descriptor.
///
/// # Safety
///
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn luo_memfd_create(name: *const c_char) -> c_int {
    guard(|| {
        // SAFETY: by the contract.
        let name = unsafe { string(name, "name") }?;
        let fd = luo::memfd_create(name).map_err(|e| {
            Error::new(
                Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                format!("memfd_create: {e}"),
            )
        })?;
        Ok(give(fd))
    })
}

/// Descriptors from `get` for `tokens` into `fds`, all or none.
///
/// # Safety
///
/// `session` is a live handle; `tokens` holds `count` entries and `fds`
/// has room for `count`.
unsafe fn fds_batch(
    session: *const luo_session,
    tokens: *const u64,
    fds: *mut c_int,
    count: usize,
    get: impl FnOnce(&luo::Session, &[u64]) -> luo::Result<Vec<OwnedFd>>,
) -> c_int {
    let r = guard(|| {
        // SAFETY: by the contract.
        let (s, tokens) = unsafe { (self::session(session)?, slice(tokens, count, "tokens")?) };
        if count > 0 && fds.is_null() {
            return Err(invalid("fds is NULL"));
        }
        let got = get(s, tokens)?;
        if got.len() != count {
            return Err(Error::new(
                Errno::EPROTO,
                "the agent sent too few descriptors",
            ));
        }
        for (i, fd) in got.into_iter().enumerate() {
            // SAFETY: `fds` has room for `count` entries by the contract.
            unsafe { fds.add(i).write(give(fd)) };
        }
        Ok(0)
    });
    if r < 0 && !fds.is_null() {
        for i in 0..count {
            // SAFETY: as above.
            unsafe { fds.add(i).write(-1) };
        }
    }
    r
}
