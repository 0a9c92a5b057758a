//! What the model shows: session and file status, summaries without
//! files, windows of files, custody descriptors, FLB state.

use std::os::fd::AsFd;

use crate::{
    Errno, Error, FileStatus, FlbId, FlbStatus, Luo, Result, Session, SessionHandle, SessionInfo,
    SessionState, Side,
};

impl Luo {
    /// The incoming object of an FLB, retrieving it on first use (sticky on
    /// error); `ENODATA` when no file holds an incoming reference.
    pub fn flb_incoming(&mut self, id: FlbId) -> Result<u64> {
        let slot = self
            .flbs
            .get_mut(id.0)
            .ok_or_else(|| Error::new(Errno::EINVAL, format!("no FLB {}", id.0)))?;
        slot.get_incoming().map_err(|e| {
            Error::new(
                e,
                format!("FLB {:?} has no incoming object", slot.flb.compatible()),
            )
        })
    }

    /// The outgoing data of an FLB; `ENOENT` when no dependent file is preserved.
    pub fn flb_outgoing(&self, id: FlbId) -> Result<u64> {
        let slot = self
            .flbs
            .get(id.0)
            .ok_or_else(|| Error::new(Errno::EINVAL, format!("no FLB {}", id.0)))?;
        slot.get_outgoing_data().map_err(|e| {
            Error::new(
                e,
                format!("FLB {:?} is not preserved", slot.flb.compatible()),
            )
        })
    }

    /// Reference counts of every FLB.
    pub fn flb_status(&self) -> Vec<FlbStatus> {
        self.flbs.iter().map(|s| s.status()).collect()
    }

    /// What the registered handler of compatible string `compatible` says
    /// about its files; `None` when no such handler is registered.
    pub fn handler_descriptor(&self, compatible: &str) -> Option<crate::handler::Descriptor> {
        self.handlers
            .iter()
            .find(|h| h.compatible() == compatible)
            .map(|h| h.descriptor())
    }

