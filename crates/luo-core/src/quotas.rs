//! Per-owner quotas (`EDQUOT`) and what each owner holds.

use crate::Luo;

/// Per-owner quotas that fail with `EDQUOT`. They bind every uid but root
/// (uid 0); `u64::MAX` means no limit, the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most sessions (outgoing and incoming) one owner may have.
    pub sessions: u64,
    /// Most preserved files one owner may have in custody.
    pub files: u64,
    /// Most bytes of memfd (`st_size` when preserved) one owner may pin.
    pub pinned_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            sessions: u64::MAX,
            files: u64::MAX,
            pinned_bytes: u64::MAX,
        }
    }
}

/// What one owner holds, as counted against its [`Quota`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sessions, outgoing and incoming, until they are gone.
    pub sessions: u64,
    /// Files in custody, until finished or unpreserved.
    pub files: u64,
    /// Bytes of memfd pinned by those files (sizes when preserved).
    pub pinned_bytes: u64,
}

impl Luo {
    /// Sets the per-owner quota. Lowering it below what an owner holds takes
    /// nothing away; it refuses new sessions and files until usage drops.
    pub fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    /// The per-owner quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// What `owner` holds now.
    pub fn usage(&self, owner: u32) -> Usage {
        self.usage.get(&owner).copied().unwrap_or_default()
    }

    pub(crate) fn usage_mut(&mut self, owner: u32) -> &mut Usage {
        self.usage.entry(owner).or_default()
    }

    /// Drops a file's share of its owner's usage when it leaves custody.
    pub(crate) fn release_file(&mut self, owner: u32, pinned: u64) {
        let u = self.usage_mut(owner);
        u.files -= 1;
        u.pinned_bytes -= pinned;
    }
}
