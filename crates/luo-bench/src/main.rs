//! `luo-bench`: luo's benchmarks.
//!
//! Each benchmark runs luo and its baseline side by side in the same process,
//! so that both see the same machine, kernel, fd table and load; comparing
//! figures from different runs or machines would measure the machines.
//!
//! ```text
//! cargo run --release -p luo-bench -- all [--sizes 256M,1G,4G] [--fds 1000,16000]
//! cargo run --release -p luo-bench -- index [--sizes 1000,4000,16000] [--json PATH]
//! ```

#![forbid(unsafe_code)]

mod agent;
mod blackout;
mod cli;
mod fds;
mod index;
mod json;
mod machine;
mod memcached;
mod mirror;
mod plot;
mod stats;
mod suite;
mod upgrade;

use std::process::ExitCode;

use cli::Failure;

/// A benchmark: `luo-bench <name> [options]`.
#[derive(Debug)]
struct Command {
    name: &'static str,
    summary: &'static str,
    run: fn(&[String]) -> Result<(), Failure>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "all",
        summary: "the whole suite: fd throughput, identity check, restart blackout, agent memory",
        run: suite::main,
    },
    Command {
        name: "index",
        summary: "identity index (double-management check) vs a linear kcmp scan",
        run: index::main,
    },
    Command {
        name: "upgrade",
        summary: "luod's in-place upgrade with N custody files vs stopping and starting it",
        run: upgrade::main,
    },
    Command {
        name: "mirror",
        summary: "preserving 16,000 files one request at a time with the keeper on: request 1,000 vs 16,000",
        run: mirror::main,
    },
    Command {
        name: "plot",
        summary: "draw the blackout plot again from an earlier run's JSON",
        run: suite::replot,
    },
];

fn usage() -> String {
    let mut s = String::from(
        "usage: luo-bench <command> [options]\n\
         \n\
         Benchmarks of luo, each run side by side with its baseline in the same run.\n\
         Build with --release: cargo run --release -p luo-bench -- <command>\n\
         \n\
         commands:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<8} {}\n", c.name, c.summary));
    }
    s.push_str("\n`luo-bench <command> --help` describes a command's options.\n");
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, rest) = match args.split_first() {
        None => {
            eprint!("{}", usage());
            return ExitCode::from(2);
        }
        Some((first, rest)) => (first.as_str(), rest),
    };
    if name == "__scm-peer" {
        // The other process of the raw SCM_RIGHTS baseline (`all`).
        return match fds::peer() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("luo-bench __scm-peer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if matches!(name, "-h" | "--help" | "help") {
        // `help <command>` is `<command> --help`.
        match rest.first() {
            Some(c) => return dispatch(c, &["--help".to_string()]),
            None => {
                print!("{}", usage());
                return ExitCode::SUCCESS;
            }
        }
    }
    dispatch(name, rest)
}

fn dispatch(name: &str, rest: &[String]) -> ExitCode {
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("luo-bench: unknown command {name:?}\n");
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    match (cmd.run)(rest) {
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
