//! The kernel's `/dev/liveupdate` uAPI, as the `ioctl` request carries it
//! (`kernel-luo.md` section 2; `docs/uapi-emulation.md`).
//!
//! The preload library reads the caller's struct and sends it as it is; the
//! agent applies the kernel's dispatcher checks in the kernel's order. This
//! module holds what both sides must agree on: the command numbers, the
//! struct sizes, and the encoding of struct bytes on the wire (hex).
//!
//! ```
//! use luo_proto::uapi;
//!
//! assert_eq!(uapi::struct_size(uapi::CREATE_SESSION), Some(72));
//! assert_eq!(uapi::struct_size(0xBA44), None);
//! assert!(uapi::returns_fd(uapi::RETRIEVE_FD));
//! assert_eq!(uapi::from_hex(&uapi::to_hex(&[0, 0xba, 0xff])), Some(vec![0, 0xba, 0xff]));
//! ```

// The command numbers, the type byte and the name length are luo-sys's
// (`luo_sys::liveupdate`), which makes the ioctls: one definition.
pub use luo_sys::liveupdate::{
    CREATE_SESSION, IOCTL_TYPE, NAME_LENGTH, RETRIEVE_SESSION, SESSION_FINISH as FINISH,
    SESSION_GET_NAME as GET_NAME, SESSION_PRESERVE_FD as PRESERVE_FD,
    SESSION_RETRIEVE_FD as RETRIEVE_FD,
};

/// Offset of the `fd` field in every struct that has one.
pub const FD_OFFSET: usize = 4;
/// Offset of the `name` field of the create, retrieve and get-name structs.
pub const NAME_OFFSET: usize = 8;
/// Offset of the `token` field of the preserve and retrieve-fd structs.
pub const TOKEN_OFFSET: usize = 8;
/// Offset of the `reserved` field of the finish and get-name structs.
pub const RESERVED_OFFSET: usize = 4;

/// `_IOC_NR(cmd)`.
pub fn nr(cmd: u32) -> u32 {
    cmd & 0xff
}

/// The size of the struct `cmd` takes, which is also its minimum size
/// (`offsetofend` of the last field); `None` for a command that is not
/// exactly one of the six.
pub fn struct_size(cmd: u32) -> Option<usize> {
    Some(match cmd {
        CREATE_SESSION | RETRIEVE_SESSION | GET_NAME => 72,
        PRESERVE_FD | RETRIEVE_FD => 16,
        FINISH => 8,
        _ => return None,
    })
}

/// True for the commands that return a new descriptor in the `fd` field.
pub fn returns_fd(cmd: u32) -> bool {
    matches!(cmd, CREATE_SESSION | RETRIEVE_SESSION | RETRIEVE_FD)
}

/// What the bytes of a struct past its known size were
/// (`copy_struct_from_user`): `"zero"`, `"nonzero"` (`E2BIG`) or `"fault"`
/// (`EFAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tail {
    /// None, or all zero: accepted (forward compatibility).
    #[default]
    Zero,
    /// Some byte is not zero: `E2BIG`.
    NonZero,
    /// Reading them faulted: `EFAULT`.
    Fault,
}

impl Tail {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tail::Zero => "zero",
            Tail::NonZero => "nonzero",
            Tail::Fault => "fault",
        }
    }

    /// Parses [`Tail::as_str`].
    pub fn parse(s: &str) -> Option<Tail> {
        Some(match s {
            "zero" => Tail::Zero,
            "nonzero" => Tail::NonZero,
            "fault" => Tail::Fault,
            _ => return None,
        })
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of [`to_hex`] output (either case); `None` for anything else.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)).unwrap(), all);
        assert_eq!(from_hex("AbCd"), Some(vec![0xab, 0xcd]));
        for bad in ["a", "zz", "0x", "+1", "é1"] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_are_the_kernels() {
        let want = [
            (CREATE_SESSION, 72),
            (RETRIEVE_SESSION, 72),
            (PRESERVE_FD, 16),
            (RETRIEVE_FD, 16),
            (FINISH, 8),
            (GET_NAME, 72),
        ];
        for (cmd, size) in want {
            assert_eq!(struct_size(cmd), Some(size));
            assert_eq!(cmd >> 8, IOCTL_TYPE);
        }
        // _IOW(0xBA, 0, int) has the right number but not the exact command.
        assert_eq!(struct_size(0x4004_BA00), None);
    }
}
