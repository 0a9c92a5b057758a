//! `luoctl`, the command-line client of `luod`, as a library: its command
//! line ([`Cli`], [`Command`]), what each command does (`commands`) and how
//! replies are shown to people (`render`). The `luoctl` binary is [`main`];
//! the man pages and shell completions are made from [`Cli`]
//! ([`crate::gen`]).
//!
//! ```
//! use clap::Parser;
//! use luod::ctl::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["luoctl", "--json", "show", "kv", "--owner", "0"]).unwrap();
//! assert!(cli.json);
//! assert!(matches!(cli.command, Some(Command::Show(ref s)) if s.name == "kv" && s.owner == Some(0)));
//! ```

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use luo::{Errno, Error};

mod commands;
mod render;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit status: the agent refused the request.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the agent cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit status: an unexpected reply (a protocol error).
pub const EXIT_PROTOCOL: u8 = 4;

const USAGE: &str = "\
luoctl [--socket PATH] [--json] COMMAND [ARGS]
       luoctl status
       luoctl sessions
       luoctl show NAME [--owner UID]
       luoctl update
       luoctl update --kexec --kernel FILE [--initrd FILE]
              [--append CMDLINE | --reuse-cmdline] [--dry-run] [--force]
       luoctl handover NAME [--owner UID]
       luoctl finish NAME [--owner UID]
       luoctl abort NAME [--owner UID]
       luoctl agent upgrade [--binary PATH]
       luoctl run NAME [--listen [FDNAME=]ADDRESS]... [OPTIONS] -- COMMAND [ARGS]...
       luoctl restart NAME [-- NEW-COMMAND [ARGS]...]
       luoctl services [NAME]";

const AFTER_HELP: &str = "\
`luoctl COMMAND --help` or `luoctl help COMMAND` describes a command.

EXIT STATUS:
    0   success
    1   the agent refused the request (the message names the errno)
    2   usage error
    3   cannot reach the agent (not running, wrong socket, no permission,
        or it hung up)
    4   protocol error (an unexpected reply: luoctl and luod versions differ?)

Errors go to stderr as `luoctl: MESSAGE`, often followed by a `hint:` line.";

/// The help layout of every command: the usage first, as `luoctl` always
/// printed it.
const TEMPLATE: &str = "\
{about-with-newline}
usage: {usage}

{all-args}{after-help}";

const SUB_TEMPLATE: &str = "\
usage: {usage}

{about-with-newline}
{all-args}{after-help}";

