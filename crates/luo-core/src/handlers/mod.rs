//! The built-in file handlers, one file per file type.
//!
//! Adding a file type is one new file here, with a handler that says what
//! it is ([`FileHandler::descriptor`]: its short type name, its identity,
//! whether its files cross a kexec and if not why) and does the per-file
//! work, plus one line in the `builtin!` list below that registers it (in
//! [`BUILTIN`], the registration order).

use crate::handler::{Descriptor, FileHandler};

/// Why no socket crosses a kexec (every socket handler says so).
const SOCKET_LOST: &str = "a socket lives in the kernel's network stack, which a kexec starts afresh: reopen or re-listen after the update";

/// Declares each handler's module, re-exports its type, and lists it in
/// [`BUILTIN`], in the order given.
macro_rules! builtin {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        $(
            mod $module;
            pub use $module::$handler;
        )*

        /// The built-in handlers in their registration order (the first
        /// whose `can_preserve` accepts a file wins): memfd, the kernel's,
        /// first.
        pub const BUILTIN: &[fn() -> Box<dyn FileHandler>] = &[$(|| Box::new($handler)),*];
    };
}

// One line per file type: its file, and its handler.
builtin! {
    memfd::MemfdHandler,
    unix_socket::UnixSocketHandler,
    tcp_socket::TcpSocketHandler,
    udp_socket::UdpSocketHandler,
    eventfd::EventfdHandler,
    pipe::PipeHandler,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Kexec;
    use crate::IdentityKind;

    #[test]
    fn every_builtin_handler_says_what_it_is() {
        let all: Vec<(String, Descriptor)> = default_handlers()
            .iter()
            .map(|h| (h.compatible().to_string(), h.descriptor()))
            .collect();
        let names: Vec<(&str, &str)> = all
            .iter()
            .map(|(c, d)| (c.as_str(), d.type_name.expect("a type name")))
            .collect();
        assert_eq!(
            names,
            [
                ("memfd-v2", "memfd"),
                ("luo-unix-socket-v1", "unix-socket"),
                ("luo-tcp-socket-v1", "tcp-socket"),
                ("luo-udp-socket-v1", "udp-socket"),
                ("luo-eventfd-v1", "eventfd"),
                ("luo-pipe-v1", "pipe"),
            ]
        );
        for (c, d) in &all {
            assert_eq!(describe(c), Some(*d));
            let memfd = c == "memfd-v2";
            assert_eq!(d.kexec_safe(), memfd, "{c}");
            assert_eq!(d.pins_memory, memfd, "{c}");
            let identity = if memfd {
                IdentityKind::Inode
            } else {
                IdentityKind::OpenFile
            };
            assert_eq!(d.identity, identity, "{c}");
            if let Kexec::Lost(why) = d.kexec {
                assert!(!why.is_empty(), "{c}");
            }
        }
        assert_eq!(describe("no-such-handler"), None);
    }
}