    /// Every session with all its files, in creation order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .values()
            .map(|s| self.info(s, 0..s.files.len()))
            .collect()
    }

    /// Every session with all its files, in creation order, each with its
    /// key: the number handlers see as [`FileOpArgs::session`](crate::FileOpArgs::session).
    pub fn sessions_keyed(&self) -> Vec<(u64, SessionInfo)> {
        self.sessions
            .iter()
            .map(|(k, s)| (*k, self.info(s, 0..s.files.len())))
            .collect()
    }

    /// Every session's key, in creation order.
    pub fn session_keys(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// A session by key, in O(log n) (nothing per file): its owner, name
    /// and state. `None` when it is gone.
    pub fn session_state(&self, key: u64) -> Option<(u32, &[u8], SessionState)> {
        let s = self.sessions.get(&key)?;
        Some((s.owner, &s.name, state_of(s)))
    }

    /// A session by key, cheaply (no `fstat`): its owner, name, state and
    /// its files' tokens in preservation order. `None` when it is gone.
    pub fn session_tokens(&self, key: u64) -> Option<(u32, &[u8], SessionState, Vec<u64>)> {
        let s = self.sessions.get(&key)?;
        let state = state_of(s);
        Some((
            s.owner,
            &s.name,
            state,
            s.files.iter().map(|f| f.token).collect(),
        ))
    }

    /// Whether session `key` is a persistent outgoing session
    /// ([`SessionMode::persist`](crate::SessionMode::persist)); false when it is gone.
    pub fn is_persistent(&self, key: u64) -> bool {
        self.sessions
            .get(&key)
            .is_some_and(|s| s.side == Side::Outgoing && s.mode.persist)
    }

    /// Session `key`'s files at places `range` of preservation order
    /// (clipped to what it holds): each one's token and custody descriptor.
    /// Empty when the session is gone.
    pub fn files_in(
        &self,
        key: u64,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (u64, std::os::fd::BorrowedFd<'_>)> + '_ {
        let files = self.sessions.get(&key).map_or(&[][..], |s| &s.files[..]);
        let end = range.end.min(files.len());
        files[range.start.min(end)..end]
            .iter()
            .map(|f| (f.token, f.custody.as_fd()))
    }

    /// How many files session `key` holds; 0 when it is gone.
    pub fn file_count_of(&self, key: u64) -> usize {
        self.sessions.get(&key).map_or(0, |s| s.files.len())
    }

    /// The key of the session behind a live handle (see
    /// [`FileOpArgs::session`](crate::FileOpArgs::session)).
    pub fn session_key(&self, h: SessionHandle) -> Result<u64> {
        self.live(h)
    }

    /// The sessions of `owner` named `name`: the outgoing one, then the
    /// incoming one, where they exist. Costs nothing for other sessions.
    pub fn find(&self, owner: u32, name: &[u8]) -> Vec<SessionInfo> {
        self.find_files(owner, name, 0, usize::MAX)
    }

    /// As [`Luo::find`], with at most `len` files from index `start` of
    /// the files of both sessions taken in order (the first's, then the
    /// second's). Costs O(`len`) `fstat` calls, whatever the sessions hold.
    pub fn find_files(
        &self,
        owner: u32,
        name: &[u8],
        start: usize,
        len: usize,
    ) -> Vec<SessionInfo> {
        let key = (owner, name.to_vec());
        let mut skip = start;
        let mut left = len;
        [self.outgoing.get(&key), self.incoming.get(&key)]
            .into_iter()
            .flatten()
            .map(|k| {
                let s = &self.sessions[k];
                let from = skip.min(s.files.len());
                skip -= from;
                let n = left.min(s.files.len() - from);
                left -= n;
                self.info(s, from..from + n)
            })
            .collect()
    }

    /// Every session without its files (counts and totals only), in
    /// creation order. No `fstat` at all.
    pub fn summaries(&self) -> Vec<SessionInfo> {
        self.sessions.values().map(|s| self.info(s, 0..0)).collect()
    }

    /// The session behind a live handle.
    pub fn session(&self, h: SessionHandle) -> Result<SessionInfo> {
        self.session_files(h, 0, usize::MAX)
    }

    /// The session behind a live handle, with at most `len` of its files
    /// from index `start`.
    pub fn session_files(&self, h: SessionHandle, start: usize, len: usize) -> Result<SessionInfo> {
        let key = self.live(h)?;
        let s = &self.sessions[&key];
        let from = start.min(s.files.len());
        let to = from + len.min(s.files.len() - from);
        Ok(self.info(s, from..to))
    }

    pub(crate) fn info(&self, s: &Session, window: std::ops::Range<usize>) -> SessionInfo {
        let state = state_of(s);
        SessionInfo {
            name: s.name.clone(),
            owner: s.owner,
            state,
            handles: s.handles.len(),
            file_count: s.files.len(),
            pinned_bytes: s.files.iter().map(|f| f.pinned).sum(),
            kexec_safe: s
                .files
                .iter()
                .all(|f| self.handlers[f.handler].descriptor().kexec_safe()),
            persistent: s.side == Side::Outgoing && s.mode.persist,
            files: s.files[window]
                .iter()
                .map(|f| FileStatus {
                    token: f.token,
                    handler: self.handlers[f.handler].compatible().to_string(),
                    kind: self.handlers[f.handler]
                        .descriptor()
                        .type_name
                        .unwrap_or(self.handlers[f.handler].compatible())
                        .to_string(),
                    kexec_safe: self.handlers[f.handler].descriptor().kexec_safe(),
                    identity: self.index.identity(f.key),
                    managed: f.indexed,
                    retrieve: f.retrieve,
                    size: luo_sys::fstat(f.custody.as_fd()).map_or(0, |st| st.size),
                    pinned: f.pinned,
                })
                .collect(),
        }
    }

    /// The custody descriptors, in creation order of their sessions.
    pub fn custody_fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.sessions
            .values()
            .flat_map(|s| s.files.iter().map(|f| f.custody.as_fd()))
    }

    /// Descriptors luo holds in custody (one per preserved file).
    pub fn custody_count(&self) -> usize {
        self.sessions.values().map(|s| s.files.len()).sum()
    }
}

fn state_of(s: &Session) -> SessionState {
    match s.side {
        Side::Outgoing => SessionState::Open,
        Side::Incoming { finished: true } => SessionState::Finished,
        Side::Incoming { finished: false } if s.handles.is_empty() => SessionState::Incoming,
        Side::Incoming { finished: false } => SessionState::Retrieved,
    }
}