/// `luoctl`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "luoctl",
    about = "luoctl: look at and operate luod, the Live Update Orchestrator agent",
    version,
    disable_version_flag = true,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    help_template = TEMPLATE,
    subcommand_value_name = "COMMAND",
    max_term_width = 80
)]
pub struct Cli {
    /// luod's socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for
    /// root, else $XDG_RUNTIME_DIR/luod.sock)
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the agent's reply as one JSON document on stdout; errors too:
    /// {"ok":false,"errno":N,"error":"ENAME","message":"..."}
    #[arg(long, global = true)]
    pub json: bool,
    /// Print the version
    #[arg(short = 'V', long)]
    pub version: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands. Each is handled in one `match` in `commands::run`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The agent's state, your sessions, quota and usage
    ///
    /// The agent's version, backend, pid and epoch; sessions (outgoing and
    /// incoming), files and pinned bytes that you can see (every uid's for
    /// root); the agent's connections, open descriptors and RLIMIT_NOFILE; the
    /// per-uid quota and your usage against it.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] status",
        help_template = SUB_TEMPLATE
    )]
    Status,
    /// List sessions (yours; every uid's for root)
    ///
    /// A table of sessions: NAME OWNER STATE HANDLES FILES PINNED KEXEC-SAFE.
    /// You see your own sessions; root sees every uid's. STATE is open
    /// (outgoing), incoming (handed over, waiting), retrieved, or finished.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] sessions",
        help_template = SUB_TEMPLATE
    )]
    Sessions,
    /// A session and its files
    ///
    /// The session(s) named NAME (an outgoing and an incoming session may share
    /// a name) and a table of their files: TOKEN TYPE HANDLER IDENTITY SIZE
    /// PINNED KEXEC-SAFE RETRIEVED.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] show NAME [--owner UID]",
        help_template = SUB_TEMPLATE
    )]
    Show(BySession),
    /// A live update: emulated, or with --kexec a kernel live update
    ///
    /// Without --kexec: an emulated live update. Every outgoing session crosses
    /// (is handed over) at once and the epoch advances. Handles on crossed
    /// sessions become stale; the next processes retrieve the sessions by name.
    /// Only root and the user luod runs as may do this.
    ///
    /// With --kexec: a kernel live update (luod on the kernel backend; root
    /// only). luoctl first prints the preflight: every session and file, which
    /// files cannot cross a kexec (sockets, eventfds, pipes) and why, and
    /// whether liveupdate=on is active now and on the new command line. Unless
    /// --dry-run, luod then loads FILE (and the initramfs) with
    /// kexec_file_load, writes its registry into a kernel session and reboots
    /// into the new kernel with reboot(LINUX_REBOOT_CMD_KEXEC); the new
    /// kernel's luod restores every session. If the preflight found problems
    /// (files that would be lost, no liveupdate=on) luoctl refuses unless
    /// --force. A refusal by the kernel (for example a file that failed to
    /// freeze) is reported with the kernel's errno, and nothing changes.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] update
       luoctl [--socket PATH] [--json] update --kexec --kernel FILE [--initrd FILE]
              [--append CMDLINE | --reuse-cmdline] [--dry-run] [--force]",
        help_template = SUB_TEMPLATE
    )]
    Update(UpdateArgs),
    /// Hand over an outgoing session by name
    ///
    /// Hands over the outgoing session NAME, as its holder would: it stops
    /// taking files and waits for the next process to retrieve it.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] handover NAME [--owner UID]",
        help_template = SUB_TEMPLATE
    )]
    Handover(BySession),
    /// Retrieve and finish an incoming session by name, discarding files
    /// nobody retrieved
    ///
    /// Retrieves and finishes the incoming session NAME in one step. Files that
    /// were never retrieved are discarded: this clears a session nobody will
    /// come back for. A session a process holds (retrieved, handle open) is
    /// refused.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] finish NAME [--owner UID]",
        help_template = SUB_TEMPLATE
    )]
    Finish(BySession),
    /// Abort an open session or discard a waiting one, by name
    ///
    /// Aborts the session NAME whoever holds it, as the owner or root. An
    /// open session (persistent too) loses every file, as on the last close
    /// of its handle, and the process holding it finds its handle stale. A
    /// waiting incoming session is discarded with its files, as `finish`
    /// does. A session a process has retrieved (handle open) is refused
    /// (EBUSY). luod logs who aborted it.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] abort NAME [--owner UID]",
        help_template = SUB_TEMPLATE
    )]
    Abort(BySession),
    /// Operate the agent itself
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] agent upgrade [--binary PATH]",
        help_template = SUB_TEMPLATE,
        subcommand_required = true,
        subcommand_value_name = "COMMAND"
    )]
    Agent {
        /// What to do with the agent.
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Run a service under supervision, in the foreground
    ///
    /// Starts COMMAND as the service NAME and supervises it. The listeners
    /// are bound once and kept, with the service's fd store, in a
    /// persistent luod session named NAME owned by you; every instance
    /// receives them as systemd passes sockets (fds from 3, LISTEN_FDS,
    /// LISTEN_PID, LISTEN_FDNAMES; stored fds after the listeners) and gets
    /// its own NOTIFY_SOCKET (READY=1, STATUS=, FDSTORE=1, WATCHDOG=1, ...).
    /// `luoctl restart NAME` or SIGHUP restarts the service without closing
    /// a listener: with --mode overlap the new instance must become ready
    /// before the old one is stopped, and a failed restart is rolled back.
    /// SIGTERM or SIGINT stops the service and exits 0, keeping the session
    /// for the next `luoctl run NAME`, which takes the listeners and the
    /// store back (and stops an instance a killed supervisor left running).
    /// The control socket is `<luod socket>.run/NAME.sock`.
    #[command(
        override_usage = "luoctl [--socket PATH] run NAME [--listen [FDNAME=]ADDRESS]...
              [--mode overlap|stop-start] [--ready notify|after:DURATION]
              [--ready-timeout DURATION] [--stop-signal SIGNAL]
              [--stop-timeout DURATION] [--restart on-failure|no]
              [--notify-access main|all] [--watchdog DURATION]
              [--fdstore-max N] -- COMMAND [ARGS]...",
        help_template = SUB_TEMPLATE
    )]
    Run(RunArgs),
    /// Restart a service run by `luoctl run`, optionally with a new command
    ///
    /// Asks the supervisor of NAME to restart the service (as its --mode
    /// says) and waits for the outcome. With `-- NEW-COMMAND`, the new
    /// instance runs NEW-COMMAND, which becomes the service's command if the
    /// restart succeeds. Exits 0 when the new instance is ready; 1 when the
    /// restart was rolled back (the message says why: exit status or
    /// signal, last STATUS=, the tail of its stderr); 3 when no supervisor
    /// runs NAME.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] restart NAME [-- NEW-COMMAND [ARGS]...]",
        help_template = SUB_TEMPLATE
    )]
    Restart(RestartArgs),
    /// Services run by `luoctl run`: command, pid, state, listeners, fd store
    ///
    /// One line per service (or the detail of NAME): its command, main pid,
    /// state (starting, ready, reloading, stopping, or down while waiting to
    /// start again), last STATUS=, listeners, stored fds with their names
    /// and types, restarts and rollbacks. Services are found by their
    /// control sockets next to luod's socket.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] services [NAME]",
        help_template = SUB_TEMPLATE
    )]
    Services(ServicesArgs),
    /// The trampoline of `luoctl run` (internal)
    #[command(name = "exec-service", hide = true)]
    ExecService(crate::run::instance::TrampolineArgs),
}

