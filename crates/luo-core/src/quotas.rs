//! Per-owner quotas (`EDQUOT`) and what each owner holds.

use crate::Luo;

/// Per-owner quotas that fail with `EDQUOT`. They bind every uid but root
/// (uid 0); `u64::MAX` means no limit, the default.
///
/// With the `clap` feature it is also a set of command-line options, as luod
/// takes them: `--quota-sessions N`, `--quota-files N`, `--quota-bytes SIZE`.
///
/// On luod's wire (`status`), a member without a limit is `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Quota {
    /// Most sessions (outgoing and incoming) one owner may have.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-sessions",
            value_name = "N",
            default_value_t = u64::MAX,
            hide_default_value = true,
            help = "At most N sessions per uid (root is exempt)"
        )
    )]
    #[cfg_attr(feature = "serde", serde(with = "unlimited"))]
    pub sessions: u64,
    /// Most preserved files one owner may have in custody.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-files",
            value_name = "N",
            default_value_t = u64::MAX,
            hide_default_value = true,
            help = "At most N preserved files per uid (root is exempt)"
        )
    )]
    #[cfg_attr(feature = "serde", serde(with = "unlimited"))]
    pub files: u64,
    /// Most bytes of memfd (`st_size` when preserved) one owner may pin.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "quota-bytes",
            value_name = "SIZE",
            default_value_t = u64::MAX,
            hide_default_value = true,
            value_parser = size_value,
            help = "At most SIZE bytes of memfd pinned per uid (root is exempt); \
                    SIZE is bytes or has a K, M, G or T suffix (powers of 1024)"
        )
    )]
    #[cfg_attr(feature = "serde", serde(with = "unlimited"))]
    pub pinned_bytes: u64,
}

/// Parses a size: plain bytes, or a number with a `K`, `M`, `G` or `T`
/// suffix (powers of 1024, any case, optionally followed by `B` or `iB`).
/// `None` for anything else, or a size over `u64::MAX`.
///
/// ```
/// assert_eq!(luo_core::parse_size("4096"), Some(4096));
/// assert_eq!(luo_core::parse_size("1G"), Some(1 << 30));
/// assert_eq!(luo_core::parse_size("2MiB"), Some(2 << 20));
/// assert_eq!(luo_core::parse_size("1.5G"), None);
/// ```
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].to_ascii_uppercase();
    let (unit, tail) = match rest.chars().next() {
        None => return Some(n),
        Some('K') => (10, &rest[1..]),
        Some('M') => (20, &rest[1..]),
        Some('G') => (30, &rest[1..]),
        Some('T') => (40, &rest[1..]),
        Some('B') if rest == "B" => return Some(n),
        _ => return None,
    };
    if !matches!(tail, "" | "B" | "IB") {
        return None;
    }
    n.checked_mul(1u64 << unit)
}

/// [`parse_size`] as a command-line value parser.
#[cfg(feature = "clap")]
fn size_value(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).ok_or_else(|| "a size such as 1048576, 512K, 64M or 2G".to_string())
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

/// `u64::MAX` (no limit) as `null`.
#[cfg(feature = "serde")]
mod unlimited {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        match *n {
            u64::MAX => s.serialize_none(),
            n => s.serialize_some(&n),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.unwrap_or(u64::MAX))
    }
}
