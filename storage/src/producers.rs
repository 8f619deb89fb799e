//! The producer table: exactly-once ingest across retries, restarts and (later) leader changes.
//! A streaming producer names itself and numbers its batches (`payload::Origin`); a batch whose
//! number its producer already had applied is not applied again, and is answered with its
//! original acknowledgement when that is still kept.
//!
//! The table is part of the replicated state: it changes only when a batch is applied (in log
//! order, on every replica alike), is saved in snapshots, and is rebuilt by a replay of the
//! log. It must never depend on anything but the log: no clocks, no hash-map order.
//!
//! It is bounded: at most `MAX_PRODUCERS` producers (the one whose last batch is oldest in the
//! log is forgotten first, and a retry of its batches would then be applied again), and per
//! producer the acknowledgements of its last `ACKS_KEPT` batches.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tally_engine::Applied;

use crate::payload::Origin;

/// Producers remembered. An inference server process or a `tally ingest` run is one producer;
/// each costs about `ACKS_KEPT` × 32 bytes plus its id.
pub const MAX_PRODUCERS: usize = 10_000;
/// Acknowledgements kept per producer: at least the batches one stream may have in flight, so
/// that a producer resending its unacknowledged batches after a reconnect gets every one of
/// them back with its lsns.
pub const ACKS_KEPT: usize = 64;
/// Longest producer id (the id alphabet's limit, surface.md).
pub const MAX_PRODUCER_BYTES: usize = tally_engine::id::MAX_ID_BYTES;

/// What the table knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    last_seq: u64,
    /// Log index of the entry holding its last applied batch (the eviction order).
    last_index: u64,
    /// The last `ACKS_KEPT` applied batches, oldest first.
    acks: VecDeque<(u64, Applied)>,
}

