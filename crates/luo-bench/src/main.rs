//! `luo-bench`: luo's benchmarks.
//!
//! Each benchmark runs luo and its baseline side by side in the same process,
//! so that both see the same machine, kernel, fd table and load; comparing
//! figures from different runs or machines would measure the machines.
//!
//! ```text
//! cargo run --release -p luo-bench -- all [--sizes 256M,1G,4G] [--fds 1000,16000]
//! cargo run --release -p luo-bench -- index [--sizes 1000,4000,16000] [--json PATH]
//! cargo run --release -p luo-bench -- restart [--restarts 10] [--servers python,gunicorn]
//! cargo run --release -p luo-bench -- soak [--minutes 10] [--seed 1] [--json PATH]
//! ```

#![forbid(unsafe_code)]

mod agent;
mod blackout;
mod cli;
mod fds;
mod index;
mod machine;
mod memcached;
mod mirror;
mod plot;
mod report;
mod restart;
mod soak;
mod stats;
mod suite;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::Failure;

/// `luo-bench`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "luo-bench",
    about = "Benchmarks of luo, each run side by side with its baseline in the same run",
    after_help = "Build with --release: cargo run --release -p luo-bench -- <COMMAND>\n\
                  `luo-bench <COMMAND> --help` describes a command's options.",
    max_term_width = 80
)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

/// A benchmark: `luo-bench <name> [options]`.
#[derive(Debug, Subcommand)]
enum Bench {
    /// The whole suite: fd throughput, identity check, restart blackout, agent memory
    #[command(long_about = suite::ABOUT)]
    All(Box<suite::Args>),
    /// Identity index (double-management check) vs a linear kcmp scan
    #[command(long_about = index::ABOUT)]
    Index(index::Options),
    /// luod's in-place upgrade with N custody files vs stopping and starting it
    #[command(long_about = upgrade::ABOUT)]
    Upgrade(upgrade::Options),
    /// Preserving 16,000 files one request at a time with the keeper on: request 1,000 vs 16,000
    #[command(long_about = mirror::ABOUT)]
    Mirror(mirror::Options),
    /// Restarting an HTTP server under load: luoctl run (overlap, stop-start) vs a plain stop and start
    #[command(long_about = restart::ABOUT)]
    Restart(restart::Options),
    /// Clients of two uids under upgrades, crashes and updates, with an invariant checker
    #[command(long_about = soak::ABOUT)]
    Soak(soak::Options),
    /// One client process of `soak`.
    #[command(name = "__soak-client", hide = true)]
    SoakClient(soak::ClientArgs),
    /// Draw the blackout plot again from an earlier run's JSON
    #[command(long_about = suite::PLOT_ABOUT)]
    Plot(suite::PlotArgs),
    /// The other process of the raw SCM_RIGHTS baseline (`all`).
    #[command(name = "__scm-peer", hide = true)]
    ScmPeer,
}

fn main() -> ExitCode {
    // Usage errors exit with status 2, --help with 0.
    let (name, result) = match Cli::parse().command {
        Bench::ScmPeer => {
            return match fds::peer() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("luo-bench __scm-peer: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Bench::All(a) => ("all", suite::main(*a)),
        Bench::Index(o) => ("index", index::main(o)),
        Bench::Upgrade(o) => ("upgrade", upgrade::main(o)),
        Bench::Mirror(o) => ("mirror", mirror::main(o)),
        Bench::Restart(o) => ("restart", restart::main(o)),
        Bench::Plot(a) => ("plot", suite::replot(a)),
        Bench::Soak(o) => ("soak", soak::main(o)),
        Bench::SoakClient(a) => ("__soak-client", soak::client_main(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("luo-bench {name}: {msg}\n(see `luo-bench {name} --help`)");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("luo-bench {name}: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_is_consistent() {
        Cli::command().debug_assert();
    }
}
