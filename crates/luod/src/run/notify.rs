//! The `sd_notify(3)` message parser: one datagram's bytes in, the
//! assignments that matter to the supervisor out. Pure and strict: the
//! input comes from any process that can reach the socket, so a message
//! that is malformed anywhere is refused whole (and changes nothing);
//! unknown keys are ignored, as systemd does.

use std::fmt;

/// Most bytes of one notification the supervisor reads; a longer datagram
/// is malformed.
pub const MAX_MESSAGE: usize = 8192;

/// Longest `STATUS=` kept, in bytes (longer text is cut at a character
/// boundary).
pub const MAX_STATUS: usize = 1024;

/// What one datagram says. Fields are `None`/`false` when the key was not
/// in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    /// `READY=1`.
    pub ready: bool,
    /// `RELOADING=1`.
    pub reloading: bool,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// `STATUS=...`.
    pub status: Option<String>,
    /// `ERRNO=N`.
    pub errno: Option<i32>,
    /// `MAINPID=N`.
    pub mainpid: Option<i32>,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`.
    pub watchdog_trigger: bool,
    /// `WATCHDOG_USEC=N`: a new watchdog interval.
    pub watchdog_usec: Option<u64>,
    /// `EXTEND_TIMEOUT_USEC=N`.
    pub extend_timeout_usec: Option<u64>,
    /// `BARRIER=1`.
    pub barrier: bool,
    /// `FDSTORE=1`.
    pub fdstore: bool,
    /// `FDSTOREREMOVE=1`.
    pub fdstoreremove: bool,
    /// `FDNAME=name`.
    pub fdname: Option<String>,
    /// `FDPOLL=0` gives `Some(false)`, `FDPOLL=1` `Some(true)`.
    pub fdpoll: Option<bool>,
    /// `X_LUO_EXEC_ERRNO=N`: luoctl's own key (systemd's `X_` prefix for
    /// extensions), sent by the trampoline when it could not exec the
    /// command, so the supervisor can tell "never ran" from "ran and failed".
    pub exec_errno: Option<i32>,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Longer than [`MAX_MESSAGE`].
    TooLong,
    /// A NUL byte in it.
    Nul,
    /// Not UTF-8.
    NotUtf8,
    /// A line that is not `KEY=VALUE`.
    NotAssignment(String),
    /// A known key with a value it cannot have.
    BadValue(String),
    /// `BARRIER=1` without exactly one descriptor.
    Barrier(usize),
    /// `FDSTOREREMOVE=1` without `FDNAME=`.
    RemoveWithoutName,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooLong => write!(f, "longer than {MAX_MESSAGE} bytes"),
            Malformed::Nul => f.write_str("embedded NUL byte"),
            Malformed::NotUtf8 => f.write_str("not UTF-8"),
            Malformed::NotAssignment(l) => write!(f, "not KEY=VALUE: {l:?}"),
            Malformed::BadValue(l) => write!(f, "bad value: {l:?}"),
            Malformed::Barrier(n) => write!(f, "BARRIER=1 with {n} descriptors (needs exactly 1)"),
            Malformed::RemoveWithoutName => f.write_str("FDSTOREREMOVE=1 without FDNAME="),
        }
    }
}

/// Whether `name` may name a passed descriptor (`LISTEN_FDNAMES`): 1 to 255
/// printable ASCII characters, no `:`.
pub fn fdname_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
}

fn flag(key: &str, value: &str, line: &str) -> Result<bool, Malformed> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(Malformed::BadValue(format!("{key}={}", clip(line)))),
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses one datagram that arrived with `nfds` descriptors.
pub fn parse(bytes: &[u8], nfds: usize) -> Result<Message, Malformed> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Malformed::TooLong);
    }
    if bytes.contains(&0) {
        return Err(Malformed::Nul);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::NotUtf8)?;
    let mut m = Message::default();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Malformed::NotAssignment(clip(line).to_string()));
        };
        let bad = || Malformed::BadValue(clip(line).to_string());
        match key {
            "READY" => m.ready |= flag(key, value, value)?,
            "RELOADING" => m.reloading |= flag(key, value, value)?,
            "STOPPING" => m.stopping |= flag(key, value, value)?,
            "STATUS" => {
                let mut end = value.len().min(MAX_STATUS);
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                m.status = Some(value[..end].to_string());
            }
            "ERRNO" => {
                m.errno = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n: &i32| n >= 0)
                        .ok_or_else(bad)?,
                )
            }
            "MAINPID" => {
                m.mainpid = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n: &i32| n > 0)
                        .ok_or_else(bad)?,
                )
            }
            "WATCHDOG" => match value {
                "1" => m.watchdog = true,
                "trigger" => m.watchdog_trigger = true,
                _ => return Err(bad()),
            },
            "WATCHDOG_USEC" => {
                m.watchdog_usec = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n: &u64| n > 0)
                        .ok_or_else(bad)?,
                )
            }
            "EXTEND_TIMEOUT_USEC" => {
                m.extend_timeout_usec = Some(value.parse().map_err(|_| bad())?)
            }
            "BARRIER" => m.barrier |= flag(key, value, value)?,
            "FDSTORE" => m.fdstore |= flag(key, value, value)?,
            "FDSTOREREMOVE" => m.fdstoreremove |= flag(key, value, value)?,
            "FDNAME" => {
                if !fdname_is_valid(value) {
                    return Err(bad());
                }
                m.fdname = Some(value.to_string());
            }
            "FDPOLL" => m.fdpoll = Some(flag(key, value, value)?),
            "X_LUO_EXEC_ERRNO" => {
                m.exec_errno = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n: &i32| n > 0)
                        .ok_or_else(bad)?,
                )
            }
            // MONOTONIC_USEC (with RELOADING=1) and anything else: ignored.
            _ => {}
        }
    }
    if m.barrier && nfds != 1 {
        return Err(Malformed::Barrier(nfds));
    }
    if m.fdstoreremove && m.fdname.is_none() {
        return Err(Malformed::RemoveWithoutName);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_messages() {
        let m = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=42\n", 0).unwrap();
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("serving 3 clients"));
        assert_eq!(m.mainpid, Some(42));
        let m = parse(b"FDSTORE=1\nFDNAME=conn-7\nFDPOLL=0", 2).unwrap();
        assert!(m.fdstore);
        assert_eq!(m.fdname.as_deref(), Some("conn-7"));
        assert_eq!(m.fdpoll, Some(false));
        let m = parse(b"FDSTOREREMOVE=1\nFDNAME=conn-7", 0).unwrap();
        assert!(m.fdstoreremove);
        assert!(parse(b"BARRIER=1", 1).unwrap().barrier);
        let m = parse(b"RELOADING=1\nMONOTONIC_USEC=123", 0).unwrap();
        assert!(m.reloading);
        assert!(parse(b"STOPPING=1", 0).unwrap().stopping);
        assert!(parse(b"WATCHDOG=1", 0).unwrap().watchdog);
        assert!(parse(b"WATCHDOG=trigger", 0).unwrap().watchdog_trigger);
        assert_eq!(
            parse(b"WATCHDOG_USEC=5000000", 0).unwrap().watchdog_usec,
            Some(5_000_000)
        );
        assert_eq!(
            parse(b"EXTEND_TIMEOUT_USEC=0", 0)
                .unwrap()
                .extend_timeout_usec,
            Some(0)
        );
        assert_eq!(parse(b"ERRNO=2", 0).unwrap().errno, Some(2));
        assert_eq!(parse(b"STATUS=", 0).unwrap().status.as_deref(), Some(""));
        assert_eq!(
            parse(b"STATUS=a=b", 0).unwrap().status.as_deref(),
            Some("a=b")
        );
    }

    #[test]
    fn unknown_keys_and_empty_lines_are_ignored() {
        assert_eq!(parse(b"", 0).unwrap(), Message::default());
        assert_eq!(parse(b"\n\n", 0).unwrap(), Message::default());
        assert_eq!(parse(b"X_FOO=bar\nready=1", 0).unwrap(), Message::default());
        assert!(parse(b"X=1\nREADY=1\n", 0).unwrap().ready);
    }

    #[test]
    fn malformed_messages_are_refused_whole() {
        for (bytes, nfds) in [
            (&b"READY=1\nMAINPID=abc"[..], 0),
            (b"MAINPID=0", 0),
            (b"MAINPID=-5", 0),
            (b"MAINPID=99999999999999", 0),
            (b"READY=yes", 0),
            (b"READY=1\0", 0),
            (b"READY", 0),
            (b"READY=1\ngarbage", 0),
            (b"\xff\xfe", 0),
            (b"FDNAME=a:b", 1),
            (b"FDNAME=", 1),
            (b"FDNAME=tab\there", 1),
            (b"FDPOLL=2", 1),
            (b"BARRIER=1", 0),
            (b"BARRIER=1", 2),
            (b"FDSTOREREMOVE=1", 0),
            (b"WATCHDOG=2", 0),
            (b"WATCHDOG_USEC=0", 0),
            (b"EXTEND_TIMEOUT_USEC=-1", 0),
            (b"ERRNO=x", 0),
        ] {
            assert!(
                parse(bytes, nfds).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(parse(&long, 0), Err(Malformed::TooLong));
        let name = format!("FDNAME={}", "n".repeat(256));
        assert!(parse(name.as_bytes(), 1).is_err());
        let name = format!("FDNAME={}", "n".repeat(255));
        assert!(parse(name.as_bytes(), 1).is_ok());
    }

    #[test]
    fn status_is_bounded_at_a_character_boundary() {
        let s = format!("STATUS={}", "é".repeat(MAX_STATUS));
        let m = parse(s.as_bytes(), 0).unwrap();
        let status = m.status.unwrap();
        assert!(status.len() <= MAX_STATUS);
        assert!(status.chars().all(|c| c == 'é'));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes drawn from an alphabet
        // rich in the separators.
        let alphabet = b"=\n\0:READYFDSTORNAMEPOLMINWTCHUSEC01trigger\xff\xc3\xa9 ";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (x % 64) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse(&v, (x % 3) as usize);
        }
    }
}
