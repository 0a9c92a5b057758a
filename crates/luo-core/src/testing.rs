//! Fault injection: wrappers that make any handler or FLB callback fail on
//! demand and record every call, for tests of error paths and ordering.
//!
//! ```
//! use luo_core::testing::{Faults, FaultyHandler, Op};
//! use luo_core::{handler::MemfdHandler, Errno, Limits, Luo};
//!
//! let faults = Faults::default();
//! let mut luo = Luo::new(Limits::default());
//! luo.register_handler(Box::new(FaultyHandler::new(MemfdHandler, faults.clone()))).unwrap();
//! faults.fail(Op::Preserve, Errno::ENOMEM);
//! let s = luo.create_session(0, b"s").unwrap();
//! let m = luo_sys::memfd_create("m", 0).unwrap();
//! assert_eq!(luo.preserve(s, m, 7).unwrap_err().errno, Errno::ENOMEM);
//! assert!(luo.index().is_empty());
//! ```

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::handler::{FileHandler, FileInfo, FileOpArgs};
use crate::identity::IdentityKind;
use crate::{Errno, Flb};

/// A callback that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Handler `can_preserve` (failing means declining the file).
    CanPreserve,
    /// Handler `preserve`.
    Preserve,
    /// Handler `unpreserve` (cannot fail: recorded only).
    Unpreserve,
    /// Handler `freeze`.
    Freeze,
    /// Handler `unfreeze` (cannot fail: recorded only).
    Unfreeze,
    /// Handler `retrieve`.
    Retrieve,
    /// Handler `can_finish` (failing means answering false).
    CanFinish,
    /// Handler `finish` (cannot fail: recorded only).
    Finish,
    /// FLB `preserve`.
    FlbPreserve,
    /// FLB `unpreserve` (cannot fail: recorded only).
    FlbUnpreserve,
    /// FLB `retrieve`.
    FlbRetrieve,
    /// FLB `finish` (cannot fail: recorded only).
    FlbFinish,
}

#[derive(Debug, Default)]
struct State {
    /// op → (token filter, errno); `None` filter fails every call.
    fail: HashMap<Op, (Option<u64>, Errno)>,
    log: Vec<(Op, u64)>,
}

/// Shared fault plan and call log. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every call of `op` fail with `errno`.
    pub fn fail(&self, op: Op, errno: Errno) {
        self.lock().fail.insert(op, (None, errno));
    }

    /// Makes calls of `op` for `token` (or FLB data, for FLB ops) fail.
    pub fn fail_token(&self, op: Op, token: u64, errno: Errno) {
        self.lock().fail.insert(op, (Some(token), errno));
    }

    /// Stops failing `op`.
    pub fn clear(&self, op: Op) {
        self.lock().fail.remove(&op);
    }

    /// Stops failing anything.
    pub fn clear_all(&self) {
        self.lock().fail.clear();
    }

    /// Every call so far, in order, as `(op, token)` (FLB ops log their data).
    pub fn log(&self) -> Vec<(Op, u64)> {
        self.lock().log.clone()
    }

    /// Returns the log and empties it.
    pub fn take_log(&self) -> Vec<(Op, u64)> {
        std::mem::take(&mut self.lock().log)
    }

    /// Records a call of `op`; returns the errno it must fail with, if any.
    fn hit(&self, op: Op, token: u64) -> Option<Errno> {
        let mut s = self.lock();
        s.log.push((op, token));
        match s.fail.get(&op) {
            Some((None, e)) => Some(*e),
            Some((Some(t), e)) if *t == token => Some(*e),
            _ => None,
        }
    }
}

/// Wraps a handler so that each of its callbacks can fail on demand.
#[derive(Debug)]
pub struct FaultyHandler<H> {
    inner: H,
    faults: Faults,
    compatible: Option<String>,
}

impl<H: FileHandler> FaultyHandler<H> {
    /// Wraps `inner`, reporting and failing through `faults`.
    pub fn new(inner: H, faults: Faults) -> Self {
        FaultyHandler {
            inner,
            faults,
            compatible: None,
        }
    }

