//! The requests of `docs/protocol.md`, on both kinds of socket.

use luo_core::{SessionHandle, SessionState};
use luo_proto::types::{page_details, page_summaries, Status, Usage, PAGE_WINDOW};
use luo_proto::{ok_reply, opt_u64_field, str_field, u64_list, Errno, Error, Message, Value};
use tracing::{debug, info};

use super::{quoted, report, Agent, Kind, Reply};

/// Requests taken on the agent connection.
const AGENT_OPS: &[&str] = &[
    "create_session",
    "retrieve_session",
    "handover",
    "finish",
    "update",
    "status",
    "sessions",
    "show",
    "kexec",
    "upgrade",
    "open_device",
    "ioctl",
];
/// Requests taken on a session handle.
const HANDLE_OPS: &[&str] = &[
    "name", "info", "preserve", "retrieve", "handover", "finish", "ioctl",
];

/// Most tokens in one `preserve` or `retrieve` (one descriptor each).
const MAX_TOKENS: usize = luo_proto::MAX_FDS;

/// A model error as a protocol error.
pub(crate) fn core_error(e: luo_core::Error) -> Error {
    Error::new(e.errno, e.message)
}

fn einval(msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(Errno::EINVAL, msg)
}

/// Refuses descriptors sent with a request that takes none (they are closed
/// when the message is dropped).
fn no_fds(op: &str, msg: &Message) -> Result<(), Error> {
    if msg.fds.is_empty() {
        return Ok(());
    }
    Err(einval(format!(
        "'{op}' takes no descriptors, but {} came with it; they were closed",
        msg.fds.len()
    )))
}

/// A session name: 1 to 63 bytes without NUL, as `create_session` takes.
fn name_arg(msg: &Message) -> Result<String, Error> {
    let name = str_field(&msg.body, "name")?;
    if name.is_empty() || name.len() > luo_core::MAX_SESSION_NAME || name.contains('\0') {
        return Err(einval(format!(
            "\"name\" must be 1 to {} bytes without NUL; {} is {} bytes",
            luo_core::MAX_SESSION_NAME,
            clip(name),
            name.len()
        )));
    }
    Ok(name.to_string())
}

/// A client's string for a message or a log line: quoted, escaped, and cut
/// short, so that it can neither forge log lines nor bloat a reply.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{:?}", s),
        Some((i, _)) => format!("{:?}...", &s[..i]),
    }
}

/// The owner a by-name request acts on: the caller's uid, or `"owner"` when
/// the caller is root or names itself.
fn owner_arg(caller: u32, msg: &Message, what: &str) -> Result<u32, Error> {
    let Some(o) = opt_u64_field(&msg.body, "owner")? else {
        return Ok(caller);
    };
    let Ok(o) = u32::try_from(o) else {
        return Err(einval(format!("\"owner\" {o} is not a uid")));
    };
    if caller == 0 || o == caller {
        return Ok(o);
    }
    Err(Error::new(
        Errno::EPERM,
        format!("only uid {o} or root may {what} uid {o}'s sessions; you are uid {caller}"),
    ))
}

/// Where a paged listing continues: the `"next"` of the previous page.
fn start_arg(msg: &Message) -> Result<usize, Error> {
    Ok(opt_u64_field(&msg.body, "start")?.unwrap_or(0) as usize)
}

fn tokens_arg(msg: &Message, op: &str) -> Result<Vec<u64>, Error> {
    let tokens = u64_list(&msg.body, "tokens")?;
    if tokens.is_empty() || tokens.len() > MAX_TOKENS {
        return Err(einval(format!(
            "'{op}' takes 1 to {MAX_TOKENS} tokens, not {}; split larger batches",
            tokens.len()
        )));
    }
    Ok(tokens)
}

