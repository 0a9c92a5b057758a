//! In-place upgrade: the agent re-executes itself (same pid) with every
//! descriptor kept open, and its state in a sealed memfd.
//!
//! The old image writes the state (the model, the connections with their
//! pending replies, the kernel backend's sessions), seals it, clears
//! `FD_CLOEXEC` on every descriptor the state names and `exec`s the new
//! binary with `--upgrade-state FD`. Before that it asks the new binary
//! (`--upgrade-probe`) which state versions it reads, and refuses when ours
//! is not among them: the old agent keeps running. The new image checks the
//! envelope, then that every descriptor is the file the state says it is
//! (`st_dev`, `st_ino`), before it takes any over; if anything is wrong it
//! goes back to the old binary (`--upgrade-fallback FD`, an open descriptor
//! of it), which reads its own state.
//!
//! This module holds the request (`try_upgrade`: probe, write, seal,
//! `exec`); `codec.rs` the state's layout, `probe.rs` the `--upgrade-probe`
//! answer and check, and `resume.rs` the new image taking over (or going
//! back).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use luo_proto::ops::Upgrade;
use luo_proto::{Errno, Error};
use tracing::{error, info, warn};

use super::{kernel, Agent};
use crate::registry::seal;
use crate::store::Sink;

pub(crate) mod codec;
mod probe;
mod resume;

use codec::MAGIC;
pub use codec::STATE_VERSION;
use probe::probe;
pub use probe::probe_answer;
pub use resume::{fall_back, resume};

/// The command-line flags of an upgraded image, and their values.
pub const STATE_FLAG: &str = "--upgrade-state";
/// See [`STATE_FLAG`].
pub const FALLBACK_FLAG: &str = "--upgrade-fallback";
/// The binary an upgrade executes by default: the one this process runs,
/// at its path now (a package upgrade replaces the file; `/proc/self/exe`
/// then says "(deleted)").
fn current_binary() -> Result<PathBuf, Error> {
    let p = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::new(Errno::from(e), "reading /proc/self/exe failed"))?;
    let s = p.to_string_lossy();
    Ok(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}
/// Arguments for the new image: ours without the previous upgrade's flags,
/// plus the state and fallback descriptors.
fn next_args(binary: &Path, state: RawFd, fallback: RawFd) -> Vec<String> {
    let mut args = vec![binary.to_string_lossy().into_owned()];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == STATE_FLAG || a == FALLBACK_FLAG {
            it.next();
            continue;
        }
        args.push(a);
    }
    args.extend([
        STATE_FLAG.to_string(),
        state.to_string(),
        FALLBACK_FLAG.to_string(),
        fallback.to_string(),
    ]);
    args
}

impl Agent {
    /// Every descriptor the state carries (the custody files' only with
    /// `custody`); `f` sees each once.
    fn carried(&self, custody: bool, mut f: impl FnMut(BorrowedFd<'_>)) {
        f(self.listener.as_fd());
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let c = &self.conns[&k];
            f(c.fd.as_fd());
            for o in &c.outbox {
                for d in &o.fds {
                    f(d.as_fd());
                }
            }
        }
        if let Some(k) = &self.kernel {
            kernel::lock(k).for_each_fd(&mut f);
        }
        if let Some(Sink::Keeper { link, .. }) = self.mirror.as_ref().map(|m| &m.sink) {
            f(link.as_fd());
        }
        if custody {
            for d in self.luo.custody_fds() {
                f(d);
            }
        }
    }