    /// Same, under another compatible string (to register two wrappers of one
    /// handler type).
    pub fn named(inner: H, faults: Faults, compatible: &str) -> Self {
        FaultyHandler {
            inner,
            faults,
            compatible: Some(compatible.to_string()),
        }
    }
}

impl<H: FileHandler> FileHandler for FaultyHandler<H> {
    fn compatible(&self) -> &str {
        self.compatible
            .as_deref()
            .unwrap_or_else(|| self.inner.compatible())
    }
    fn descriptor(&self) -> crate::handler::Descriptor {
        self.inner.descriptor()
    }
    fn can_preserve(&self, file: &FileInfo<'_>) -> bool {
        // Only files the inner handler accepts count as calls.
        self.inner.can_preserve(file) && self.faults.hit(Op::CanPreserve, 0).is_none()
    }
    fn identity(&self, file: &FileInfo<'_>) -> IdentityKind {
        self.inner.identity(file)
    }
    fn preserve(&self, args: &FileOpArgs<'_>) -> Result<u64, Errno> {
        match self.faults.hit(Op::Preserve, args.token) {
            Some(e) => Err(e),
            None => self.inner.preserve(args),
        }
    }
    fn unpreserve(&self, args: &FileOpArgs<'_>) {
        self.faults.hit(Op::Unpreserve, args.token);
        self.inner.unpreserve(args)
    }
    fn freeze(&self, args: &mut FileOpArgs<'_>) -> Result<(), Errno> {
        match self.faults.hit(Op::Freeze, args.token) {
            Some(e) => Err(e),
            None => self.inner.freeze(args),
        }
    }
    fn unfreeze(&self, args: &FileOpArgs<'_>) {
        self.faults.hit(Op::Unfreeze, args.token);
        self.inner.unfreeze(args)
    }
    fn retrieve(&self, args: &FileOpArgs<'_>) -> Result<OwnedFd, Errno> {
        match self.faults.hit(Op::Retrieve, args.token) {
            Some(e) => Err(e),
            None => self.inner.retrieve(args),
        }
    }
    fn can_finish(&self, args: &FileOpArgs<'_>) -> bool {
        self.faults.hit(Op::CanFinish, args.token).is_none() && self.inner.can_finish(args)
    }
    fn finish(&self, args: &FileOpArgs<'_>) {
        self.faults.hit(Op::Finish, args.token);
        self.inner.finish(args)
    }
}

/// An FLB for tests, like the kernel's `liveupdate-test-flb-vN`: its data is
/// `0xFEEDF00DCAFEBEE0 + n`, and every call is logged with that data.
#[derive(Debug)]
pub struct TestFlb {
    compatible: String,
    data: u64,
    faults: Faults,
}

impl TestFlb {
    /// The FLB `liveupdate-test-flb-v{n}`.
    pub fn new(n: u64, faults: Faults) -> TestFlb {
        TestFlb {
            compatible: format!("liveupdate-test-flb-v{n}"),
            data: 0xFEED_F00D_CAFE_BEE0 + n,
            faults,
        }
    }
}

impl Flb for TestFlb {
    fn compatible(&self) -> &str {
        &self.compatible
    }
    fn preserve(&self) -> Result<u64, Errno> {
        match self.faults.hit(Op::FlbPreserve, self.data) {
            Some(e) => Err(e),
            None => Ok(self.data),
        }
    }
    fn unpreserve(&self, data: u64) {
        self.faults.hit(Op::FlbUnpreserve, data);
    }
    fn retrieve(&self, data: u64) -> Result<u64, Errno> {
        match self.faults.hit(Op::FlbRetrieve, data) {
            Some(e) => Err(e),
            // The live object: the data with its low bit set, to tell them apart.
            None => Ok(data | 1),
        }
    }
    fn finish(&self, obj: u64) {
        self.faults.hit(Op::FlbFinish, obj);
    }
}
