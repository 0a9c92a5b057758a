//! The results the agent reports (`status`, `sessions`, `show`), with their
//! JSON form. One definition serves the agent that writes them and the
//! clients that read them.

use serde::{Deserialize, Serialize};

use crate::{Errno, Error, Result};

/// Bytes `item` takes in a message.
/// How many bytes `item` takes in a message, for paging.
pub fn json_len<T: Serialize>(item: &T) -> usize {
    serde_json::to_vec(item).map_or(usize::MAX, |b| b.len())
}

/// What a paged listing says, as a number (CRC-32 of its JSON): the same on
/// every page of one listing, different once it changed between pages.
pub fn fingerprint<T: Serialize>(item: &T) -> u64 {
    u64::from(crc32fast::hash(
        &serde_json::to_vec(item).unwrap_or_default(),
    ))
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
    /// Files that would be lost, and why (in a page: those of the page).
    pub lost: Vec<LostFile>,
    /// Its `lost` continues the last session of the previous page: a
    /// session with more lost files than one page holds spans pages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
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
    /// Sessions in the whole preflight, every page (luod 0.1.0 does not
    /// page and does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_count: Option<u64>,
    /// The same in every page of one preflight: another value means the
    /// sessions changed between pages ([`Preflight::fingerprint_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
    /// The `start` of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

impl Preflight {
    /// What every page of a preflight repeats: the sessions and lost files
    /// it lists, and the totals ([`fingerprint`]).
    pub fn fingerprint_of(&self) -> u64 {
        fingerprint(&(
            self.epoch,
            self.carried_files,
            self.carried_bytes,
            self.lost_files,
            &self.sessions,
        ))
    }
}

/// Room one preflight page leaves for the JSON envelope (`"v"`, `"fds"`,
/// `"ok"`, `"preflight"`) and the commas between items.
const PREFLIGHT_SLACK: usize = 256;

/// One page of a whole preflight `all` from item `start`, where a
/// session's header is one item and each of its lost files another (so a
/// page may end inside a session's lost files, and the next one resumes
/// it with `continued`). Every page repeats the totals, the problems,
/// `session_count` and `fingerprint`. `EINVAL` for a `start` past the end,
/// or when the header alone leaves no room (a huge command line).
pub fn page_preflight(mut all: Preflight, start: u64) -> Result<Preflight> {
    let fingerprint = all.fingerprint_of();
    let sessions = std::mem::take(&mut all.sessions);
    let mut page = Preflight {
        session_count: Some(sessions.len() as u64),
        fingerprint: Some(fingerprint),
        next: Some(u64::MAX),
        ..all
    };
    let room = crate::MAX_MESSAGE.saturating_sub(json_len(&page) + PREFLIGHT_SLACK);
    if room < 4096 {
        return Err(Error::new(
            Errno::EINVAL,
            format!(
                "the preflight's header alone takes {} bytes (the command line is {} bytes); a kernel command line is at most a few KiB",
                json_len(&page),
                page.cmdline.len()
            ),
        ));
    }
    // Find the session holding item `start`.
    let mut item = 0u64;
    let mut at = None;
    for (i, s) in sessions.iter().enumerate() {
        let span = 1 + s.lost.len() as u64;
        if start < item + span {
            at = Some((i, (start - item) as usize));
            break;
        }
        item += span;
    }
    let Some((first, offset)) = at else {
        if start == 0 || start == item {
            page.next = None;
            return Ok(page);
        }
        return Err(Error::new(
            Errno::EINVAL,
            format!("'start' {start} is past the preflight's {item} items; start again from 0"),
        ));
    };
    let mut used = 0usize;
    let mut cursor = start;
    for s in &sessions[first..] {
        // A header item, unless the page resumes inside this session.
        let skip = if page.sessions.is_empty() && offset > 0 {
            offset - 1
        } else {
            let head = PreflightSession {
                lost: Vec::new(),
                continued: false,
                ..s.clone()
            };
            let len = json_len(&head) + 1;
            if used + len > room && !page.sessions.is_empty() {
                page.next = Some(cursor);
                return Ok(page);
            }
            used += len;
            cursor += 1;
            0
        };
        page.sessions.push(PreflightSession {
            lost: Vec::new(),
            continued: page.sessions.is_empty() && offset > 0,
            ..s.clone()
        });
        let out = page.sessions.last_mut().expect("just pushed");
        for f in &s.lost[skip..] {
            let len = json_len(f) + 1;
            if used + len > room && used > 0 {
                page.next = Some(cursor);
                return Ok(page);
            }
            used += len;
            cursor += 1;
            out.lost.push(f.clone());
        }
    }
    page.next = None;
    Ok(page)
}

/// Adds one page of [`page_preflight`] to what earlier pages gave (`acc`
/// is `None` before the first). `EAGAIN` when the sessions changed between
/// pages (another fingerprint, or a `continued` session that is not the
/// previous page's last): the caller starts again from the first page.
pub fn merge_preflight(acc: &mut Option<Preflight>, page: Preflight) -> Result<()> {
    let Some(all) = acc else {
        *acc = Some(page);
        return Ok(());
    };
    let changed = || {
        Error::new(
            Errno::EAGAIN,
            "the sessions changed while the preflight was being read; ask again",
        )
    };
    if page.fingerprint != all.fingerprint {
        return Err(changed());
    }
    let mut sessions = page.sessions.into_iter();
    if let Some(first) = sessions.as_slice().first() {
        if first.continued {
            let last = all.sessions.last_mut().ok_or_else(changed)?;
            if (last.owner, &last.name) != (first.owner, &first.name) {
                return Err(changed());
            }
            let first = sessions.next().expect("not empty");
            last.lost.extend(first.lost);
        }
    }
    all.sessions.extend(sessions);
    all.next = page.next;
    Ok(())
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

    fn preflight(sessions: usize, lost: usize) -> Preflight {
        let sessions: Vec<PreflightSession> = (0..sessions)
            .map(|i| PreflightSession {
                owner: 1000,
                name: format!("s{i}"),
                state: SessionState::Open,
                files: 1 + if i == 1 { lost as u64 } else { 0 },
                carried: 1,
                bytes: 4096,
                lost: (0..if i == 1 { lost as u64 } else { 0 })
                    .map(|t| LostFile {
                        token: t,
                        handler: "luo-eventfd-v1".into(),
                        why: "an eventfd's counter lives in kernel memory".into(),
                    })
                    .collect(),
                continued: false,
            })
            .collect();
        Preflight {
            backend: "kernel".into(),
            epoch: 3,
            liveupdate_device: true,
            current_cmdline_liveupdate: true,
            cmdline: "liveupdate=on".into(),
            next_cmdline_liveupdate: true,
            kernel_bytes: 1 << 20,
            initrd_bytes: None,
            kernel_sessions: Some(1),
            carried_files: sessions.len() as u64,
            carried_bytes: 4096 * sessions.len() as u64,
            lost_files: lost as u64,
            sessions,
            problems: vec!["files would be lost".into()],
            session_count: None,
            fingerprint: None,
            next: None,
        }
    }

    fn read_all(all: &Preflight) -> (Preflight, usize) {
        let mut acc = None;
        let mut start = 0;
        let mut pages = 0;
        loop {
            let page = page_preflight(all.clone(), start).unwrap();
            let bytes = crate::encode_reply(
                &crate::ops::KexecReply {
                    preflight: Some(page.clone()),
                },
                0,
            )
            .expect("a page must fit in one message");
            assert!(bytes.len() <= crate::MAX_MESSAGE);
            assert_eq!(page.problems, all.problems, "every page has the problems");
            assert_eq!(page.session_count, Some(all.sessions.len() as u64));
            let next = page.next;
            merge_preflight(&mut acc, page).unwrap();
            pages += 1;
            match next {
                Some(n) => start = n,
                None => break,
            }
        }
        (acc.unwrap(), pages)
    }

    #[test]
    fn a_preflight_pages_by_sessions_and_by_lost_files() {
        for (sessions, lost, min_pages) in [(0, 0, 1), (3, 2, 1), (2000, 0, 2), (3, 16000, 20)] {
            let all = preflight(sessions, lost);
            let (got, pages) = read_all(&all);
            assert!(pages >= min_pages, "{sessions}/{lost}: {pages} pages");
            assert_eq!(
                got,
                Preflight {
                    session_count: Some(sessions as u64),
                    fingerprint: Some(all.fingerprint_of()),
                    ..all.clone()
                }
            );
        }
        // A small preflight is one page, as luod 0.1.0 sent it, with the
        // new members only added.
        let small = preflight(3, 2);
        let page = page_preflight(small.clone(), 0).unwrap();
        assert_eq!(page.next, None);
        assert_eq!(page.sessions, small.sessions);
        assert_eq!(page_preflight(small, 99).unwrap_err().errno, Errno::EINVAL);
    }

    #[test]
    fn a_preflight_that_changed_between_pages_is_eagain() {
        let before = preflight(3, 16000);
        let first = page_preflight(before.clone(), 0).unwrap();
        let mut after = before.clone();
        after.sessions[1].lost.pop();
        after.lost_files -= 1;
        let second = page_preflight(after, first.next.unwrap()).unwrap();
        let mut acc = Some(first);
        assert_eq!(
            merge_preflight(&mut acc, second).unwrap_err().errno,
            Errno::EAGAIN
        );
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
