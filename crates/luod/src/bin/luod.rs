//! `luod`: the Live Update Orchestrator agent. See `luod --help` and
//! `docs/protocol.md`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use luod::cli::{self, Command, LogLevel};
use luod::Config;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE already, and every send uses MSG_NOSIGNAL.
    let opts = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("luod {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Keeper { path, link }) => return luod::keeper_main(&path, link),
        Ok(Command::UpgradeProbe) => {
            println!("{}", luod::probe_answer());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("luod: {e}");
            return ExitCode::from(2);
        }
    };
    let level = match opts.log_level {
        Some(l) => l,
        None => match std::env::var("LUOD_LOG") {
            Ok(v) if !v.is_empty() => match LogLevel::parse(&v) {
                Some(l) => l,
                None => {
                    eprintln!(
                        "luod: LUOD_LOG={v:?} is not a log level; choose error, warn, info, debug or trace"
                    );
                    return ExitCode::from(2);
                }
            },
            _ => LogLevel::Info,
        },
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(match level {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        })
        .with_target(false)
        .init();
    let socket = luod::resolve_socket_path(opts.socket);
    let mut config = Config::new(socket);
    config.backend = opts.backend;
    config.quota = opts.quota;
    if let Some(n) = opts.connections_per_uid {
        config.connections_per_uid = n;
    }
    if let Some(d) = opts.device {
        config.device = d;
    }
    config.keeper = !opts.no_keeper;
    if let Some(n) = opts.kernel_session_files {
        config.kernel_files_per_session = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(state) = opts.upgrade_state {
        return resume(config, state, opts.upgrade_fallback);
    }
    match luod::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("luod: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The second half of an in-place upgrade: this image takes over the state
/// the previous one left, or goes back to it.
fn resume(config: Config, state: i32, fallback: Option<i32>) -> ExitCode {
    let nums: Vec<i32> = std::iter::once(state).chain(fallback).collect();
    let mut fds = match luo_sys::adopt_inherited(&nums) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("luod: --upgrade-state: descriptor {state} is not open ({e})");
            return ExitCode::from(1);
        }
    };
    let fallback = if fallback.is_some() { fds.pop() } else { None };
    let state = fds.pop().expect("the state descriptor");
    match luod::resume(config, &state) {
        Ok(mut agent) => {
            // Done with: the state is read, and there is no going back.
            drop((state, fallback));
            if let Err(e) = agent.stop_on_signals().and_then(|()| agent.serve()) {
                eprintln!("luod: {e}");
                return ExitCode::from(e.exit_code());
            }
            ExitCode::SUCCESS
        }
        Err(e @ luod::AgentError::Upgrade(_)) => {
            if let Some(fb) = fallback {
                luod::fall_back(state, fb, &e);
            }
            eprintln!("luod: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("luod: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
