//! The results the agent reports (`status`, `sessions`, `show`), with their
//! JSON form. One definition serves the agent that writes them and the
//! clients that read them.

use serde::{Deserialize, Serialize};

use crate::{Errno, Error, Result};

/// Bytes `item` takes in a message.
fn json_len<T: Serialize>(item: &T) -> usize {
    serde_json::to_vec(item).map_or(usize::MAX, |b| b.len())
}

pub use luo_core::{Quota, SessionState, Usage};

pub use luo_core::{FileStatus, Identity, IdentityKind, RetrieveStatus, SessionInfo};

fn unknown_store() -> String {
    "unknown".into()
}

/// What `status` reports. Counts cover what the caller may see: its own
/// sessions, or every session for root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's name and version, e.g. `luod 0.1.0`.
    pub agent: String,
    /// The protocol version.
    pub protocol: u64,
    /// `emulated` (or `kernel`).
    pub backend: String,
    /// The agent's pid.
    pub pid: u32,
    /// The caller's uid as the agent saw it.
    pub uid: u32,
    /// The current epoch.
    pub epoch: u64,
    /// Outgoing sessions.
    pub outgoing: u64,
    /// Incoming sessions (waiting, retrieved or finished).
    pub incoming: u64,
    /// Files in custody.
    pub files: u64,
    /// memfd bytes pinned.
    pub pinned_bytes: u64,
    /// Open client connections and session handles (whole agent).
    pub connections: u64,
    /// Descriptors the agent has open (whole agent).
    pub open_fds: u64,
    /// The agent's `RLIMIT_NOFILE` soft limit.
    pub nofile_soft: u64,
    /// The agent's `RLIMIT_NOFILE` hard limit.
    pub nofile_hard: u64,
    /// The per-uid quota (`u64::MAX`: none).
    pub quota: Quota,
    /// What the caller's uid holds against it.
    pub usage: Usage,
    /// Where copies of the custody descriptors outlive the agent, e.g.
    /// `keeper (pid 42)`, `systemd fd store`, or `none` (older agents do
    /// not say: `unknown`).
    #[serde(default = "unknown_store")]
    pub store: String,
    /// The keeper, when `store` is one (older agents do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<KeeperStatus>,
}

/// The keeper that holds copies of the agent's custody descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// Its pid.
    pub pid: u32,
    /// `started` (by this agent), `found` (it answered for a previous
    /// agent, whose files this one took back) or `unknown`.
    pub origin: String,
    /// Descriptors it holds: files and session records (absent when it did
    /// not answer in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Custody files it holds (absent when it did not answer in time, or is
    /// a 0.1.0 keeper, which counts only entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Session records it holds (same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
}

/// A file of a kexec preflight that would not cross.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostFile {
    /// Its token.
    pub token: u64,
    /// Its handler.
    pub handler: String,
    /// Why it cannot cross.
    pub why: String,
}

/// A session in a kexec preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightSession {
    /// Its owner.
    pub owner: u32,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: SessionState,
    /// Files in it.
    pub files: u64,
    /// Files that cross.
    pub carried: u64,
    /// memfd bytes that cross.
    pub bytes: u64,
    /// Files that would be lost, and why.
    pub lost: Vec<LostFile>,
}

/// What a kernel live update now would carry and lose (`kexec` with
/// `dry_run`; docs/kexec.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// luod's backend.
    pub backend: String,
    /// The epoch the update ends.
    pub epoch: u64,
    /// luod holds `/dev/liveupdate` (kernel backend).
    pub liveupdate_device: bool,
    /// `liveupdate=on` in `/proc/cmdline`.
    pub current_cmdline_liveupdate: bool,
    /// The next kernel's command line.
    pub cmdline: String,
    /// `liveupdate=on` in it.
    pub next_cmdline_liveupdate: bool,
    /// Size of the kernel image.
    pub kernel_bytes: u64,
    /// Size of the initramfs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_bytes: Option<u64>,
    /// Kernel sessions luod holds (kernel backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_sessions: Option<u64>,
    /// Every session.
    pub sessions: Vec<PreflightSession>,
    /// Files that cross.
    pub carried_files: u64,
    /// memfd bytes that cross.
    pub carried_bytes: u64,
    /// Files that would be lost.
    pub lost_files: u64,
    /// Not empty: the update refuses without `force`.
    pub problems: Vec<String>,
}

/// Bytes of items one paged reply may carry, leaving room for the envelope
/// and the session headers.
pub const PAGE_BYTES: usize = crate::MAX_MESSAGE - 4096;

/// One page of session summaries from index `start`, and the `"next"`
/// index (`None` on the last page). A reply of `sessions` is paged because
/// a host may have more sessions than fit in one datagram.
pub fn page_summaries(all: &[SessionInfo], start: usize) -> (Vec<SessionInfo>, Option<u64>) {
    let mut out = Vec::new();
    let mut used = 0;
    for s in all.iter().skip(start) {
        let s = s.summary();
        let len = json_len(&s) + 1;
        if !out.is_empty() && used + len > PAGE_BYTES {
            let next = (start + out.len()) as u64;
            return (out, Some(next));
        }
        used += len;
        out.push(s);
    }
    (out, None)
}

