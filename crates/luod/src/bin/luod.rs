//! `luod`: the Live Update Orchestrator agent. See `luod --help` and
//! `docs/protocol.md`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use luod::cli::{self, Cli};
use luod::Config;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE already, and every send uses MSG_NOSIGNAL.
    // Usage errors exit with status 2, --help and --version with 0.
    let cli = Cli::parse();
    if cli.upgrade_probe {
        println!("{}", luod::probe_answer());
        return ExitCode::SUCCESS;
    }
    // Which process this is, for fault injection (test builds only): the
    // keeper, the image an in-place upgrade started, or luod.
    let role = match (&cli.keeper_process, &cli.upgrade_state) {
        (Some(_), _) => "keeper",
        (None, Some(_)) => "upgraded",
        (None, None) => "luod",
    };
    if let Err(e) = fault_injection(role) {
        eprintln!("luod: {e}");
        return ExitCode::from(2);
    }
    if let (Some(path), Some(link)) = (&cli.keeper_process, cli.keeper_link) {
        return luod::keeper_main(path, link);
    }
    let env = std::env::var(cli::LOG_ENV).ok();
    let filter = match cli::log_filter(cli.log_level, env.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("luod: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if let Some(state) = cli.upgrade_state {
        return resume(cli.config, state, cli.upgrade_fallback);
    }
    match luod::run(cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("luod: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `LUO_FAULT` and `LUO_FAULT_DIR` (luo-sys's `fault-injection` feature,
/// which only test builds have).
#[cfg(feature = "fault-injection")]
fn fault_injection(role: &str) -> Result<(), String> {
    luo_sys::fault::init(role)
}

#[cfg(not(feature = "fault-injection"))]
fn fault_injection(_role: &str) -> Result<(), String> {
    Ok(())
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
            // Everything is taken over: a failure here must not end the
            // agent, which then stops on SIGTERM without its clean stop
            // (the keeper keeps every file, as after a crash).
            if let Err(e) = agent.stop_on_signals() {
                tracing::warn!("{e}; SIGTERM and SIGINT end luod at once");
            }
            if let Err(e) = agent.serve() {
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
