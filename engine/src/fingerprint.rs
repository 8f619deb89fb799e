//! The set of inference ids ever accepted, as 64-bit fingerprints: at most 16 bytes of memory
//! per past inference however long the ledger grows. A hit is only "maybe": the state confirms
//! it exactly through `InferenceHistory` when one is attached (see `state.rs`).
//!
//! Open addressing with linear probing; capacity grows by half (not doubling) so that the load
//! stays between 1/2 and 3/4, i.e. 10.7 to 16 bytes per fingerprint.

use xxhash_rust::xxh3::xxh3_64;

/// Slot value meaning "empty"; a real fingerprint of 0 is stored as 1.
const EMPTY: u64 = 0;
const MIN_CAPACITY: usize = 1024;

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
    slots: Vec<u64>,
    len: usize,
}

impl FingerprintSet {
    pub(crate) fn new() -> Self {
        FingerprintSet { slots: vec![EMPTY; MIN_CAPACITY], len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }

    #[inline]
    fn home(&self, fp: u64) -> usize {
        // Maps the full 64-bit range onto 0..capacity without a division ("fastrange").
        ((u128::from(fp) * self.slots.len() as u128) >> 64) as usize
    }

    /// Starts loading `fp`'s home slot (see `prefetch.rs`).
    #[inline]
    pub(crate) fn prefetch(&self, fp: u64) {
        crate::prefetch::prefetch(&self.slots[self.home(fp)]);
    }

    #[inline]
    pub(crate) fn contains(&self, fp: u64) -> bool {
        debug_assert_ne!(fp, EMPTY);
        let mut i = self.home(fp);
        loop {
            match self.slots[i] {
                EMPTY => return false,
                s if s == fp => return true,
                _ => i = if i + 1 == self.slots.len() { 0 } else { i + 1 },
            }
        }
    }

    /// Adds `fp`; returns false when it was already present.
    #[inline]
    pub(crate) fn insert(&mut self, fp: u64) -> bool {
        debug_assert_ne!(fp, EMPTY);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let home = self.home(fp);
        let inserted = Self::place(&mut self.slots, home, fp);
        self.len += usize::from(inserted);
        inserted
    }

    fn place(slots: &mut [u64], mut i: usize, fp: u64) -> bool {
        loop {
            match slots[i] {
                EMPTY => {
                    slots[i] = fp;
                    return true;
                }
                s if s == fp => return false,
                _ => i = if i + 1 == slots.len() { 0 } else { i + 1 },
            }
        }
    }

    fn grow(&mut self) {
        let capacity = self.slots.len() + self.slots.len() / 2;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity]);
        for fp in old.into_iter().filter(|&s| s != EMPTY) {
            let home = self.home(fp);
            Self::place(&mut self.slots, home, fp);
        }
    }

    /// The raw table, empty slots included, for a snapshot image (`image.rs`).
    pub(crate) fn slots(&self) -> &[u64] {
        &self.slots
    }

    /// Takes a table from a snapshot image as it is, without rehashing: loading stays a copy.
    /// Checks what `contains` and `insert` rely on to terminate and to grow on time (a corrupt
    /// table must be refused here, not loop forever later); `Err` says what is wrong.
    pub(crate) fn from_slots(slots: Vec<u64>, len: usize) -> Result<Self, String> {
        if slots.len() < MIN_CAPACITY {
            return Err(format!("{} slots, fewer than {MIN_CAPACITY}", slots.len()));
        }
        let used = slots.iter().filter(|&&s| s != EMPTY).count();
        if used != len {
            return Err(format!("{used} fingerprints in the slots, but a length of {len}"));
        }
        // `insert` keeps the load at most 3/4, so there is always an empty slot to stop at.
        if len.saturating_mul(4) > slots.len().saturating_mul(3) {
            return Err(format!("{len} fingerprints overfill {} slots", slots.len()));
        }
        Ok(FingerprintSet { slots, len })
    }

    /// Every fingerprint, in slot order (for the state digest, which sorts them).
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().copied().filter(|&s| s != EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_and_memory_bound() {
        let mut set = FingerprintSet::new();
        for i in 0..200_000u32 {
            assert!(set.insert(fingerprint(&format!("inf-{i}"))));
        }
        assert!(!set.insert(fingerprint("inf-7")), "a second insert reports the duplicate");
        assert_eq!(set.len(), 200_000);
        for i in 0..200_000u32 {
            assert!(set.contains(fingerprint(&format!("inf-{i}"))));
        }
        assert!(!set.contains(fingerprint("inf-200000")));
        let per_id = set.heap_bytes() as f64 / set.len() as f64;
        assert!(per_id <= 16.0, "{per_id} bytes per inference id");
    }
}
