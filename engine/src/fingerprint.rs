//! The set of inference ids ever accepted, as 64-bit fingerprints, each beside the lsn of the
//! inference that put it there: at most 32 bytes of memory per past inference however long the
//! ledger grows. A fingerprint hit is only "maybe": it names the lsns to read the ids at, and
//! the validator settles it exactly through an `InferenceHistory` (see `state.rs`). This module
//! never decides that a hit is a duplicate.
//!
//! Open addressing with linear probing. Fingerprints and lsns are parallel arrays: a probe
//! reads only fingerprints, 8 to a cache line as when no lsn was kept, and the lsn array is
//! touched only to insert and on a hit. Equal fingerprints (true collisions, accepted once the
//! history told them apart) each get their own slot. Capacity grows by half (not doubling) so
//! that the load stays between 1/2 and 3/4, i.e. 21.3 to 32 bytes per inference.

use xxhash_rust::xxh3::xxh3_64;

/// Fingerprint meaning "empty slot"; a real fingerprint of 0 is stored as 1. An empty slot's
/// lsn is 0 too, so equal sets have equal tables.
const EMPTY: u64 = 0;
/// Slots of a new table.
const MIN_CAPACITY: usize = 1024;
/// The load factor stays at most `MAX_LOAD_NUM / MAX_LOAD_DEN`, so a probe always meets an
/// empty slot and the table grows on time.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;

/// The fingerprint of an inference id. xxh3 is a fixed, documented function, so fingerprints
/// are the same on every platform and version of this crate.
#[inline]
pub(crate) fn fingerprint(id: &str) -> u64 {
    match xxh3_64(id.as_bytes()) {
        EMPTY => 1,
        fp => fp,
    }
}

#[derive(Clone)]
pub(crate) struct FingerprintSet {
    fps: Vec<u64>,
    /// Per slot, the lsn of the inference whose fingerprint is there (0 when empty).
    lsns: Vec<u64>,
    len: usize,
}

/// The lsns stored under one fingerprint, in probe order (see `FingerprintSet::lsns_of`).
pub(crate) struct Lsns<'a> {
    set: &'a FingerprintSet,
    fp: u64,
    at: usize,
}

impl Iterator for Lsns<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        let fps = &self.set.fps;
        loop {
            let (at, fp) = (self.at, fps[self.at]);
            if fp == EMPTY {
                return None;
            }
            self.at = if at + 1 == fps.len() { 0 } else { at + 1 };
            if fp == self.fp {
                return Some(self.set.lsns[at]);
            }
        }
    }
}

impl FingerprintSet {
    pub(crate) fn new() -> Self {
        FingerprintSet { fps: vec![EMPTY; MIN_CAPACITY], lsns: vec![0; MIN_CAPACITY], len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.fps.capacity() + self.lsns.capacity()) * std::mem::size_of::<u64>()
    }

    /// `fp`'s home slot in a table of `capacity` slots.
    #[inline]
    fn home(fp: u64, capacity: usize) -> usize {
        // Maps the full 64-bit range onto 0..capacity without a division ("fastrange").
        ((u128::from(fp) * capacity as u128) >> 64) as usize
    }

    /// Starts loading `fp`'s home slot (see `prefetch.rs`).
    #[inline]
    pub(crate) fn prefetch(&self, fp: u64) {
        crate::prefetch::prefetch(&self.fps[Self::home(fp, self.fps.len())]);
    }

    #[inline]
    pub(crate) fn contains(&self, fp: u64) -> bool {
        self.lsns_of(fp).next().is_some()
    }

