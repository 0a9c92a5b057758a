//! A tour of the session/file model: preserve, the identity rule, handover,
//! retrieve and finish, with real descriptors.
//!
//! Run with `cargo run -p luo-core --example tour`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};

use luo_core::{Errno, Luo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut luo = Luo::with_default_handlers();
    println!("identity index mode: {:?}", luo.index().mode());

    // A service's state: 64 MiB in a memfd, two eventfds, a listening socket.
    let mut data = File::from(luo_sys::memfd_create("kv-data", 0)?);
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..64 {
        data.write_all(&chunk)?;
    }
    let data: OwnedFd = data.into();
    let (ev1, ev2) = (luo_sys::eventfd(0)?, luo_sys::eventfd(0)?);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;

    let s = luo.create_session(0, b"kv")?;
    luo.preserve(s, data.try_clone()?, 1)?;
    luo.preserve(s, ev1.try_clone()?, 2)?;
    luo.preserve(s, ev2.try_clone()?, 3)?;
    luo.preserve(s, OwnedFd::from(listener), 4)?;
    println!(
        "preserved 4 files in session 'kv' (two eventfds share one inode, and both are accepted)"
    );

    // The same file again is refused, however it was obtained.
    let dup = luo.preserve(s, ev1.try_clone()?, 5).unwrap_err();
    println!("dup of an eventfd:        {dup}");
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(luo_sys::reopen_path(data.as_fd()))?;
    let again = luo.preserve(s, reopened.into(), 6).unwrap_err();
    println!("memfd re-opened via /proc: {again}");
    assert_eq!((dup.errno, again.errno), (Errno::EBUSY, Errno::EBUSY));

    // The old instance hands the session over and goes away.
    luo.handover(s)?;
    drop((data, ev1, ev2));
    println!("handed over; old handle now: {}", luo.name(s).unwrap_err());

    // The new instance retrieves everything and checks every byte.
    let s2 = luo.retrieve_session(0, b"kv")?;
    let mut data = File::from(luo.retrieve_fd(s2, 1)?);
    data.seek(SeekFrom::Start(0))?;
    let mut all = Vec::new();
    data.read_to_end(&mut all)?;
    assert!(all.chunks(1 << 20).all(|c| c == chunk.as_slice()));
    let listener = std::net::TcpListener::from(luo.retrieve_fd(s2, 4)?);
    assert_eq!(listener.local_addr()?, addr);
    println!(
        "retrieved: {} MiB intact, listener still on {addr}",
        all.len() >> 20
    );

    for f in luo.session(s2)?.files {
        println!(
            "  token {:>2}  {:<20} kexec-safe: {:<5} {}",
            f.token, f.handler, f.kexec_safe, f.identity
        );
    }
    luo.finish(s2)?;
    luo.close(s2)?;
    println!("finished; sessions left: {}", luo.sessions().len());
    Ok(())
}
