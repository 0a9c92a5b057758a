//! Start-up: [`Agent::bind`] chooses the backend, prepares the socket path
//! (or takes systemd's socket), restores the kernel backend's sessions, sets
//! up the keeper or systemd's fd store and takes back what a previous agent
//! left there.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use luo_core::Luo;
use luo_proto::Errno;
use luo_sys::epoll::EPOLLIN;
use luo_sys::Epoll;
use tracing::{debug, info, warn};

use super::socket::{bind_listener, prepare_socket_path};
use super::{kernel, mirror, uapi, Agent, LISTENER, MAX_EVENTS};
use crate::{AgentError, Backend, Config};

impl Agent {
    /// Binds the listening socket and prepares the agent; once this returns,
    /// clients can connect (their connections wait until [`Agent::serve`]).
    ///
    /// The socket's parent directory is created (mode 0755) if missing. If
    /// the socket file exists and an agent answers on it, this fails with
    /// [`AgentError::AlreadyRunning`]; if nobody answers, the stale file is
    /// removed. The socket is made mode 0666: anyone may connect, and what
    /// they may do is decided per uid.
    pub fn bind(config: Config) -> Result<Agent, AgentError> {
        let path = config.socket.clone();
        if path.as_os_str().is_empty() {
            return Err(AgentError::NoSocketPath);
        }
        // Under systemd: the fd store's contents after a restart, and the
        // listening socket under socket activation.
        let mut passed = crate::store::listen_fds().map_err(AgentError::Backend)?;
        let activated = passed
            .iter()
            .position(|(_, fd)| luo_sys::is_listening(fd.as_fd()).unwrap_or(false))
            .map(|i| passed.remove(i).1);
        if activated.is_none() {
            prepare_socket_path(&path)?;
        }
        let kernel = match config.backend {
            Backend::Emulated => None,
            Backend::Kernel => {
                match kernel::Kernel::open(&config.device, config.kernel_files_per_session) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        return Err(AgentError::Backend(kernel::device_error(&config.device, e)))
                    }
                }
            }
            Backend::Auto => {
                match kernel::Kernel::open(&config.device, config.kernel_files_per_session) {
                    Ok(k) => Some(k),
                    Err(Errno::ENOENT) => {
                        info!(
                        "{} does not exist; using the emulated backend (sessions survive service restarts, not a kexec)",
                        config.device.display()
                    );
                        None
                    }
                    Err(e) => {
                        warn!(
                        "{}; using the emulated backend (sessions survive service restarts, not a kexec)",
                        kernel::device_error(&config.device, e)
                    );
                        None
                    }
                }
            }
        };
        if kernel.is_none() && config.registry.is_some() {
            return Err(AgentError::Backend(
                "--registry restores a previous kernel's sessions: it needs the kernel backend (--backend kernel)".into(),
            ));
        }
        let (backend, kernel, mut luo) = match kernel {
            None => (Backend::Emulated, None, Luo::with_default_handlers()),
            Some(k) => {
                let shared = std::sync::Arc::new(std::sync::Mutex::new(k));
                let mut luo = kernel::model(&shared);
                let dir = path.parent().unwrap_or(Path::new("/"));
                match kernel::restore(&mut luo, &shared, dir, config.registry.as_deref())? {
                    None => info!("no registry from a previous kernel: starting empty"),
                    Some(r) if r.lost.is_empty() => {}
                    Some(r) => warn!(
                        "{} files of the previous kernel's sessions did not come back (listed above)",
                        r.lost.len()
                    ),
                }
                (Backend::Kernel, Some(shared), luo)
            }
        };
        let mirror = store_and_reclaim(&config, &path, &mut luo, passed)?;
        let (listener, socket_id) = match activated {
            Some(l) => {
                info!("listening on the socket systemd passed (socket activation)");
                let _ = luo_sys::set_nonblocking(l.as_fd(), true);
                (l, None)
            }
            None => bind_listener(&path)?,
        };
        let epoll = Epoll::new().map_err(|e| AgentError::sys("creating an epoll instance", e))?;
        epoll
            .add(listener.as_fd(), LISTENER, EPOLLIN)
            .map_err(|e| AgentError::sys("watching the listening socket", e))?;
        luo.set_quota(config.quota);
        let ids = luo.index().eventfd_ids();
        match luo.index().mode() {
            luo_core::IndexMode::Kcmp if ids => {}
            luo_core::IndexMode::Kcmp => info!(
                "this kernel shows no eventfd-id in /proc/self/fdinfo (Linux 5.2 and later do): eventfds are told apart with kcmp"
            ),
            luo_core::IndexMode::DupfdQuery(e) => info!(
                "kcmp is unavailable ({e}; the kernel lacks CONFIG_CHECKPOINT_RESTORE): open files are told apart with F_DUPFD_QUERY, linearly among files of one inode{}",
                if ids { " (eventfds by their id)" } else { "" }
            ),
            luo_core::IndexMode::InodeFallback(e) if ids => warn!(
                "neither kcmp ({e}) nor F_DUPFD_QUERY works: a file sharing an inode with a preserved one is refused with EBUSY (eventfds are told apart by their id)"
            ),
            luo_core::IndexMode::InodeFallback(e) => warn!(
                "neither kcmp ({e}) nor F_DUPFD_QUERY works: a second eventfd (or any file sharing an inode with a preserved one) is refused with EBUSY"
            ),
        }
        luo.set_veto(super::uapi::leads_back);
        let agent = Agent {
            socket: path,
            socket_id,
            backend,
            kernel,
            euid: luo_sys::geteuid(),
            listener,
            epoll,
            luo,
            conns: HashMap::new(),
            next_key: LISTENER + 1,
            paused_until: None,
            conns_per_uid: HashMap::new(),
            max_conns_per_uid: config.connections_per_uid,
            refused: 0,
            signals: None,
            stop: None,
            events: Vec::with_capacity(MAX_EVENTS),
            devices: uapi::Devices::default(),
            mirror,
            rbuf: None,
        };
        let q = config.quota;
        let limit = |n: u64| {
            if n == u64::MAX {
                "unlimited".to_string()
            } else {
                n.to_string()
            }
        };
        info!(
            "ready: listening on {} (backend {}, pid {}; quota per uid: {} sessions, {} files, {} pinned bytes)",
            agent.socket.display(),
            agent.backend,
            std::process::id(),
            limit(q.sessions),
            limit(q.files),
            limit(q.pinned_bytes),
        );
        Ok(agent)
    }
}

