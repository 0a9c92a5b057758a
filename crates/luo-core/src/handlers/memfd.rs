//! memfd: the kernel's handler (`memfd-v2`), kexec-safe, identified by inode.



use std::os::fd::AsFd;
use std::sync::OnceLock;

use crate::handler::{Descriptor, FileHandler, FileInfo, Kexec};
use crate::identity::IdentityKind;

/// memfd: the kernel's handler (`memfd-v2`), kexec-safe, identified by inode.
///
/// Accepts unlinked shmem files (`memfd_create` without `MFD_HUGETLB`), as the
/// kernel's `memfd_luo_can_preserve` does; a hugetlb memfd has no handler and
/// is refused with `ENOENT`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemfdHandler;

impl FileHandler for MemfdHandler {
    fn compatible(&self) -> &str {
        "memfd-v2"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("memfd"),
            // A re-open through /proc/self/fd/N is the same memfd.
            identity: IdentityKind::Inode,
            kexec: Kexec::Safe,
            pins_memory: true,
        }
    }
    fn retrieves_custody(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_regular()
            && file.stat.nlink == 0
            && (Some(file.stat.dev) == shm_dev()
                || luo_sys::fstatfs_type(file.fd) == Ok(luo_sys::TMPFS_MAGIC))
    }
}

/// The device of the kernel's internal shmem mount, where every memfd
/// without `MFD_HUGETLB` lives. That mount is never unmounted, so its
/// device number means tmpfs for the kernel's life and a memfd needs no
/// `fstatfs` of its own. (Not a cache of any device: another device number
/// can be freed and reused by a mount of another type.)
fn shm_dev() -> Option<u64> {
    static DEV: OnceLock<Option<u64>> = OnceLock::new();
    *DEV.get_or_init(|| {
        let fd = luo_sys::memfd_create("luo-shm-probe", 0).ok()?;
        let dev = luo_sys::fstat(fd.as_fd()).ok()?.dev;
        (luo_sys::fstatfs_type(fd.as_fd()) == Ok(luo_sys::TMPFS_MAGIC)).then_some(dev)
    })
}
