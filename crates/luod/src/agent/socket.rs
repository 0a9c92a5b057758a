//! The socket path policy: the parent directory, a running agent or a stale
//! socket at the path, binding the listener (mode 0666), and removing the
//! socket file when the agent that bound it goes away.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use luo_proto::Errno;
use tracing::info;

use super::Agent;
use crate::AgentError;

/// Pending connections the kernel queues for us.
const BACKLOG: i32 = 1024;

/// Makes sure the socket can be bound at `path`: creates the parent
/// directory, refuses a running agent or a non-socket, removes a stale socket.
pub(super) fn prepare_socket_path(path: &Path) -> Result<(), AgentError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| AgentError::sys(format!("creating {}", parent.display()), e))?;
            // The umask may have taken bits away.
            let _ = fs::set_permissions(parent, fs::Permissions::from_mode(0o755));
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => Err(AgentError::NotASocket(path.to_path_buf())),
        Ok(_) => match luo_sys::seqpacket_connect(path) {
            Ok(_) => Err(AgentError::AlreadyRunning(path.to_path_buf())),
            Err(Errno::ECONNREFUSED) => {
                info!(
                    "removing the stale socket {} (nobody listens on it)",
                    path.display()
                );
                match fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(AgentError::sys(
                        format!("removing the stale socket {}", path.display()),
                        e,
                    )),
                }
            }
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(AgentError::sys(
                format!(
                    "checking whether luod already runs at {} (connecting to it failed)",
                    path.display()
                ),
                e,
            )),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::sys(format!("inspecting {}", path.display()), e)),
    }
}

impl Drop for Agent {
    /// Removes the socket file, if it is still the one this agent bound.
    fn drop(&mut self) {
        if let (Some(id), Ok(m)) = (self.socket_id, fs::symlink_metadata(&self.socket)) {
            if (m.dev(), m.ino()) == id {
                let _ = fs::remove_file(&self.socket);
            }
        }
    }
}

/// Binds the listening socket at `path` (mode 0666); returns it with the
/// socket file's `(st_dev, st_ino)`.
pub(super) fn bind_listener(path: &Path) -> Result<(OwnedFd, Option<(u64, u64)>), AgentError> {
    let path = path.to_path_buf();
    let listener = match luo_sys::seqpacket_listen(&path, BACKLOG) {
        Ok(l) => l,
        Err(e) if std::io::Error::from(e).kind() == ErrorKind::AddrInUse => {
            return Err(AgentError::AlreadyRunning(path))
        }
        Err(Errno::ENAMETOOLONG) => {
            return Err(AgentError::sys(
                format!(
                    "binding {}: a Unix socket path must be shorter than 108 bytes",
                    path.display()
                ),
                Errno::ENAMETOOLONG,
            ))
        }
        Err(e) => return Err(AgentError::sys(format!("binding {}", path.display()), e)),
    };
    let meta = fs::symlink_metadata(&path)
        .map_err(|e| AgentError::sys(format!("inspecting {}", path.display()), e))?;
    let socket_id = Some((meta.dev(), meta.ino()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
        .map_err(|e| AgentError::sys(format!("making {} mode 0666", path.display()), e))?;
    Ok((listener, socket_id))
}