/// Sets up the store the custody descriptors are mirrored to (systemd's fd
/// store under `$NOTIFY_SOCKET`, else the keeper; none with `--keeper
/// off`), and takes back what a previous agent left there.
fn store_and_reclaim(
    config: &Config,
    socket: &Path,
    luo: &mut Luo,
    passed: Vec<(String, OwnedFd)>,
) -> Result<Option<mirror::Mirror>, AgentError> {
    if !config.keeper {
        if !passed.is_empty() {
            warn!(
                "--keeper off: the {} descriptors systemd passed from the fd store are dropped",
                passed.len()
            );
        }
        return Ok(None);
    }
    let (sink, entries) = if let Some(n) = crate::store::notify_socket() {
        (crate::store::Sink::Systemd(n), passed)
    } else {
        let path = crate::store::keeper_path(socket);
        // A keeper that answers holds a previous agent's files: never start
        // another over it. It may be busy reading its old agent's hang-up,
        // so ask a few times.
        let keeper_error = |e: luo_proto::Error| {
            AgentError::Backend(format!(
                "{e}: a keeper at {} may hold a previous agent's files, so no other is started over it; start luod again",
                path.display()
            ))
        };
        let mut answered = None;
        for _ in 0..50 {
            match crate::store::connect_keeper(&path).map_err(keeper_error)? {
                None => break,
                Some((link, pid)) => match crate::store::take(link.as_fd()) {
                    Ok(entries) => {
                        answered = Some((link, pid, entries));
                        break;
                    }
                    Err(e) => {
                        debug!(
                            "the keeper at {} refused this agent for now ({e}); asking again",
                            path.display()
                        );
                        std::thread::sleep(Duration::from_millis(20));
                        answered = None;
                        if !path.exists() {
                            break;
                        }
                    }
                },
            }
        }
        match answered {
            Some((link, pid, entries)) => {
                info!(
                    "the keeper (pid {pid}) of a previous agent answered at {} with {} entries",
                    path.display(),
                    entries.len()
                );
                (
                    // It may be a previous release's.
                    crate::store::Sink::keeper(link, pid, crate::store::Origin::Found),
                    entries,
                )
            }
            None if crate::store::connect_keeper(&path)
                .map_err(keeper_error)?
                .is_some() =>
            {
                return Err(AgentError::Backend(format!(
                    "the keeper at {} holds another agent's files and will not hand them over (is another luod running with this socket?); refusing to start a second keeper over it",
                    path.display()
                )));
            }
            None => match crate::store::spawn_keeper(&path) {
                Ok((link, pid)) => {
                    info!("started the keeper (pid {pid}, {}): it holds copies of the files in custody, so that a crash of luod loses nothing", path.display());
                    (
                        crate::store::Sink::keeper(link, pid, crate::store::Origin::Started),
                        Vec::new(),
                    )
                }
                Err(e) => {
                    warn!("{e}; sessions will not survive a crash of luod");
                    return Ok(None);
                }
            },
        }
    };
    let mut m = mirror::Mirror::new(sink);
    if !entries.is_empty() {
        let r = mirror::reclaim(luo, entries).map_err(|e| {
            AgentError::Backend(format!(
                "taking back the previous agent's files failed: {e}; the store keeps every one of them: start luod again"
            ))
        })?;
        info!(
            "took back {} sessions ({} persistent, still open) with {} files from the previous agent; {} sessions that were open when it stopped were dropped",
            r.sessions, r.persistent, r.files, r.aborted
        );
        let adopted: std::collections::HashSet<u64> = r.adopted.iter().map(|a| a.key).collect();
        for a in r.adopted {
            m.adopt(a);
        }
        // Sessions not taken over as they were are stored afresh.
        for key in luo.session_keys() {
            if !adopted.contains(&key) {
                m.sync(luo, key);
            }
        }
        if let Err(e) = m.sink.remove(&r.stale) {
            warn!("removing the previous agent's leftover entries failed: {e}");
        }
    }
    Ok(Some(m))
}
