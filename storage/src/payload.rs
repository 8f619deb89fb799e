//! What a ledger batch looks like inside a Raft entry and a log record: the leader's timestamp
//! and the events, archived with rkyv. The bytes are produced once by the proposer, travel
//! unchanged through Raft, land in a segment as the record payload, and are read in place.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use tally_engine::{Applied, Event, Refusal};

/// The archived content of a batch record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Microseconds since the Unix epoch, stamped by the leader when it proposed the batch.
    pub ts: i64,
    pub events: Vec<Event>,
}

/// A proposed batch: rkyv bytes of a `BatchRecord`, 16-byte aligned.
#[derive(Clone, Debug)]
pub struct Proposal {
    bytes: AlignedVec<16>,
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice() == other.bytes.as_slice()
    }
}

impl Eq for Proposal {}

impl Proposal {
    pub fn new(ts: i64, events: Vec<Event>) -> Proposal {
        let record = BatchRecord { ts, events };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&record)
            .expect("serialising a batch cannot fail");
        Proposal { bytes }
    }

    /// Wraps bytes read from a log record or received from a peer (copied to aligned memory).
    pub fn from_bytes(bytes: &[u8]) -> Proposal {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Proposal { bytes: aligned }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks the archive (it may come from a disk or a peer) and returns its events.
    pub fn decode(&self) -> Result<BatchRecord, String> {
        decode(&self.bytes)
    }
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
        s.serialize_bytes(&self.bytes)
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

/// What applying one Raft entry gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// A blank or membership entry: no ledger events.
    Nothing,
    Applied(Applied),
    /// Refused as a whole; no ledger event, no lsn.
    Refused(Refusal),
    /// The entry's bytes are not a batch archive (a bug or damage upstream); refused.
    Malformed(String),
}
