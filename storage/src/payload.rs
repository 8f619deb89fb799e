//! What ledger batches look like inside a Raft entry and a log record. Each batch is one rkyv
//! archive of a `BatchRecord` (its timestamp and events), made once by the writer that submits
//! it. Concurrent writers' batches are grouped into one entry (one fsync for all of them; see
//! `db.rs`), and each stays atomic on its own: the entry's payload is a table of parts.
//!
//! Entry payload layout (little-endian): part count (u32), zero (u32), then per part its
//! offset and length (u64 each, offsets from the payload start), zero padding to 16 bytes, then
//! the parts, each starting 16-byte aligned so that it is read in place.

use std::sync::{Arc, Mutex};

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use tally_engine::{Applied, Event, Refusal};

/// Most batches grouped into one entry.
pub const MAX_PARTS: usize = 4096;

/// Largest entry payload: what fits in one log record (`log::MAX_RECORD_BYTES`, header and
/// padding included). A larger proposal would fail its append, which Raft treats as fatal, so
/// none is ever proposed: a batch whose archive alone exceeds it is refused when submitted.
pub const MAX_PROPOSAL_BYTES: usize = crate::log::MAX_RECORD_BYTES - crate::record::HEADER - 16;

/// The size of the entry payload that groups `parts` parts of `data` bytes in all, each
/// part's length rounded up to 16 (`aligned`) (`Proposal::group`).
pub fn group_bytes(parts: usize, data: usize) -> usize {
    (8 + parts * 16).next_multiple_of(16) + data
}

/// A part's length as it lies in an entry payload (16-byte aligned).
pub fn aligned(len: usize) -> usize {
    len.next_multiple_of(16)
}

/// Who sent a batch, for exactly-once ingest (`producers.rs`): a producer's id and the batch's
/// number, strictly increasing per producer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub producer: String,
    pub seq: u64,
}

/// The archived content of one batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Microseconds since the Unix epoch, stamped when the batch was submitted.
    pub ts: i64,
    /// Set for batches of streaming ingest; `None` for SQL and embedded writes.
    pub origin: Option<Origin>,
    pub events: Vec<Event>,
}

/// One batch, archived (16-byte aligned bytes of a `BatchRecord`).
pub fn encode_batch(ts: i64, origin: Option<Origin>, events: Vec<Event>) -> AlignedVec<16> {
    encode_record(&BatchRecord { ts, origin, events })
}

/// `record`, archived (16-byte aligned bytes).
pub fn encode_record(record: &BatchRecord) -> AlignedVec<16> {
    // Sized once, generously (about 234 bytes an event are written): growing by doubling
    // copies the whole archive each time into fresh pages, which cost a large COPY more than
    // serialising it. Capacity never touched costs nothing.
    let estimate = record.events.len().saturating_mul(ARCHIVE_BYTES_PER_EVENT).saturating_add(4096);
    let out = AlignedVec::<16>::with_capacity(estimate);
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(record, out)
        .expect("serialising a batch cannot fail")
}

/// A generous size of one archived event, for sizing the buffer a batch is archived into.
const ARCHIVE_BYTES_PER_EVENT: usize = 384;

/// A Raft entry's payload: one or more archived batches.
///
/// On the node that made it, the entry also carries its batches as they were before they
/// were archived (`Batches`), so that applying it here needs no decode of what was just
/// encoded: those are the very values the archive was made from, so the state is the one a
/// replica reaches by decoding the bytes. Only the bytes are stored and sent.
#[derive(Clone, Debug)]
pub struct Proposal {
    bytes: Arc<AlignedVec<16>>,
    batches: Option<Batches>,
}

/// An entry's batches before archiving, taken once by whoever applies the entry first
/// (clones of a `Proposal` share them).
#[derive(Clone, Debug)]
pub struct Batches(Arc<Mutex<Option<Vec<BatchRecord>>>>);

impl Batches {
    pub fn new(records: Vec<BatchRecord>) -> Batches {
        Batches(Arc::new(Mutex::new(Some(records))))
    }

    /// The batches, if nobody took them yet.
    pub fn take(&self) -> Option<Vec<BatchRecord>> {
        self.0.lock().expect("batches lock").take()
    }
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice() == other.bytes.as_slice()
    }
}

impl Eq for Proposal {}

