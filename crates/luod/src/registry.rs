//! The agent's registry: what it must know about its sessions to carry on
//! after a kexec (names, owners, tokens, handlers, which kernel session holds
//! which file, the epoch), and the envelope that protects it.
//!
//! The envelope is a fixed header followed by the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic, `b"luod-reg"` |
//! | 8 | 4 | version, little-endian ([`VERSION`]) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | payload length, little-endian |
//! | 24 | 4 | CRC-32 (IEEE) of the payload, little-endian |
//! | 28 | 4 | reserved, 0 |
//! | 32 | … | payload: one JSON object |
//!
//! [`open`] checks all of it before the payload is parsed.

use serde::{Deserialize, Serialize};

/// The envelope's magic.
pub const MAGIC: [u8; 8] = *b"luod-reg";
/// The registry format this agent writes and reads.
pub const VERSION: u32 = 1;
/// Size of the envelope header.
pub const HEADER: usize = 32;

/// Why a registry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Shorter than the header, or than the length it states.
    #[error("the registry is truncated: {have} bytes, {need} needed")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The magic is not [`MAGIC`]: not a registry at all.
    #[error("the registry has no luod magic: it is not a luod registry")]
    BadMagic,
    /// Written by an agent with another registry format.
    #[error("the registry is version {0}; this luod reads version {VERSION} only (run the luod that wrote it, or one that reads it)")]
    Version(u32),
    /// The payload's checksum does not match: it was damaged.
    #[error("the registry is corrupt: its checksum is {stored:#010x} but the data sums to {actual:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the payload as found.
        actual: u32,
    },
    /// The payload is not the JSON this version writes.
    #[error("the registry is malformed: {0}")]
    Malformed(String),
}

/// Wraps `payload` in an envelope with `magic` and `version`.
pub fn seal(magic: [u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    // CRC-32 (IEEE 802.3, as zlib's `crc32`).
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope (magic, version, length, checksum, in that order) and
/// returns its payload. Bytes after the stated length are ignored (a memfd
/// may be larger than what was written).
pub fn open(bytes: &[u8], magic: [u8; 8], version: u32) -> Result<&[u8], RegistryError> {
    if bytes.len() < HEADER {
        return Err(RegistryError::Truncated {
            have: bytes.len(),
            need: HEADER,
        });
    }
    if bytes[..8] != magic {
        return Err(RegistryError::BadMagic);
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let v = u32_at(8);
    if v != version {
        return Err(RegistryError::Version(v));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let need = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(HEADER))
        .unwrap_or(usize::MAX);
    if bytes.len() < need {
        return Err(RegistryError::Truncated {
            have: bytes.len(),
            need,
        });
    }
    let payload = &bytes[HEADER..need];
    let stored = u32_at(24);
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(RegistryError::Checksum { stored, actual });
    }
    Ok(payload)
}

/// One preserved file as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its token in the agent session.
    pub token: u64,
    /// The handler's compatible string.
    pub handler: String,
    /// Index into [`SessionEntry::parts`] of the kernel session holding it;
    /// `None` for a file that does not cross a kexec.
    pub part: Option<usize>,
}

/// One agent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Its owner's uid.
    pub owner: u32,
    /// Its name (per owner).
    pub name: String,
    /// Its state when the registry was written (`open`, `incoming`,
    /// `retrieved`): every one of them is incoming in the next epoch,
    /// except a persistent one.
    pub state: String,
    /// A persistent open session: it is restored persistent and open
    /// (absent, as 0.1.0 wrote them: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
    /// Names of the kernel sessions holding its files, in order.
    pub parts: Vec<String>,
    /// Its files in preservation order.
    pub files: Vec<FileEntry>,
}

/// What the agent hands to its successor across a kexec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The epoch that ends with the kexec.
    pub epoch: u64,
    /// The agent that wrote it, e.g. `luod 0.1.0`.
    pub agent: String,
    /// The sessions, in creation order.
    pub sessions: Vec<SessionEntry>,
}

impl Registry {
    /// The registry as sealed bytes, ready for a memfd.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a registry always serializes");
        seal(MAGIC, VERSION, &json)
    }

    /// Checks the envelope, then parses the payload.
    pub fn decode(bytes: &[u8]) -> Result<Registry, RegistryError> {
        let payload = open(bytes, MAGIC, VERSION)?;
        let r: Registry =
            serde_json::from_slice(payload).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        for s in &r.sessions {
            for f in &s.files {
                if let Some(p) = f.part.filter(|&p| p >= s.parts.len()) {
                    return Err(RegistryError::Malformed(format!(
                        "a file names part {p} of {}",
                        s.parts.len()
                    )));
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        Registry {
            epoch: 3,
            agent: "luod test".into(),
            sessions: vec![SessionEntry {
                owner: 1000,
                name: "db".into(),
                state: "open".into(),
                persist: false,
                parts: vec!["luod/1000/1".into(), "luod/1000/2".into()],
                files: vec![
                    FileEntry {
                        token: 1,
                        handler: "memfd-v2".into(),
                        part: Some(1),
                    },
                    FileEntry {
                        token: u64::MAX,
                        handler: "luo-tcp-socket-v1".into(),
                        part: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn a_registry_survives_encode_and_decode() {
        let r = sample();
        let mut bytes = r.encode();
        // A memfd page is larger than what was written: trailing bytes are ignored.
        bytes.extend_from_slice(&[0; 100]);
        assert_eq!(Registry::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn every_kind_of_damage_is_refused_before_parsing() {
        let good = sample().encode();
        assert!(matches!(
            Registry::decode(&good[..10]),
            Err(RegistryError::Truncated { have: 10, .. })
        ));
        assert!(matches!(
            Registry::decode(&good[..good.len() - 1]),
            Err(RegistryError::Truncated { .. })
        ));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Registry::decode(&b), Err(RegistryError::BadMagic));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(Registry::decode(&b), Err(RegistryError::Version(2)));
        let mut b = good.clone();
        let last = b.len() - 2;
        b[last] ^= 0x20;
        assert!(matches!(
            Registry::decode(&b),
            Err(RegistryError::Checksum { .. })
        ));
        let bad = seal(MAGIC, VERSION, b"{\"epoch\": 1}");
        assert!(matches!(
            Registry::decode(&bad),
            Err(RegistryError::Malformed(_))
        ));
        let bad = seal(
            MAGIC,
            VERSION,
            br#"{"epoch":1,"agent":"x","sessions":[{"owner":1,"name":"a","state":"open","parts":[],"files":[{"token":1,"handler":"memfd-v2","part":0}]}]}"#,
        );
        assert!(matches!(
            Registry::decode(&bad),
            Err(RegistryError::Malformed(m)) if m.contains("part 0 of 0")
        ));
    }
}
