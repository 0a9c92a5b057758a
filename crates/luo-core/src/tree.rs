//! An AVL tree ordered by a fallible comparator.
//!
//! The identity index orders open file descriptions by `kcmp(KCMP_FILE)`,
//! which is a syscall and can fail, so the standard `BTreeMap` (which needs a
//! pure, infallible `Ord` and takes no fallible comparator) cannot hold
//! them: that is why this tree is written by hand. Every operation here first walks
//! down with the comparator, touching nothing; only when every comparison has
//! succeeded does it change the tree. A failed comparison therefore leaves the
//! tree exactly as it was. Insert, lookup and remove are O(log n) comparisons.

use std::cmp::Ordering;

type Link<T> = Option<Box<Node<T>>>;

#[derive(Debug)]
struct Node<T> {
    val: T,
    height: u8,
    left: Link<T>,
    right: Link<T>,
}

/// Where a probe landed: on an equal element, or at a free leaf position.
enum Probe {
    Found(Vec<Ordering>),
    Vacant(Vec<Ordering>),
}

#[derive(Debug)]
pub(crate) struct Tree<T> {
    root: Link<T>,
    len: usize,
}

impl<T> Default for Tree<T> {
    fn default() -> Self {
        Tree { root: None, len: 0 }
    }
}

fn height<T>(l: &Link<T>) -> u8 {
    l.as_ref().map_or(0, |n| n.height)
}

fn update<T>(n: &mut Node<T>) {
    n.height = 1 + height(&n.left).max(height(&n.right));
}

fn rotate_right<T>(mut n: Box<Node<T>>) -> Box<Node<T>> {
    let mut l = n.left.take().expect("rotate_right needs a left child");
    n.left = l.right.take();
    update(&mut n);
    l.right = Some(n);
    update(&mut l);
    l
}

fn rotate_left<T>(mut n: Box<Node<T>>) -> Box<Node<T>> {
    let mut r = n.right.take().expect("rotate_left needs a right child");
    n.right = r.left.take();
    update(&mut n);
    r.left = Some(n);
    update(&mut r);
    r
}

fn rebalance<T>(mut n: Box<Node<T>>) -> Box<Node<T>> {
    update(&mut n);
    let (hl, hr) = (height(&n.left), height(&n.right));
    if hl > hr + 1 {
        let l = n.left.take().expect("left-heavy node has a left child");
        n.left = Some(if height(&l.right) > height(&l.left) {
            rotate_left(l)
        } else {
            l
        });
        rotate_right(n)
    } else if hr > hl + 1 {
        let r = n.right.take().expect("right-heavy node has a right child");
        n.right = Some(if height(&r.left) > height(&r.right) {
            rotate_right(r)
        } else {
            r
        });
        rotate_left(n)
    } else {
        n
    }
}

fn insert_at<T>(link: Link<T>, path: &[Ordering], val: T) -> Box<Node<T>> {
    match link {
        None => Box::new(Node {
            val,
            height: 1,
            left: None,
            right: None,
        }),
        Some(mut n) => {
            match path[0] {
                Ordering::Less => n.left = Some(insert_at(n.left.take(), &path[1..], val)),
                _ => n.right = Some(insert_at(n.right.take(), &path[1..], val)),
            }
            rebalance(n)
        }
    }
}

/// Removes the smallest node of a non-empty subtree; returns (rest, min).
fn take_min<T>(mut n: Box<Node<T>>) -> (Link<T>, Box<Node<T>>) {
    match n.left.take() {
        None => (n.right.take(), n),
        Some(l) => {
            let (rest, min) = take_min(l);
            n.left = rest;
            (Some(rebalance(n)), min)
        }
    }
}

fn remove_at<T>(link: Link<T>, path: &[Ordering]) -> (Link<T>, T) {
    let mut n = link.expect("a probed path leads to a node");
    match path.first() {
        Some(Ordering::Less) => {
            let (l, v) = remove_at(n.left.take(), &path[1..]);
            n.left = l;
            (Some(rebalance(n)), v)
        }
        Some(_) => {
            let (r, v) = remove_at(n.right.take(), &path[1..]);
            n.right = r;
            (Some(rebalance(n)), v)
        }
        None => {
            let Node {
                val, left, right, ..
            } = *n;
            let rest = match (left, right) {
                (None, r) => r,
                (l, None) => l,
                (l, Some(r)) => {
                    let (r, mut m) = take_min(r);
                    m.left = l;
                    m.right = r;
                    Some(rebalance(m))
                }
            };
            (rest, val)
        }
    }
}

