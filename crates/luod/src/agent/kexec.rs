//! `kexec`: the preflight and the kernel live update itself
//! (`kexec_file_load`, the registry, `reboot(LINUX_REBOOT_CMD_KEXEC)`).

use std::os::fd::{AsFd, OwnedFd};

use luo_core::handler::{self, Descriptor};
use luo_core::SessionState;
use luo_proto::ops::{Kexec, KexecReply};
use luo_proto::types::{page_preflight, LostFile, Preflight, PreflightSession};
use luo_proto::{Errno, Error};
use luo_sys::liveupdate as lu;
use tracing::{error, info, warn};

use super::ops::reply;
use super::{kernel, Agent, Reply};
use crate::Backend;

fn has_liveupdate_on(cmdline: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| {
        w.strip_prefix("liveupdate=")
            .is_some_and(|v| matches!(v, "on" | "1" | "y" | "Y" | "yes" | "true" | "On" | "ON"))
    })
}

impl Agent {
    /// Why a file of this handler does not survive a kexec, as the handler
    /// says.
    fn why_lost(&self, handler: &str) -> &'static str {
        let d = self.luo.handler_descriptor(handler).unwrap_or_default();
        match d.kexec {
            handler::Kexec::Lost(why) => why,
            // Not reached: only files that are not kexec-safe are asked about.
            handler::Kexec::Safe => Descriptor::NO_KERNEL_HANDLER,
        }
    }

    /// What a kexec now would carry and lose, as the `preflight` object of
    /// docs/protocol.md, and the problems that refuse it without `force`.
    fn preflight(&self, cmdline: &str, kernel_bytes: u64, initrd_bytes: Option<u64>) -> Preflight {
        let mut problems: Vec<String> = Vec::new();
        let mut sessions = Vec::new();
        let (mut carried, mut lost) = (0u64, 0u64);
        let mut carried_bytes = 0u64;
        for s in self.luo.sessions() {
            if s.state == SessionState::Finished {
                continue;
            }
            let mut lost_files = Vec::new();
            let mut n = 0u64;
            for f in &s.files {
                if f.kexec_safe {
                    n += 1;
                    carried_bytes += f.pinned;
                } else {
                    lost_files.push(LostFile {
                        token: f.token,
                        handler: f.handler.clone(),
                        why: self.why_lost(&f.handler).into(),
                    });
                }
            }
            carried += n;
            lost += lost_files.len() as u64;
            sessions.push(PreflightSession {
                owner: s.owner,
                name: String::from_utf8_lossy(&s.name).into_owned(),
                state: s.state,
                files: s.files.len() as u64,
                carried: n,
                bytes: s.pinned_bytes,
                lost: lost_files,
                continued: false,
            });
        }
        if lost > 0 {
            problems.push(format!(
                "{lost} files cannot cross a kexec (listed under their sessions) and would be lost; their services must recreate them after the update"
            ));
        }
        let current = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let current_on = has_liveupdate_on(&current);
        let next_on = has_liveupdate_on(cmdline);
        if !next_on {
            problems.push(
                "the next kernel's command line lacks liveupdate=on: it would not take over the preserved sessions, and every file would be lost"
                    .to_string(),
            );
        }
        if self.backend != Backend::Kernel {
            problems.push(
                "luod runs on the emulated backend: nothing it holds can cross a kexec (start it with --backend kernel on a kernel booted with liveupdate=on)"
                    .to_string(),
            );
        }
        Preflight {
            backend: self.backend.as_str().into(),
            epoch: self.luo.epoch(),
            liveupdate_device: self.kernel.is_some(),
            current_cmdline_liveupdate: current_on,
            cmdline: cmdline.into(),
            next_cmdline_liveupdate: next_on,
            kernel_bytes,
            initrd_bytes,
            kernel_sessions: self
                .kernel
                .as_ref()
                .map(|k| kernel::lock(k).open_parts() as u64),
            sessions,
            carried_files: carried,
            carried_bytes,
            lost_files: lost,
            problems,
            session_count: None,
            fingerprint: None,
            next: None,
        }
    }

    /// The `kexec` request: a preflight (`dry_run`), or the live update.
    /// On success the machine reboots into the new kernel and no reply is
    /// sent; a failure is answered with the kernel's errno and nothing
    /// changes.
    pub(super) fn kexec(&mut self, uid: u32, r: Kexec, fds: Vec<OwnedFd>) -> Result<Reply, Error> {
        if uid != 0 {
            return Err(Error::new(
                Errno::EPERM,
                format!("only root may run a kernel live update (it reboots the machine); you are uid {uid}"),
            ));
        }
        let Kexec {
            cmdline,
            initrd: want_initrd,
            dry_run,
            force,
            start,
        } = r;
        if start.is_some() && !dry_run {
            return Err(Error::new(
                Errno::EINVAL,
                "'start' pages the preflight: it needs 'dry_run'",
            ));
        }
        if fds.len() != 1 + usize::from(want_initrd) {
            return Err(Error::new(
                Errno::EINVAL,
                format!(
                    "'kexec' takes the kernel image's descriptor{}, not {} descriptors; they were closed",
                    if want_initrd { " and the initrd's" } else { "" },
                    fds.len()
                ),
            ));
        }
        let size = |i: usize| luo_sys::fstat(fds[i].as_fd()).map(|s| s.size);
        let kernel_bytes = size(0).map_err(|e| Error::new(e, "the kernel image cannot be read"))?;
        let initrd_bytes = if want_initrd {
            Some(size(1).map_err(|e| Error::new(e, "the initrd cannot be read"))?)
        } else {
            None
        };
        let report = self.preflight(&cmdline, kernel_bytes, initrd_bytes);
        if dry_run {
            // Paged: at 2,000 sessions, or 16,000 sockets in one, the whole
            // preflight is several messages long.
            let preflight = Some(page_preflight(report, start.unwrap_or(0))?);
            return reply::<Kexec>(KexecReply { preflight }, vec![]);
        }
        let Some(k) = self.kernel.clone() else {
            return Err(Error::new(
                Errno::EOPNOTSUPP,
                "luod runs on the emulated backend, which cannot carry anything across a kexec; start it with --backend kernel on a kernel booted with liveupdate=on (luoctl update, without --kexec, is the emulated update)",
            ));
        };
        let problems = report.problems;
        if !problems.is_empty() && !force {
            return Err(Error::new(
                Errno::ECANCELED,
                format!(
                    "the live update was not started: {}; run the preflight (--dry-run) to see every file, or pass --force to accept the loss",
                    problems.join("; ")
                ),
            ));
        }
        let initrd = if want_initrd {
            Some(fds[1].as_fd())
        } else {
            None
        };
        lu::kexec_file_load(fds[0].as_fd(), initrd, &cmdline).map_err(|e| {
            let hint = match e {
                Errno::EPERM => "luod lacks CAP_SYS_BOOT, or kexec is disabled (kernel.kexec_load_disabled)",
                Errno::ENOEXEC => "the file is not a kernel image this kernel can boot (a bzImage built with CONFIG_RELOCATABLE)",
                Errno::EADDRNOTAVAIL => "the images do not fit in KHO scratch memory; boot the current kernel with a larger kho_scratch=",
                Errno::EKEYREJECTED => "the image's signature was rejected (kexec signature enforcement)",
                Errno::EBUSY => "another kexec is being loaded",
                _ => "see dmesg",
            };
            Error::new(e, format!("kexec_file_load refused the new kernel ({e}): {hint}; nothing changed"))
        })?;
        let registry = kernel::registry(&self.luo, &kernel::lock(&k));
        let files: usize = registry.sessions.iter().map(|s| s.files.len()).sum();
        let reg_session = match kernel::lock(&k).preserve_registry(&registry) {
            Ok(s) => s,
            Err((e, what)) => {
                let _ = lu::kexec_file_unload();
                return Err(Error::new(e, format!("{what} ({e}); nothing changed")));
            }
        };
        warn!(
            "kernel live update: {} sessions with {files} files in the registry (epoch {}); rebooting into the new kernel ({} bytes, command line {:?})",
            registry.sessions.len(),
            registry.epoch,
            kernel_bytes,
            cmdline
        );
        // Returns only if the kernel refused, e.g. a failed freeze.
        let e = lu::reboot_kexec();
        drop(reg_session);
        let _ = lu::kexec_file_unload();
        error!("the kernel refused the live update: reboot(LINUX_REBOOT_CMD_KEXEC) failed with {e}; every session is as it was");
        info!("the loaded kernel image was unloaded");
        Err(Error::new(
            e,
            format!(
                "the kernel refused the live update: reboot(LINUX_REBOOT_CMD_KEXEC) failed ({e}), for example because a preserved file could not be frozen; nothing changed and every session is still open"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::has_liveupdate_on;

    #[test]
    fn liveupdate_on_is_found_as_the_kernel_parses_it() {
        assert!(has_liveupdate_on("console=ttyS0 liveupdate=on quiet"));
        assert!(has_liveupdate_on("liveupdate=1"));
        assert!(!has_liveupdate_on("console=ttyS0 quiet"));
        assert!(!has_liveupdate_on("liveupdate"));
        assert!(!has_liveupdate_on("liveupdate=off"));
        assert!(!has_liveupdate_on("noliveupdate=on"));
    }
}
