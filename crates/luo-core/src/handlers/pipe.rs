//! Pipe ends and FIFOs; carried across a restart, not across a kexec.



use crate::handler::{Descriptor, FileHandler, FileInfo, Kexec};
use crate::identity::IdentityKind;

/// Pipe ends and FIFOs; carried across a restart, not across a kexec.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipeHandler;

impl FileHandler for PipeHandler {
    fn compatible(&self) -> &str {
        "luo-pipe-v1"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("pipe"),
            identity: IdentityKind::OpenFile,
            kexec: Kexec::Lost(
                "a pipe and its buffered data are kernel objects that no LUO handler preserves",
            ),
            pins_memory: false,
        }
    }
    fn retrieves_custody(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_fifo()
    }
}