/// How many files the agent looks at to fill one page of details: more than
/// a page holds, so a page is cut by size, not by this.
pub const PAGE_WINDOW: usize = 512;

/// One page of session details. `window` is every matching session's
/// header, each with its files from index `start` of all their files taken
/// in order (the first session's, then the second's), as far as the caller
/// looked (at least [`PAGE_WINDOW`] files, or to the end). Returns the
/// sessions with the files that fit in one message, and the `"next"` file
/// index (`None` on the last page).
pub fn page_details(window: &[SessionInfo], start: usize) -> (Vec<SessionInfo>, Option<u64>) {
    let total = window.iter().map(|s| s.file_count as u64).sum::<u64>();
    let mut used = 0;
    let mut taken = 0u64;
    let mut full = false;
    let mut out = Vec::new();
    for s in window {
        let mut files = Vec::new();
        for f in &s.files {
            let len = json_len(f) + 1;
            if full || (taken > 0 && used + len > PAGE_BYTES) {
                full = true;
                break;
            }
            used += len;
            taken += 1;
            files.push(f.clone());
        }
        out.push(SessionInfo {
            files,
            ..s.summary()
        });
    }
    let end = start as u64 + taken;
    (out, (end < total).then_some(end))
}

/// Adds one page of [`page_details`] to what earlier pages gave. `EAGAIN`
/// when the sessions changed between pages (the listing is not a snapshot:
/// ask again).
pub fn merge_details(acc: &mut Vec<SessionInfo>, page: Vec<SessionInfo>) -> Result<()> {
    if acc.is_empty() {
        *acc = page;
        return Ok(());
    }
    let same = acc.len() == page.len()
        && acc
            .iter()
            .zip(&page)
            .all(|(a, b)| a.name == b.name && a.owner == b.owner && a.state == b.state);
    if !same {
        return Err(Error::new(
            Errno::EAGAIN,
            "the session changed while its files were being listed; ask again",
        ));
    }
    for (a, b) in acc.iter_mut().zip(page) {
        a.files.extend(b.files);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(token: u64) -> FileStatus {
        FileStatus {
            token,
            handler: "memfd-v2".into(),
            kind: "memfd".into(),
            identity: Identity {
                dev: 1,
                ino: token,
                kind: IdentityKind::Inode,
            },
            size: 4096,
            pinned: 4096,
            kexec_safe: true,
            managed: true,
            retrieve: if token % 3 == 0 {
                RetrieveStatus::Failed(luo_sys::Errno::EIO)
            } else {
                RetrieveStatus::NotRetrieved
            },
        }
    }

    fn session(name: &str, files: usize) -> SessionInfo {
        SessionInfo {
            name: name.into(),
            owner: 1000,
            state: SessionState::Open,
            handles: 1,
            file_count: files,
            pinned_bytes: 4096 * files as u64,
            kexec_safe: true,
            persistent: false,
            files: (0..files as u64).map(file).collect(),
        }
    }

    fn fits(items: &[SessionInfo]) {
        let page = crate::ops::SessionPage {
            sessions: items.to_vec(),
            next: Some(1),
        };
        let bytes = crate::encode_reply(&page, 0).expect("a page must fit in one message");
        let back: crate::ops::SessionPage = crate::decode_reply(&bytes, 0).unwrap();
        assert_eq!(back, page);
    }

    /// What the agent gives `page_details`: headers, and `len` files from
    /// `start` across the sessions.
    fn window(all: &[SessionInfo], start: usize, len: usize) -> Vec<SessionInfo> {
        let mut skip = start;
        let mut left = len;
        all.iter()
            .map(|s| {
                let from = skip.min(s.files.len());
                skip -= from;
                let n = left.min(s.files.len() - from);
                left -= n;
                SessionInfo {
                    files: s.files[from..from + n].to_vec(),
                    ..s.clone()
                }
            })
            .collect()
    }

    #[test]
    fn details_of_thousands_of_files_come_back_whole_in_pages() {
        let all = vec![session("a", 3000), session("b", 1500)];
        let mut acc = Vec::new();
        let mut start = 0;
        let mut pages = 0;
        loop {
            let (items, next) = page_details(&window(&all, start, PAGE_WINDOW), start);
            fits(&items);
            merge_details(&mut acc, items).unwrap();
            pages += 1;
            match next {
                Some(n) => start = n as usize,
                None => break,
            }
        }
        assert!(pages > 10, "{pages} pages");
        assert_eq!(acc, all);
    }

    #[test]
    fn summaries_page_and_a_changed_session_is_eagain() {
        let all: Vec<SessionInfo> = (0..2000)
            .map(|i| session(&format!("s{i}"), 0).summary())
            .collect();
        let mut got = Vec::new();
        let mut start = 0;
        loop {
            let (items, next) = page_summaries(&all, start);
            fits(&items);
            got.extend(items);
            match next {
                Some(n) => start = n as usize,
                None => break,
            }
        }
        assert_eq!(got, all);
        let mut acc = vec![session("a", 1)];
        let mut moved = session("a", 1);
        moved.state = SessionState::Incoming;
        assert_eq!(
            merge_details(&mut acc, vec![moved]).unwrap_err().errno,
            Errno::EAGAIN
        );
    }
}
