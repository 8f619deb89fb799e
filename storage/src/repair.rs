//! Repairs damaged records of sealed segments from a peer's copy (a node of a cluster): the
//! record at the damaged log index is fetched from another member, checked (its index, and a
//! size that fits the damaged slot exactly: entries are identical on every replica, so their
//! records are the same size), rewritten in place, and the segment resealed and re-checked.
//!
//! Never: rewrite a record that is not known committed (a divergent tail is Raft's to
//! truncate), or write past the damaged slot into a record that is intact.

use std::path::{Path, PathBuf};

use openraft::Raft;
use serde::{Deserialize, Serialize};

use crate::cluster::{BasicNode, Forward};
use crate::error::StorageError;
use crate::log::Log;
use crate::raft::{LogStore, NodeId, TypeConfig};
use crate::record::{self, Header, Kind, Probe};

/// A log record as a peer sends it for a repair: what makes the entry, not how the peer's
/// own file frames it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRecord {
    pub index: u64,
    pub term: u64,
    pub node: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl PeerRecord {
    /// Record `index` of `log`, for a peer that needs it.
    pub fn read(log: &Log, index: u64) -> Result<Option<PeerRecord>, StorageError> {
        Ok(log.read(index)?.map(|r| PeerRecord {
            index,
            term: r.header.term,
            node: r.header.node,
            kind: r.header.kind as u8,
            payload: r.payload.to_vec(),
        }))
    }

    /// The record as this node's log frames it.
    fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let kind = Kind::from_u8(self.kind)
            .ok_or_else(|| StorageError::Invalid(format!("a peer's record kind {}", self.kind)))?;
        // `window` only matters for the tail of the active segment at recovery; a sealed
        // segment's records are all durable.
        let header = Header {
            index: self.index,
            term: self.term,
            node: self.node,
            window: self.index,
            kind,
        };
        let mut out = Vec::with_capacity(record::align(record::HEADER + self.payload.len()));
        record::encode(&mut out, &header, &self.payload);
        Ok(out)
    }
}

/// The first damaged record of each sealed segment whose checksum fails: (segment, offset,
/// log index). A segment whose checksum fails while every record in it is intact (damage in
/// padding) is resealed here.
pub fn damaged(log: &mut Log) -> Result<Vec<(PathBuf, u64, u64)>, StorageError> {
    let failing: Vec<PathBuf> = log
        .segments()
        .iter()
        .filter(|s| s.sealed.is_some() && s.verify_sealed().is_err())
        .map(|s| s.path.clone())
        .collect();
    let mut found = Vec::new();
    for path in failing {
        let seg = log.segment_mut(&path).expect("a segment of this log");
        match seg.first_damaged() {
            Some((at, index)) => found.push((path, at, index)),
            None => seg.reseal()?,
        }
    }
    Ok(found)
}

/// Writes `peer`'s copy of the damaged record at `offset` of sealed segment `path`, when it
/// fits the slot exactly; reseals the segment once none of its records is damaged. Returns
/// whether the segment is whole again.
pub fn rewrite(
    log: &mut Log,
    path: &Path,
    offset: u64,
    peer: &PeerRecord,
) -> Result<bool, StorageError> {
    let bytes = peer.encode()?;
    let seg = log
        .segment_mut(path)
        .ok_or_else(|| StorageError::Invalid(format!("no segment {}", path.display())))?;
    let sealed = seg
        .sealed
        .ok_or_else(|| StorageError::Invalid(format!("{} is not sealed", path.display())))?;
    let end = offset + bytes.len() as u64;
    let fits = if peer.index == sealed.last_index {
        end == sealed.data_end
    } else {
        // The next record must start right after the slot: intact with the next index, or
        // damaged as well (repaired next), never mid-way through an intact record.
        end < sealed.data_end
            && match record::probe(&seg.data()[..sealed.data_end as usize], end as usize) {
                Probe::Valid { header, .. } => header.index == peer.index + 1,
                _ => true,
            }
    };
    if !fits {
        return Err(StorageError::Invalid(format!(
            "the peer's record {} ({} bytes) does not fit the damaged slot at offset {offset} of {}",
            peer.index,
            bytes.len(),
            path.display()
        )));
    }
    seg.overwrite(offset, &bytes)?;
    if seg.first_damaged().is_some() {
        return Ok(false);
    }
    seg.reseal()?;
    seg.verify_sealed()?;
    Ok(true)
}

/// Records one repair run rewrites at most (a guard against a loop that makes no progress).
const MAX_REPAIRS: usize = 1 << 20;

/// Where a repair may fetch records from, and up to which log index it may rewrite.
pub(crate) struct Source {
    /// The other members, with their Raft addresses.
    pub peers: Vec<(NodeId, BasicNode)>,
    /// The last log index known committed here (`None`: nothing is).
    pub committed: Option<u64>,
}

impl Source {
    /// The running node's view: its membership and what it has applied.
    pub(crate) fn of(raft: &Raft<TypeConfig>, id: NodeId) -> Source {
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let peers = membership.nodes().filter(|(p, _)| **p != id).map(|(p, n)| (*p, n.clone()));
        Source { peers: peers.collect(), committed: metrics.last_applied.map(|a| a.index) }
    }
}

/// Repairs every damaged record of the sealed segments from the other members, one record at
/// a time, first damaged first. Returns how many records were rewritten; fails, naming the
/// record, when one cannot be repaired (no other member, none has it intact, or it is not
/// known committed here).
pub(crate) async fn from_peers(
    log: &LogStore,
    forward: &dyn Forward,
    source: &Source,
) -> Result<usize, StorageError> {
    let mut repaired = 0;
    while repaired < MAX_REPAIRS {
        let Some((path, offset, index)) = log.with_log_mut(damaged)?.into_iter().next() else {
            break;
        };
        let cannot = |why: String| StorageError::Unrepaired { path: path.clone(), index, why };
        if source.committed.is_none_or(|c| c < index) {
            return Err(cannot("it is not known committed on this node".into()));
        }
        if source.peers.is_empty() {
            return Err(cannot("a lone node has no peer to fetch it from".into()));
        }
        let mut fetched = None;
        for (peer, node) in &source.peers {
            match forward.fetch_record(*peer, node, index).await {
                Ok(Some(r)) if r.index == index => {
                    fetched = Some(r);
                    break;
                }
                Ok(_) => tracing::warn!("node {peer} does not hold log index {index}"),
                Err(e) => tracing::warn!("node {peer}: log index {index}: {e}"),
            }
        }
        let record = fetched.ok_or_else(|| cannot("no other member sent it intact".into()))?;
        log.with_log_mut(|l| rewrite(l, &path, offset, &record))?;
        tracing::info!("repaired log index {index} in {} from a peer's copy", path.display());
        repaired += 1;
    }
    Ok(repaired)
}
