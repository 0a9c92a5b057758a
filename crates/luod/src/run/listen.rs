//! Listener specs (`--listen [FDNAME=]tcp:HOST:PORT | unix:PATH |
//! udp:HOST:PORT`) and binding them.

use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::notify::fdname_is_valid;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Address {
    /// A TCP listening socket.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A UDP socket.
    Udp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix stream listening socket at a path.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_string()
            }
        };
        match self {
            Address::Tcp { host: h, port } => write!(f, "tcp:{}:{port}", host(h)),
            Address::Udp { host: h, port } => write!(f, "udp:{}:{port}", host(h)),
            Address::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One `--listen`: the name it is passed under and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSpec {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// Where it listens.
    pub address: Address,
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.address)
    }
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{s}': expected [ADDRESS]:PORT"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("'{s}': expected HOST:PORT"))?
    };
    if host.is_empty() {
        return Err(format!(
            "'{s}': no host (use 0.0.0.0 or [::] for every address)"
        ));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{s}': the port must be a number from 0 to 65535"))?;
    Ok((host.to_string(), port))
}

/// Parses `[FDNAME=]tcp:HOST:PORT`, `[FDNAME=]udp:HOST:PORT` or
/// `[FDNAME=]unix:PATH`; the name defaults to `default_name`.
pub fn parse_spec(s: &str, default_name: &str) -> Result<ListenSpec, String> {
    let (name, rest) = match s.split_once('=') {
        Some((n, r)) if !n.contains(':') => (n.to_string(), r),
        _ => (default_name.to_string(), s),
    };
    if !fdname_is_valid(&name) {
        return Err(format!(
            "'{name}': a descriptor name is 1 to 255 printable ASCII characters without ':'"
        ));
    }
    let address = if let Some(a) = rest.strip_prefix("tcp:") {
        let (host, port) = host_port(a)?;
        Address::Tcp { host, port }
    } else if let Some(a) = rest.strip_prefix("udp:") {
        let (host, port) = host_port(a)?;
        Address::Udp { host, port }
    } else if let Some(p) = rest.strip_prefix("unix:") {
        if p.is_empty() || p.len() >= 108 {
            return Err(format!("'{p}': a socket path is 1 to 107 bytes"));
        }
        Address::Unix { path: p.into() }
    } else {
        return Err(format!(
            "'{s}': expected [FDNAME=]tcp:HOST:PORT, udp:HOST:PORT or unix:PATH"
        ));
    };
    Ok(ListenSpec { name, address })
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    })
}

/// Binds (and for stream sockets, listens on) the spec's address. A stale
/// socket file at a Unix path is removed first.
pub fn bind(spec: &ListenSpec) -> std::io::Result<OwnedFd> {
    Ok(match &spec.address {
        Address::Tcp { host, port } => TcpListener::bind(resolve(host, *port)?)?.into(),
        Address::Udp { host, port } => UdpSocket::bind(resolve(host, *port)?)?.into(),
        Address::Unix { path } => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            UnixListener::bind(path)?.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_spec("tcp:127.0.0.1:8080", "web").unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(
            s.address,
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        assert_eq!(s.to_string(), "web=tcp:127.0.0.1:8080");
        let s = parse_spec("http=tcp:[::1]:80", "web").unwrap();
        assert_eq!(s.name, "http");
        assert_eq!(s.address.to_string(), "tcp:[::1]:80");
        let s = parse_spec("dns=udp:localhost:53", "x").unwrap();
        assert!(matches!(s.address, Address::Udp { port: 53, .. }));
        let s = parse_spec("unix:/run/x=y.sock", "svc").unwrap();
        assert_eq!(s.name, "svc");
        assert_eq!(
            s.address,
            Address::Unix {
                path: "/run/x=y.sock".into()
            }
        );
        for bad in [
            "tcp:8080",
            "tcp::80",
            "tcp:host:99999",
            "sctp:h:1",
            "unix:",
            "a:b=tcp:h:1",
            "=tcp:h:1",
            "tcp:[::1:80",
        ] {
            assert!(parse_spec(bad, "svc").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn binds_each_kind() {
        let dir = std::env::temp_dir().join(format!("luo-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for s in [
            "tcp:127.0.0.1:0".to_string(),
            "udp:127.0.0.1:0".to_string(),
            format!("unix:{}/s.sock", dir.display()),
        ] {
            let spec = parse_spec(&s, "t").unwrap();
            let fd = bind(&spec).unwrap();
            drop(fd);
        }
        // A stale socket file is replaced.
        let spec = parse_spec(&format!("unix:{}/s.sock", dir.display()), "t").unwrap();
        bind(&spec).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
