//! The conformance cases that apply to memfd, run against two devices with
//! the same expected results: luo's model (the emulated backend, with the
//! kernel's handler set: memfd only) on the host, and the kernel's
//! `/dev/liveupdate` inside the VM. Stage 1 runs on outgoing sessions and
//! leaves some for stage 2, which runs after the update (an emulated update
//! for the model, a real kexec for the kernel).

use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use luo_core::{handler::MemfdHandler, Limits, Luo, SessionHandle};

use crate::common::{memfd, read_text};
use luo_sys::{liveupdate as lu, Errno};

/// A device: the kernel's ioctls or the model's methods.
pub trait Dev {
    type S;
    fn create(&mut self, name: &[u8]) -> Result<Self::S, Errno>;
    fn retrieve(&mut self, name: &[u8]) -> Result<Self::S, Errno>;
    fn preserve(&mut self, s: &Self::S, fd: BorrowedFd<'_>, token: u64) -> Result<(), Errno>;
    fn retrieve_fd(&mut self, s: &Self::S, token: u64) -> Result<OwnedFd, Errno>;
    fn finish(&mut self, s: &Self::S) -> Result<(), Errno>;
    fn close(&mut self, s: Self::S);
    /// The emulated update between the stages (the kernel's is a kexec).
    fn update(&mut self) {}
}

/// luo's model with the kernel's handler set.
pub struct Model(pub Luo);

impl Model {
    pub fn new() -> Model {
        let mut luo = Luo::new(Limits::default());
        luo.register_handler(Box::new(MemfdHandler)).unwrap();
        Model(luo)
    }
}

fn errno(e: luo_core::Error) -> Errno {
    e.errno
}

impl Dev for Model {
    type S = SessionHandle;
    fn create(&mut self, name: &[u8]) -> Result<SessionHandle, Errno> {
        self.0.create_session(0, name).map_err(errno)
    }
    fn retrieve(&mut self, name: &[u8]) -> Result<SessionHandle, Errno> {
        self.0.retrieve_session(0, name).map_err(errno)
    }
    fn preserve(&mut self, s: &SessionHandle, fd: BorrowedFd<'_>, token: u64) -> Result<(), Errno> {
        let own = fd.try_clone_to_owned().map_err(Errno::from)?;
        self.0.preserve(*s, own, token).map_err(errno)
    }
    fn retrieve_fd(&mut self, s: &SessionHandle, token: u64) -> Result<OwnedFd, Errno> {
        self.0.retrieve_fd(*s, token).map_err(errno)
    }
    fn finish(&mut self, s: &SessionHandle) -> Result<(), Errno> {
        self.0.finish(*s).map_err(errno)
    }
    fn close(&mut self, s: SessionHandle) {
        self.0.close(s).unwrap();
    }
    fn update(&mut self) {
        self.0.update().unwrap();
    }
}

/// The kernel's device.
pub struct Kernel(pub OwnedFd);

impl Dev for Kernel {
    type S = OwnedFd;
    fn create(&mut self, name: &[u8]) -> Result<OwnedFd, Errno> {
        lu::create_session(self.0.as_fd(), name)
    }
    fn retrieve(&mut self, name: &[u8]) -> Result<OwnedFd, Errno> {
        lu::retrieve_session(self.0.as_fd(), name)
    }
    fn preserve(&mut self, s: &OwnedFd, fd: BorrowedFd<'_>, token: u64) -> Result<(), Errno> {
        lu::preserve_fd(s.as_fd(), fd, token)
    }
    fn retrieve_fd(&mut self, s: &OwnedFd, token: u64) -> Result<OwnedFd, Errno> {
        lu::retrieve_fd(s.as_fd(), token)
    }
    fn finish(&mut self, s: &OwnedFd) -> Result<(), Errno> {
        lu::finish(s.as_fd())
    }
    fn close(&mut self, s: OwnedFd) {
        drop(s);
    }
}

fn show<T>(r: &Result<T, Errno>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Files stage 1 keeps open (the device needs none of them, but the
/// model's sessions and the kernel's are what carry them).
#[allow(dead_code)] // held, never read: it keeps the sessions and files open
pub struct Kept<S> {
    pub sessions: Vec<S>,
    pub files: Vec<OwnedFd>,
}

/// Stage 1: outgoing sessions. Returns the lines to compare, and what must
/// stay open until the update.
pub fn stage1<D: Dev>(d: &mut D) -> (Vec<String>, Kept<D::S>) {
    let mut out = Vec::new();
    let mut line = |n: &str, r: String| out.push(format!("{n}: {r}"));
    let a = d.create(b"conf-a");
    line("create conf-a", show(&a));
    let a = a.unwrap();
    line("create conf-a again", show(&d.create(b"conf-a")));
    line("create with an empty name", show(&d.create(b"")));
    line(
        "create with 64 bytes and no NUL",
        show(&d.create(&[b'x'; 64])),
    );
    let max = d.create(&[b'A'; 63]);
    line("create with a 63-byte name", show(&max));
    if let Ok(s) = max {
        d.close(s);
    }
    let m1 = memfd(b"alpha");
    let m2 = memfd(b"bravo");
    let m3 = memfd(b"charlie");
    line(
        "preserve memfd 1 as token 1",
        show(&d.preserve(&a, m1.as_fd(), 1)),
    );
    line(
        "preserve memfd 1 again as token 2 (same session)",
        show(&d.preserve(&a, m1.as_fd(), 2)),
    );
    line(
        "preserve memfd 2 as token 1 (token used)",
        show(&d.preserve(&a, m2.as_fd(), 1)),
    );
    let opath = luo_sys::open_path(std::path::Path::new("/dev/null")).unwrap();
    line(
        "preserve an O_PATH fd as token 1 (token checked first)",
        show(&d.preserve(&a, opath.as_fd(), 1)),
    );
    line(
        "preserve an O_PATH fd as token 3",
        show(&d.preserve(&a, opath.as_fd(), 3)),
    );
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(luo_sys::reopen_path(m1.as_fd()))
        .unwrap();
    line(
        "preserve a re-open of memfd 1 (same inode) as token 4",
        show(&d.preserve(&a, reopened.as_fd(), 4)),
    );
    let null = std::fs::File::open("/dev/null").unwrap();
    line(
        "preserve /dev/null as token 5",
        show(&d.preserve(&a, null.as_fd(), 5)),
    );
    let efd = luo_sys::eventfd(0).unwrap();
    line(
        "preserve an eventfd as token 6",
        show(&d.preserve(&a, efd.as_fd(), 6)),
    );
    let b = d.create(b"conf-b").unwrap();
    line(
        "preserve memfd 1 in another session",
        show(&d.preserve(&b, m1.as_fd(), 1)),
    );
    line(
        "preserve memfd 2 as token 1 in another session",
        show(&d.preserve(&b, m2.as_fd(), 1)),
    );
    // Closing an outgoing session unpreserves its files.
    let c = d.create(b"conf-c").unwrap();
    line(
        "preserve memfd 3 in conf-c",
        show(&d.preserve(&c, m3.as_fd(), 1)),
    );
    d.close(c);
    line(
        "preserve memfd 3 in conf-a after conf-c closed",
        show(&d.preserve(&a, m3.as_fd(), 9)),
    );
    line(
        "create conf-c again after it closed",
        show(&d.create(b"conf-c").map(|s| d.close(s))),
    );
    let empty = d.create(b"conf-empty").unwrap();
    let dd = d.create(b"conf-d").unwrap();
    let m4 = memfd(b"delta");
    let m5 = memfd(b"echo");
    line(
        "preserve memfd 4 in conf-d",
        show(&d.preserve(&dd, m4.as_fd(), 1)),
    );
    line(
        "preserve memfd 5 in conf-d",
        show(&d.preserve(&dd, m5.as_fd(), 2)),
    );
    let kept = Kept {
        sessions: vec![a, b, empty, dd],
        files: vec![m1, m2, m3, m4, m5],
    };
    (out, kept)
}

/// Stage 2: incoming sessions, after the update.
pub fn stage2<D: Dev>(d: &mut D) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = |n: &str, r: String| out.push(format!("{n}: {r}"));
    line(
        "retrieve an unknown session",
        show(&d.retrieve(b"conf-none")),
    );
    let a = d.retrieve(b"conf-a");
    line("retrieve conf-a", show(&a));
    let a = a.unwrap();
    line("retrieve conf-a again", show(&d.retrieve(b"conf-a")));
    let f1 = d.retrieve_fd(&a, 1);
    line("retrieve token 1", show(&f1));
    let f1 = f1.unwrap();
    line("token 1 holds", read_text(&f1));
    // The same open file description shares its offset (kcmp may be
    // missing from the kernel: CONFIG_CHECKPOINT_RESTORE).
    let again = d.retrieve_fd(&a, 1).unwrap();
    let mut first = std::fs::File::from(f1.try_clone().unwrap());
    first.seek(SeekFrom::Start(3)).unwrap();
    let mut second = std::fs::File::from(again);
    let same = second.stream_position().unwrap() == 3;
    line(
        "retrieve token 1 again gives the same file",
        same.to_string(),
    );
    let cloexec = luo_sys::fcntl_getfd(f1.as_fd()).unwrap() & 1 != 0;
    line("the retrieved fd is close-on-exec", cloexec.to_string());
    line("retrieve an unknown token", show(&d.retrieve_fd(&a, 77)));
    let m = memfd(b"new");
    line(
        "preserve into an incoming session",
        show(&d.preserve(&a, m.as_fd(), 100)),
    );
    let n = d.create(b"conf-new").unwrap();
    line(
        "preserve a retrieved, unfinished file elsewhere",
        show(&d.preserve(&n, f1.as_fd(), 1)),
    );
    line(
        "retrieve a file from an outgoing session",
        show(&d.retrieve_fd(&n, 1)),
    );
    line("finish an outgoing session", show(&d.finish(&n)));
    let a2 = d.create(b"conf-a");
    line(
        "create an outgoing session named as an incoming one",
        show(&a2),
    );
    line("finish conf-a", show(&d.finish(&a)));
    line("finish conf-a again", show(&d.finish(&a)));
    line("retrieve token 9 after finish", show(&d.retrieve_fd(&a, 9)));
    line(
        "preserve the file after its session finished",
        show(&d.preserve(&n, f1.as_fd(), 1)),
    );
    d.close(a);
    line(
        "retrieve conf-a after finish and close",
        show(&d.retrieve(b"conf-a")),
    );
    let e = d.retrieve(b"conf-empty");
    line("retrieve the empty session", show(&e));
    line(
        "finish the empty session",
        show(&d.finish(e.as_ref().unwrap())),
    );
    d.close(e.unwrap());
    let dd = d.retrieve(b"conf-d").unwrap();
    let f4 = d.retrieve_fd(&dd, 1).map(|f| read_text(&f));
    line(
        "conf-d token 1 holds",
        f4.unwrap_or_else(|e| format!("{e:?}")),
    );
    line(
        "finish conf-d with token 2 never retrieved",
        show(&d.finish(&dd)),
    );
    line(
        "retrieve the discarded token 2",
        show(&d.retrieve_fd(&dd, 2)),
    );
    d.close(dd);
    let b = d.retrieve(b"conf-b").unwrap();
    let f2 = d.retrieve_fd(&b, 1).map(|f| read_text(&f));
    line(
        "conf-b token 1 holds",
        f2.unwrap_or_else(|e| format!("{e:?}")),
    );
    line("finish conf-b", show(&d.finish(&b)));
    d.close(b);
    d.close(n);
    if let Ok(s) = a2 {
        d.close(s);
    }
    out
}

/// What both stages print, on either device.
pub const EXPECTED: &[&str] = &[
    "create conf-a: ok",
    "create conf-a again: EEXIST",
    "create with an empty name: EINVAL",
    "create with 64 bytes and no NUL: EINVAL",
    "create with a 63-byte name: ok",
    "preserve memfd 1 as token 1: ok",
    "preserve memfd 1 again as token 2 (same session): EBUSY",
    "preserve memfd 2 as token 1 (token used): EEXIST",
    "preserve an O_PATH fd as token 1 (token checked first): EEXIST",
    "preserve an O_PATH fd as token 3: EBADF",
    "preserve a re-open of memfd 1 (same inode) as token 4: EBUSY",
    "preserve /dev/null as token 5: ENOENT",
    "preserve an eventfd as token 6: ENOENT",
    "preserve memfd 1 in another session: EBUSY",
    "preserve memfd 2 as token 1 in another session: ok",
    "preserve memfd 3 in conf-c: ok",
    "preserve memfd 3 in conf-a after conf-c closed: ok",
    "create conf-c again after it closed: ok",
    "preserve memfd 4 in conf-d: ok",
    "preserve memfd 5 in conf-d: ok",
    "--- update ---",
    "retrieve an unknown session: ENOENT",
    "retrieve conf-a: ok",
    "retrieve conf-a again: EINVAL",
    "retrieve token 1: ok",
    "token 1 holds: alpha",
    "retrieve token 1 again gives the same file: true",
    "the retrieved fd is close-on-exec: true",
    "retrieve an unknown token: ENOENT",
    "preserve into an incoming session: EINVAL",
    "preserve a retrieved, unfinished file elsewhere: EBUSY",
    "retrieve a file from an outgoing session: EINVAL",
    "finish an outgoing session: EINVAL",
    "create an outgoing session named as an incoming one: ok",
    "finish conf-a: ok",
    "finish conf-a again: ok",
    "retrieve token 9 after finish: ENOENT",
    "preserve the file after its session finished: ok",
    "retrieve conf-a after finish and close: ENOENT",
    "retrieve the empty session: ok",
    "finish the empty session: ok",
    "conf-d token 1 holds: delta",
    "finish conf-d with token 2 never retrieved: ok",
    "retrieve the discarded token 2: ENOENT",
    "conf-b token 1 holds: bravo",
    "finish conf-b: ok",
];

/// Kernel-only checks of the uAPI's dispatch rules (kernel-luo.md 2.2),
/// through luo-sys's raw ioctl: what luo's binding and the preload library
/// must reproduce.
pub fn uapi_rules(dev: BorrowedFd<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = |n: &str, r: Result<i32, Errno>| {
        out.push(format!("uapi {n}: {}", show(&r)));
    };
    line(
        "second open of the device",
        lu::open_device(std::path::Path::new(lu::DEVICE)).map(|f| f.as_raw_fd()),
    );
    let mut create = [0u8; 72];
    create[..4].copy_from_slice(&72u32.to_ne_bytes());
    create[8..8 + 9].copy_from_slice(b"uapi-rule");
    let mut small = create;
    small[..4].copy_from_slice(&71u32.to_ne_bytes());
    line(
        "create with size 71",
        lu::raw_ioctl(dev, lu::CREATE_SESSION as u64, &mut small),
    );
    let mut big = [0u8; 80];
    big[..72].copy_from_slice(&create);
    big[..4].copy_from_slice(&80u32.to_ne_bytes());
    big[76] = 1;
    line(
        "create with size 80 and a non-zero tail",
        lu::raw_ioctl(dev, lu::CREATE_SESSION as u64, &mut big),
    );
    line(
        "a session ioctl on the device",
        lu::raw_ioctl(dev, lu::SESSION_FINISH as u64, &mut create.clone()),
    );
    line(
        "create with a wrong encoding (_IOW)",
        lu::raw_ioctl(
            dev,
            (lu::CREATE_SESSION as u64) | (1 << 30) | (72 << 16),
            &mut create.clone(),
        ),
    );
    line(
        "create with a NULL argument",
        lu::null_ioctl(dev, lu::CREATE_SESSION as u64),
    );
    let mut zero_tail = [0u8; 80];
    zero_tail[..72].copy_from_slice(&create);
    zero_tail[..4].copy_from_slice(&80u32.to_ne_bytes());
    let r = lu::raw_ioctl(dev, lu::CREATE_SESSION as u64, &mut zero_tail);
    line("create with size 80 and a zero tail", r);
    // That session fd stays open in this process (taking ownership of a raw
    // fd number needs unsafe code); it only shows in /proc.
    let fd = i32::from_ne_bytes(zero_tail[4..8].try_into().unwrap());
    let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let cloexec = flags
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|f| f & 0o2_000_000 != 0);
    out.push(format!("uapi the session fd is close-on-exec: {cloexec}"));
    let s = lu::create_session(dev, b"uapi-rule-2").unwrap();
    let mut finish = [0u8; 8];
    finish[..4].copy_from_slice(&8u32.to_ne_bytes());
    let r = lu::raw_ioctl(s.as_fd(), lu::SESSION_FINISH as u64, &mut finish);
    out.push(format!("uapi finish on an outgoing session: {}", show(&r)));
    let name = lu::get_name(s.as_fd());
    out.push(format!(
        "uapi get_name: {}",
        name.map_or_else(
            |e| format!("{e:?}"),
            |n| String::from_utf8_lossy(&n).into_owned()
        )
    ));
    out
}

/// What [`uapi_rules`] prints on a Linux 7.2 kernel.
pub const EXPECTED_UAPI: &[&str] = &[
    "uapi second open of the device: EBUSY",
    "uapi create with size 71: EINVAL",
    "uapi create with size 80 and a non-zero tail: E2BIG",
    "uapi a session ioctl on the device: EINVAL",
    "uapi create with a wrong encoding (_IOW): ENOTTY",
    "uapi create with a NULL argument: EFAULT",
    "uapi create with size 80 and a zero tail: ok",
    "uapi the session fd is close-on-exec: true",
    "uapi finish on an outgoing session: EINVAL",
    "uapi get_name: uapi-rule-2",
];
