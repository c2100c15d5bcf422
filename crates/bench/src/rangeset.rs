//! A set of `u64` kept as sorted, disjoint, non-adjacent inclusive ranges.
//!
//! Seqs and per-sender counters arrive almost always in order, so a receiver's whole
//! history is one range and inserting is an O(1) extension of the last one. Reports carry
//! these sets between processes, which keeps them small on a healthy system.

use serde::{Deserialize, Serialize};

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `v`; false when it was already present.
    pub fn insert(&mut self, v: u64) -> bool {
        // Fast path: in-order arrival extends (or follows) the last range.
        if let Some(last) = self.ranges.last_mut() {
            if v == last.1.wrapping_add(1) {
                last.1 = v;
                return true;
            }
            if v > last.1 {
                self.ranges.push((v, v));
                return true;
            }
        } else {
            self.ranges.push((v, v));
            return true;
        }
        // The first range whose end is >= v.
        let i = self.ranges.partition_point(|&(_, end)| end < v);
        let (start, _) = self.ranges[i];
        if start <= v {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == v;
        let joins_next = start == v + 1;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = v,
            (false, true) => self.ranges[i].0 = v,
            (false, false) => self.ranges.insert(i, (v, v)),
        }
        true
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < v);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= v)
    }

    /// How many values the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The largest value.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, end)| end)
    }

    /// Adds every value of `other`.
    pub fn union_with(&mut self, other: &RangeSet) {
        if other.is_empty() {
            return;
        }
        let mut all: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        all.extend_from_slice(&self.ranges);
        all.extend_from_slice(&other.ranges);
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }

    /// How many values of `self` above `floor` are also in `other`.
    pub fn count_common_above(&self, other: &RangeSet, floor: u64) -> u64 {
        let (mut i, mut j, mut n) = (0, 0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let lo = a1.max(a2).max(floor.saturating_add(1));
            let hi = b1.min(b2);
            if lo <= hi {
                n += hi - lo + 1;
            }
            if b1 < b2 { i += 1 } else { j += 1 }
        }
        n
    }

    /// How many values are above `floor`.
    pub fn count_above(&self, floor: u64) -> u64 {
        self.ranges
            .iter()
            .filter(|&&(_, b)| b > floor)
            .map(|&(a, b)| b - a.max(floor + 1) + 1)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[u64]) -> RangeSet {
        let mut s = RangeSet::new();
        for &v in values {
            s.insert(v);
        }
        s
    }

    #[test]
    fn inserts_in_any_order_and_merges() {
        let s = set(&[1, 2, 3, 7, 5, 6, 4, 10]);
        assert_eq!(s.ranges, vec![(1, 7), (10, 10)]);
        assert_eq!(s.len(), 8);
        let mut s = set(&[5, 1, 3]);
        assert_eq!(s.ranges, vec![(1, 1), (3, 3), (5, 5)]);
        assert!(s.insert(2));
        assert!(!s.insert(2));
        assert!(!s.insert(5));
        assert_eq!(s.ranges, vec![(1, 3), (5, 5)]);
        assert!(s.contains(3) && !s.contains(4) && s.contains(5) && !s.contains(6));
    }

    #[test]
    fn union_and_intersection_counts() {
        let mut a = set(&[1, 2, 3, 8, 9]);
        a.union_with(&set(&[4, 5, 20]));
        assert_eq!(a.ranges, vec![(1, 5), (8, 9), (20, 20)]);
        let received = set(&[2, 3, 4, 9, 20, 21]);
        assert_eq!(a.count_common_above(&received, 0), 5);
        assert_eq!(a.count_common_above(&received, 3), 3);
        assert_eq!(a.count_above(4), 4);
        assert_eq!(a.count_above(0), 8);
    }
}