/// What to do with a batch that carries an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: apply it.
    Fresh,
    /// Already applied: its original lsns, when still kept.
    Duplicate(Option<Applied>),
    /// Not the next number: the batch before it was refused (or never sent), so it must
    /// not be applied ahead of it.
    Gap { expected: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Producers {
    by_id: BTreeMap<String, Producer>,
    /// (last_index, id): who is forgotten first.
    by_age: BTreeSet<(u64, String)>,
}

impl Producers {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The highest batch number applied for `producer`.
    pub fn last_seq(&self, producer: &str) -> Option<u64> {
        self.by_id.get(producer).map(|p| p.last_seq)
    }

    /// A producer's first batch may have any number; after it, each batch must be the next
    /// number (`last + 1`). Were gaps allowed, a batch sent after a refused one could be
    /// applied first, and the refused one, corrected and resent, would then pass for a
    /// duplicate and be lost.
    pub fn admit(&self, origin: &Origin) -> Admission {
        match self.by_id.get(origin.producer.as_str()) {
            Some(p) if origin.seq <= p.last_seq => {
                let kept = p.acks.iter().find(|(s, _)| *s == origin.seq).map(|(_, a)| *a);
                Admission::Duplicate(kept)
            }
            Some(p) if origin.seq > p.last_seq + 1 => Admission::Gap { expected: p.last_seq + 1 },
            _ => Admission::Fresh,
        }
    }

    /// Records that the batch `origin` (admitted as fresh) was applied by the entry at `index`.
    pub fn record(&mut self, origin: &Origin, index: u64, applied: Applied) {
        let id = origin.producer.as_str();
        let p = match self.by_id.get_mut(id) {
            Some(p) => {
                assert!(origin.seq > p.last_seq, "a duplicate batch was applied");
                self.by_age.remove(&(p.last_index, id.to_owned()));
                p
            }
            None => {
                if self.by_id.len() == MAX_PRODUCERS {
                    self.forget_oldest();
                }
                let fresh = Producer { last_seq: 0, last_index: 0, acks: VecDeque::new() };
                self.by_id.entry(id.to_owned()).or_insert(fresh)
            }
        };
        p.last_seq = origin.seq;
        p.last_index = index;
        if p.acks.len() == ACKS_KEPT {
            p.acks.pop_front();
        }
        p.acks.push_back((origin.seq, applied));
        self.by_age.insert((index, id.to_owned()));
        debug_assert_eq!(self.by_age.len(), self.by_id.len());
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.by_age.pop_first() {
            self.by_id.remove(&id);
        }
    }

    /// Appends the table to `out` (snapshot files), producers in id order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.by_id.len() as u64).to_le_bytes());
        for (id, p) in &self.by_id {
            out.extend_from_slice(&(id.len() as u64).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
            for v in [p.last_seq, p.last_index, p.acks.len() as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for (seq, a) in &p.acks {
                for v in [*seq, a.first_lsn, a.last_lsn, a.ts as u64] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Decodes from the front of `bytes`; returns the table and the bytes it used. `None` for
    /// anything malformed or past the table's limits.
    pub fn decode(bytes: &[u8]) -> Option<(Producers, usize)> {
        let mut r = Reader { bytes, at: 0 };
        let count = usize::try_from(r.u64()?).ok().filter(|&n| n <= MAX_PRODUCERS)?;
        let mut table = Producers::default();
        for _ in 0..count {
            let len = usize::try_from(r.u64()?).ok().filter(|&n| n <= MAX_PRODUCER_BYTES)?;
            let id = String::from_utf8(r.take(len)?.to_vec()).ok()?;
            let (last_seq, last_index) = (r.u64()?, r.u64()?);
            let n = usize::try_from(r.u64()?).ok().filter(|&n| n <= ACKS_KEPT)?;
            let mut acks = VecDeque::with_capacity(n);
            for _ in 0..n {
                let (seq, first_lsn, last_lsn, ts) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                acks.push_back((seq, Applied { first_lsn, last_lsn, ts: ts as i64 }));
            }
            table.by_age.insert((last_index, id.clone()));
            let row = Producer { last_seq, last_index, acks };
            if table.by_id.insert(id, row).is_some() {
                return None;
            }
        }
        Some((table, r.at))
    }
}

/// Reads little-endian fields from the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(p: &str, seq: u64) -> Origin {
        Origin { producer: p.into(), seq }
    }

    fn applied(first: u64) -> Applied {
        Applied { first_lsn: first, last_lsn: first + 1, ts: 7 }
    }

    #[test]
    fn a_batch_number_is_applied_once() {
        let mut t = Producers::default();
        assert_eq!(t.admit(&origin("a", 1)), Admission::Fresh);
        t.record(&origin("a", 1), 10, applied(1));
        t.record(&origin("a", 2), 11, applied(3));
        assert_eq!(t.admit(&origin("a", 1)), Admission::Duplicate(Some(applied(1))));
        assert_eq!(t.admit(&origin("a", 2)), Admission::Duplicate(Some(applied(3))));
        assert_eq!(t.admit(&origin("a", 3)), Admission::Fresh);
        // Never ahead of a batch that was not applied.
        assert_eq!(t.admit(&origin("a", 4)), Admission::Gap { expected: 3 });
        // A producer starts at any number.
        assert_eq!(t.admit(&origin("b", 7)), Admission::Fresh);
    }

    #[test]
    fn old_acknowledgements_and_old_producers_are_forgotten() {
        let mut t = Producers::default();
        for seq in 1..=(ACKS_KEPT as u64 + 3) {
            t.record(&origin("a", seq), seq, applied(seq));
        }
        assert_eq!(t.admit(&origin("a", 1)), Admission::Duplicate(None));
        assert_eq!(t.admit(&origin("a", 4)), Admission::Duplicate(Some(applied(4))));
        let mut t = Producers::default();
        for k in 0..=MAX_PRODUCERS as u64 {
            t.record(&origin(&format!("p{k}"), 1), 100 + k, applied(k));
        }
        assert_eq!(t.len(), MAX_PRODUCERS);
        assert_eq!(t.last_seq("p0"), None, "the least recently active producer goes first");
        assert_eq!(t.last_seq("p1"), Some(1));
    }

    #[test]
    fn encodes_and_decodes() {
        let mut t = Producers::default();
        t.record(&origin("a", 2), 3, applied(1));
        t.record(&origin("b-1", 9), 4, applied(5));
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        bytes.extend_from_slice(b"rest");
        let (back, used) = Producers::decode(&bytes).unwrap();
        assert_eq!((back, used), (t, bytes.len() - 4));
        for cut in 0..bytes.len() - 4 {
            assert!(Producers::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }
}
