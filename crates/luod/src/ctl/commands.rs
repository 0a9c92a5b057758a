//! What each `luoctl` command does: one request (or a few) to the agent,
//! and the text to print.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use luo::{Client, Errno, Error, SessionInfo, Status, Value};
use serde_json::json;

use super::render::{owned_by, render_preflight, render_sessions, render_show, render_status};
use super::{
    print_out, AgentCommand, BySession, Cli, Command, RestartArgs, RunArgs, UpdateArgs,
    EXIT_PROTOCOL, EXIT_REFUSED, EXIT_UNREACHABLE, VERSION,
};

/// A failed run: the error, the exit code, and a hint.
pub(super) struct Failure {
    pub(super) error: Error,
    pub(super) code: u8,
    pub(super) hint: Option<String>,
}

/// Where the socket path came from, for hints.
#[derive(Debug)]
enum SocketSource {
    Flag,
    Env,
    Default,
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
        Command::Show(s) | Command::Handover(s) | Command::Finish(s) | Command::Abort(s) => {
            Some(s.name.as_str())
        }
        _ => None,
    };
    let kexec = matches!(cmd, Command::Update(u) if u.kexec);
    Some(match (cmd, e.errno) {
        (_, Errno::EPROTO | Errno::EPROTONOSUPPORT | Errno::EBADMSG) => format!(
            "luoctl {VERSION} speaks protocol {}; use the luoctl that came with this luod",
            luo_proto::VERSION
        ),
        (_, Errno::ECONNRESET | Errno::EPIPE) => {
            "luod may have crashed or been stopped; check its log and start it again with `luod`"
                .to_string()
        }
        (Command::Update(_), Errno::EPERM) if kexec => {
            "a kernel live update reboots the machine: run it as root".to_string()
        }
        (Command::Update(_), Errno::EOPNOTSUPP) if kexec => {
            "start luod with --backend kernel on a kernel booted with liveupdate=on".to_string()
        }
        (Command::Agent { .. }, Errno::EPERM) => {
            "only root and the user luod runs as may upgrade it".to_string()
        }
        (Command::Agent { .. }, Errno::ENOEXEC | Errno::EOPNOTSUPP) => {
            "the running agent was not touched; give --binary a luod that reads its state".to_string()
        }
        (Command::Update(_), Errno::EPERM) => {
            "only root and the user luod runs as may run update".to_string()
        }
        (_, Errno::EPERM) => {
            "run as the session's owner or root (only root may use --owner)".to_string()
        }
        (Command::Abort(..), Errno::EBUSY) => {
            "a process has retrieved the session; it must finish it or close its handle".to_string()
        }
        (
            Command::Show(..) | Command::Handover(..) | Command::Finish(..) | Command::Abort(..),
            Errno::ENOENT,
        ) => {
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
        (Command::Update(_), Errno::EEXIST) if !kexec => {
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
pub(super) fn run(opts: &Cli, cmd: &Command) -> Result<String, Failure> {
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
    let connect = || {
        Client::connect_to(&path).map_err(|error| Failure {
            hint: Some(connect_hint(&error, &source)),
            code: EXIT_UNREACHABLE,
            error,
        })
    };
    let fail = |error: Error| Failure {
        code: code_for(&error),
        hint: hint_for(cmd, &error),
        error,
    };
    let json = opts.json;
    match cmd {
        Command::Status => {
            let client = connect()?;
            let reply = client.raw_request(&json!({"op": "status"})).map_err(fail)?;
            if json {
                return Ok(format!("{reply}\n"));
            }
            let status = serde_json::from_value::<Status>(reply).map_err(|e| {
                fail(Error::new(
                    Errno::EPROTO,
                    format!("unexpected reply from luod: {e}"),
                ))
            })?;
            Ok(render_status(&status))
        }
        // Listings come in pages; the library puts them together.
        Command::Sessions => Ok(listing(connect()?.sessions().map_err(fail)?, false, json)),
        Command::Show(s) => Ok(listing(
            connect()?.show(&s.name, s.owner).map_err(fail)?,
            true,
            json,
        )),
        Command::Update(k) if k.kexec => {
            kexec(&connect()?, k, json).map_err(|(error, hint)| Failure {
                code: code_for(&error),
                hint: hint.or_else(|| hint_for(cmd, &error)),
                error,
            })
        }
        Command::Update(_) => update(&connect()?, json).map_err(fail),
        Command::Handover(s) => {
            let reply = connect()?
                .raw_request(&by_name("handover", s))
                .map_err(fail)?;
            if json {
                return Ok(format!("{reply}\n"));
            }
            Ok(format!(
                "{} handed over; the next process retrieves it by name\n",
                owned_by(&s.name, s.owner)
            ))
        }
        Command::Finish(s) => {
            let reply = connect()?
                .raw_request(&by_name("finish", s))
                .map_err(fail)?;
            if json {
                return Ok(format!("{reply}\n"));
            }
            Ok(format!("{} finished\n", owned_by(&s.name, s.owner)))
        }
        Command::Abort(s) => {
            let reply = connect()?.raw_request(&by_name("abort", s)).map_err(fail)?;
            if json {
                return Ok(format!("{reply}\n"));
            }
            Ok(format!("{} aborted\n", owned_by(&s.name, s.owner)))
        }
        Command::Agent {
            command: AgentCommand::Upgrade { binary },
        } => upgrade(&connect()?, binary.as_deref(), json).map_err(fail),
        Command::Run(r) => run_service(&path, r),
        Command::Restart(r) => restart_service(&path, r, json),
        Command::Services(a) => services(&path, a.name.as_deref(), json),
        Command::ExecService(t) => {
            let (error, code) = crate::run::instance::trampoline(t);
            Err(Failure {
                error,
                code,
                hint: None,
            })
        }
    }
}

/// `luoctl run`: the supervisor, until it stops.
fn run_service(socket: &Path, r: &RunArgs) -> Result<String, Failure> {
    let usage = |m: String| Failure {
        error: Error::new(Errno::EINVAL, m),
        code: super::EXIT_USAGE,
        hint: Some("see `luoctl run --help`".into()),
    };
    let listen = r
        .listen
        .iter()
        .map(|l| crate::run::listen::parse_spec(l, &r.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    crate::run::control::check_command(&r.command).map_err(|e| usage(e.message.into_owned()))?;
    let opts = crate::run::Options {
        name: r.name.clone(),
        socket: socket.to_path_buf(),
        listen,
        mode: r.mode,
        ready: r.ready,
        ready_timeout: r.ready_timeout,
        stop_signal: r.stop_signal,
        stop_timeout: r.stop_timeout,
        restart: r.restart,
        notify_access: r.notify_access,
        watchdog: r.watchdog,
        fdstore_max: r.fdstore_max,
        command: r.command.clone(),
    };
    match crate::run::main(opts) {
        Ok((0, _)) => Ok(String::new()),
        Ok((code, Some(error))) => Err(Failure {
            error,
            code,
            hint: None,
        }),
        Ok((code, None)) => Err(Failure {
            error: Error::new(
                Errno::ESRCH,
                format!("service '{}' exited; status {code}", r.name),
            ),
            code,
            hint: None,
        }),
        Err(m) => Err(Failure {
            error: Error::new(Errno::EINVAL, m),
            code: EXIT_REFUSED,
            hint: None,
        }),
    }
}

fn supervisor_failure(name: &str, e: Error) -> Failure {
    Failure {
        hint: Some(format!(
            "is `luoctl run {name} ...` running against this luod socket? (see `luoctl services`)"
        )),
        code: EXIT_UNREACHABLE,
        error: e,
    }
}

/// `luoctl restart`.
fn restart_service(socket: &Path, r: &RestartArgs, json: bool) -> Result<String, Failure> {
    use crate::run::control::{call, Reply, Request};
    let req = Request::Restart {
        command: (!r.command.is_empty()).then(|| r.command.clone()),
    };
    let reply = call(socket, &r.name, &req).map_err(|e| supervisor_failure(&r.name, e))?;
    let refused = |m: String| Failure {
        error: Error::new(Errno::ECANCELED, m),
        code: EXIT_REFUSED,
        hint: None,
    };
    match reply {
        Reply::Restarted { pid } => Ok(if json {
            format!("{}\n", json!({"ok": true, "name": r.name, "pid": pid}))
        } else {
            format!("{} restarted: pid {pid} is ready\n", r.name)
        }),
        Reply::RolledBack { message } => Err(refused(message)),
        Reply::Refused { message } => Err(refused(message)),
        Reply::Service { .. } => Err(Failure {
            error: Error::new(Errno::EPROTO, "unexpected reply from the supervisor"),
            code: EXIT_PROTOCOL,
            hint: None,
        }),
    }
}

/// `luoctl services`.
fn services(socket: &Path, name: Option<&str>, json: bool) -> Result<String, Failure> {
    use crate::run::control::{names, service};
    let wanted: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => names(socket),
    };
    let mut found = Vec::new();
    for n in &wanted {
        match service(socket, n) {
            Ok(s) => found.push(s),
            // A socket left by a supervisor that was killed.
            Err(e) if name.is_none() => {
                let _ = e;
            }
            Err(e) => return Err(supervisor_failure(n, e)),
        }
    }
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_value(&found).unwrap_or_default()
        ));
    }
    Ok(super::render::render_services(&found, name.is_some()))
}

/// A request about one session, by name.
fn by_name(op: &str, s: &BySession) -> Value {
    let mut v = json!({"op": op, "name": s.name});
    if let Some(o) = s.owner {
        v["owner"] = o.into();
    }
    v
}

/// `sessions` and `show`: a table, or the sessions as JSON.
fn listing(sessions: Vec<SessionInfo>, with_files: bool, json: bool) -> String {
    if json {
        let mut list = serde_json::to_value(&sessions).unwrap_or_default();
        if with_files {
            // A detail always lists its files, even none.
            for s in list.as_array_mut().into_iter().flatten() {
                if s.get("files").is_none() {
                    s["files"] = json!([]);
                }
            }
        }
        return format!("{}\n", ok_json(&json!({ "sessions": list })));
    }
    if with_files {
        render_show(&sessions)
    } else {
        render_sessions(&sessions)
    }
}

/// `update`: an emulated live update, with the epoch before and after.
fn update(client: &Client, json: bool) -> Result<String, Error> {
    // The epoch before an update, for the human-readable report.
    let before = match json {
        false => Some(client.status()?.epoch),
        true => None,
    };
    let reply = client.raw_request(&json!({"op": "update"}))?;
    if json {
        return Ok(format!("{reply}\n"));
    }
    let after = reply.get("epoch").and_then(Value::as_u64).ok_or_else(|| {
        Error::new(
            Errno::EPROTO,
            "unexpected reply from luod: \"epoch\" is missing",
        )
    })?;
    let before = before.unwrap_or(after.saturating_sub(1));
    Ok(format!(
        "epoch {before} -> {after}: every outgoing session crossed; old handles are stale\n"
    ))
}

/// `agent upgrade`.
fn upgrade(client: &Client, binary: Option<&Path>, json: bool) -> Result<String, Error> {
    let started = std::time::Instant::now();
    let before = client.status()?;
    let reply = client.upgrade_agent(binary)?;
    if json {
        return Ok(format!("{}\n", ok_json(&reply)));
    }
    Ok(format!(
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
    ))
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

/// `update --kexec`: preflight, then (unless `--dry-run`) the live update.
fn kexec(client: &Client, k: &UpdateArgs, json: bool) -> Result<String, (Error, Option<String>)> {
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
    let kernel = open("kernel", k.kernel.as_ref().expect("clap requires it"))?;
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
    let text = if json {
        format!("{}\n", ok_json(&json!({ "preflight": report })))
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
