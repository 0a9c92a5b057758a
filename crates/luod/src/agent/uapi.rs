//! The `/dev/liveupdate` emulation's side of the agent: `open_device` and
//! `ioctl` (`docs/uapi-emulation.md`, `docs/protocol.md`).
//!
//! The preload library turns `open("/dev/liveupdate")` into an agent
//! connection that claims the device, and every ioctl on that connection or
//! on a session handle into one `ioctl` request carrying the caller's struct
//! as it read it. Here the kernel's dispatcher runs, with the kernel's
//! checks in the kernel's order (`kernel-luo.md` 2.2 to 2.9); the sessions
//! it creates and retrieves follow the kernel where the native API does not
//! (`luo_core::SessionMode`).

use std::os::fd::OwnedFd;

use foldhash::HashMap;
use luo_core::{Retrieval, SessionHandle, SessionMode, SessionState};
use luo_proto::ops::{Done, Handlers, Ioctl, IoctlReply, OpenDevice};
use luo_proto::uapi::{self, Tail};
use luo_proto::{Errno, Error, Value};
use tracing::{debug, info};

use super::ops::reply;
use super::{quoted, Agent, Reply, LISTENER, MAX_EVENTS, SIGNALS};

/// A connection that holds the device.
#[derive(Debug, Clone, Copy)]
struct Device {
    uid: u32,
    /// The epoch it was opened in: an update ends the claim, as a kexec
    /// ends the process that held the device.
    epoch: u64,
    /// `LUO_PRELOAD_HANDLERS=all`: sessions created here take every file
    /// luo has a handler for, not only the kernel's types.
    all_handlers: bool,
}

/// Who holds the device, per uid.
#[derive(Debug, Default)]
pub(super) struct Devices {
    by_conn: HashMap<u64, Device>,
    holder: HashMap<u32, u64>,
    /// Set while hang-ups are being settled, so that a request carried out
    /// meanwhile does not settle again.
    settling: bool,
}

impl Devices {
    /// For an in-place upgrade: `[connection, uid, epoch, all_handlers]`
    /// per connection holding the device.
    pub(super) fn state(&self) -> Value {
        let mut v: Vec<(&u64, &Device)> = self.by_conn.iter().collect();
        v.sort_unstable_by_key(|(k, _)| **k);
        Value::Array(
            v.into_iter()
                .map(|(k, d)| {
                    Value::Array(vec![
                        (*k).into(),
                        d.uid.into(),
                        d.epoch.into(),
                        d.all_handlers.into(),
                    ])
                })
                .collect(),
        )
    }

    /// Rebuilds what [`Devices::state`] wrote.
    pub(super) fn from_state(v: &Value) -> Result<Devices, String> {
        let bad = || "the device holders' state is malformed".to_string();
        let mut d = Devices::default();
        for e in v.as_array().ok_or_else(bad)? {
            let [k, uid, epoch, all] = e.as_array().ok_or_else(bad)?.as_slice() else {
                return Err(bad());
            };
            let k = k.as_u64().ok_or_else(bad)?;
            let uid = uid.as_u64().ok_or_else(bad)? as u32;
            d.by_conn.insert(
                k,
                Device {
                    uid,
                    epoch: epoch.as_u64().ok_or_else(bad)?,
                    all_handlers: all.as_bool().ok_or_else(bad)?,
                },
            );
            d.holder.insert(uid, k);
        }
        Ok(d)
    }
}

fn err(errno: Errno, msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(errno, msg)
}

/// The bytes of the name field up to its first NUL (all 64 without one).
fn name_field(arg: &[u8]) -> &[u8] {
    let field = &arg[uapi::NAME_OFFSET..uapi::NAME_OFFSET + uapi::NAME_LENGTH];
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..len]
}

