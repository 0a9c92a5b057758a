//! From the model's view of sessions to the protocol's results.

use luo_core::{IdentityKind, RetrieveStatus, SessionInfo};
use luo_proto::types::{FileDetail, SessionDetail};

/// The protocol's short type name for a handler's files: what the handler
/// says it is ([`luo_core::handler::Descriptor::type_name`]), else its
/// compatible string.
pub(crate) fn kind(handler: &str) -> &str {
    luo_core::handlers::describe(handler)
        .and_then(|d| d.type_name)
        .unwrap_or(handler)
}

fn retrieved(r: RetrieveStatus) -> String {
    match r {
        RetrieveStatus::NotRetrieved => "no".into(),
        RetrieveStatus::Retrieved => "yes".into(),
        RetrieveStatus::Failed(e) => match e.name() {
            Some(n) => format!("failed: {n}"),
            None => format!("failed: errno {}", e.0),
        },
    }
}

/// A session as `sessions` (without files) or `show`/`info` (with the files
/// the model was asked for) report it.
pub(crate) fn detail(s: &SessionInfo) -> SessionDetail {
    let files: Vec<FileDetail> = s
        .files
        .iter()
        .map(|f| FileDetail {
            token: f.token,
            handler: f.handler.clone(),
            kind: kind(&f.handler).to_string(),
            identity: match f.identity.kind {
                IdentityKind::Inode => "inode",
                IdentityKind::OpenFile => "open-file",
            }
            .to_string(),
            dev: f.identity.dev,
            ino: f.identity.ino,
            size: f.size,
            pinned_bytes: f.pinned,
            kexec_safe: f.kexec_safe,
            managed: f.managed,
            retrieved: retrieved(f.retrieve),
        })
        .collect();
    SessionDetail {
        name: String::from_utf8_lossy(&s.name).into_owned(),
        owner: s.owner,
        state: s.state,
        handles: s.handles as u64,
        file_count: s.file_count as u64,
        pinned_bytes: s.pinned_bytes,
        kexec_safe: s.kexec_safe,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use luo_core::Errno;

    #[test]
    fn names() {
        assert_eq!(kind("memfd-v2"), "memfd");
        assert_eq!(kind("luo-pipe-v1"), "pipe");
        assert_eq!(kind("something-else"), "something-else");
        assert_eq!(retrieved(RetrieveStatus::Failed(Errno::EIO)), "failed: EIO");
        assert_eq!(retrieved(RetrieveStatus::Retrieved), "yes");
    }
}
