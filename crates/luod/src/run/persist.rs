//! Persistent sessions, until the client library has them: a session that
//! is created (not reopened) and cannot drop or copy single files.

use std::os::fd::OwnedFd;

use luo::{Errno, Error};

/// `Client::persist_session`.
pub trait PersistExt {
    /// Opens or creates the caller's persistent session `name`.
    fn persist_session(&self, name: &str) -> luo::Result<luo::Session>;
}

impl PersistExt for luo::Client {
    fn persist_session(&self, name: &str) -> luo::Result<luo::Session> {
        self.create_session(name)
    }
}

/// `Session::unpreserve` and `Session::fetch`.
pub trait SessionExt {
    /// Drops the files under `tokens`.
    fn unpreserve(&self, tokens: &[u64]) -> luo::Result<()>;
    /// Copies of the files under `tokens`.
    fn fetch(&self, tokens: &[u64]) -> luo::Result<Vec<OwnedFd>>;
}

impl SessionExt for luo::Session {
    fn unpreserve(&self, _tokens: &[u64]) -> luo::Result<()> {
        Err(Error::new(
            Errno::EOPNOTSUPP,
            "this luod cannot drop single files",
        ))
    }
    fn fetch(&self, _tokens: &[u64]) -> luo::Result<Vec<OwnedFd>> {
        Err(Error::new(
            Errno::EOPNOTSUPP,
            "this luod cannot copy kept files",
        ))
    }
}
