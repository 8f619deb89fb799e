//! Where ledger lsns live in the log. Lsns are assigned at apply and are dense over accepted
//! events only, so the log index of a batch does not tell its lsns. This index keeps one point
//! (first lsn, log index) per `BLOCK` lsns, plus the (rare) batches that were refused at apply,
//! as (log index, part); a scan for lsn L starts at the point at or before L and counts events
//! of the batches after it, skipping refused ones. A point's log index is that of the entry
//! holding the batch whose first lsn it records.

/// Lsns between two points of the index.
pub const BLOCK: u64 = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsnIndex {
    points: Vec<(u64, u64)>,
    refused: Vec<(u64, u32)>,
    last_lsn: u64,
}

impl LsnIndex {
    /// A batch entry at `index` was accepted with lsns `first..=last` (none if `first > last`).
    pub fn accepted(&mut self, index: u64, first: u64, last: u64) {
        if first > last {
            return;
        }
        if self.points.last().is_none_or(|&(f, _)| first / BLOCK != f / BLOCK) {
            self.points.push((first, index));
        }
        self.last_lsn = last;
    }

    /// Batch `part` of the entry at `index` was refused.
    pub fn refused(&mut self, index: u64, part: u32) {
        debug_assert!(self.refused.last().is_none_or(|&r| r < (index, part)));
        self.refused.push((index, part));
    }

    pub fn is_refused(&self, index: u64, part: u32) -> bool {
        self.refused.binary_search(&(index, part)).is_ok()
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// (first lsn, log index) of the accepted batch from which to scan for `lsn`.
    pub fn locate(&self, lsn: u64) -> Option<(u64, u64)> {
        let k = self.points.partition_point(|&(f, _)| f <= lsn);
        self.points.get(k.checked_sub(1)?).copied()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.points.len() as u64).to_le_bytes());
        for &(f, i) in &self.points {
            out.extend_from_slice(&f.to_le_bytes());
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(&(self.refused.len() as u64).to_le_bytes());
        for &(i, p) in &self.refused {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&u64::from(p).to_le_bytes());
        }
        out.extend_from_slice(&self.last_lsn.to_le_bytes());
    }

    /// Decodes from the front of `bytes`; returns the index and the bytes it used.
    pub fn decode(bytes: &[u8]) -> Option<(LsnIndex, usize)> {
        let mut at = 0;
        let mut u64_next = || {
            let v = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            at += 8;
            Some(v)
        };
        let n = u64_next()? as usize;
        if n > bytes.len() / 16 {
            return None;
        }
        let mut points = Vec::with_capacity(n);
        for _ in 0..n {
            points.push((u64_next()?, u64_next()?));
        }
        let m = u64_next()? as usize;
        if m > bytes.len() / 16 {
            return None;
        }
        let mut refused = Vec::with_capacity(m);
        for _ in 0..m {
            refused.push((u64_next()?, u32::try_from(u64_next()?).ok()?));
        }
        let last_lsn = u64_next()?;
        Some((LsnIndex { points, refused, last_lsn }, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_every_block_and_round_trip() {
        let mut ix = LsnIndex::default();
        ix.accepted(1, 1, 10);
        ix.refused(2, 0);
        ix.accepted(3, 11, 4100);
        ix.accepted(4, 4101, 4101);
        ix.accepted(5, 4102, 4101); // empty batch
        ix.accepted(6, 4102, 9000);
        assert_eq!(ix.locate(5), Some((1, 1)));
        assert_eq!(ix.locate(4100), Some((1, 1)));
        assert_eq!(ix.locate(4101), Some((4101, 4)));
        assert_eq!(ix.locate(8999), Some((4101, 4)));
        assert_eq!(ix.locate(0), None);
        assert!(ix.is_refused(2, 0) && !ix.is_refused(3, 0) && !ix.is_refused(2, 1));
        let mut b = Vec::new();
        ix.encode(&mut b);
        assert_eq!(LsnIndex::decode(&b), Some((ix, b.len())));
        assert_eq!(LsnIndex::decode(&b[..b.len() - 1]), None);
    }
}