pub(super) fn wrong_socket(op: &str, on_agent: bool) -> Error {
    let msg = if on_agent && HANDLE_OPS.contains(&op) {
        format!(
            "'{op}' is a request for a session handle (the descriptor create_session or retrieve_session returned), not for the agent connection"
        )
    } else if !on_agent && AGENT_OPS.contains(&op) {
        format!(
            "'{op}' is a request for the agent connection (connect to the socket path), not for a session handle"
        )
    } else {
        let (here, ops) = if on_agent {
            ("the agent connection", AGENT_OPS)
        } else {
            ("a session handle", HANDLE_OPS)
        };
        format!("unknown op {}; {here} takes {}", clip(op), ops.join(", "))
    };
    Error::new(Errno::EOPNOTSUPP, msg)
}

impl Agent {
    /// Answers one request received on connection `key`.
    pub(super) fn request(&mut self, key: u64, msg: Message) -> Result<Reply, Error> {
        // The store follows what the request changed before the client
        // hears the answer.
        let r = self.request_inner(key, msg);
        self.flush_mirror();
        r
    }

    fn request_inner(&mut self, key: u64, msg: Message) -> Result<Reply, Error> {
        let Some(kind) = self.conns.get(&key).map(|c| c.kind.clone()) else {
            return Err(Error::new(Errno::EBADF, "connection gone"));
        };
        let op = msg.op()?.to_string();
        debug!("connection {key}: {}", clip(&op));
        if super::uapi::OPS.contains(&op.as_str()) && !matches!(kind, Kind::Refused { .. }) {
            return self.uapi_request(key, kind, &op, msg);
        }
        match kind {
            Kind::Agent { uid, .. } if op == "upgrade" => {
                no_fds(&op, &msg)?;
                Err(self.upgrade(key, uid, &msg))
            }
            Kind::Agent { uid, .. } => self.agent_request(uid, &op, msg),
            Kind::Handle { handle, .. } => self.handle_request(handle, &op, msg),
            Kind::Refused { why, .. } => Err(Error::new(Errno::EDQUOT, why)),
        }
    }

