//! `AF_INET`/`AF_INET6` datagram sockets (UDP); carried across a restart, not
//! across a kexec.


use luo_sys::sock;

use crate::handler::{Descriptor, FileHandler, FileInfo, Kexec};
use crate::identity::IdentityKind;

/// `AF_INET`/`AF_INET6` datagram sockets (UDP); carried across a restart, not
/// across a kexec.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpSocketHandler;

impl FileHandler for UdpSocketHandler {
    fn compatible(&self) -> &str {
        "luo-udp-socket-v1"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("udp-socket"),
            identity: IdentityKind::OpenFile,
            kexec: Kexec::Lost(super::SOCKET_LOST),
            pins_memory: false,
        }
    }
    fn retrieves_custody(&self) -> bool {
        true
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        // The family first: a Unix socket is told apart in one call.
        file.stat.is_socket()
            && file
                .socket_domain()
                .is_ok_and(|d| d == sock::AF_INET || d == sock::AF_INET6)
            && file
                .socket_kind()
                .is_ok_and(|k| k.ty == sock::SOCK_DGRAM && k.protocol == sock::IPPROTO_UDP)
    }
}
