//! memfd: the kernel's handler (`memfd-v2`), kexec-safe, identified by inode.



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
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_regular()
            && file.stat.nlink == 0
            && luo_sys::fstatfs_type(file.fd) == Ok(luo_sys::TMPFS_MAGIC)
    }
}