    fn agent_request(&mut self, uid: u32, op: &str, msg: Message) -> Result<Reply, Error> {
        if !AGENT_OPS.contains(&op) {
            return Err(wrong_socket(op, true));
        }
        if op == "kexec" {
            return self.kexec(uid, msg);
        }
        no_fds(op, &msg)?;
        match op {
            "create_session" => {
                let name = name_arg(&msg)?;
                let (fd, _) = self.new_handle(|luo| luo.create_session(uid, name.as_bytes()))?;
                info!("session {} of uid {uid} created", quoted(&name));
                Ok(Reply {
                    body: ok_reply(),
                    fds: vec![fd],
                })
            }
            "retrieve_session" => {
                let name = name_arg(&msg)?;
                let owner = owner_arg(uid, &msg, "retrieve")?;
                let (fd, h) =
                    self.new_handle(|luo| luo.retrieve_session(owner, name.as_bytes()))?;
                let files = self.luo.file_count(h).unwrap_or(0);
                info!(
                    "session {} of uid {owner} retrieved by uid {uid} ({files} files)",
                    quoted(&name)
                );
                Ok(Reply {
                    body: ok_reply(),
                    fds: vec![fd],
                })
            }
            "handover" => {
                let name = name_arg(&msg)?;
                let owner = owner_arg(uid, &msg, "hand over")?;
                let h = self
                    .luo
                    .open_outgoing(owner, name.as_bytes())
                    .map_err(core_error)?;
                let files = self.luo.file_count(h).unwrap_or(0);
                let r = self.luo.handover(h);
                // After a handover the handle is stale and closing it only
                // forgets it; after a refusal the creator's handle remains.
                let _ = self.luo.close(h);
                r.map_err(core_error)?;
                self.log_handover(&name, owner, files);
                Ok(Reply::ok(ok_reply()))
            }
            "finish" => {
                let name = name_arg(&msg)?;
                let owner = owner_arg(uid, &msg, "finish")?;
                let h = self
                    .luo
                    .retrieve_session(owner, name.as_bytes())
                    .map_err(|e| {
                        let mut e = core_error(e);
                        if e.errno == Errno::EINVAL {
                            e.message = format!(
                                "{}; the process holding it must finish it or close its handle",
                                e.message
                            )
                            .into();
                        }
                        e
                    })?;
                let unretrieved = self.luo.session(h).map_or(0, |s| {
                    s.files
                        .iter()
                        .filter(|f| f.retrieve != luo_core::RetrieveStatus::Retrieved)
                        .count()
                });
                let r = self.luo.finish(h);
                // Finished: closing removes it. Refused: it goes back to waiting.
                let _ = self.luo.close(h);
                r.map_err(core_error)?;
                info!(
                    "session {} of uid {owner} finished by name by uid {uid}; {unretrieved} files never retrieved were discarded",
                    quoted(&name)
                );
                Ok(Reply::ok(ok_reply()))
            }
            "update" => {
                if uid != 0 && uid != self.euid {
                    return Err(Error::new(
                        Errno::EPERM,
                        format!(
                            "only root or uid {} (the agent's) may update: it hands over every uid's sessions; you are uid {uid}",
                            self.euid
                        ),
                    ));
                }
                let epoch = self.luo.update().map_err(core_error)?;
                info!("update by uid {uid}: every outgoing session crossed over; epoch {epoch}");
                Ok(Reply::ok(ok_reply().with("epoch", epoch)))
            }
            "status" => {
                let mut body = ok_reply();
                if let Value::Object(members) = self.status(uid).to_value() {
                    for (k, v) in members {
                        body.set(&k, v);
                    }
                }
                Ok(Reply::ok(body))
            }
            "sessions" => {
                let start = start_arg(&msg)?;
                let all: Vec<_> = self
                    .luo
                    .summaries()
                    .iter()
                    .filter(|s| uid == 0 || s.owner == uid)
                    .map(report::detail)
                    .collect();
                let (list, next) = page_summaries(&all, start);
                Ok(Reply::ok(
                    ok_reply().with("sessions", list).with("next", next),
                ))
            }
            "show" => {
                let name = name_arg(&msg)?;
                let owner = owner_arg(uid, &msg, "show")?;
                let start = start_arg(&msg)?;
                let all: Vec<_> = self
                    .luo
                    .find_files(owner, name.as_bytes(), start, PAGE_WINDOW)
                    .iter()
                    .map(report::detail)
                    .collect();
                if all.is_empty() {
                    return Err(Error::new(
                        Errno::ENOENT,
                        format!("uid {owner} has no session named {}", quoted(&name)),
                    ));
                }
                let (list, next) = page_details(&all, start);
                Ok(Reply::ok(
                    ok_reply().with("sessions", list).with("next", next),
                ))
            }
            _ => Err(wrong_socket(op, true)),
        }
    }

    fn log_handover(&self, name: &str, owner: u32, files: usize) {
        info!(
            "session {} of uid {owner} handed over ({files} files)",
            quoted(name)
        );
    }

