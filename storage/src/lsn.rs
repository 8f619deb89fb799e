//! Where ledger lsns live in the log. Lsns are assigned at apply and are dense over accepted
//! events only, so the log index of a batch does not tell its lsns. This index keeps one point
//! `Point` per `BLOCK` lsns, plus the (rare) batches that were refused at apply, as (log index,
//! part); a scan for lsn L starts at the point at or before L and counts events of the batches
//! after it, skipping refused ones. A point also keeps the ledger's timestamp before its batch,
//! so that a scan starting there stamps events exactly as the state machine did.

/// Lsns between two points of the index.
pub const BLOCK: u64 = 4096;

/// Where an accepted batch starts: its first lsn, its entry's log index and its part in it,
/// and the ledger's last timestamp before it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub first_lsn: u64,
    pub index: u64,
    pub part: u32,
    pub ts_before: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsnIndex {
    points: Vec<Point>,
    refused: Vec<(u64, u32)>,
    last_lsn: u64,
}

impl LsnIndex {
    /// Batch `part` of the entry at `index` was accepted with lsns `first..=last` (none if
    /// `first > last`); the ledger's timestamp before it was `ts_before`.
    pub fn accepted(&mut self, index: u64, part: u32, first: u64, last: u64, ts_before: i64) {
        if first > last {
            return;
        }
        if self.points.last().is_none_or(|p| first / BLOCK != p.first_lsn / BLOCK) {
            self.points.push(Point { first_lsn: first, index, part, ts_before });
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

    /// The refused batches, as sorted (log index, part) pairs.
    pub fn refused_batches(&self) -> &[(u64, u32)] {
        &self.refused
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// The accepted batch from which to scan for `lsn`.
    pub fn locate(&self, lsn: u64) -> Option<Point> {
        let k = self.points.partition_point(|p| p.first_lsn <= lsn);
        self.points.get(k.checked_sub(1)?).copied()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.points.len() as u64).to_le_bytes());
        for p in &self.points {
            out.extend_from_slice(&p.first_lsn.to_le_bytes());
            out.extend_from_slice(&p.index.to_le_bytes());
            out.extend_from_slice(&u64::from(p.part).to_le_bytes());
            out.extend_from_slice(&p.ts_before.to_le_bytes());
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
        if n > bytes.len() / 32 {
            return None;
        }
        let mut points = Vec::with_capacity(n);
        for _ in 0..n {
            let (first_lsn, index) = (u64_next()?, u64_next()?);
            let part = u32::try_from(u64_next()?).ok()?;
            let ts_before = u64_next()? as i64;
            points.push(Point { first_lsn, index, part, ts_before });
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
        ix.accepted(1, 0, 1, 10, 0);
        ix.refused(2, 0);
        ix.accepted(3, 0, 11, 4100, 5);
        ix.accepted(4, 1, 4101, 4101, 6);
        ix.accepted(5, 0, 4102, 4101, 7); // empty batch
        ix.accepted(6, 0, 4102, 9000, 7);
        let at =
            |first_lsn, index, part, ts_before| Some(Point { first_lsn, index, part, ts_before });
        assert_eq!(ix.locate(5), at(1, 1, 0, 0));
        assert_eq!(ix.locate(4100), at(1, 1, 0, 0));
        assert_eq!(ix.locate(4101), at(4101, 4, 1, 6));
        assert_eq!(ix.locate(8999), at(4101, 4, 1, 6));
        assert_eq!(ix.locate(0), None);
        assert!(ix.is_refused(2, 0) && !ix.is_refused(3, 0) && !ix.is_refused(2, 1));
        let mut b = Vec::new();
        ix.encode(&mut b);
        assert_eq!(LsnIndex::decode(&b), Some((ix, b.len())));
        assert_eq!(LsnIndex::decode(&b[..b.len() - 1]), None);
    }
}
