//! `luoctl`: look at and operate `luod`, the Live Update Orchestrator agent.
//!
//! Run `luoctl --help` for the commands and exit codes.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use luo::{Client, Errno, Error, SessionDetail, Status, Usage, Value};
use serde_json::json;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes (documented in the help text).
const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_PROTOCOL: u8 = 4;

const HELP: &str = "\
luoctl: look at and operate luod, the Live Update Orchestrator agent

USAGE:
    luoctl [--socket PATH] [--json] COMMAND [ARGS]

COMMANDS:
    status                      the agent's state, your sessions, quota and usage
    sessions                    list sessions (yours; every uid's for root)
    show NAME [--owner UID]     a session and its files
    update                      emulated live update: every outgoing session
                                crosses and the epoch advances (root or luod's user)
    update --kexec --kernel FILE [--initrd FILE] [--append CMDLINE | --reuse-cmdline]
           [--dry-run] [--force]
                                kernel live update (kernel backend, root): a
                                preflight, then kexec into FILE
    handover NAME [--owner UID] hand over an outgoing session by name
    finish NAME [--owner UID]   retrieve and finish an incoming session by name,
                                discarding files nobody retrieved
    agent upgrade [--binary PATH]
                                re-execute luod in place (same pid) as PATH
                                (default: its own binary's path), keeping
                                every session, file and connection
    help [COMMAND]              this text, or a command's

OPTIONS:
    --socket PATH   luod's socket (default: $LUOD_SOCKET, else /run/luod/luod.sock
                    for root, else $XDG_RUNTIME_DIR/luod.sock)
    --json          print the agent's reply as one JSON document on stdout;
                    errors too: {\"ok\":false,\"errno\":N,\"error\":\"ENAME\",\"message\":\"...\"}
    --owner USER    act on another uid's session (root only): a uid or a
                    user name from /etc/passwd
    -h, --help      print help (`luoctl COMMAND --help` for a command's)
    -V, --version   print the version

EXIT STATUS:
    0   success
    1   the agent refused the request (the message names the errno)
    2   usage error
    3   cannot reach the agent (not running, wrong socket, no permission,
        or it hung up)
    4   protocol error (an unexpected reply: luoctl and luod versions differ?)

Errors go to stderr as `luoctl: MESSAGE`, often followed by a `hint:` line.
";

/// Each command and its help text.
const COMMAND_HELP: &[(&str, &str)] = &[
    (
        "status",
        "\
usage: luoctl [--socket PATH] [--json] status

The agent's version, backend, pid and epoch; sessions (outgoing and incoming),
files and pinned bytes that you can see (every uid's for root); the agent's
connections, open descriptors and RLIMIT_NOFILE; the per-uid quota and your
usage against it.
",
    ),
    (
        "sessions",
        "\
usage: luoctl [--socket PATH] [--json] sessions

A table of sessions: NAME OWNER STATE HANDLES FILES PINNED KEXEC-SAFE.
You see your own sessions; root sees every uid's.
STATE is open (outgoing), incoming (handed over, waiting), retrieved, or
finished.
",
    ),
    (
        "show",
        "\
usage: luoctl [--socket PATH] [--json] show NAME [--owner UID]

The session(s) named NAME (an outgoing and an incoming session may share a
name) and a table of their files: TOKEN TYPE HANDLER IDENTITY SIZE PINNED
KEXEC-SAFE RETRIEVED. --owner UID names another uid's session (root only).
",
    ),
    (
        "update",
        "\
usage: luoctl [--socket PATH] [--json] update
       luoctl [--socket PATH] [--json] update --kexec --kernel FILE [--initrd FILE]
              [--append CMDLINE | --reuse-cmdline] [--dry-run] [--force]

Without --kexec: an emulated live update. Every outgoing session crosses (is
handed over) at once and the epoch advances. Handles on crossed sessions
become stale; the next processes retrieve the sessions by name. Only root and
the user luod runs as may do this.

With --kexec: a kernel live update (luod on the kernel backend; root only).
luoctl first prints the preflight: every session and file, which files cannot
cross a kexec (sockets, eventfds, pipes) and why, and whether liveupdate=on is
active now and on the new command line. Unless --dry-run, luod then loads FILE
(and the initramfs) with kexec_file_load, writes its registry into a kernel
session and reboots into the new kernel with reboot(LINUX_REBOOT_CMD_KEXEC);
the new kernel's luod restores every session. If the preflight found problems
(files that would be lost, no liveupdate=on) luoctl refuses unless --force.
A refusal by the kernel (for example a file that failed to freeze) is
reported with the kernel's errno, and nothing changes.

    --kernel FILE       the kernel image to boot (a bzImage)
    --initrd FILE       the initramfs to boot with it
    --append CMDLINE    the new kernel's command line
    --reuse-cmdline     the current one, from /proc/cmdline (the default)
    --dry-run           print the preflight only
    --force             go ahead although files would be lost
",
    ),
    (
        "handover",
        "\
usage: luoctl [--socket PATH] [--json] handover NAME [--owner UID]

Hands over the outgoing session NAME, as its holder would: it stops taking
files and waits for the next process to retrieve it. --owner UID names
another uid's session (root only).
",
    ),
    (
        "finish",
        "\
usage: luoctl [--socket PATH] [--json] finish NAME [--owner UID]

Retrieves and finishes the incoming session NAME in one step. Files that were
never retrieved are discarded: this clears a session nobody will come back
for. A session a process holds (retrieved, handle open) is refused. --owner
UID names another uid's session (root only).
",
    ),
    (
        "agent",
        "\
usage: luoctl [--socket PATH] [--json] agent upgrade [--binary PATH]

Upgrades luod in place: it re-executes itself as PATH (default: the binary
at its own path, where a package upgrade puts the new version), with the
same pid, keeping its socket, every client connection and session handle,
and every file in custody; clients notice nothing. It first asks PATH which
state versions it reads and refuses (the running agent carries on) when PATH
is not a luod or cannot read this agent's state. The reply comes from the
new agent. Only root and the user luod runs as may do this.
",
    ),
    (
        "help",
        "\
usage: luoctl help [COMMAND]

Prints the help text, or a command's.
",
    ),
];

fn command_help(cmd: &str) -> Option<&'static str> {
    COMMAND_HELP
        .iter()
        .find(|(name, _)| *name == cmd)
        .map(|&(_, text)| text)
}

/// What to do.
#[derive(Debug)]
enum Command {
    Help(Option<String>),
    Version,
    Status,
    Sessions,
    Show(String, Option<u32>),
    Update,
    Kexec(KexecArgs),
    Upgrade(Option<PathBuf>),
    Handover(String, Option<u32>),
    Finish(String, Option<u32>),
}

/// `update --kexec` and its options.
#[derive(Debug, Default)]
struct KexecArgs {
    kexec: bool,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    reuse_cmdline: bool,
    dry_run: bool,
    force: bool,
}

impl KexecArgs {
    fn any(&self) -> bool {
        self.kexec
            || self.kernel.is_some()
            || self.initrd.is_some()
            || self.append.is_some()
            || self.reuse_cmdline
            || self.dry_run
            || self.force
    }
}

/// Where the socket path came from, for hints.
#[derive(Debug)]
enum SocketSource {
    Flag,
    Env,
    Default,
}

#[derive(Debug)]
struct Opts {
    socket: Option<PathBuf>,
    json: bool,
    command: Command,
}

/// A usage error: the message and the command it concerns, if known.
#[derive(Debug)]
struct UsageError {
    message: String,
    command: Option<String>,
}

fn usage(message: impl Into<String>, command: Option<&str>) -> UsageError {
    UsageError {
        message: message.into(),
        command: command.map(str::to_string),
    }
}

fn parse_uid(s: Option<OsString>) -> Result<u32, UsageError> {
    let s = s.ok_or_else(|| usage("--owner needs a UID or user name", None))?;
    let t = s.to_string_lossy();
    if let Ok(uid) = t.parse::<u32>() {
        return Ok(uid);
    }
    users()
        .into_iter()
        .find(|(_, name)| *name == t)
        .map(|(uid, _)| uid)
        .ok_or_else(|| {
            usage(
                format!("--owner {t:?}: no such user in /etc/passwd (give a numeric uid)"),
                None,
            )
        })
}

/// `(uid, name)` of every user in `/etc/passwd` (empty if it cannot be read;
/// luoctl then shows numbers only).
fn users() -> Vec<(u32, String)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// A uid for people: `1000 (alice)`, or the number alone.
fn owner_name(uid: u32, users: &[(u32, String)]) -> String {
    match users.iter().find(|(u, _)| *u == uid) {
        Some((_, name)) => format!("{uid} ({name})"),
        None => uid.to_string(),
    }
}

/// Parses the arguments after the program name. `json` is set as soon as
/// `--json` is seen, so a usage error can still be reported as JSON.
fn parse(args: Vec<OsString>, json: &mut bool) -> Result<Opts, UsageError> {
    let mut socket = None;
    let mut owner = None;
    let mut help = false;
    let mut version = false;
    let mut positional: Vec<OsString> = Vec::new();
    let mut only_positional = false;
    let mut kx = KexecArgs::default();
    let mut binary: Option<PathBuf> = None;
    let path_arg = |flag: &str, v: Option<OsString>| match v {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(usage(format!("{flag} needs a FILE"), Some("update"))),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if only_positional {
            positional.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            positional.push(arg);
            continue;
        };
        match s {
            "--" => only_positional = true,
            "--json" => *json = true,
            "-h" | "--help" => help = true,
            "-V" | "--version" => version = true,
            "--socket" => {
                let p = it
                    .next()
                    .ok_or_else(|| usage("--socket needs a PATH", None))?;
                socket = Some(PathBuf::from(p));
            }
            "--owner" => owner = Some(parse_uid(it.next())?),
            "--kexec" => kx.kexec = true,
            "--kernel" => kx.kernel = Some(path_arg("--kernel", it.next())?),
            "--initrd" => kx.initrd = Some(path_arg("--initrd", it.next())?),
            "--append" => {
                let v = it
                    .next()
                    .ok_or_else(|| usage("--append needs a CMDLINE", Some("update")))?;
                kx.append = Some(
                    v.into_string()
                        .map_err(|_| usage("--append: not valid UTF-8", Some("update")))?,
                );
            }
            "--reuse-cmdline" => kx.reuse_cmdline = true,
            "--binary" => {
                binary = Some(
                    it.next()
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .ok_or_else(|| usage("--binary needs a PATH", Some("agent")))?,
                )
            }
            "--dry-run" => kx.dry_run = true,
            "--force" => kx.force = true,
            _ if s.starts_with("--socket=") => {
                socket = Some(PathBuf::from(&s["--socket=".len()..]));
            }
            _ if s.starts_with("--owner=") => {
                owner = Some(parse_uid(Some(s["--owner=".len()..].into()))?)
            }
            _ if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(format!("unknown option '{s}'"), None));
            }
            _ => positional.push(arg),
        }
    }
    if socket.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(usage("--socket needs a non-empty PATH", None));
    }
    let mut words = Vec::with_capacity(positional.len());
    for p in positional {
        match p.into_string() {
            Ok(s) => words.push(s),
            Err(p) => {
                return Err(usage(
                    format!("'{}' is not valid UTF-8", p.to_string_lossy()),
                    None,
                ))
            }
        }
    }
    let mut words = words.into_iter();
    let cmd = words.next();
    let rest: Vec<String> = words.collect();
    let opts = |command| {
        Ok(Opts {
            socket: socket.clone(),
            json: *json,
            command,
        })
    };
    if version && cmd.is_none() {
        return opts(Command::Version);
    }
    let Some(cmd) = cmd else {
        if help {
            return opts(Command::Help(None));
        }
        return Err(usage("no command given", None));
    };
    if command_help(&cmd).is_none() {
        return Err(usage(format!("unknown command '{cmd}'"), None));
    }
    if help {
        return opts(Command::Help(Some(cmd)));
    }
    let c = Some(cmd.as_str());
    if owner.is_some() && !matches!(cmd.as_str(), "show" | "handover" | "finish") {
        return Err(usage(
            format!("--owner applies to show, handover and finish, not {cmd}"),
            c,
        ));
    }
    if binary.is_some() && cmd != "agent" {
        return Err(usage(
            format!("--binary applies to agent upgrade, not {cmd}"),
            c,
        ));
    }
    if kx.any() && cmd != "update" {
        return Err(usage(
            format!("--kexec, --kernel, --initrd, --append, --reuse-cmdline, --dry-run and --force apply to update, not {cmd}"),
            c,
        ));
    }
    if kx.any() && !kx.kexec {
        return Err(usage(
            "--kernel, --initrd, --append, --reuse-cmdline, --dry-run and --force need --kexec",
            c,
        ));
    }
    if kx.kexec && kx.kernel.is_none() {
        return Err(usage("update --kexec needs --kernel FILE", c));
    }
    if kx.append.is_some() && kx.reuse_cmdline {
        return Err(usage(
            "give --append CMDLINE or --reuse-cmdline, not both",
            c,
        ));
    }
    let no_args = |command: Command| {
        if let Some(extra) = rest.first() {
            return Err(usage(format!("{cmd} takes no arguments, got '{extra}'"), c));
        }
        opts(command)
    };
    let by_name = |make: fn(String, Option<u32>) -> Command| match rest.as_slice() {
        [name] if name.is_empty() => Err(usage("the session NAME must not be empty", c)),
        [name] => opts(make(name.clone(), owner)),
        [] => Err(usage(format!("{cmd} needs a session NAME"), c)),
        [_, extra, ..] => Err(usage(
            format!("{cmd} takes one session NAME, got also '{extra}'"),
            c,
        )),
    };
    match cmd.as_str() {
        "help" => match rest.as_slice() {
            [] => opts(Command::Help(None)),
            [topic] if command_help(topic).is_some() => opts(Command::Help(Some(topic.clone()))),
            [topic] => Err(usage(format!("unknown command '{topic}'"), None)),
            [_, extra, ..] => Err(usage(
                format!("help takes one COMMAND, got also '{extra}'"),
                c,
            )),
        },
        "status" => no_args(Command::Status),
        "sessions" => no_args(Command::Sessions),
        "update" if kx.kexec => no_args(Command::Kexec(kx)),
        "agent" => match rest.as_slice() {
            [sub] if sub == "upgrade" => opts(Command::Upgrade(binary)),
            [] => Err(usage("agent needs a subcommand: upgrade", c)),
            [sub] => Err(usage(
                format!("unknown agent subcommand '{sub}'; try upgrade"),
                c,
            )),
            [_, extra, ..] => Err(usage(
                format!("agent upgrade takes no arguments, got '{extra}'"),
                c,
            )),
        },
        "update" => no_args(Command::Update),
        "show" => by_name(Command::Show),
        "handover" => by_name(Command::Handover),
        "finish" => by_name(Command::Finish),
        _ => Err(usage(format!("unknown command '{cmd}'"), None)),
    }
}

// ---------------------------------------------------------------- output

/// `1.0 GiB`, `512 B`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    // Step up before rounding would print "1024.0".
    while v >= 1023.95 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Left-aligned columns, two spaces apart, no trailing blanks.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&width) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `st_dev` as `major:minor` (the kernel's `new_encode_dev` layout).
fn dev_string(dev: u64) -> String {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    format!("{major}:{minor}")
}

fn identity_string(f: &luo::FileDetail) -> String {
    let inode = format!("inode {}/{}", dev_string(f.dev), f.ino);
    match f.identity.as_str() {
        "inode" => inode,
        "open-file" => format!("open file ({inode})"),
        other => format!("{other} ({inode})"),
    }
}

fn limit(used: u64, max: u64, fmt: fn(u64) -> String) -> String {
    let max = if max == u64::MAX {
        "unlimited".to_string()
    } else {
        fmt(max)
    };
    format!("{} of {max}", fmt(used))
}

fn render_status(s: &Status) -> String {
    let count = |n: u64| n.to_string();
    let whose = if s.uid == 0 {
        "root: counts cover every uid's sessions"
    } else {
        "counts cover your own sessions"
    };
    let Usage {
        sessions,
        files,
        pinned_bytes,
    } = s.usage;
    let q = s.quota;
    let mut quota = format!(
        "sessions {}, files {}, pinned {}",
        limit(sessions, q.sessions, count),
        limit(files, q.files, count),
        limit(pinned_bytes, q.pinned_bytes, human_bytes),
    );
    if s.uid == 0 {
        quota.push_str(" (root is not bound by the quota)");
    }
    let rows = [
        ("agent", format!("{} (protocol {})", s.agent, s.protocol)),
        ("backend", s.backend.clone()),
        ("pid", s.pid.to_string()),
        ("epoch", s.epoch.to_string()),
        ("you", format!("uid {} ({whose})", s.uid)),
        (
            "sessions",
            format!("{} outgoing, {} incoming", s.outgoing, s.incoming),
        ),
        ("files", s.files.to_string()),
        ("pinned", human_bytes(s.pinned_bytes)),
        ("connections", s.connections.to_string()),
        ("open fds", s.open_fds.to_string()),
        (
            "RLIMIT_NOFILE",
            format!("{} (hard {})", s.nofile_soft, s.nofile_hard),
        ),
        ("usage/quota", quota),
        ("crash safety", s.store.clone()),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"));
    }
    out
}

fn render_sessions(list: &[SessionDetail]) -> String {
    if list.is_empty() {
        return "no sessions\n".to_string();
    }
    let users = users();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                owner_name(s.owner, &users),
                s.state.as_str().to_string(),
                s.handles.to_string(),
                s.file_count.to_string(),
                human_bytes(s.pinned_bytes),
                yes_no(s.kexec_safe).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "OWNER",
            "STATE",
            "HANDLES",
            "FILES",
            "PINNED",
            "KEXEC-SAFE",
        ],
        &rows,
    )
}