    fn handle_request(&mut self, h: SessionHandle, op: &str, msg: Message) -> Result<Reply, Error> {
        if !HANDLE_OPS.contains(&op) {
            return Err(wrong_socket(op, false));
        }
        if op != "preserve" {
            no_fds(op, &msg)?;
        }
        match op {
            "name" => {
                let name = self.luo.name(h).map_err(core_error)?;
                let name = String::from_utf8_lossy(name).into_owned();
                Ok(Reply::ok(ok_reply().with("name", name)))
            }
            "info" => {
                let start = start_arg(&msg)?;
                let s = self
                    .luo
                    .session_files(h, start, PAGE_WINDOW)
                    .map_err(core_error)?;
                let (mut list, next) = page_details(&[report::detail(&s)], start);
                Ok(Reply::ok(
                    ok_reply().with("session", list.pop()).with("next", next),
                ))
            }
            "preserve" => {
                let tokens = tokens_arg(&msg, op)?;
                if tokens.len() != msg.fds.len() {
                    return Err(einval(format!(
                        "'preserve' needs one descriptor per token: {} tokens, {} descriptors; they were closed",
                        tokens.len(),
                        msg.fds.len()
                    )));
                }
                let mut done = 0usize;
                // Dropping the iterator at an error closes the descriptors
                // from the refused one on.
                for (token, fd) in tokens.iter().copied().zip(msg.fds) {
                    if let Err(e) = self.luo.preserve(h, fd, token) {
                        let mut e = core_error(e);
                        if done > 0 {
                            e.message = format!(
                                "{} (the {done} files before it in this request were preserved; the rest were not)",
                                e.message
                            )
                            .into();
                        }
                        e.token = Some(token);
                        return Err(e);
                    }
                    done += 1;
                }
                Ok(Reply::ok(ok_reply().with("preserved", done)))
            }
            "retrieve" => {
                let tokens = tokens_arg(&msg, op)?;
                let mut fds = Vec::with_capacity(tokens.len());
                for &token in &tokens {
                    match self.luo.retrieve_fd(h, token) {
                        Ok(fd) => fds.push(fd),
                        Err(e) => {
                            // All or nothing: what was retrieved is closed.
                            let mut e = core_error(e);
                            e.token = Some(token);
                            return Err(e);
                        }
                    }
                }
                Ok(Reply {
                    body: ok_reply(),
                    fds,
                })
            }
            "handover" => {
                let (name, owner) = self.handle_names(h)?;
                let files = self.luo.file_count(h).unwrap_or(0);
                self.luo.handover(h).map_err(core_error)?;
                self.log_handover(&name, owner, files);
                Ok(Reply::ok(ok_reply()))
            }
            "finish" => {
                let (name, owner) = self.handle_names(h)?;
                self.luo.finish(h).map_err(core_error)?;
                info!("session {} of uid {owner} finished", quoted(&name));
                Ok(Reply::ok(ok_reply()))
            }
            _ => Err(wrong_socket(op, false)),
        }
    }

    fn handle_names(&self, h: SessionHandle) -> Result<(String, u32), Error> {
        let name = self.luo.name(h).map_err(core_error)?;
        let owner = self.luo.owner(h).map_err(core_error)?;
        Ok((String::from_utf8_lossy(name).into_owned(), owner))
    }

    fn status(&self, uid: u32) -> Status {
        let mut st = Status {
            agent: format!("luod {}", env!("CARGO_PKG_VERSION")),
            protocol: luo_proto::VERSION,
            backend: self.backend.as_str().to_string(),
            pid: std::process::id(),
            uid,
            epoch: self.luo.epoch(),
            outgoing: 0,
            incoming: 0,
            files: 0,
            pinned_bytes: 0,
            connections: self.conns.len() as u64,
            open_fds: luo_sys::open_fd_count().map_or(0, |n| n as u64),
            nofile_soft: 0,
            nofile_hard: 0,
            quota: {
                let q = self.luo.quota();
                Usage {
                    sessions: q.sessions,
                    files: q.files,
                    pinned_bytes: q.pinned_bytes,
                }
            },
            usage: {
                let u = self.luo.usage(uid);
                Usage {
                    sessions: u.sessions,
                    files: u.files,
                    pinned_bytes: u.pinned_bytes,
                }
            },
            store: self
                .mirror
                .as_ref()
                .map_or_else(|| "none".to_string(), |m| m.describe()),
        };
        if let Ok((soft, hard)) = luo_sys::nofile_limit() {
            st.nofile_soft = soft;
            st.nofile_hard = hard;
        }
        for s in self.luo.summaries() {
            if uid != 0 && s.owner != uid {
                continue;
            }
            if s.state == SessionState::Open {
                st.outgoing += 1;
            } else {
                st.incoming += 1;
            }
            st.files += s.file_count as u64;
            st.pinned_bytes += s.pinned_bytes;
        }
        st
    }
}