fn u32_at(arg: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arg[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(arg: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arg[at..at + 8].try_into().expect("8 bytes"))
}

/// What a session handle is, for the kernel's `luo_ioctl_type_valid`.
enum Side {
    Outgoing,
    Incoming,
}

impl Agent {
    /// Carries out the hang-ups epoll already knows of (other than `key`'s):
    /// a client that closed a session fd or the device and then asks for
    /// something finds the close done, as on the kernel. Whether there
    /// were any.
    pub(super) fn settle_hangups(&mut self, key: u64) -> bool {
        if self.devices.settling {
            return false;
        }
        self.devices.settling = true;
        let mut events = Vec::new();
        let mut settled = false;
        if self.epoll.wait(&mut events, MAX_EVENTS, 0).is_ok() {
            let gone = (luo_sys::epoll::EPOLLHUP
                | luo_sys::epoll::EPOLLRDHUP
                | luo_sys::epoll::EPOLLERR) as u32;
            for (k, ev) in events {
                if k != key && k != LISTENER && k != SIGNALS && ev & gone != 0 {
                    self.service(k, ev);
                    settled = true;
                }
            }
        }
        self.devices.settling = false;
        settled
    }

    /// [`Luo::preserve`](luo_core::Luo::preserve) for connection `key`,
    /// as after the closes its client made just before, as the kernel's
    /// close is synchronous: a refusal that one could change (`EBUSY`, the
    /// file held by a session since closed; `EDQUOT`, its quota) sees the
    /// hang-ups epoll already has and, if there were any, tries again. The
    /// common case costs no system call for it.
    pub(super) fn preserve_seeing_closes(
        &mut self,
        key: u64,
        h: SessionHandle,
        fd: OwnedFd,
        token: u64,
    ) -> Result<(), Error> {
        match self.luo.preserve_or_return(h, fd, token) {
            Err((e, fd))
                if matches!(e.errno, Errno::EBUSY | Errno::EDQUOT) && self.settle_hangups(key) =>
            {
                self.luo.preserve(h, fd, token)
            }
            done => done.map_err(|(e, _)| e),
        }
    }

    /// Forgets the device claim of a connection that closed.
    pub(super) fn device_closed(&mut self, key: u64) {
        if let Some(d) = self.devices.by_conn.remove(&key) {
            if self.devices.holder.get(&d.uid) == Some(&key) {
                self.devices.holder.remove(&d.uid);
            }
            debug!("connection {key}: uid {} closed the device", d.uid);
        }
    }

    /// `open_device`: the connection becomes the device.
    pub(super) fn open_device(
        &mut self,
        key: u64,
        uid: u32,
        r: OpenDevice,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        // The caller's earlier close() must be seen before this request is,
        // as the kernel releases a file before close() returns.
        self.settle_hangups(key);
        if !fds.is_empty() {
            return Err(err(Errno::EINVAL, "'open_device' takes no descriptors"));
        }
        let all_handlers = r.handlers == Some(Handlers::All);
        let epoch = self.luo.epoch();
        if self.devices.by_conn.contains_key(&key) {
            return Err(err(
                Errno::EBUSY,
                "this connection holds the device already",
            ));
        }
        if let Some(&other) = self.devices.holder.get(&uid) {
            let live = self.conns.contains_key(&other)
                && self.devices.by_conn.get(&other).map(|d| d.epoch) == Some(epoch);
            if live {
                return Err(err(
                    Errno::EBUSY,
                    format!("/dev/liveupdate is open already (uid {uid}): one open at a time"),
                ));
            }
            // Opened before the last update: that process is, in the
            // kernel's terms, gone.
            self.devices.by_conn.remove(&other);
        }
        self.devices.holder.insert(uid, key);
        self.devices.by_conn.insert(
            key,
            Device {
                uid,
                epoch,
                all_handlers,
            },
        );
        debug!("connection {key}: uid {uid} opened the device (all handlers: {all_handlers})");
        reply::<OpenDevice>(Done {}, vec![])
    }

    /// `ioctl` on the agent connection that holds the device.
    pub(super) fn device_ioctl(
        &mut self,
        key: u64,
        uid: u32,
        r: Ioctl,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        self.settle_hangups(key);
        if !fds.is_empty() {
            return Err(err(
                Errno::EINVAL,
                "no ioctl on the device carries a descriptor; they were closed",
            ));
        }
        let Some(d) = self.devices.by_conn.get(&key).copied() else {
            return Err(err(
                Errno::ENOTTY,
                "this connection does not hold the device: send 'open_device' first",
            ));
        };
        if d.epoch != self.luo.epoch() {
            return Err(err(
                Errno::ESTALE,
                "the device was opened before the last update; open it again",
            ));
        }
        let (cmd, arg, emfile) = dispatch(&r, |nr| nr >= 2, |_| Ok(()))?;
        let fd_slot = || {
            if emfile {
                Err(err(Errno::EMFILE, "the caller has no descriptor free"))
            } else {
                Ok(())
            }
        };
        match cmd {
            uapi::CREATE_SESSION => {
                fd_slot()?;
                let name = name_field(&arg);
                if name.is_empty() || name.len() >= uapi::NAME_LENGTH {
                    return Err(err(
                        Errno::EINVAL,
                        "the session name must be 1 to 63 bytes, NUL-terminated",
                    ));
                }
                let mode = SessionMode {
                    finish_on_close: true,
                    kexec_safe_only: !d.all_handlers,
                    persist: false,
                };
                let (fd, _) = self.new_handle(|luo| {
                    let h = luo.create_session(uid, name)?;
                    luo.set_mode(h, mode).map(|()| h)
                })?;
                info!(
                    "session {} of uid {uid} created through /dev/liveupdate",
                    quoted(&String::from_utf8_lossy(name))
                );
                reply::<Ioctl>(IoctlReply::default(), vec![fd])
            }
            uapi::RETRIEVE_SESSION => {
                fd_slot()?;
                let name = name_field(&arg).to_vec();
                if name.is_empty() || name.len() >= uapi::NAME_LENGTH {
                    // Not validated by the kernel: it simply matches nothing.
                    return Err(err(Errno::ENOENT, "no incoming session has that name"));
                }
                let mode = SessionMode {
                    finish_on_close: true,
                    kexec_safe_only: true,
                    persist: false,
                };
                let (fd, _) = self.new_handle(|luo| {
                    let h = luo.retrieve_session(uid, &name)?;
                    luo.set_mode(h, mode).map(|()| h)
                })?;
                info!(
                    "session {} of uid {uid} retrieved through /dev/liveupdate",
                    quoted(&String::from_utf8_lossy(&name))
                );
                reply::<Ioctl>(IoctlReply::default(), vec![fd])
            }
            _ => unreachable!("dispatch admits only the device's commands"),
        }
    }

    /// `ioctl` on a session handle.
    pub(super) fn session_ioctl(
        &mut self,
        key: u64,
        h: SessionHandle,
        r: Ioctl,
        mut fds: Vec<OwnedFd>,
    ) -> Result<Reply, Error> {
        let fd = if fds.len() <= 1 {
            fds.pop()
        } else {
            return Err(err(
                Errno::EINVAL,
                format!("'ioctl' takes at most one descriptor, not {}", fds.len()),
            ));
        };
        // The state alone, by key: nothing per file (a full listing sums
        // over every file, which made each ioctl cost more as the session
        // grew).
        let side = |a: &Agent| -> Result<Side, Error> {
            let key = a.luo.session_key(h)?;
            match a.luo.session_state(key).map(|(_, _, s)| s) {
                Some(SessionState::Open) => Ok(Side::Outgoing),
                Some(_) => Ok(Side::Incoming),
                None => Err(err(Errno::ESTALE, "the session is gone")),
            }
        };
        let valid = |cmd: u32| -> Result<(), Error> {
            let s = side(self)?;
            let ok = match cmd {
                uapi::PRESERVE_FD => matches!(s, Side::Outgoing),
                uapi::RETRIEVE_FD | uapi::FINISH => matches!(s, Side::Incoming),
                _ => true,
            };
            if ok {
                Ok(())
            } else {
                Err(err(
                    Errno::EINVAL,
                    match s {
                        Side::Outgoing => "the session is outgoing: only PRESERVE_FD and GET_NAME",
                        Side::Incoming => {
                            "the session is incoming: only RETRIEVE_FD, FINISH and GET_NAME"
                        }
                    },
                ))
            }
        };
        let (cmd, arg, emfile) = dispatch(&r, |nr| !(0x40..=0x43).contains(&nr), valid)?;
        // The caller's earlier close() of another session or the device
        // must be seen first, as the kernel's close is synchronous. Only
        // PRESERVE_FD's answer can depend on one (a file or quota another
        // session let go of), and it sees them only when refused (below):
        // a syscall per preserve otherwise. RETRIEVE_FD concerns this
        // session's files alone.
        if matches!(cmd, uapi::FINISH | uapi::GET_NAME) {
            self.settle_hangups(key);
        }
        if fd.is_some() && cmd != uapi::PRESERVE_FD {
            return Err(err(
                Errno::EINVAL,
                "only PRESERVE_FD carries a descriptor; it was closed",
            ));
        }
        match cmd {
            uapi::PRESERVE_FD => {
                let token = u64_at(&arg, uapi::TOKEN_OFFSET);
                // The caller's fd was not open. The model checks the token
                // and the session's room first, as the kernel does, and
                // refuses an O_PATH descriptor with EBADF: one stands in.
                // A session fd or the device (luod's own sockets): the
                // model's veto (`leads_back`) answers ENOENT at the kernel's
                // step.
                let (fd, bad) = match fd {
                    Some(fd) => (fd, false),
                    None => match luo_sys::open_path(std::path::Path::new("/")) {
                        Ok(p) => (p, true),
                        Err(_) => return Err(bad_fd()),
                    },
                };
                match self.preserve_seeing_closes(key, h, fd, token) {
                    Ok(()) => reply::<Ioctl>(IoctlReply::default(), vec![]),
                    Err(e) if bad && e.errno == Errno::EBADF => Err(bad_fd()),
                    Err(e) => Err(e),
                }
            }
            uapi::RETRIEVE_FD => {
                if emfile {
                    return Err(err(Errno::EMFILE, "the caller has no descriptor free"));
                }
                let token = u64_at(&arg, uapi::TOKEN_OFFSET);
                match self.luo.retrieve_custody(h, token)? {
                    Retrieval::Fd(file) => reply::<Ioctl>(IoctlReply::default(), vec![file]),
                    // The custody descriptor itself, borrowed if sent at once.
                    Retrieval::Custody => Reply::lending(&IoctlReply::default(), h, vec![token]),
                }
            }
            uapi::FINISH => {
                if u32_at(&arg, uapi::RESERVED_OFFSET) != 0 {
                    return Err(err(Errno::EINVAL, "the reserved field must be 0"));
                }
                self.luo.finish(h)?;
                reply::<Ioctl>(IoctlReply::default(), vec![])
            }
            uapi::GET_NAME => {
                if u32_at(&arg, uapi::RESERVED_OFFSET) != 0 {
                    return Err(err(Errno::EINVAL, "the reserved field must be 0"));
                }
                let name = self.luo.name(h)?;
                let name = Some(uapi::to_hex(name));
                reply::<Ioctl>(IoctlReply { name }, vec![])
            }
            _ => unreachable!("dispatch admits only the session's commands"),
        }
    }
}

/// Whether a file to preserve leads back to luod itself: a socket whose
/// peer is this process (a session handle, an agent connection, the
/// emulated device, a link luod made) or its keeper. No handler takes them
/// on the kernel (a session file is not preservable), and here one would
/// keep its own session, or another's, alive forever. The model's veto
/// ([`luo_core::Luo::set_veto`]): `ENOENT` at the kernel's step for a file
/// no handler takes, whatever the API (`preserve`, persistent sessions, the
/// `ioctl` PRESERVE_FD).
pub(crate) fn leads_back(info: &luo_core::FileInfo<'_>) -> Option<String> {
    if !info.stat.is_socket() {
        return None;
    }
    // Only a Unix socket can be connected to luod or its keeper; the
    // family, read once, is the handlers' too.
    if info
        .socket_domain()
        .is_ok_and(|d| d != luo_sys::sock::AF_UNIX)
    {
        return None;
    }
    let peer = luo_sys::peer_cred(info.fd).ok()?.pid as u32;
    if peer == 0 {
        return None;
    }
    let keeper = super::mirror::KEEPER_PID.load(std::sync::atomic::Ordering::Relaxed);
    // luo_sys's cached pid: this runs for every socket preserved.
    let whose = if peer == luo_sys::getpid() as u32 {
        "a socket connected to luod (a session handle, an agent connection or the emulated /dev/liveupdate)"
    } else if peer == keeper {
        "a socket connected to luod's keeper"
    } else {
        return None;
    };
    Some(format!(
        "this descriptor leads back to luod itself: {whose}; it cannot be preserved (no handler takes it, as on the kernel, where a session file is not preservable)"
    ))
}

fn bad_fd() -> Error {
    err(Errno::EBADF, "the fd to preserve is not an open descriptor")
}

/// The kernel's dispatcher checks, in its order (`kernel-luo.md` 2.2):
/// number out of range (`EINVAL`), unreadable size (`EFAULT`), not exactly
/// a known command (`ENOTTY`), wrong kind of session (`valid`: `EINVAL`),
/// size too small (`EINVAL`), non-zero or unreadable tail (`E2BIG`,
/// `EFAULT`), unreadable struct (`EFAULT`). Returns the command, the
/// struct's bytes and whether the caller has no descriptor free.
fn dispatch(
    r: &Ioctl,
    out_of_range: impl Fn(u32) -> bool,
    valid: impl FnOnce(u32) -> Result<(), Error>,
) -> Result<(u32, Vec<u8>, bool), Error> {
    let (cmd, tail, emfile, size) = (r.cmd, r.tail, r.emfile, r.size);
    let arg = match &r.arg {
        None => None,
        Some(hex) => {
            Some(uapi::from_hex(hex).ok_or_else(|| err(Errno::EINVAL, "\"arg\" must be hex"))?)
        }
    };

    if out_of_range(uapi::nr(cmd)) {
        return Err(err(
            Errno::EINVAL,
            format!("ioctl number {:#x} is out of range here", uapi::nr(cmd)),
        ));
    }
    let Some(size) = size else {
        return Err(err(Errno::EFAULT, "the struct's size cannot be read"));
    };
    let Some(ksize) = uapi::struct_size(cmd) else {
        return Err(err(Errno::ENOTTY, format!("{cmd:#x} is not a LUO command")));
    };
    valid(cmd)?;
    if (size as usize) < ksize {
        return Err(err(
            Errno::EINVAL,
            format!("size {size} is smaller than the struct ({ksize})"),
        ));
    }
    match tail {
        Tail::Zero => {}
        Tail::NonZero => {
            return Err(err(
                Errno::E2BIG,
                format!("bytes past the known {ksize} are not zero"),
            ))
        }
        Tail::Fault => return Err(err(Errno::EFAULT, "the struct's tail cannot be read")),
    }
    let Some(arg) = arg else {
        return Err(err(Errno::EFAULT, "the struct cannot be read"));
    };
    if arg.len() != ksize {
        return Err(err(
            Errno::EINVAL,
            format!(
                "\"arg\" holds {} bytes; this command's struct has {ksize}",
                arg.len()
            ),
        ));
    }
    Ok((cmd, arg, emfile))
}

/// The pure part of an `ioctl` request, for `crate::fuzzing`: [`dispatch`]
/// as on the device (`device`) or on a session handle (where `valid`
/// answers `refuse` when set), then the fields the admitted command reads.
/// Returns the command and the struct's bytes.
pub(crate) fn decode_ioctl(
    r: &Ioctl,
    device: bool,
    refuse: Option<Error>,
) -> Result<(u32, Vec<u8>), Error> {
    let valid = |_: u32| refuse.map_or(Ok(()), Err);
    let (cmd, arg, _) = if device {
        dispatch(r, |nr| nr >= 2, valid)?
    } else {
        dispatch(r, |nr| !(0x40..=0x43).contains(&nr), valid)?
    };
    match cmd {
        uapi::CREATE_SESSION | uapi::RETRIEVE_SESSION => {
            let _ = name_field(&arg);
        }
        uapi::PRESERVE_FD | uapi::RETRIEVE_FD => {
            let _ = u64_at(&arg, uapi::TOKEN_OFFSET);
        }
        uapi::FINISH | uapi::GET_NAME => {
            let _ = u32_at(&arg, uapi::RESERVED_OFFSET);
        }
        _ => {}
    }
    Ok((cmd, arg))
}