fn render_show(list: &[SessionDetail]) -> String {
    let users = users();
    let mut out = String::new();
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "session '{}' (owner {}): {}, {}, {}, {} pinned, {}",
            s.name,
            owner_name(s.owner, &users),
            s.state.as_str(),
            plural(s.handles, "handle", "handles"),
            plural(s.file_count, "file", "files"),
            human_bytes(s.pinned_bytes),
            if s.kexec_safe {
                "kexec-safe"
            } else {
                "not kexec-safe"
            },
        );
        if s.files.is_empty() {
            out.push_str("no files\n");
            continue;
        }
        let rows: Vec<Vec<String>> = s
            .files
            .iter()
            .map(|f| {
                vec![
                    f.token.to_string(),
                    f.kind.clone(),
                    f.handler.clone(),
                    identity_string(f),
                    human_bytes(f.size),
                    human_bytes(f.pinned_bytes),
                    yes_no(f.kexec_safe).to_string(),
                    f.retrieved.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "TOKEN",
                "TYPE",
                "HANDLER",
                "IDENTITY",
                "SIZE",
                "PINNED",
                "KEXEC-SAFE",
                "RETRIEVED",
            ],
            &rows,
        ));
    }
    out
}

fn owned_by(name: &str, owner: Option<u32>) -> String {
    match owner {
        Some(uid) => format!("session '{name}' of uid {uid}"),
        None => format!("session '{name}'"),
    }
}

