//! What the library learns once, when it is first used: the environment,
//! and which process is `luod`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// Set once `/dev/liveupdate` was opened or a session fd was used here;
/// until then `ioctl` looks at nothing but the request number.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// `luod`'s pid, as its sockets report it (`SO_PEERCRED`); 0 unknown.
static LUOD_PID: AtomicI32 = AtomicI32::new(0);
static CONFIG: OnceLock<Config> = OnceLock::new();

#[derive(Debug)]
pub(crate) struct Config {
    /// `luod`'s socket: `$LUOD_SOCKET`, else the default rule.
    pub(crate) socket: PathBuf,
    /// `LUO_PRELOAD_HANDLERS=all`: sessions take every file type luo has a
    /// handler for (sockets, eventfds, pipes), not only the kernel's.
    pub(crate) all_handlers: bool,
    /// `LUO_PRELOAD_DEBUG=1`: say on stderr why an open or ioctl failed.
    pub(crate) debug: bool,
}

pub(crate) fn config() -> &'static Config {
    CONFIG.get_or_init(|| {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let debug = !matches!(var("LUO_PRELOAD_DEBUG").as_str(), "" | "0");
        let handlers = var("LUO_PRELOAD_HANDLERS");
        let all_handlers = match handlers.as_str() {
            "all" => true,
            "" | "kernel" => false,
            other => {
                if debug {
                    eprintln!(
                        "luo-preload: LUO_PRELOAD_HANDLERS={other:?} is neither \"kernel\" nor \"all\"; using \"kernel\""
                    );
                }
                false
            }
        };
        Config {
            socket: luo::default_socket_path(),
            all_handlers,
            debug,
        }
    })
}

pub(crate) fn activate() {
    ACTIVE.store(true, Ordering::Release);
}

pub(crate) fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

pub(crate) fn luod_pid() -> i32 {
    LUOD_PID.load(Ordering::Acquire)
}

pub(crate) fn set_luod_pid(pid: i32) {
    LUOD_PID.store(pid, Ordering::Release);
}

/// Writes `what()` to stderr when `LUO_PRELOAD_DEBUG` is set.
pub(crate) fn debug(what: impl FnOnce() -> String) {
    if config().debug {
        eprintln!("luo-preload: {}", what());
    }
}