/// `run`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The service's name (also its luod session's): 1 to 63 of
    /// A-Z a-z 0-9 . _ @ -
    #[arg(value_name = "NAME", value_parser = parse_service_name)]
    pub name: String,
    /// A listener, passed to every instance (repeatable, in order):
    /// tcp:HOST:PORT, udp:HOST:PORT or unix:PATH, with FDNAME= for its name
    /// in LISTEN_FDNAMES (default: NAME)
    #[arg(long, value_name = "[FDNAME=]ADDRESS")]
    pub listen: Vec<String>,
    /// How a restart replaces the running instance: overlap (start the
    /// new, wait until it is ready, stop the old) or stop-start
    #[arg(long, value_enum, default_value_t = crate::run::Mode::Overlap)]
    pub mode: crate::run::Mode,
    /// When an instance is ready: notify (it sends READY=1) or
    /// after:DURATION (it still runs after DURATION, e.g. after:500ms)
    #[arg(long, value_name = "notify|after:DURATION", default_value = "notify", value_parser = parse_ready)]
    pub ready: crate::run::Ready,
    /// How long an instance may take to become ready (EXTEND_TIMEOUT_USEC=
    /// extends it)
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_duration)]
    pub ready_timeout: std::time::Duration,
    /// The signal that stops an instance (sent to its process group)
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    pub stop_signal: i32,
    /// How long after the stop signal SIGKILL follows
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: std::time::Duration,
    /// on-failure: start a failed service again, with back-off; no: exit
    /// with the service's status
    #[arg(long, value_enum, default_value_t = crate::run::RestartPolicy::OnFailure)]
    pub restart: crate::run::RestartPolicy,
    /// Who may send notifications: main (the main pid) or all (any process
    /// of the service's process group)
    #[arg(long, value_enum, default_value_t = crate::run::NotifyAccess::Main)]
    pub notify_access: crate::run::NotifyAccess,
    /// Watchdog interval: passed as WATCHDOG_USEC; an instance that does
    /// not send WATCHDOG=1 within it is aborted (SIGABRT) and counts as
    /// failed
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub watchdog: Option<std::time::Duration>,
    /// Most fds in the service's fd store (0 turns it off); fds over the
    /// limit are closed with a warning
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub fdstore_max: usize,
    /// The service's command and its arguments
    #[arg(value_name = "COMMAND", last = true, required = true)]
    pub command: Vec<String>,
}

/// `restart`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// The service's name
    #[arg(value_name = "NAME", value_parser = parse_service_name)]
    pub name: String,
    /// The command from now on, if the restart succeeds
    #[arg(value_name = "NEW-COMMAND", last = true)]
    pub command: Vec<String>,
}

/// `services`' arguments.
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    /// Only this service, in detail
    #[arg(value_name = "NAME", value_parser = parse_service_name)]
    pub name: Option<String>,
}

fn parse_service_name(s: &str) -> Result<String, String> {
    if crate::run::control::name_is_valid(s) {
        Ok(s.to_string())
    } else {
        Err("a service name is 1 to 63 of A-Z a-z 0-9 . _ @ - (not starting with . or -)".into())
    }
}