// ---------------------------------------------------------------- running

/// A failed run: the error, the exit code, and a hint.
struct Failure {
    error: Error,
    code: u8,
    hint: Option<String>,
}

/// The exit code for an error that happened after connecting.
fn code_for(e: &Error) -> u8 {
    match e.errno {
        Errno::EPROTO | Errno::EPROTONOSUPPORT | Errno::EBADMSG => EXIT_PROTOCOL,
        Errno::ECONNRESET | Errno::EPIPE => EXIT_UNREACHABLE,
        _ => EXIT_REFUSED,
    }
}

fn hint_for(cmd: &Command, e: &Error) -> Option<String> {
    let name = match cmd {
        Command::Show(n, _) | Command::Handover(n, _) | Command::Finish(n, _) => Some(n.as_str()),
        _ => None,
    };
    Some(match (cmd, e.errno) {
        (_, Errno::EPROTO | Errno::EPROTONOSUPPORT | Errno::EBADMSG) => format!(
            "luoctl {VERSION} speaks protocol {}; use the luoctl that came with this luod",
            luo_proto::VERSION
        ),
        (_, Errno::ECONNRESET | Errno::EPIPE) => {
            "luod may have crashed or been stopped; check its log and start it again with `luod`"
                .to_string()
        }
        (Command::Kexec(_), Errno::EPERM) => {
            "a kernel live update reboots the machine: run it as root".to_string()
        }
        (Command::Kexec(_), Errno::EOPNOTSUPP) => {
            "start luod with --backend kernel on a kernel booted with liveupdate=on".to_string()
        }
        (Command::Upgrade(_), Errno::EPERM) => {
            "only root and the user luod runs as may upgrade it".to_string()
        }
        (Command::Upgrade(_), Errno::ENOEXEC | Errno::EOPNOTSUPP) => {
            "the running agent was not touched; give --binary a luod that reads its state".to_string()
        }
        (Command::Update, Errno::EPERM) => {
            "only root and the user luod runs as may run update".to_string()
        }
        (_, Errno::EPERM) => {
            "run as the session's owner or root (only root may use --owner)".to_string()
        }
        (Command::Show(..) | Command::Handover(..) | Command::Finish(..), Errno::ENOENT) => {
            "see `luoctl sessions`".to_string()
        }
        (Command::Finish(..), Errno::EINVAL) => {
            "the session is held by a process; close its handle first".to_string()
        }
        (Command::Handover(..), Errno::EEXIST) => format!(
            "an incoming session named '{}' is unfinished; finish it first (`luoctl finish {}`)",
            name.unwrap_or_default(),
            name.unwrap_or_default()
        ),
        (Command::Update, Errno::EEXIST) => {
            "an incoming session has the name of an outgoing one; finish it first (see `luoctl sessions`)"
                .to_string()
        }
        _ => return None,
    })
}