impl<T> Tree<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `cmp(elem)` answers how the probe orders against `elem`.
    fn probe<E>(&self, mut cmp: impl FnMut(&T) -> Result<Ordering, E>) -> Result<Probe, E> {
        let mut path = Vec::new();
        let mut cur = &self.root;
        while let Some(n) = cur {
            let o = cmp(&n.val)?;
            if o == Ordering::Equal {
                return Ok(Probe::Found(path));
            }
            path.push(o);
            cur = if o == Ordering::Less {
                &n.left
            } else {
                &n.right
            };
        }
        Ok(Probe::Vacant(path))
    }

    fn at(&self, path: &[Ordering]) -> &T {
        let mut n = self.root.as_ref().expect("path into an empty tree");
        for o in path {
            n = if *o == Ordering::Less {
                n.left.as_ref()
            } else {
                n.right.as_ref()
            }
            .expect("path leads to a node");
        }
        &n.val
    }

    /// Finds the element the probe compares equal to.
    pub(crate) fn find<E>(
        &self,
        cmp: impl FnMut(&T) -> Result<Ordering, E>,
    ) -> Result<Option<&T>, E> {
        Ok(match self.probe(cmp)? {
            Probe::Found(p) => Some(self.at(&p)),
            Probe::Vacant(_) => None,
        })
    }

    /// Inserts `val` unless an equal element exists, in which case that element
    /// is returned and `val` is handed back. On a comparator error nothing changed.
    pub(crate) fn insert<E>(
        &mut self,
        val: T,
        cmp: impl FnMut(&T) -> Result<Ordering, E>,
    ) -> Result<Result<(), (T, &T)>, E> {
        match self.probe(cmp)? {
            Probe::Found(p) => Ok(Err((val, self.at(&p)))),
            Probe::Vacant(p) => {
                self.root = Some(insert_at(self.root.take(), &p, val));
                self.len += 1;
                Ok(Ok(()))
            }
        }
    }

    /// Removes and returns the element the probe compares equal to.
    pub(crate) fn remove<E>(
        &mut self,
        cmp: impl FnMut(&T) -> Result<Ordering, E>,
    ) -> Result<Option<T>, E> {
        match self.probe(cmp)? {
            Probe::Vacant(_) => Ok(None),
            Probe::Found(p) => {
                let (root, v) = remove_at(self.root.take(), &p);
                self.root = root;
                self.len -= 1;
                Ok(Some(v))
            }
        }
    }

    /// Removes the first element (in order) for which `pred` holds: a linear
    /// walk, used only when the comparator itself has stopped working.
    pub(crate) fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let mut path = Vec::new();
        if !find_path(&self.root, &mut pred, &mut path) {
            return None;
        }
        let (root, v) = remove_at(self.root.take(), &path);
        self.root = root;
        self.len -= 1;
        Some(v)
    }

    /// Keeps the elements for which `keep` holds and drops the rest, without
    /// a single comparison: the kept nodes, already in order, are relinked
    /// into a balanced tree. O(n) pointer moves, for removing many elements
    /// at once (a whole session leaving) where O(log n) comparisons each
    /// would cost more.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut nodes = Vec::with_capacity(self.len);
        fn unlink<T>(l: Link<T>, out: &mut Vec<Box<Node<T>>>, keep: &mut impl FnMut(&T) -> bool) {
            if let Some(mut n) = l {
                let (left, right) = (n.left.take(), n.right.take());
                unlink(left, out, keep);
                if keep(&n.val) {
                    out.push(n);
                }
                unlink(right, out, keep);
            }
        }
        unlink(self.root.take(), &mut nodes, &mut keep);
        self.len = nodes.len();
        // Middle node as the root, each half below it: heights differ by at
        // most one, so the result is an AVL tree.
        fn build<T>(nodes: &mut std::vec::Drain<'_, Box<Node<T>>>, n: usize) -> Link<T> {
            if n == 0 {
                return None;
            }
            let left = build(nodes, n / 2);
            let mut mid = nodes.next().expect("counted");
            let right = build(nodes, n - n / 2 - 1);
            mid.left = left;
            mid.right = right;
            update(&mut mid);
            Some(mid)
        }
        let n = nodes.len();
        self.root = build(&mut nodes.drain(..), n);
    }

    /// Elements in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        let mut out = Vec::with_capacity(self.len);
        fn walk<'a, T>(l: &'a Link<T>, out: &mut Vec<&'a T>) {
            if let Some(n) = l {
                walk(&n.left, out);
                out.push(&n.val);
                walk(&n.right, out);
            }
        }
        walk(&self.root, &mut out);
        out.into_iter()
    }

    #[cfg(test)]
    fn check_balanced(&self) -> u8 {
        fn check<T>(l: &Link<T>) -> u8 {
            match l {
                None => 0,
                Some(n) => {
                    let (a, b) = (check(&n.left), check(&n.right));
                    assert!(a.abs_diff(b) <= 1, "AVL balance violated");
                    assert_eq!(n.height, 1 + a.max(b), "stale height");
                    n.height
                }
            }
        }
        check(&self.root)
    }
}