    /// The lsns of the inferences whose ids have fingerprint `fp`: one for a duplicate, more
    /// only after a true collision was accepted.
    #[inline]
    pub(crate) fn lsns_of(&self, fp: u64) -> Lsns<'_> {
        debug_assert_ne!(fp, EMPTY);
        Lsns { set: self, fp, at: Self::home(fp, self.fps.len()) }
    }

    /// Adds `fp` for the inference at `lsn`, beside any equal fingerprint already there.
    #[inline]
    pub(crate) fn insert(&mut self, fp: u64, lsn: u64) {
        debug_assert_ne!(fp, EMPTY);
        debug_assert_ne!(lsn, 0, "no event has lsn 0");
        if (self.len + 1) * MAX_LOAD_DEN > self.fps.len() * MAX_LOAD_NUM {
            self.grow();
        }
        Self::place(&mut self.fps, &mut self.lsns, fp, lsn);
        self.len += 1;
    }

    fn place(fps: &mut [u64], lsns: &mut [u64], fp: u64, lsn: u64) {
        let mut at = Self::home(fp, fps.len());
        while fps[at] != EMPTY {
            at = if at + 1 == fps.len() { 0 } else { at + 1 };
        }
        fps[at] = fp;
        lsns[at] = lsn;
    }

    fn grow(&mut self) {
        let capacity = self.fps.len() + self.fps.len() / 2;
        let fps = std::mem::replace(&mut self.fps, vec![EMPTY; capacity]);
        let lsns = std::mem::replace(&mut self.lsns, vec![0; capacity]);
        for (fp, lsn) in fps.into_iter().zip(lsns).filter(|&(fp, _)| fp != EMPTY) {
            Self::place(&mut self.fps, &mut self.lsns, fp, lsn);
        }
    }

    /// The raw table, empty slots included, for a snapshot image (`image.rs`): fingerprints
    /// and lsns, slot by slot.
    pub(crate) fn slots(&self) -> (&[u64], &[u64]) {
        (&self.fps, &self.lsns)
    }

    /// Takes a table from a snapshot image as it is, without rehashing: loading stays a copy.
    /// Checks what `lsns_of` and `insert` rely on to terminate and to grow on time (a corrupt
    /// table must be refused here, not loop forever later), and that every lsn names an event
    /// of the ledger (`1..=last_lsn`) and every empty slot's is 0; `Err` says what is wrong.
    pub(crate) fn from_slots(
        fps: Vec<u64>,
        lsns: Vec<u64>,
        len: usize,
        last_lsn: u64,
    ) -> Result<Self, String> {
        if fps.len() < MIN_CAPACITY || lsns.len() != fps.len() {
            let (f, l) = (fps.len(), lsns.len());
            return Err(format!("{f} fingerprints and {l} lsns, need equal and {MIN_CAPACITY}+"));
        }
        let mut used = 0usize;
        for (&fp, &lsn) in fps.iter().zip(&lsns) {
            let sound = if fp == EMPTY { lsn == 0 } else { (1..=last_lsn).contains(&lsn) };
            if !sound {
                return Err(format!("slot ({fp:#x}, lsn {lsn}) with last_lsn {last_lsn}"));
            }
            used += usize::from(fp != EMPTY);
        }
        if used != len {
            return Err(format!("{used} fingerprints in the slots, but a length of {len}"));
        }
        // `insert` keeps the load at most 3/4, so there is always an empty slot to stop at.
        if len.saturating_mul(MAX_LOAD_DEN) > fps.len().saturating_mul(MAX_LOAD_NUM) {
            return Err(format!("{len} fingerprints overfill {} slots", fps.len()));
        }
        Ok(FingerprintSet { fps, lsns, len })
    }

    /// Every (fingerprint, lsn) pair, in slot order (for the state digest, which sorts them).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.fps.iter().copied().zip(self.lsns.iter().copied()).filter(|&(fp, _)| fp != EMPTY)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Two distinct inference ids with the same xxh3-64 value (0x0fa3b7dd4c49eb60), found by a
    /// parallel rho search over ids of the form `inf-<16 hex digits>`: a real collision, so the
    /// tests exercise the same code as production, with no hook.
    pub(crate) const COLLIDING: [&str; 2] = ["inf-e9fa0fdf976e989a", "inf-8f45f239c99c15f3"];

    #[test]
    fn the_colliding_ids_collide() {
        assert_ne!(COLLIDING[0], COLLIDING[1]);
        assert_eq!(fingerprint(COLLIDING[0]), fingerprint(COLLIDING[1]));
        assert_eq!(fingerprint(COLLIDING[0]), 0x0fa3_b7dd_4c49_eb60);
    }

    #[test]
    fn insert_lookup_and_memory_bound() {
        let mut set = FingerprintSet::new();
        for i in 0..200_000u64 {
            set.insert(fingerprint(&format!("inf-{i}")), i + 1);
        }
        assert_eq!(set.len(), 200_000);
        for i in 0..200_000u64 {
            let lsns: Vec<u64> = set.lsns_of(fingerprint(&format!("inf-{i}"))).collect();
            assert_eq!(lsns, [i + 1]);
        }
        assert!(!set.contains(fingerprint("inf-200000")));
        let per_id = set.heap_bytes() as f64 / set.len() as f64;
        assert!(per_id <= 32.0, "{per_id} bytes per inference id");
    }

    #[test]
    fn a_collision_keeps_both_lsns() {
        let mut set = FingerprintSet::new();
        let fp = fingerprint(COLLIDING[0]);
        set.insert(fp, 7);
        set.insert(fingerprint(COLLIDING[1]), 9);
        assert_eq!(set.len(), 2);
        assert_eq!(set.lsns_of(fp).collect::<Vec<_>>(), [7, 9]);
    }

    proptest! {
        /// Against a model: whatever fingerprints repeat (drawn from a small range, so they
        /// do), `lsns_of` gives exactly the lsns inserted under each, across growth and a
        /// round trip through `slots`/`from_slots`.
        #[test]
        fn lsns_of_matches_a_model(fps in proptest::collection::vec(1u64..400, 0..3000)) {
            let mut set = FingerprintSet::new();
            let mut model: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
            for (k, &fp) in fps.iter().enumerate() {
                // Spread the small values over the whole range, as real fingerprints are.
                let fp = fp.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let lsn = k as u64 + 1;
                set.insert(fp, lsn);
                model.entry(fp).or_default().push(lsn);
            }
            let last_lsn = fps.len() as u64;
            let (f, l) = set.slots();
            let copy = FingerprintSet::from_slots(f.to_vec(), l.to_vec(), set.len(), last_lsn);
            let copy = copy.expect("a table it made itself loads");
            for s in [&set, &copy] {
                prop_assert_eq!(s.len(), fps.len());
                for (&fp, lsns) in &model {
                    let mut found: Vec<u64> = s.lsns_of(fp).collect();
                    found.sort_unstable();
                    prop_assert_eq!(&found, lsns);
                }
                prop_assert!(!s.contains(2));
            }
        }
    }

    #[test]
    fn from_slots_refuses_what_would_mislead_a_lookup() {
        let mut set = FingerprintSet::new();
        set.insert(5, 3);
        let (fps, lsns) = (set.fps.clone(), set.lsns.clone());
        let load = |fps: &[u64], lsns: &[u64]| {
            FingerprintSet::from_slots(fps.to_vec(), lsns.to_vec(), 1, 3).map(|_| ())
        };
        assert!(load(&fps, &lsns).is_ok());
        assert!(load(&fps, &lsns[1..]).is_err(), "lengths differ");
        let beyond: Vec<u64> = lsns.iter().map(|&l| if l == 3 { 4 } else { l }).collect();
        assert!(load(&fps, &beyond).unwrap_err().contains("lsn 4"));
        let mut stray = lsns.clone();
        *stray.last_mut().expect("slots") = 2;
        assert!(load(&fps, &stray).is_err(), "an empty slot with an lsn");
    }
}