fn connect_hint(e: &Error, source: &SocketSource) -> String {
    let mut hint = match source {
        SocketSource::Flag => {
            "check the path given to --socket (without it luoctl uses $LUOD_SOCKET, else the default)"
                .to_string()
        }
        SocketSource::Env => "check $LUOD_SOCKET, or unset it to use the default".to_string(),
        SocketSource::Default => format!(
            "that is the default socket for uid {}; if luod listens elsewhere, pass --socket PATH or set LUOD_SOCKET",
            luo_sys::geteuid()
        ),
    };
    if matches!(e.errno, Errno::EACCES | Errno::EPERM) {
        hint.push_str("; or run luoctl as a user who may reach the socket");
    }
    hint
}

/// Runs a command against the agent; returns what to print on stdout.
fn run(opts: &Opts) -> Result<String, Failure> {
    let (path, source) = match &opts.socket {
        Some(p) => (p.clone(), SocketSource::Flag),
        None => {
            let src = if std::env::var_os("LUOD_SOCKET").is_some_and(|s| !s.is_empty()) {
                SocketSource::Env
            } else {
                SocketSource::Default
            };
            (luo::default_socket_path(), src)
        }
    };
    let client = Client::connect_to(&path).map_err(|error| Failure {
        hint: Some(connect_hint(&error, &source)),
        code: EXIT_UNREACHABLE,
        error,
    })?;
    let cmd = &opts.command;
    let fail = |error: Error| Failure {
        code: code_for(&error),
        hint: hint_for(cmd, &error),
        error,
    };
    let by_name = |op: &str, name: &str, owner: Option<u32>| {
        let mut v = json!({"op": op, "name": name});
        if let Some(o) = owner {
            v["owner"] = o.into();
        }
        v
    };
    if let Command::Upgrade(b) = cmd {
        let started = std::time::Instant::now();
        let before = client.status().map_err(fail)?;
        let reply = client.upgrade_agent(b.as_deref()).map_err(fail)?;
        if opts.json {
            return Ok(format!("{}\n", ok_json(&reply)));
        }
        return Ok(format!(
            "luod upgraded in place: {} -> {}, pid {} ({}), answering again after {:.1} ms\n",
            reply.previous,
            reply.agent,
            reply.pid,
            if before.pid == reply.pid {
                "unchanged"
            } else {
                "CHANGED"
            },
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    if let Command::Kexec(k) = cmd {
        return kexec(&client, k, opts.json).map_err(|(error, hint)| Failure {
            code: code_for(&error),
            hint: hint.or_else(|| hint_for(cmd, &error)),
            error,
        });
    }
    let request = match cmd {
        Command::Status => json!({"op": "status"}),
        Command::Sessions => json!({"op": "sessions"}),
        Command::Update => json!({"op": "update"}),
        Command::Show(n, o) => by_name("show", n, *o),
        Command::Handover(n, o) => by_name("handover", n, *o),
        Command::Finish(n, o) => by_name("finish", n, *o),
        Command::Kexec(_) | Command::Upgrade(_) | Command::Help(_) | Command::Version => {
            unreachable!("handled above")
        }
    };
    // The epoch before an update, for the human-readable report.
    let before = match (cmd, opts.json) {
        (Command::Update, false) => Some(client.status().map_err(fail)?.epoch),
        _ => None,
    };
    // Listings come in pages; the library puts them together.
    let listing = match cmd {
        Command::Sessions => Some((client.sessions().map_err(fail)?, false)),
        Command::Show(n, o) => Some((client.show(n, *o).map_err(fail)?, true)),
        _ => None,
    };
    if let Some((sessions, with_files)) = listing {
        if opts.json {
            let mut list = serde_json::to_value(&sessions).unwrap_or_default();
            if with_files {
                // A detail always lists its files, even none.
                for s in list.as_array_mut().into_iter().flatten() {
                    if s.get("files").is_none() {
                        s["files"] = json!([]);
                    }
                }
            }
            return Ok(format!("{}\n", ok_json(&json!({"sessions": list}))));
        }
        return Ok(if with_files {
            render_show(&sessions)
        } else {
            render_sessions(&sessions)
        });
    }
    let reply = client.raw_request(&request).map_err(fail)?;
    if opts.json {
        return Ok(format!("{reply}\n"));
    }
    let proto = |e: serde_json::Error| {
        fail(Error::new(
            Errno::EPROTO,
            format!("unexpected reply from luod: {e}"),
        ))
    };
    let text = match cmd {
        Command::Status => {
            render_status(&serde_json::from_value::<Status>(reply.clone()).map_err(proto)?)
        }
        Command::Sessions | Command::Show(..) => unreachable!("listed above"),
        Command::Update => {
            let after = reply.get("epoch").and_then(Value::as_u64).ok_or_else(|| {
                fail(Error::new(
                    Errno::EPROTO,
                    "unexpected reply from luod: \"epoch\" is missing",
                ))
            })?;
            let before = before.unwrap_or(after.saturating_sub(1));
            format!("epoch {before} -> {after}: every outgoing session crossed; old handles are stale\n")
        }
        Command::Handover(n, o) => format!(
            "{} handed over; the next process retrieves it by name\n",
            owned_by(n, *o)
        ),
        Command::Finish(n, o) => format!("{} finished\n", owned_by(n, *o)),
        Command::Kexec(_) | Command::Upgrade(_) | Command::Help(_) | Command::Version => {
            unreachable!("handled above")
        }
    };
    Ok(text)
}

/// The current command line as `--reuse-cmdline` reuses it: the boot
/// loader's `BOOT_IMAGE=` and `initrd=` words name files of the old boot.
fn reused_cmdline() -> Result<String, Error> {
    let text = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| Error::new(Errno::from(e), "reading /proc/cmdline failed"))?;
    Ok(text
        .split_ascii_whitespace()
        .filter(|w| !w.starts_with("BOOT_IMAGE=") && !w.starts_with("initrd="))
        .collect::<Vec<_>>()
        .join(" "))
}

fn render_preflight(p: &Value) -> String {
    let users = users();
    let u = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let b = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel live update preflight (epoch {} -> {}, backend {})",
        u("epoch"),
        u("epoch") + 1,
        p.get("backend").and_then(Value::as_str).unwrap_or("?")
    );
    let initrd = match p.get("initrd_bytes").and_then(Value::as_u64) {
        Some(n) => format!(", initramfs {}", human_bytes(n)),
        None => ", no initramfs".to_string(),
    };
    let _ = writeln!(
        out,
        "  new kernel:    {}{initrd}",
        human_bytes(u("kernel_bytes"))
    );
    let _ = writeln!(
        out,
        "  command line:  {:?} (liveupdate=on: {})",
        p.get("cmdline").and_then(Value::as_str).unwrap_or(""),
        yes_no(b("next_cmdline_liveupdate"))
    );
    let _ = writeln!(
        out,
        "  this kernel:   liveupdate=on: {}, /dev/liveupdate held by luod: {}, kernel sessions: {}",
        yes_no(b("current_cmdline_liveupdate")),
        yes_no(b("liveupdate_device")),
        u("kernel_sessions")
    );
    out.push('\n');
    let sessions = p
        .get("sessions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut lost_lines = Vec::new();
    if sessions.is_empty() {
        out.push_str("no sessions\n");
    } else {
        let rows: Vec<Vec<String>> = sessions
            .iter()
            .map(|s| {
                let su = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                let owner = owner_name(su("owner") as u32, &users);
                for f in s
                    .get("lost")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice)
                {
                    lost_lines.push(format!(
                        "  session '{name}' (owner {owner}), token {} ({}): {}",
                        f.get("token").and_then(Value::as_u64).unwrap_or(0),
                        f.get("handler").and_then(Value::as_str).unwrap_or("?"),
                        f.get("why").and_then(Value::as_str).unwrap_or("")
                    ));
                }
                vec![
                    name.to_string(),
                    owner,
                    s.get("state")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    su("files").to_string(),
                    su("carried").to_string(),
                    (su("files") - su("carried").min(su("files"))).to_string(),
                    human_bytes(su("bytes")),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "SESSION",
                "OWNER",
                "STATE",
                "FILES",
                "CROSS",
                "LOST",
                "MEMFD BYTES",
            ],
            &rows,
        ));
    }
    if !lost_lines.is_empty() {
        out.push_str("\ncannot cross a kexec:\n");
        for l in lost_lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\n{} in {} cross ({} of memfd); {} would be lost",
        plural(u("carried_files"), "file", "files"),
        plural(sessions.len() as u64, "session", "sessions"),
        human_bytes(u("carried_bytes")),
        plural(u("lost_files"), "file", "files"),
    );
    let problems = p
        .get("problems")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if problems.is_empty() {
        out.push_str("no problems found\n");
    } else {
        out.push_str("problems:\n");
        for pr in problems {
            let _ = writeln!(out, "  - {}", pr.as_str().unwrap_or(""));
        }
    }
    out
}

/// `update --kexec`: preflight, then (unless `--dry-run`) the live update.
fn kexec(client: &Client, k: &KexecArgs, json: bool) -> Result<String, (Error, Option<String>)> {
    let open = |what: &str, p: &PathBuf| {
        std::fs::File::open(p).map_err(|e| {
            (
                Error::new(
                    Errno::from(e),
                    format!("cannot open the {what} {}", p.display()),
                ),
                Some(format!("check the path given to --{what}")),
            )
        })
    };
    let kernel = open("kernel", k.kernel.as_ref().expect("checked at parse"))?;
    let initrd = match &k.initrd {
        Some(p) => Some(open("initrd", p)?),
        None => None,
    };
    let cmdline = match &k.append {
        Some(c) => c.clone(),
        None => reused_cmdline().map_err(|e| (e, None))?,
    };
    let plan = luo::KexecPlan {
        kernel: kernel.as_fd(),
        initrd: initrd.as_ref().map(|f| f.as_fd()),
        cmdline: &cmdline,
        force: k.force,
    };
    let report = client.preflight(&plan).map_err(|e| (e, None))?;
    let problems = report.problems.len();
    let report = serde_json::to_value(&report).unwrap_or_default();
    let text = if json {
        format!("{}\n", ok_json(&json!({"preflight": report})))
    } else {
        render_preflight(&report)
    };
    if k.dry_run {
        return Ok(text);
    }
    print_out(&text);
    if problems > 0 && !k.force {
        return Err((
            Error::new(
                Errno::ECANCELED,
                "the live update was not started: the preflight found problems (above)",
            ),
            Some("fix them, or pass --force to go ahead and lose what cannot cross".into()),
        ));
    }
    if !json {
        print_out("starting the kernel live update: the machine reboots into the new kernel now\n");
    }
    let _ = std::io::stdout().flush();
    client.kexec(&plan).map_err(|e| (e, None))?;
    Ok(String::new())
}

/// A result as the agent's successful reply carries it (of any size: a
/// listing put together from many pages).
fn ok_json<T: serde::Serialize>(body: &T) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("ok".into(), true.into());
    if let Ok(Value::Object(members)) = serde_json::to_value(body) {
        out.extend(members);
    }
    Value::Object(out)
}

