//! eventfds, which share one anonymous inode, so their identity is the open
//! file; carried across a restart, not across a kexec.



use crate::handler::{Descriptor, FileHandler, FileInfo, Kexec};
use crate::identity::IdentityKind;

/// eventfds, which share one anonymous inode, so their identity is the open
/// file; carried across a restart, not across a kexec.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventfdHandler;

impl FileHandler for EventfdHandler {
    fn compatible(&self) -> &str {
        "luo-eventfd-v1"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("eventfd"),
            identity: IdentityKind::OpenFile,
            kexec: Kexec::Lost(
                "an eventfd's counter lives in kernel memory that no LUO handler preserves",
            ),
            pins_memory: false,
        }
    }
    fn retrieves_custody(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        // Anonymous-inode files have no file type bits in st_mode.
        file.stat.mode & 0o170000 == 0 && file.is_eventfd() == Ok(true)
    }
}
