//! The built-in file handlers, one file per file type.
//!
//! Adding a file type is one new file here, with a handler that says what
//! it is ([`FileHandler::descriptor`]: its short type name, its identity,
//! whether its files cross a kexec and if not why) and does the per-file
//! work, plus one line in [`BUILTIN`] that registers it.

use crate::handler::{Descriptor, FileHandler};

mod eventfd;
mod memfd;
mod pipe;
mod tcp_socket;
mod udp_socket;
mod unix_socket;

pub use eventfd::EventfdHandler;
pub use memfd::MemfdHandler;
pub use pipe::PipeHandler;
pub use tcp_socket::TcpSocketHandler;
pub use udp_socket::UdpSocketHandler;
pub use unix_socket::UnixSocketHandler;

/// The built-in handlers in their registration order (the first whose
/// `can_preserve` accepts a file wins): memfd, the kernel's, first.
pub const BUILTIN: &[fn() -> Box<dyn FileHandler>] = &[
    || Box::new(MemfdHandler),
    || Box::new(UnixSocketHandler),
    || Box::new(TcpSocketHandler),
    || Box::new(UdpSocketHandler),
    || Box::new(EventfdHandler),
    || Box::new(PipeHandler),
];

/// The built-in handlers, ready to register.
pub fn default_handlers() -> Vec<Box<dyn FileHandler>> {
    BUILTIN.iter().map(|make| make()).collect()
}

/// What the built-in handler of compatible string `compatible` says about
/// its files; `None` for a handler that is not built in.
pub fn describe(compatible: &str) -> Option<Descriptor> {
    BUILTIN
        .iter()
        .map(|make| make())
        .find(|h| h.compatible() == compatible)
        .map(|h| h.descriptor())
}