/// A duration: a number and a unit (us, ms, s, min, h); a bare number is
/// seconds. `500ms`, `10s`, `1.5s`, `2min`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a duration such as 500ms, 10s or 2min"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" | "msec" => 1e-3,
        "us" | "usec" => 1e-6,
        "m" | "min" => 60.0,
        "h" | "hr" => 3600.0,
        u => return Err(format!("'{s}': unknown unit '{u}' (us, ms, s, min, h)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("'{s}': too long"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn parse_ready(s: &str) -> Result<crate::run::Ready, String> {
    if s == "notify" {
        return Ok(crate::run::Ready::Notify);
    }
    match s.strip_prefix("after:") {
        Some(d) => Ok(crate::run::Ready::After(parse_duration(d)?)),
        None => Err(format!("'{s}': expected notify or after:DURATION")),
    }
}

fn parse_signal(s: &str) -> Result<i32, String> {
    luo_sys::service::signal_from_name(s).ok_or_else(|| format!("'{s}': unknown signal"))
}

/// `agent`'s commands.
#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// Re-execute luod in place (same pid), keeping every session, file and
    /// connection
    ///
    /// Upgrades luod in place: it re-executes itself as PATH (default: the
    /// binary at its own path, where a package upgrade puts the new version),
    /// with the same pid, keeping its socket, every client connection and
    /// session handle, and every file in custody; clients notice nothing. It
    /// first asks PATH which state versions it reads and refuses (the running
    /// agent carries on) when PATH is not a luod or cannot read this agent's
    /// state. The reply comes from the new agent. Only root and the user luod
    /// runs as may do this.
    #[command(
        override_usage = "luoctl [--socket PATH] [--json] agent upgrade [--binary PATH]",
        help_template = SUB_TEMPLATE
    )]
    Upgrade {
        /// The luod binary to re-execute as (default: the binary at the
        /// agent's own path)
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

/// A session by name: `show`, `handover`, `finish`.
#[derive(Debug, Clone, Args)]
pub struct BySession {
    /// The session's name
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// Act on another uid's session (root only): a uid or a user name from
    /// /etc/passwd
    #[arg(long, value_name = "UID", value_parser = parse_uid)]
    pub owner: Option<u32>,
}

/// `update` and its kernel live update options.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// A kernel live update (kernel backend, root): a preflight, then kexec
    /// into FILE
    #[arg(long, requires = "kernel")]
    pub kexec: bool,
    /// The kernel image to boot (a bzImage)
    #[arg(long, value_name = "FILE", requires = "kexec")]
    pub kernel: Option<PathBuf>,
    /// The initramfs to boot with it
    #[arg(long, value_name = "FILE", requires = "kexec")]
    pub initrd: Option<PathBuf>,
    /// The new kernel's command line
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kexec",
        conflicts_with = "reuse_cmdline"
    )]
    pub append: Option<String>,
    /// The current command line, from /proc/cmdline (the default)
    #[arg(long, requires = "kexec")]
    pub reuse_cmdline: bool,
    /// Print the preflight only
    #[arg(long, requires = "kexec")]
    pub dry_run: bool,
    /// Go ahead although files would be lost
    #[arg(long, requires = "kexec")]
    pub force: bool,
}

/// `--owner`: a uid, or a user name from `/etc/passwd`.
fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    render::users()
        .into_iter()
        .find(|(_, name)| name == s)
        .map(|(uid, _)| uid)
        .ok_or_else(|| "no such user in /etc/passwd (give a numeric uid)".to_string())
}