    /// Sets or clears `FD_CLOEXEC` on every descriptor the state carries;
    /// the first failure (every descriptor is still tried). A descriptor
    /// left close-on-exec would be missing in the new image, which then
    /// refuses the state and exits: the upgrade must be refused instead.
    fn set_carried_cloexec(&self, on: bool) -> Result<(), Errno> {
        let mut first = Ok(());
        self.carried(false, |fd| {
            if let Err(e) = luo_sys::set_cloexec(fd, on) {
                first = first.and(Err(e));
            }
        });
        // One fcntl per custody file, and there may be a million: two threads.
        let all: Vec<BorrowedFd<'_>> = self.luo.custody_fds().collect();
        let (a, b) = all.split_at(all.len() / 2);
        let set = |part: &[BorrowedFd<'_>]| {
            let mut first = Ok(());
            for fd in part {
                if let Err(e) = luo_sys::set_cloexec(*fd, on) {
                    first = first.and(Err(e));
                }
            }
            first
        };
        let (ra, rb) = std::thread::scope(|s| {
            let t = s.spawn(|| set(b));
            let ra = set(a);
            (ra, t.join().unwrap_or(Err(Errno::EINVAL)))
        });
        first.and(ra).and(rb)
    }
    /// The `upgrade` request: re-executes the agent as `binary` (default:
    /// the binary at this process's path). Returns only when the upgrade
    /// was refused before `exec`, or `exec` failed (the error to answer);
    /// the agent then carries on unchanged.
    pub(super) fn upgrade(&mut self, key: u64, uid: u32, r: Upgrade) -> Error {
        match self.try_upgrade(key, uid, r) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_upgrade(
        &mut self,
        key: u64,
        uid: u32,
        r: Upgrade,
    ) -> Result<std::convert::Infallible, Error> {
        if uid != 0 && uid != self.euid {
            return Err(Error::new(
                Errno::EPERM,
                format!(
                    "only root or uid {} (the agent's) may upgrade the agent; you are uid {uid}",
                    self.euid
                ),
            ));
        }
        let binary = match r.binary {
            None => current_binary()?,
            Some(b) => PathBuf::from(b),
        };
        probe(&binary)?;
        let started = Instant::now();
        let previous = format!("luod {}", env!("CARGO_PKG_VERSION"));
        let state = self.state(key, &previous)?;
        let bytes = seal(MAGIC, STATE_VERSION, &state);
        let memfd = luo_sys::memfd_create("luod-upgrade-state", luo_sys::mfd::ALLOW_SEALING)
            .map_err(|e| Error::new(e, "creating the state memfd failed"))?;
        let f = std::fs::File::from(memfd);
        luo_sys::write_all(f.as_fd(), &bytes)
            .map_err(|e| Error::new(e, "writing the state failed"))?;
        use luo_sys::seal::*;
        luo_sys::add_seals(f.as_fd(), SEAL | SHRINK | GROW | WRITE)
            .map_err(|e| Error::new(e, "sealing the state failed"))?;
        let fallback = std::fs::File::open("/proc/self/exe")
            .map_err(|e| Error::new(Errno::from(e), "opening the running binary failed"))?;
        let args = next_args(&binary, f.as_raw_fd(), fallback.as_raw_fd());
        let carried = luo_sys::set_cloexec(f.as_fd(), false)
            .and_then(|()| luo_sys::set_cloexec(fallback.as_fd(), false))
            .and_then(|()| self.set_carried_cloexec(false));
        if let Err(e) = carried {
            // Back as it was: nothing is carried anywhere.
            if let Err(again) = self.set_carried_cloexec(true) {
                warn!("making descriptors close-on-exec again failed too ({again})");
            }
            return Err(Error::new(
                e,
                format!(
                    "preparing the descriptors for the new image failed ({e}); the agent keeps running"
                ),
            ));
        }
        info!(
            "upgrading in place to {} ({} bytes of state, {} custody descriptors, prepared in {} us)",
            binary.display(),
            bytes.len(),
            self.luo.custody_count(),
            started.elapsed().as_micros()
        );
        let e = luo_sys::exec(&binary, &args);
        // Still here: nothing changed.
        if let Err(again) = self.set_carried_cloexec(true) {
            warn!("making descriptors close-on-exec again failed ({again})");
        }
        error!(
            "exec of {} failed: {e}; the agent keeps running",
            binary.display()
        );
        Err(Error::new(
            e,
            format!(
                "exec of {} failed ({e}); the agent keeps running",
                binary.display()
            ),
        ))
    }
}
