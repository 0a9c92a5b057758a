//! The new image's side of an upgrade: taking over the descriptors and
//! state the old image left ([`resume`]), or going back to the old binary
//! when the state is refused ([`fall_back`]).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};
use luo_core::Luo;
use luo_proto::ops::{Upgrade, Upgraded};
use luo_proto::Errno;
use luo_sys::epoll::{EPOLLIN, EPOLLOUT, EPOLLRDHUP};
use luo_sys::Epoll;
use tracing::{error, info, warn};

use super::codec::{bad, parse_plan, read_state};
use super::{FALLBACK_FLAG, STATE_FLAG};
use crate::agent::{kernel, mirror, ops, Agent, Conn, Kind, Reply, LISTENER, MAX_EVENTS};
use crate::store::Sink;
use crate::{AgentError, Config};

/// The new image's side: checks the state and every descriptor it names,
/// takes them over, and returns the agent, which answers the upgrade
/// request first thing. A refusal (`Err`) leaves every descriptor as it
/// was, for [`fall_back`].
pub fn resume(config: Config, state: &OwnedFd) -> Result<Agent, AgentError> {
    let started = Instant::now();
    let read = read_state(state)?;
    let t_read = started.elapsed();
    let mut plan = parse_plan(&read)?;
    drop(read);
    let t_plan = started.elapsed();
    // Before anything is taken over, so that a failure can still go back.
    let epoll =
        Epoll::new().map_err(|e| bad(format!("creating an epoll instance failed ({e})")))?;
    // From here on the descriptors are ours; nothing below refuses (a
    // descriptor that cannot be watched is dealt with as in any turn of
    // the loop).
    let fds: Vec<OwnedFd> = luo_sys::adopt_verified(&plan.nums)
        .map_err(|e| bad(format!("taking over the descriptors failed ({e})")))?;
    let t_adopt = started.elapsed();
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |i: usize| fds[i].take().expect("checked: named once");
    let listener = take(plan.listener);
    // Not watched: retried at once, as after a pause in accepting.
    let paused_until = match epoll.add(listener.as_fd(), LISTENER, EPOLLIN) {
        Ok(()) => None,
        Err(e) => {
            warn!("watching the listening socket failed ({e}); retrying shortly");
            Some(Instant::now())
        }
    };
    let kernel = plan.kernel.take().map(|k| {
        std::sync::Arc::new(std::sync::Mutex::new(kernel::Kernel::from_plan(
            k, &mut take,
        )))
    });
    let mut luo = match &kernel {
        Some(k) => kernel::model(k),
        None => Luo::with_default_handlers(),
    };
    let mut model_fds = Vec::new();
    for s in &mut plan.model.sessions {
        for f in &mut s.files {
            model_fds.push(take(f.fd));
            f.fd = model_fds.len() - 1;
        }
    }
    // Checked in the plan; a failure here loses the state for good.
    luo.restore(plan.model, model_fds).map_err(|e| {
        AgentError::sys(
            format!("rebuilding the model failed: {}", e.message),
            e.errno,
        )
    })?;
    // The mirror carried over is in line with the restored sessions: they
    // are not changes to store again.
    let _ = luo.take_changes();
    luo.set_quota(config.quota);
    let t_model = started.elapsed();
    tracing::debug!(
        "upgrade take-over: state read and checked {} us, parsed {} us, descriptors adopted {} us, model rebuilt {} us",
        t_read.as_micros(),
        (t_plan - t_read).as_micros(),
        (t_adopt - t_plan).as_micros(),
        (t_model - t_adopt).as_micros()
    );
    let mut conns = HashMap::new();
    // Connections epoll would not watch: dropped once the agent is whole.
    let mut unwatched = Vec::new();
    let mut conns_per_uid: HashMap<u32, u64> = HashMap::new();
    for c in plan.conns {
        if let Kind::Agent { uid, .. } = c.kind {
            *conns_per_uid.entry(uid).or_default() += 1;
        }
        let fd = take(c.fd);
        let outbox: VecDeque<Reply> = c
            .outbox
            .into_iter()
            .map(|(bytes, l)| Reply {
                bytes,
                fds: l.into_iter().map(&mut take).collect(),
                lent: None,
            })
            .collect();
        let interest = if outbox.is_empty() {
            (EPOLLIN | EPOLLRDHUP) as u32
        } else {
            EPOLLOUT as u32
        };
        if let Err(e) = epoll.add(fd.as_fd(), c.key, interest as i32) {
            unwatched.push((c.key, e));
        }
        conns.insert(
            c.key,
            Conn {
                fd,
                kind: c.kind,
                outbox,
                interest,
                dead: c.dead,
                send_retries: 0,
            },
        );
    }
    let mirror = plan.mirror.map(|(keeper, systemd, state, bin)| {
        let sink = match (keeper, systemd) {
            // The keeper may be a previous release's.
            (Some((i, pid, origin)), _) => Sink::keeper(take(i), pid, origin),
            (None, p) => Sink::Systemd(p.unwrap_or_default()),
        };
        mirror::Mirror::from_state(sink, &state, &bin).expect("checked in the plan")
    });
    luo.set_veto(crate::agent::uapi::leads_back);
    let mut agent = Agent {
        socket: plan.socket,
        socket_id: plan.socket_id,
        backend: plan.backend,
        kernel,
        euid: luo_sys::geteuid(),
        listener,
        epoll,
        luo,
        conns,
        next_key: plan.next_key,
        paused_until,
        conns_per_uid,
        max_conns_per_uid: config.connections_per_uid,
        refused: 0,
        signals: None,
        stop: None,
        events: Vec::with_capacity(MAX_EVENTS),
        devices: plan.devices,
        mirror,
        rbuf: None,
    };
    info!(
        "upgraded in place from {} to luod {} (pid {}): {} connections, {} sessions, {} custody descriptors taken over in {} us",
        plan.previous,
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        agent.conns.len(),
        agent.luo.summaries().len(),
        agent.luo.custody_count(),
        started.elapsed().as_micros()
    );
    let body = Upgraded {
        pid: std::process::id(),
        agent: format!("luod {}", env!("CARGO_PKG_VERSION")),
        previous: plan.previous,
    };
    for (key, e) in unwatched {
        agent.drop_conn(
            key,
            Some(&format!("cannot watch it after the upgrade: {e}")),
        );
    }
    agent.reply(plan.reply_to, ops::reply::<Upgrade>(body, vec![]));
    agent.update_interest(plan.reply_to);
    Ok(agent)
}
/// What `main` does when [`resume`] refuses the state: go back to the
/// binary that wrote it (its descriptor is `fallback`), which reads its
/// own state. Returns only if that `exec` failed.
pub fn fall_back(state: OwnedFd, fallback: OwnedFd, why: &AgentError) -> Errno {
    warn!("{why}; going back to the previous binary");
    let args = {
        let mut a: Vec<String> = std::env::args().collect();
        // The previous binary gets the same state; without a fallback of
        // its own, so that a state nobody reads ends here.
        if let Some(i) = a.iter().position(|x| x == FALLBACK_FLAG) {
            a.drain(i..(i + 2).min(a.len()));
        }
        if let Some(i) = a.iter().position(|x| x == STATE_FLAG) {
            if let Some(n) = a.get_mut(i + 1) {
                *n = state.as_raw_fd().to_string();
            }
        }
        a
    };
    let _ = luo_sys::set_cloexec(state.as_fd(), false);
    let e = luo_sys::exec_fd(fallback.as_fd(), &args);
    error!("going back to the previous binary failed too ({e})");
    e
}
