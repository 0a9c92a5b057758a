//! `AF_INET`/`AF_INET6` stream sockets (TCP), listening or connected; carried
//! across a restart, not across a kexec.

use std::os::fd::OwnedFd;

use luo_sys::sock;
use luo_sys::Errno;

use crate::handler::{Descriptor, FileHandler, FileInfo, FileOpArgs, Kexec};
use crate::identity::IdentityKind;

/// `AF_INET`/`AF_INET6` stream sockets (TCP), listening or connected; carried
/// across a restart, not across a kexec.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpSocketHandler;

impl FileHandler for TcpSocketHandler {
    fn compatible(&self) -> &str {
        "luo-tcp-socket-v1"
    }
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            type_name: Some("tcp-socket"),
            identity: IdentityKind::OpenFile,
            kexec: Kexec::Lost(
                "a socket lives in the kernel's network stack, which a kexec starts afresh: reopen or re-listen after the update",
            ),
            pins_memory: false,
        }
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        file.stat.is_socket()
            && luo_sys::socket_kind(file.fd).is_ok_and(|k| {
                (k.domain == sock::AF_INET || k.domain == sock::AF_INET6)
                    && k.ty == sock::SOCK_STREAM
                    && k.protocol == sock::IPPROTO_TCP
            })
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        // The file itself stays open across a restart: a new descriptor of
        // the same open file.
        Ok(args.file.try_clone_to_owned()?)
    }
}