impl Proposal {
    /// Groups archived batches (from `encode_batch`) into one entry payload.
    pub fn group(parts: &[AlignedVec<16>]) -> Proposal {
        assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
        let table = (8 + parts.len() * 16).next_multiple_of(16);
        let total = group_bytes(parts.len(), parts.iter().map(|p| aligned(p.len())).sum());
        assert!(total <= MAX_PROPOSAL_BYTES, "a proposal of {total} bytes would not fit a record");
        let mut bytes = AlignedVec::<16>::with_capacity(total);
        bytes.extend_from_slice(&(parts.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let mut at = table;
        for p in parts {
            bytes.extend_from_slice(&(at as u64).to_le_bytes());
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            at += p.len().next_multiple_of(16);
        }
        bytes.resize(table, 0);
        for p in parts {
            bytes.extend_from_slice(p);
            bytes.resize(bytes.len().next_multiple_of(16), 0);
        }
        Proposal { bytes: Arc::new(bytes), batches: None }
    }

    /// `group`, with the batches the parts were archived from (same order), for applying the
    /// entry on this node without decoding it.
    pub fn group_records(parts: &[AlignedVec<16>], records: Vec<BatchRecord>) -> Proposal {
        assert_eq!(parts.len(), records.len(), "one record per archived part");
        Proposal { batches: Some(Batches::new(records)), ..Proposal::group(parts) }
    }

    /// Whether the entry carries the batches it was archived from (see `take_batches`).
    pub fn has_batches(&self) -> bool {
        self.batches.is_some()
    }

    /// The batches this entry was archived from, when it was made on this node and nobody
    /// took them yet.
    pub fn take_batches(&self) -> Option<Vec<BatchRecord>> {
        self.batches.as_ref().and_then(Batches::take)
    }

    /// Wraps bytes read from a log record or received from a peer (copied to aligned memory).
    pub fn from_bytes(bytes: &[u8]) -> Proposal {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Proposal { bytes: Arc::new(aligned), batches: None }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The archived batches of an entry payload (16-byte aligned bytes), checked for shape; each
/// part is checked as an archive only when decoded.
pub fn parts(payload: &[u8]) -> Result<Vec<&[u8]>, String> {
    let bad = |why: &str| Err(format!("malformed entry: {why}"));
    if payload.len() < 8 {
        return bad("shorter than its header");
    }
    let n = u32::from_le_bytes(payload[..4].try_into().expect("4")) as usize;
    if n == 0 || n > MAX_PARTS || payload.len() < 8 + n * 16 {
        return bad("bad part count");
    }
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let at = 8 + k * 16;
        let off = u64::from_le_bytes(payload[at..at + 8].try_into().expect("8")) as usize;
        let len = u64::from_le_bytes(payload[at + 8..at + 16].try_into().expect("8")) as usize;
        if !off.is_multiple_of(16) || off.checked_add(len).is_none_or(|end| end > payload.len()) {
            return bad("part out of bounds");
        }
        out.push(&payload[off..off + len]);
    }
    Ok(out)
}

/// Checks and deserialises a batch archive from 16-byte aligned bytes.
pub fn decode(bytes: &[u8]) -> Result<BatchRecord, String> {
    let archived = access(bytes)?;
    rkyv::deserialize::<BatchRecord, rkyv::rancor::Error>(archived)
        .map_err(|e| format!("malformed batch: {e}"))
}

/// Checks a batch archive in place (16-byte aligned bytes, e.g. from a mapped segment).
pub fn access(bytes: &[u8]) -> Result<&ArchivedBatchRecord, String> {
    rkyv::access::<ArchivedBatchRecord, rkyv::rancor::Error>(bytes)
        .map_err(|e| format!("malformed batch: {e}"))
}

impl serde::Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Proposal;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("batch bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Proposal, E> {
                Ok(Proposal::from_bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Proposal, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Proposal::from_bytes(&v))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

/// What applying one batch of an entry gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Applied(Applied),
    /// Refused as a whole; no ledger event, no lsn.
    Refused(Refusal),
    /// The bytes are not a batch archive (a bug or damage upstream); refused.
    Malformed(String),
    /// Its producer had this batch number applied already (`producers.rs`): not applied
    /// again; the original lsns when still kept.
    Duplicate(Option<Applied>),
    /// Its producer's previous number was not applied (`producers::Admission::Gap`):
    /// refused, so that nothing is applied ahead of a refused batch.
    OutOfOrder {
        expected: u64,
    },
}

/// What applying one Raft entry gave: one outcome per batch, in order (none for a blank or
/// membership entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcomes(pub Vec<Outcome>);
