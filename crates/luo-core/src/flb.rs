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
//! handover), the lifecycle splits: the files that crossed hold an incoming
//! lifecycle with the same data, the others keep the outgoing one. Both get
//! their callbacks exactly once.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Outgoing,
    /// `obj` is `None` until retrieved, then the (sticky) result.
    Incoming {
        obj: Option<Result<u64, Errno>>,
        origin: Gen,
    },
}

#[derive(Debug)]
struct Lifecycle {
    data: u64,
    refs: usize,
    phase: Phase,
}

/// One registered FLB and its lifecycles.
#[derive(Debug)]
pub(crate) struct FlbSlot {
    pub(crate) flb: Box<dyn Flb>,
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
    /// References held by incoming files, per live incoming lifecycle.
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

    fn new_gen(&mut self) -> Gen {
        let g = self.next_gen;
        self.next_gen += 1;
        g
    }

    /// Takes an outgoing reference for a file being preserved.
    pub(crate) fn get_outgoing(&mut self) -> Result<Gen, Errno> {
        if let Some(g) = self.outgoing {
            self.lifecycles
                .get_mut(&g)
                .expect("outgoing lifecycle")
                .refs += 1;
            return Ok(g);
        }
        let data = self.flb.preserve()?;
        let g = self.new_gen();
        self.lifecycles.insert(
            g,
            Lifecycle {
                data,
                refs: 1,
                phase: Phase::Outgoing,
            },
        );
        self.outgoing = Some(g);
        Ok(g)
    }

    /// Drops an outgoing reference (file unpreserved); unpreserves at zero.
    pub(crate) fn put_outgoing(&mut self, g: Gen) {
        let l = self.lifecycles.get_mut(&g).expect("outgoing lifecycle");
        debug_assert_eq!(l.phase, Phase::Outgoing);
        l.refs -= 1;
        if l.refs == 0 {
            let data = l.data;
            self.lifecycles.remove(&g);
            self.outgoing = None;
            self.flb.unpreserve(data);
        }
    }

    /// Moves `n` references of outgoing lifecycle `g` to the incoming side;
    /// returns the incoming lifecycle they now hold.
    pub(crate) fn cross(&mut self, g: Gen, n: usize) -> Gen {
        let l = self.lifecycles.get(&g).expect("lifecycle");
        if l.phase != Phase::Outgoing {
            return g; // already incoming: carried to the next epoch as it is
        }
        let data = l.data;
        // Files from the same outgoing lifecycle that crossed earlier join it.
        let joined = self.lifecycles.iter().find_map(|(k, v)| match v.phase {
            Phase::Incoming { origin, .. } if origin == g => Some(*k),
            _ => None,
        });
        let all = l.refs == n;
        let target = match (joined, all) {
            (Some(k), _) => {
                self.lifecycles.get_mut(&k).expect("joined").refs += n;
                k
            }
            (None, true) => {
                let l = self.lifecycles.get_mut(&g).expect("lifecycle");
                l.phase = Phase::Incoming {
                    obj: None,
                    origin: g,
                };
                self.outgoing = None;
                return g;
            }
            (None, false) => {
                let k = self.new_gen();
                self.lifecycles.insert(
                    k,
                    Lifecycle {
                        data,
                        refs: n,
                        phase: Phase::Incoming {
                            obj: None,
                            origin: g,
                        },
                    },
                );
                k
            }
        };
        let l = self.lifecycles.get_mut(&g).expect("lifecycle");
        l.refs -= n;
        if l.refs == 0 {
            // Everything crossed: the outgoing lifecycle ends without
            // unpreserve, because its data now lives on the incoming side.
            self.lifecycles.remove(&g);
            self.outgoing = None;
        }
        target
    }

    fn retrieve_gen(&mut self, g: Gen) -> Result<u64, Errno> {
        let l = self.lifecycles.get_mut(&g).expect("incoming lifecycle");
        let Phase::Incoming { obj, .. } = &mut l.phase else {
            return Err(Errno::ENODATA);
        };
        match obj {
            Some(r) => *r,
            None => {
                let r = self.flb.retrieve(l.data);
                *obj = Some(r);
                r
            }
        }
    }

    /// The incoming object (retrieving it on first use); `ENODATA` when no
    /// incoming lifecycle is live. With several, the oldest is used.
    pub(crate) fn get_incoming(&mut self) -> Result<u64, Errno> {
        let g = self
            .lifecycles
            .iter()
            .find(|(_, l)| matches!(l.phase, Phase::Incoming { .. }))
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

    /// Drops an incoming reference (file finished); at zero retrieves if
    /// needed and finishes.
    pub(crate) fn put_incoming(&mut self, g: Gen) {
        let l = self.lifecycles.get_mut(&g).expect("incoming lifecycle");
        l.refs -= 1;
        if l.refs == 0 {
            let r = self.retrieve_gen(g);
            self.lifecycles.remove(&g);
            if let Ok(obj) = r {
                self.flb.finish(obj);
            }
        }
    }

    pub(crate) fn is_outgoing(&self, g: Gen) -> bool {
        self.lifecycles
            .get(&g)
            .is_some_and(|l| l.phase == Phase::Outgoing)
    }

    pub(crate) fn status(&self) -> FlbStatus {
        FlbStatus {
            compatible: self.flb.compatible().to_string(),
            outgoing_refs: self.outgoing.map_or(0, |g| self.lifecycles[&g].refs),
            incoming_refs: self
                .lifecycles
                .values()
                .filter(|l| matches!(l.phase, Phase::Incoming { .. }))
                .map(|l| l.refs)
                .collect(),
        }
    }
}
