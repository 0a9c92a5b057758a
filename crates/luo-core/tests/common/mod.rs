//! What the model's tests share: memfds with contents, reading them back,
//! and the process's descriptor count.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// A memfd holding `bytes`, its offset at the start.
pub fn memfd(bytes: &[u8]) -> OwnedFd {
    let f = File::from(luo_sys::memfd_create("luo-core-test", 0).unwrap());
    f.write_all_at(bytes, 0).unwrap();
    f.into()
}

/// Everything in `fd` from its start (the offset, shared with every copy
/// of the descriptor, is left at the end).
pub fn read_all(fd: impl AsFd) -> Vec<u8> {
    let mut f = File::from(fd.as_fd().try_clone_to_owned().unwrap());
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Held for the whole of each test in a binary that counts descriptors:
/// `cargo test` runs a binary's tests as threads of one process, and a
/// count is only right while no other test opens or closes one (nextest
/// runs each test in a process of its own anyway).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The descriptors this process has open; see [`serial`].
pub fn open_fds() -> usize {
    luo_sys::open_fd_count().unwrap()
}
