//! One request at a time per socket, across threads and safe across fork.
//!
//! Requests and replies share one socket per session, so two threads must
//! not interleave on it. The locks are a fixed table of words hashed by the
//! socket's inode (no allocation; two sockets that collide just take turns),
//! each holding the holder's `(pid, tid)`. A word whose pid is not ours was
//! taken in the parent before a `fork` by a thread the child does not
//! have: the child takes it over instead of waiting forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use luo_sys::Errno;

const SLOTS: usize = 64;
static LOCKS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

#[derive(Debug)]
pub(crate) struct Guard {
    slot: usize,
    me: u64,
}

fn me() -> u64 {
    (luo_sys::getpid() as u32 as u64) << 32 | luo_sys::preload::gettid() as u32 as u64
}

/// Takes the lock of the socket with inode `ino`. `EDEADLK` when this very
/// thread holds it already (an ioctl from a signal handler that interrupted
/// one): waiting would never end.
pub(crate) fn lock(ino: u64) -> Result<Guard, Errno> {
    let slot = (ino % SLOTS as u64) as usize;
    let me = me();
    let mut waited = 0u32;
    loop {
        let cur = LOCKS[slot].load(Ordering::Acquire);
        if cur == 0 || cur >> 32 != me >> 32 {
            if LOCKS[slot]
                .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Guard { slot, me });
            }
            continue;
        }
        if cur == me {
            return Err(Errno(libc::EDEADLK));
        }
        // Another thread's request is on this socket: a round trip to luod.
        waited += 1;
        if waited < 64 {
            std::hint::spin_loop();
        } else if waited < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = LOCKS[self.slot].compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn one_holder_at_a_time_and_no_self_deadlock() {
        let g = lock(7).unwrap();
        assert_eq!(lock(7 + SLOTS as u64).unwrap_err(), Errno(libc::EDEADLK));
        drop(g);
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _g = lock(7).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_lock_taken_before_fork_is_taken_over() {
        // As a child finds it: held by a pid that is not its own.
        LOCKS[9].store(1 << 32 | 5, Ordering::SeqCst);
        let g = lock(9).unwrap();
        assert_eq!(LOCKS[9].load(Ordering::SeqCst), me());
        drop(g);
        assert_eq!(LOCKS[9].load(Ordering::SeqCst), 0);
    }
}