/// The names of the (nested) command `args` name, as far as they are
/// known: `["agent", "upgrade"]`. Empty when no command is recognised.
fn command_path(args: &[OsString]) -> Vec<String> {
    let mut cmd = Cli::command();
    let mut path = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { break };
        if a == "--" {
            break;
        }
        if a == "--socket" {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        let Some(sub) = cmd.find_subcommand(a).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path
}

/// `--flag <VALUE>` as `--flag VALUE`.
fn plain(s: &str) -> String {
    s.replace(['<', '>'], "")
}

/// A clap error in luoctl's words: what is wrong, naming the argument.
fn usage_message(e: &clap::Error, path: &[String]) -> String {
    let get = |k: ContextKind| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(" and ")),
        _ => None,
    };
    let top = Cli::command();
    let mut cmd = &top;
    for name in path {
        cmd = cmd.find_subcommand(name).unwrap_or(cmd);
    }
    let name = path.join(" ");
    let message = match e.kind() {
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Some(if path.is_empty() {
                "no command given".to_string()
            } else {
                let subs: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
                format!("{name} needs a command: {}", subs.join(", "))
            })
        }
        ErrorKind::InvalidSubcommand => get(ContextKind::InvalidSubcommand).map(|x| {
            let what = if path.is_empty() {
                "command".to_string()
            } else {
                format!("{name} command")
            };
            match get(ContextKind::SuggestedSubcommand) {
                Some(s) => format!("unknown {what} '{x}' (did you mean '{s}'?)"),
                None => format!("unknown {what} '{x}'"),
            }
        }),
        ErrorKind::UnknownArgument => get(ContextKind::InvalidArg).map(|x| {
            if let Some(flag) = x
                .strip_prefix("--")
                .map(|f| f.split('=').next().unwrap_or(f))
            {
                let users: Vec<&str> = top
                    .get_subcommands()
                    .filter(|c| c.get_arguments().any(|a| a.get_long() == Some(flag)))
                    .map(|c| c.get_name())
                    .collect();
                if !users.is_empty() && !path.is_empty() {
                    return format!("--{flag} applies to {}, not {name}", users.join(", "));
                }
            }
            if x.starts_with('-') || path.is_empty() {
                return format!("unknown option '{x}'");
            }
            let names: Vec<String> = cmd
                .get_positionals()
                .filter_map(|a| a.get_value_names()?.first().map(|n| n.to_string()))
                .collect();
            if names.is_empty() {
                format!("{name} takes no arguments, got '{x}'")
            } else {
                format!("{name} takes one {}, got also '{x}'", names.join(" "))
            }
        }),
        ErrorKind::MissingRequiredArgument => get(ContextKind::InvalidArg).map(|x| {
            if path.is_empty() {
                format!("missing {}", plain(&x))
            } else {
                format!("{name} needs {}", plain(&x))
            }
        }),
        ErrorKind::InvalidValue if get(ContextKind::InvalidValue).is_some_and(|v| v.is_empty()) => {
            get(ContextKind::InvalidArg).map(|x| match x.split_once(' ') {
                Some((flag, value)) => format!("{flag} needs a {}", plain(value)),
                None => format!("{} must not be empty", plain(&x)),
            })
        }
        ErrorKind::ArgumentConflict => {
            match (get(ContextKind::InvalidArg), get(ContextKind::PriorArg)) {
                (Some(a), Some(b)) => {
                    Some(format!("give {} or {}, not both", plain(&a), plain(&b)))
                }
                _ => None,
            }
        }
        _ => None,
    };
    message.unwrap_or_else(|| {
        // clap's own words, without its "error: " and usage.
        let text = e.render().to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        let first = text.split("\n\n").next().unwrap_or(text);
        first.split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// A usage error: the message (and, with `--json`, a JSON refusal on
/// stdout) and a hint naming the right help; exit status 2.
fn usage_error(message: &str, path: &[String], json: bool) -> ExitCode {
    let hint = if path.is_empty() {
        "see `luoctl --help`".to_string()
    } else {
        format!("see `luoctl {} --help`", path.join(" "))
    };
    if json {
        print_out(&format!(
            "{}\n",
            refusal_json(&Error::new(Errno::EINVAL, message.to_string()))
        ));
    }
    print_err(message, Some(&hint));
    ExitCode::from(EXIT_USAGE)
}

fn print_out(s: &str) {
    // A closed stdout (e.g. `luoctl sessions | head -0`) is not an error
    // worth a panic.
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn print_err(message: &str, hint: Option<&str>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "luoctl: {message}");
    if let Some(h) = hint {
        let _ = writeln!(e, "hint: {h}");
    }
}

/// `luoctl` with the process's arguments; returns the exit status.
pub fn main() -> ExitCode {
    main_with(std::env::args_os().collect())
}

/// `luoctl` with `args` (the program name first).
pub fn main_with(args: Vec<OsString>) -> ExitCode {
    // As soon as `--json` is seen, even a usage error is reported as JSON.
    let json = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, help COMMAND.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let path = command_path(&args);
            return usage_error(&usage_message(&e, &path), &path, json);
        }
    };
    let Some(command) = &cli.command else {
        if !cli.version {
            return usage_error("no command given", &[], json);
        }
        if cli.json {
            let v = serde_json::json!({"luoctl": VERSION, "protocol": luo_proto::VERSION});
            print_out(&format!("{v}\n"));
        } else {
            print_out(&format!(
                "luoctl {VERSION} (protocol {})\n",
                luo_proto::VERSION
            ));
        }
        return ExitCode::SUCCESS;
    };
    match commands::run(&cli, command) {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(f) => {
            if cli.json {
                print_out(&format!("{}\n", refusal_json(&f.error)));
            }
            print_err(&f.error.to_string(), f.hint.as_deref());
            ExitCode::from(f.code)
        }
    }
}

