//! `luoctl`: look at and operate `luod`, the Live Update Orchestrator agent.
//!
//! Run `luoctl --help` for the commands and exit codes; the command line and
//! the commands are in the library, [`luod::ctl`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    luod::ctl::main()
}
