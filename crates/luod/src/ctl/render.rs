//! How `luoctl` shows the agent's replies to people: tables, sizes, uids.

use std::fmt::Write as _;

use luo::{Preflight, SessionInfo, Status, Usage};

/// `(uid, name)` of every user in `/etc/passwd` (empty if it cannot be read;
/// luoctl then shows numbers only).
pub(super) fn users() -> Vec<(u32, String)> {
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

fn identity_string(f: &luo::FileStatus) -> String {
    let inode = format!("inode {}/{}", dev_string(f.identity.dev), f.identity.ino);
    match f.identity.kind {
        luo::IdentityKind::Inode => inode,
        luo::IdentityKind::OpenFile => format!("open file ({inode})"),
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

pub(super) fn render_status(s: &Status) -> String {
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
        ("crash safety", crash_safety(s)),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"));
    }
    out
}

/// `keeper (pid 4243): started by this luod, holds 12 files of 3 sessions`.
fn crash_safety(s: &Status) -> String {
    let Some(k) = &s.keeper else {
        return s.store.clone();
    };
    let origin = match k.origin.as_str() {
        "started" => "started by this luod",
        "found" => "found running, left by a previous luod",
        _ => "carried over an upgrade",
    };
    let held = match (k.files, k.sessions, k.entries) {
        (Some(f), Some(n), _) => format!("holds {f} files of {n} sessions"),
        (_, _, Some(e)) => format!("holds {e} entries (files and session records)"),
        _ => "did not say what it holds".to_string(),
    };
    format!("{}: {origin}, {held}", s.store)
}

/// A session's state, and `persistent` after it for a persistent one
/// (`open,persistent` in a table cell).
fn state_text(s: &SessionInfo, sep: &str) -> String {
    if s.persistent {
        format!("{}{sep}persistent", s.state.as_str())
    } else {
        s.state.as_str().to_string()
    }
}

pub(super) fn render_sessions(list: &[SessionInfo]) -> String {
    if list.is_empty() {
        return "no sessions\n".to_string();
    }
    let users = users();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name_lossy().into_owned(),
                owner_name(s.owner, &users),
                state_text(s, ","),
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

pub(super) fn render_show(list: &[SessionInfo]) -> String {
    let users = users();
    let mut out = String::new();
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "session '{}' (owner {}): {}, {}, {}, {} pinned, {}",
            s.name_lossy(),
            owner_name(s.owner, &users),
            state_text(s, ", "),
            plural(s.handles as u64, "handle", "handles"),
            plural(s.file_count as u64, "file", "files"),
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
                    human_bytes(f.pinned),
                    yes_no(f.kexec_safe).to_string(),
                    f.retrieve.to_string(),
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

pub(super) fn owned_by(name: &str, owner: Option<u32>) -> String {
    match owner {
        Some(uid) => format!("session '{name}' of uid {uid}"),
        None => format!("session '{name}'"),
    }
}

/// Most sessions, and most lost files, the preflight's text lists.
const PREFLIGHT_ROWS: usize = 40;

pub(super) fn render_preflight(p: &Preflight) -> String {
    let users = users();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel live update preflight (epoch {} -> {}, backend {})",
        p.epoch,
        p.epoch + 1,
        p.backend
    );
    let initrd = match p.initrd_bytes {
        Some(n) => format!(", initramfs {}", human_bytes(n)),
        None => ", no initramfs".to_string(),
    };
    let _ = writeln!(
        out,
        "  new kernel:    {}{initrd}",
        human_bytes(p.kernel_bytes)
    );
    let _ = writeln!(
        out,
        "  command line:  {:?} (liveupdate=on: {})",
        p.cmdline,
        yes_no(p.next_cmdline_liveupdate)
    );
    let _ = writeln!(
        out,
        "  this kernel:   liveupdate=on: {}, /dev/liveupdate held by luod: {}, kernel sessions: {}",
        yes_no(p.current_cmdline_liveupdate),
        yes_no(p.liveupdate_device),
        p.kernel_sessions.unwrap_or(0)
    );
    out.push('\n');
    // At thousands of sessions or lost files the text shows the ones that
    // matter first and counts the rest; --json has every one.
    let more = "luoctl update --kexec --dry-run --json lists every one";
    let mut order: Vec<&luo::PreflightSession> = p.sessions.iter().collect();
    if order.len() > PREFLIGHT_ROWS {
        order.sort_by_key(|s| s.lost.is_empty());
    }
    if p.sessions.is_empty() {
        out.push_str("no sessions\n");
    } else {
        let rows: Vec<Vec<String>> = order
            .iter()
            .take(PREFLIGHT_ROWS)
            .map(|s| {
                vec![
                    s.name.clone(),
                    owner_name(s.owner, &users),
                    s.state.as_str().to_string(),
                    s.files.to_string(),
                    s.carried.to_string(),
                    (s.files - s.carried.min(s.files)).to_string(),
                    human_bytes(s.bytes),
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
        if order.len() > PREFLIGHT_ROWS {
            let _ = writeln!(
                out,
                "... and {} more sessions (those with lost files first); {more}",
                order.len() - PREFLIGHT_ROWS
            );
        }
    }
    let lost: Vec<(&luo::PreflightSession, &luo::LostFile)> = order
        .iter()
        .flat_map(|s| s.lost.iter().map(move |f| (*s, f)))
        .collect();
    if !lost.is_empty() {
        out.push_str("\ncannot cross a kexec:\n");
        for (s, f) in lost.iter().take(PREFLIGHT_ROWS) {
            let _ = writeln!(
                out,
                "  session '{}' (owner {}), token {} ({}): {}",
                s.name,
                owner_name(s.owner, &users),
                f.token,
                f.handler,
                f.why
            );
        }
        if lost.len() > PREFLIGHT_ROWS {
            let mut by_handler: Vec<(&str, u64)> = Vec::new();
            for (_, f) in &lost {
                match by_handler.iter_mut().find(|(h, _)| *h == f.handler) {
                    Some((_, n)) => *n += 1,
                    None => by_handler.push((&f.handler, 1)),
                }
            }
            let by = by_handler
                .iter()
                .map(|(h, n)| format!("{n} {h}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sessions = order.iter().filter(|s| !s.lost.is_empty()).count() as u64;
            let _ = writeln!(
                out,
                "  ... and {} more files; in all {} in {} ({by}); {more}",
                lost.len() - PREFLIGHT_ROWS,
                plural(lost.len() as u64, "file", "files"),
                plural(sessions, "session", "sessions"),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{} in {} cross ({} of memfd); {} would be lost",
        plural(p.carried_files, "file", "files"),
        plural(
            p.session_count.unwrap_or(p.sessions.len() as u64),
            "session",
            "sessions"
        ),
        human_bytes(p.carried_bytes),
        plural(p.lost_files, "file", "files"),
    );
    if p.problems.is_empty() {
        out.push_str("no problems found\n");
    } else {
        out.push_str("problems:\n");
        for pr in &p.problems {
            let _ = writeln!(out, "  - {pr}");
        }
    }
    out
}

/// `services`: one line per service, or (`detail`) one service with its
/// listeners and stored fds.
pub(super) fn render_services(list: &[crate::run::control::ServiceInfo], detail: bool) -> String {
    if list.is_empty() {
        return "no services (start one with `luoctl run NAME ... -- COMMAND`)\n".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.state.clone(),
                s.listeners.len().to_string(),
                s.stored.len().to_string(),
                s.restarts.to_string(),
                s.rollbacks.to_string(),
                s.status.clone().unwrap_or_else(|| "-".into()),
                s.command.join(" "),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "PID",
            "STATE",
            "LISTENERS",
            "STORED",
            "RESTARTS",
            "ROLLBACKS",
            "STATUS",
            "COMMAND",
        ],
        &rows,
    );
    if !detail {
        return out;
    }
    for s in list {
        out.push_str(&format!(
            "\nsupervisor pid {}, mode {}{}\n",
            s.supervisor,
            s.mode,
            s.restarting
                .map_or(String::new(), |p| format!(", restarting (new pid {p})"))
        ));
        if !s.listeners.is_empty() {
            let rows: Vec<Vec<String>> = s
                .listeners
                .iter()
                .map(|l| {
                    vec![
                        l.spec.name.clone(),
                        l.spec.address.to_string(),
                        l.token.to_string(),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(&["LISTENER", "ADDRESS", "TOKEN"], &rows));
        }
        if !s.stored.is_empty() {
            let rows: Vec<Vec<String>> = s
                .stored
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.kind.clone(),
                        yes_no(f.poll).to_string(),
                        f.token.to_string(),
                        if f.pending { "pending" } else { "kept" }.to_string(),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(
                &["STORED", "TYPE", "FDPOLL", "TOKEN", "STATE"],
                &rows,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tables_align() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\n");
    }
}