/// A refusal as the agent's reply carries it.
fn refusal_json(e: &Error) -> String {
    String::from_utf8(luo_proto::encode_refusal(e)).unwrap_or_default()
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

fn main() -> ExitCode {
    let mut json = false;
    let opts = match parse(std::env::args_os().skip(1).collect(), &mut json) {
        Ok(o) => o,
        Err(u) => {
            let hint = match &u.command {
                Some(c) => format!("see `luoctl {c} --help`"),
                None => "see `luoctl --help`".to_string(),
            };
            if json {
                print_out(&format!(
                    "{}\n",
                    refusal_json(&Error::new(Errno::EINVAL, u.message.clone()))
                ));
            }
            print_err(&u.message, Some(&hint));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match &opts.command {
        Command::Help(None) => {
            print_out(HELP);
            return ExitCode::SUCCESS;
        }
        Command::Help(Some(c)) => {
            print_out(command_help(c).unwrap_or(HELP));
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            if opts.json {
                let v = json!({"luoctl": VERSION, "protocol": luo_proto::VERSION});
                print_out(&format!("{v}\n"));
            } else {
                print_out(&format!(
                    "luoctl {VERSION} (protocol {})\n",
                    luo_proto::VERSION
                ));
            }
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    match run(&opts) {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(f) => {
            if opts.json {
                print_out(&format!("{}\n", refusal_json(&f.error)));
            }
            print_err(&f.error.to_string(), f.hint.as_deref());
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Opts, UsageError> {
        let mut json = false;
        parse(a.iter().map(OsString::from).collect(), &mut json)
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(dev_string(0x2a), "0:42");
        assert_eq!(dev_string((8 << 8) | 1), "8:1");
        assert_eq!(dev_string(0), "0:0");
    }

    #[test]
    fn parsing() {
        assert!(matches!(
            args(&["status"]).unwrap().command,
            Command::Status
        ));
        let o = args(&["--json", "show", "kv", "--owner", "1000", "--socket=/x"]).unwrap();
        assert!(o.json);
        assert_eq!(o.socket, Some(PathBuf::from("/x")));
        assert!(matches!(o.command, Command::Show(ref n, Some(1000)) if n == "kv"));
        assert!(matches!(
            args(&["finish", "--", "-odd"]).unwrap().command,
            Command::Finish(ref n, None) if n == "-odd"
        ));
        assert!(matches!(
            args(&["show", "--help"]).unwrap().command,
            Command::Help(Some(ref c)) if c == "show"
        ));
        assert!(matches!(
            args(&["--version"]).unwrap().command,
            Command::Version
        ));
        assert!(matches!(
            args(&[]).unwrap_err().message.as_str(),
            "no command given"
        ));
        assert!(args(&["frob"]).is_err());
        assert!(args(&["show"]).is_err());
        assert!(args(&["show", "a", "b"]).is_err());
        assert!(args(&["status", "--owner", "0"]).is_err());
        assert!(args(&["show", "kv", "--owner", "no-such-user-here"]).is_err());
        let o = args(&["show", "kv", "--owner", "root"]).unwrap();
        assert!(matches!(o.command, Command::Show(ref n, Some(0)) if n == "kv"));
        assert!(args(&["status", "--socket"]).is_err());
        assert!(args(&["status", "-x"]).is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\n");
    }
}
