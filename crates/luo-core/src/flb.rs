//! FLB: file-lifecycle-bound data, global state shared by the files of one or
//! more handlers.
//!
//! An FLB is preserved once, when the first dependent file is preserved, and
//! unpreserved with the last one. Files that cross to the incoming side take
//! their references with them: the incoming lifecycle's count is set at that
//! moment (the kernel sets it only when someone first asks for the object,
//! which can leave `finish` never called), it can be retrieved there, and it is
//! finished when its last dependent file is finished.
//!
//! When only some of an outgoing lifecycle's files cross (a per-session
//! handover), the lifecycle is shared: the files that crossed hold incoming
//! references, the others outgoing ones, and new preserves still join it. It
//! ends exactly once, when its last reference of either kind is gone: with
//! `finish` (after `retrieve`, if nobody asked for the object) when any of its
//! files crossed, with `unpreserve` when none did.

use std::collections::BTreeMap;
use std::fmt;

use luo_sys::Errno;

/// An FLB's callbacks, as the kernel's `liveupdate_flb_ops`.
pub trait Flb: fmt::Debug + Send {
    /// The FLB's compatible string (1 to 47 bytes), unique among FLBs.
    fn compatible(&self) -> &str;
    /// Creates the shared state for its first dependent file; returns its data.
    fn preserve(&self) -> Result<u64, Errno>;
    /// Tears the state down when its last dependent file is unpreserved.
    fn unpreserve(&self, data: u64);
    /// Rebuilds the live object from `data` on the incoming side. Sticky on error.
    fn retrieve(&self, data: u64) -> Result<u64, Errno>;
    /// Final cleanup after the last dependent file is finished.
    fn finish(&self, obj: u64);
}

/// Generation number of one FLB lifecycle.
pub(crate) type Gen = u64;

/// One preserve of an FLB, from `preserve` until its single teardown.
#[derive(Debug)]
struct Lifecycle {
    data: u64,
    /// References held by outgoing files.
    out: usize,
    /// References held by files that crossed to the incoming side.
    inc: usize,
    /// Whether any file crossed: the teardown is then `finish`, not `unpreserve`.
    crossed: bool,
    /// `None` until retrieved, then the (sticky) result.
    obj: Option<Result<u64, Errno>>,
}

/// One registered FLB and its lifecycles.
#[derive(Debug)]
pub(crate) struct FlbSlot {
    pub(crate) flb: Box<dyn Flb>,
    /// The lifecycle that new preserves join.
    outgoing: Option<Gen>,
    lifecycles: BTreeMap<Gen, Lifecycle>,
    next_gen: Gen,
}

/// Observable state of an FLB, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlbStatus {
    /// The compatible string.
    pub compatible: String,
    /// References held by outgoing files (0: not preserved).
    pub outgoing_refs: usize,
    /// References held by incoming files, per lifecycle that has any, oldest
    /// first.
    pub incoming_refs: Vec<usize>,
}

impl FlbSlot {
    pub(crate) fn new(flb: Box<dyn Flb>) -> FlbSlot {
        FlbSlot {
            flb,
            outgoing: None,
            lifecycles: BTreeMap::new(),
            next_gen: 1,
        }
    }

    fn lc(&mut self, g: Gen) -> &mut Lifecycle {
        self.lifecycles.get_mut(&g).expect("live FLB lifecycle")
    }

    /// Takes an outgoing reference for a file being preserved; preserves the
    /// FLB on 0→1.
    pub(crate) fn get_outgoing(&mut self) -> Result<Gen, Errno> {
        if let Some(g) = self.outgoing {
            self.lc(g).out += 1;
            return Ok(g);
        }
        let data = self.flb.preserve()?;
        let g = self.next_gen;
        self.next_gen += 1;
        self.lifecycles.insert(
            g,
            Lifecycle {
                data,
                out: 1,
                inc: 0,
                crossed: false,
                obj: None,
            },
        );
        self.outgoing = Some(g);
        Ok(g)
    }

    /// Drops an outgoing reference (file unpreserved).
    pub(crate) fn put_outgoing(&mut self, g: Gen) {
        let l = self.lc(g);
        l.out -= 1;
        if l.out == 0 && self.outgoing == Some(g) {
            // No outgoing file holds it: the next preserve starts a new one.
            self.outgoing = None;
        }
        self.end_if_unused(g);
    }

    /// Moves one outgoing reference of lifecycle `g` (a file that crossed) to
    /// the incoming side.
    pub(crate) fn cross(&mut self, g: Gen) {
        let l = self.lc(g);
        l.out -= 1;
        l.inc += 1;
        l.crossed = true;
        if l.out == 0 && self.outgoing == Some(g) {
            // Everything crossed: the next preserve starts a new lifecycle.
            self.outgoing = None;
        }
    }

    /// Drops an incoming reference (file finished).
    pub(crate) fn put_incoming(&mut self, g: Gen) {
        self.lc(g).inc -= 1;
        self.end_if_unused(g);
    }

    fn retrieve_gen(&mut self, g: Gen) -> Result<u64, Errno> {
        let l = self.lifecycles.get_mut(&g).expect("live FLB lifecycle");
        *l.obj.get_or_insert_with(|| self.flb.retrieve(l.data))
    }

    /// The single teardown, once no file references `g`.
    fn end_if_unused(&mut self, g: Gen) {
        let l = &self.lifecycles[&g];
        if l.out + l.inc > 0 {
            return;
        }
        let (data, crossed) = (l.data, l.crossed);
        if crossed {
            let r = self.retrieve_gen(g);
            self.lifecycles.remove(&g);
            // A failed retrieve left no object to finish.
            if let Ok(obj) = r {
                self.flb.finish(obj);
            }
        } else {
            self.lifecycles.remove(&g);
            self.flb.unpreserve(data);
        }
    }

    /// The incoming object (retrieving it on first use); `ENODATA` when no
    /// lifecycle has incoming references. With several, the oldest is used.
    pub(crate) fn get_incoming(&mut self) -> Result<u64, Errno> {
        let g = self
            .lifecycles
            .iter()
            .find(|(_, l)| l.inc > 0)
            .map(|(g, _)| *g)
            .ok_or(Errno::ENODATA)?;
        self.retrieve_gen(g)
    }

    /// The outgoing data; `ENOENT` when not preserved.
    pub(crate) fn get_outgoing_data(&self) -> Result<u64, Errno> {
        self.outgoing
            .map(|g| self.lifecycles[&g].data)
            .ok_or(Errno::ENOENT)
    }

    pub(crate) fn status(&self) -> FlbStatus {
        FlbStatus {
            compatible: self.flb.compatible().to_string(),
            outgoing_refs: self.lifecycles.values().map(|l| l.out).sum(),
            incoming_refs: self
                .lifecycles
                .values()
                .filter(|l| l.inc > 0)
                .map(|l| l.inc)
                .collect(),
        }
    }
}