fn find_path<T>(l: &Link<T>, pred: &mut impl FnMut(&T) -> bool, path: &mut Vec<Ordering>) -> bool {
    let Some(n) = l else { return false };
    if pred(&n.val) {
        return true;
    }
    path.push(Ordering::Less);
    if find_path(&n.left, pred, path) {
        return true;
    }
    path.pop();
    path.push(Ordering::Greater);
    if find_path(&n.right, pred, path) {
        return true;
    }
    path.pop();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ok(a: u32) -> impl FnMut(&u32) -> Result<Ordering, ()> {
        move |b: &u32| Ok(a.cmp(b))
    }

    #[test]
    fn matches_btreeset_under_random_inserts_and_removes() {
        let mut t = Tree::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 2_000) as u32;
            if x & (1 << 40) == 0 {
                let inserted = t.insert(v, ok(v)).unwrap().is_ok();
                assert_eq!(inserted, model.insert(v));
            } else {
                assert_eq!(t.remove(ok(v)).unwrap(), model.take(&v));
            }
            assert_eq!(t.len(), model.len());
        }
        let h = t.check_balanced();
        assert!(f64::from(h) <= 1.45 * (t.len() as f64 + 2.0).log2());
        assert!(t.iter().copied().eq(model.iter().copied()));
        assert_eq!(t.find(ok(1)).unwrap().is_some(), model.contains(&1));
    }

    #[test]
    fn failed_comparison_changes_nothing() {
        let mut t = Tree::default();
        for v in 0..100u32 {
            t.insert(v, ok(v)).unwrap().unwrap();
        }
        let mut calls = 0;
        let r = t.insert(1000, |b: &u32| {
            calls += 1;
            if calls == 3 {
                Err("boom")
            } else {
                Ok(1000.cmp(b))
            }
        });
        assert_eq!(r.unwrap_err(), "boom");
        assert_eq!(t.len(), 100);
        assert!(t.iter().copied().eq(0..100));
        assert_eq!(t.remove(|_: &u32| Err::<Ordering, _>("boom")), Err("boom"));
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn retain_keeps_order_and_balance_without_comparing() {
        for n in [0u32, 1, 2, 3, 7, 100, 1_000] {
            for every in [1u32, 2, 3, 5] {
                let mut t = Tree::default();
                for v in 0..n {
                    t.insert(v * 2, ok(v * 2)).unwrap().unwrap();
                }
                t.retain(|v| v % (2 * every) != 0);
                let want: Vec<u32> = (0..n)
                    .map(|v| v * 2)
                    .filter(|v| v % (2 * every) != 0)
                    .collect();
                assert_eq!(t.len(), want.len());
                assert!(t.iter().copied().eq(want.iter().copied()));
                t.check_balanced();
                // Still a working search tree.
                t.insert(1, ok(1)).unwrap().unwrap();
                assert_eq!(t.remove(ok(1)).unwrap(), Some(1));
                if let Some(&w) = want.last() {
                    assert_eq!(t.find(ok(w)).unwrap(), Some(&w));
                }
            }
        }
    }

    #[test]
    fn duplicate_is_refused_and_returned() {
        let mut t = Tree::default();
        t.insert(5u32, ok(5)).unwrap().unwrap();
        let (back, existing) = t.insert(5u32, ok(5)).unwrap().unwrap_err();
        assert_eq!((back, *existing), (5, 5));
        assert_eq!(t.remove_where(|v| *v == 5), Some(5));
        assert!(t.is_empty());
    }
}
