//! `AF_UNIX` sockets of any type; carried across a restart, not across a kexec.


use luo_sys::sock;

use crate::handler::{Descriptor, FileHandler, FileInfo, Kexec};
use crate::identity::IdentityKind;

/// `AF_UNIX` sockets of any type; carried across a restart, not across a kexec.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixSocketHandler;

impl FileHandler for UnixSocketHandler {
    fn compatible(&self) -> &str {
        "luo-unix-socket-v1"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("unix-socket"),
            identity: IdentityKind::OpenFile,
            kexec: Kexec::Lost(super::SOCKET_LOST),
            pins_memory: false,
        }
    }
    fn retrieves_custody(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_socket()
            && file.socket_domain() == Ok(sock::AF_UNIX)
    }
}
