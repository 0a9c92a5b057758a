//! `luo-bench`: luo's benchmarks.
//!
//! Each benchmark runs luo and its baseline side by side in the same process,
//! so that both see the same machine, kernel, fd table and load; comparing
//! figures from different runs or machines would measure the machines.
//!
//! ```text
//! cargo run --release -p luo-bench -- all [--sizes 256M,1G,4G] [--fds 1000,16000]
//! cargo run --release -p luo-bench -- index [--sizes 1000,4000,16000] [--json PATH]
//! cargo run --release -p luo-bench -- requests [--files 16000] [--keeper on,off]
//! cargo run --release -p luo-bench -- proxy [--connections 16000] [--keeper on|off]
//! cargo run --release -p luo-bench -- restart [--restarts 10] [--servers python,gunicorn]
//! cargo run --release -p luo-bench -- soak [--minutes 10] [--seed 1] [--json PATH]
//! ```

#![forbid(unsafe_code)]

mod agent;
mod blackout;
mod cli;
mod fds;
mod floor;
mod index;
mod machine;
mod memcached;
mod mirror;
mod plot;
mod proxy;
mod report;
mod requests;
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
    /// The whole suite: fd throughput (vs raw SCM_RIGHTS and a floor agent), identity check, restart blackout, agent memory
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
    /// One request at a time: native client and libluo_preload.so vs a bare SEQPACKET exchange (and one relayed to a mirror)
    #[command(long_about = requests::ABOUT)]
    Requests(requests::Options),
    /// A proxy handing 16,000 established TCP connections to its successor: luod vs the floor agent vs SCM_RIGHTS
    #[command(long_about = proxy::ABOUT)]
    Proxy(proxy::Options),
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
    /// The other process of the bare request/reply floor (`requests`).
    #[command(name = "__request-peer", hide = true)]
    RequestPeer {
        /// What the peer does with each file before it replies.
        #[arg(long, value_enum, default_value = "bare")]
        floor: requests::Floor,
    },
    /// The floor agent (`all --sections fds`, `proxy`), serving the
    /// listening socket on its stdin.
    #[command(name = "__floor-agent", hide = true)]
    FloorAgent {
        #[arg(long, value_name = "on|off", value_enum)]
        keeper: cli::Keeper,
    },
    /// The uAPI program of `requests`, run under LD_PRELOAD.
    #[command(name = "__preload-client", hide = true)]
    PreloadClient { files: usize, name: String },
    /// The old proxy of `proxy`.
    #[command(name = "__proxy-old", hide = true)]
    ProxyOld {
        way: String,
        connections: usize,
        socket: std::path::PathBuf,
        name: String,
        port: u16,
    },
    /// The new proxy of `proxy`.
    #[command(name = "__proxy-new", hide = true)]
    ProxyNew {
        way: String,
        connections: usize,
        socket: std::path::PathBuf,
        name: String,
    },
}

/// Runs one of the hidden helper processes.
fn helper(name: &str, r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("luo-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with status 2, --help with 0.
    let (name, result) = match Cli::parse().command {
        Bench::ScmPeer => return helper("__scm-peer", fds::peer()),
        Bench::RequestPeer { floor } => return helper("__request-peer", requests::peer(floor)),
        Bench::FloorAgent { keeper } => {
            return helper("__floor-agent", floor::agent_main(keeper.is_on()))
        }
        Bench::PreloadClient { files, name } => {
            return helper("__preload-client", requests::preload_client(files, &name))
        }
        Bench::ProxyOld {
            way,
            connections,
            socket,
            name,
            port,
        } => {
            let r = proxy::Way::parse(&way)
                .and_then(|w| proxy::old_proxy(w, connections, &socket, &name, port));
            return helper("__proxy-old", r);
        }
        Bench::ProxyNew {
            way,
            connections,
            socket,
            name,
        } => {
            let r = proxy::Way::parse(&way)
                .and_then(|w| proxy::new_proxy(w, connections, &socket, &name));
            return helper("__proxy-new", r);
        }
        Bench::All(a) => ("all", suite::main(*a)),
        Bench::Index(o) => ("index", index::main(o)),
        Bench::Upgrade(o) => ("upgrade", upgrade::main(o)),
        Bench::Mirror(o) => ("mirror", mirror::main(o)),
        Bench::Requests(o) => ("requests", requests::main(o)),
        Bench::Proxy(o) => ("proxy", proxy::main(o)),
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
