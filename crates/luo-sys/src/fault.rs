//! Fault injection at the system-call layer: with the `fault-injection`
//! feature (test builds only; never in release builds or the Debian
//! package), the Nth call of a chosen kind in a chosen process fails once
//! with a chosen errno, before the kernel is asked. The wrappers that luod
//! and its keeper use each start with one [`hit`] (the `fault!` macro in
//! `lib.rs`); without the feature that line compiles to nothing.
//!
//! Configured from the environment, so that it reaches luod, the image an
//! in-place upgrade executes and the keeper luod spawns, all alike:
//!
//! - `LUO_FAULT=ROLE:KIND:N:ERRNO`, e.g. `keeper:send:3:EPIPE`: in the
//!   process of role `ROLE` (`luod`, `upgraded` for the image an in-place
//!   upgrade started, `keeper`, or `*`), the `N`th call of `KIND` (see
//!   [`Kind`]) fails with `ERRNO`, once. Logged on stderr when it does.
//! - `LUO_FAULT_DIR=DIR`: calls are counted (and the fault fires) only while
//!   the file `DIR/armed` exists, so that a test counts the calls of the
//!   request it sends and not those of the agent's start; each process
//!   writes its counts to `DIR/ROLE.PID` (`KIND N` lines, and `fired` once
//!   its fault fired) after each counted call.
//!
//! A process takes part once it says its role with [`init`]; calls made
//! before that are neither counted nor failed. With `LUO_FAULT_DIR`, an
//! image that the process `exec`s (an in-place upgrade going back to the
//! previous binary) carries on from the counts file of its role and pid:
//! the fault still fires once per process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::{Errno, Result};

#[cfg(not(debug_assertions))]
compile_error!(
    "luo-sys's `fault-injection` feature is for test builds: it makes system \
     calls fail on request from the environment, which no release build may do"
);

macro_rules! kinds {
    ($($kind:ident => $name:literal: $doc:literal,)*) => {
        /// What a wrapper's system call is, for choosing which to fail.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $(#[doc = $doc] $kind,)*
        }

        impl Kind {
            /// Every kind, in the order the counts file lists them.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// Its name in `LUO_FAULT` and in the counts file.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }

            /// The kind named `name`.
            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.name() == name)
            }
        }
    };
}

kinds! {
    Send => "send": "`sendmsg` (with or without descriptors).",
    Recv => "recv": "`recvmsg`.",
    Socket => "socket": "`socket`, `socketpair` (so every wrapper that makes a socket to connect, listen or notify).",
    Accept => "accept": "`accept4`.",
    Epoll => "epoll": "`epoll_create1`, `epoll_ctl`.",
    EpollWait => "epoll_wait": "`epoll_wait` (whose only plausible failure is `EINTR`).",
    Memfd => "memfd": "`memfd_create`.",
    Fstat => "fstat": "`fstat`, `fstatfs`.",
    Fcntl => "fcntl": "`fcntl` (flags, seals, `F_DUPFD_QUERY`).",
    Kcmp => "kcmp": "`kcmp(KCMP_FILE)`.",
    Write => "write": "`write` of a whole buffer ([`crate::write_all`]).",
    Read => "read": "`pread` of a whole file ([`crate::read_all`]).",
    Fdinfo => "fdinfo": "`openat` of a descriptor's fdinfo ([`crate::FdinfoDir::eventfd`]).",
}

struct State {
    role: String,
    /// This process's fault: kind, which call (from 1), errno.
    target: Option<(Kind, u64, Errno)>,
    fired: bool,
    dir: Option<PathBuf>,
    counts: [u64; Kind::ALL.len()],
}

/// Set once [`init`] found something to do: the wrappers' fast path.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Parses `ROLE:KIND:N:ERRNO`.
fn parse(spec: &str) -> std::result::Result<(String, Kind, u64, Errno), String> {
    let bad = || format!("LUO_FAULT={spec:?}: expected ROLE:KIND:N:ERRNO, e.g. luod:send:3:EPIPE");
    let parts: Vec<&str> = spec.split(':').collect();
    let [role, kind, n, errno] = parts[..] else {
        return Err(bad());
    };
    let kind = Kind::from_name(kind).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!(
            "LUO_FAULT: unknown kind {kind:?} (one of {})",
            names.join(", ")
        )
    })?;
    let n: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let errno =
        Errno::from_name(errno).ok_or_else(|| format!("LUO_FAULT: unknown errno {errno:?}"))?;
    Ok((role.to_string(), kind, n, errno))
}

/// Makes this process take part as `role` (`luod`, `upgraded`, `keeper`)
/// when `LUO_FAULT` or `LUO_FAULT_DIR` is set. A malformed `LUO_FAULT` is
/// an error (a sweep that silently injects nothing proves nothing).
pub fn init(role: &str) -> std::result::Result<(), String> {
    let spec = std::env::var("LUO_FAULT").ok().filter(|s| !s.is_empty());
    let dir = std::env::var_os("LUO_FAULT_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    if spec.is_none() && dir.is_none() {
        return Ok(());
    }
    let target = match spec {
        Some(s) => {
            let (who, kind, n, errno) = parse(&s)?;
            (who == role || who == "*").then_some((kind, n, errno))
        }
        None => None,
    };
    let mut counts = [0; Kind::ALL.len()];
    let mut fired = false;
    if let Some(d) = &dir {
        let previous = d.join(format!("{role}.{}", std::process::id()));
        for line in std::fs::read_to_string(previous)
            .unwrap_or_default()
            .lines()
        {
            match line.split_once(' ') {
                Some((k, n)) => {
                    if let (Some(k), Ok(n)) = (Kind::from_name(k), n.parse()) {
                        counts[k as usize] = n;
                    }
                }
                None => fired |= line == "fired",
            }
        }
    }
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(State {
        role: role.to_string(),
        target,
        fired,
        dir,
        counts,
    });
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Counts one call of `kind`, and fails it when it is the chosen one.
pub(crate) fn hit(kind: Kind) -> Result<()> {
    if !ACTIVE.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = guard.as_mut() else {
        return Ok(());
    };
    if let Some(dir) = &s.dir {
        if !dir.join("armed").exists() {
            return Ok(());
        }
    }
    let n = {
        let c = &mut s.counts[kind as usize];
        *c += 1;
        *c
    };
    let fire = !s.fired && s.target.is_some_and(|(k, at, _)| k == kind && at == n);
    if fire {
        s.fired = true;
    }
    if let Some(dir) = &s.dir {
        let mut text = String::new();
        for k in Kind::ALL {
            text.push_str(&format!("{} {}\n", k.name(), s.counts[*k as usize]));
        }
        if s.fired {
            text.push_str("fired\n");
        }
        let path = dir.join(format!("{}.{}", s.role, std::process::id()));
        let _ = std::fs::write(path, text);
    }
    match s.target {
        Some((_, _, errno)) if fire => {
            eprintln!(
                "luo-sys fault injection: {} (pid {}): {} call {n} fails with {errno}",
                s.role,
                std::process::id(),
                kind.name(),
            );
            Err(errno)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let (role, kind, n, e) = parse("keeper:send:3:EPIPE").unwrap();
        assert_eq!(
            (role.as_str(), kind, n, e),
            ("keeper", Kind::Send, 3, Errno::EPIPE)
        );
        for bad in [
            "",
            "luod:send:3",
            "luod:nope:1:EPIPE",
            "luod:send:0:EPIPE",
            "luod:send:1:EWHAT",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