/// A refusal as the agent's reply carries it.
fn refusal_json(e: &Error) -> String {
    String::from_utf8_lossy(&luo_proto::encode_refusal(e)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("luoctl").chain(a.iter().copied()))
    }

    /// The usage error for `a`, in luoctl's words.
    fn message(a: &[&str]) -> String {
        let e = args(a).expect_err(&format!("{a:?} accepted"));
        let all: Vec<OsString> = std::iter::once("luoctl")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect();
        usage_message(&e, &command_path(&all))
    }

    #[test]
    fn the_command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parsing() {
        assert!(matches!(
            args(&["status"]).unwrap().command,
            Some(Command::Status)
        ));
        let o = args(&["--json", "show", "kv", "--owner", "1000", "--socket=/x"]).unwrap();
        assert!(o.json);
        assert_eq!(o.socket, Some(PathBuf::from("/x")));
        assert!(
            matches!(o.command, Some(Command::Show(ref s)) if s.name == "kv" && s.owner == Some(1000))
        );
        assert!(matches!(
            args(&["finish", "--", "-odd"]).unwrap().command,
            Some(Command::Finish(ref s)) if s.name == "-odd"
        ));
        assert_eq!(
            args(&["show", "--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert!(args(&["--version"]).unwrap().version);
        assert!(args(&[]).unwrap().command.is_none());
        assert!(args(&["frob"]).is_err());
        assert!(args(&["show"]).is_err());
        assert!(args(&["show", "a", "b"]).is_err());
        assert!(args(&["status", "--owner", "0"]).is_err());
        assert!(args(&["show", "kv", "--owner", "no-such-user-here"]).is_err());
        let o = args(&["show", "kv", "--owner", "root"]).unwrap();
        assert!(
            matches!(o.command, Some(Command::Show(ref s)) if s.name == "kv" && s.owner == Some(0))
        );
        assert!(args(&["status", "--socket"]).is_err());
        assert!(args(&["status", "-x"]).is_err());
        assert!(matches!(
            args(&["agent", "upgrade", "--binary", "/b"]).unwrap().command,
            Some(Command::Agent { command: AgentCommand::Upgrade { binary: Some(ref b) } }) if b == "/b"
        ));
    }

    #[test]
    fn usage_messages_name_the_argument() {
        for (a, want) in [
            (&["frobnicate"][..], "unknown command 'frobnicate'"),
            (&["status", "--bogus"], "unknown option '--bogus'"),
            (&["show"], "show needs NAME"),
            (&["show", ""], "NAME must not be empty"),
            (&["finish", "a", "b"], "finish takes one NAME, got also 'b'"),
            (
                &["status", "extra"],
                "status takes no arguments, got 'extra'",
            ),
            (
                &["sessions", "--owner", "0"],
                "--owner applies to show, handover, finish, abort, not sessions",
            ),
            (&["status", "--socket"], "--socket needs a PATH"),
            (&["update", "--kexec"], "update needs --kernel FILE"),
            (&["update", "--kernel", "/k"], "update needs --kexec"),
            (&["update", "--kexec", "--kernel"], "--kernel needs a FILE"),
            (
                &[
                    "update",
                    "--kexec",
                    "--kernel",
                    "/k",
                    "--append",
                    "x",
                    "--reuse-cmdline",
                ],
                "give --append CMDLINE or --reuse-cmdline, not both",
            ),
            (&["agent"], "agent needs a command: upgrade"),
            (
                &["agent", "upgrade", "x"],
                "agent upgrade takes no arguments, got 'x'",
            ),
        ] {
            assert_eq!(message(a), want, "{a:?}");
        }
        assert!(message(&["show", "kv", "--owner", "bob"]).contains("numeric uid"));
    }
}
