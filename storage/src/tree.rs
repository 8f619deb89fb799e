//! The log's Merkle tree as a node keeps it (RFC 9162; the tree itself is
//! `tally_engine::log_tree`): each applied event's leaf hash is pushed as its batch is applied,
//! the tree goes into snapshots with the rest of the state (a restart rehashes nothing before
//! the snapshot), and roots and proofs for any earlier size read back from the log the leaves
//! the tree does not keep. Every node applies the same log, so every node has the same roots.
//!
//! Leaf i is the event of lsn i + 1, hashed from its lsn, its ts and its `events.body` bytes,
//! exactly as the `events` table shows them. Proofs are computed on a copy of the tree taken
//! under a short read lock: reading leaves back from the log never holds the state's lock.

use tally_engine::json;
use tally_engine::log_tree::{event_leaf_hash, log_leaf_hash, Leaves, LogTree, ProofError};
use tally_engine::merkle::Hash;

use crate::checkpoints::Checkpoint;
use crate::db::Database;
use crate::error::StorageError;

/// The leaves the tree does not keep, read back from the log.
struct LogLeaves<'a>(&'a Database);

impl Leaves for LogLeaves<'_> {
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, String> {
        let mut hashes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        let mut body = String::with_capacity(256);
        self.0
            .scan_events(from + 1, to, |e| {
                hashes.push(event_leaf_hash(e.lsn, e.ts, &e.event, &mut body));
            })
            .map_err(|e| e.to_string())?;
        Ok(hashes)
    }
}

/// Leaf `lsn - 1` with what it hashes, and its audit path to the root of a tree size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub lsn: u64,
    pub ts: i64,
    pub body: String,
    pub leaf_hash: Hash,
    pub tree_size: u64,
    pub path: Vec<Hash>,
    pub root: Hash,
}

/// That the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Hash,
    pub new_root: Hash,
    pub path: Vec<Hash>,
}

impl Database {
    fn tree(&self) -> LogTree {
        self.shared().state.read().expect("state lock").tree.clone()
    }

    /// The tree's size (the last lsn applied) and root.
    pub fn ledger_root(&self) -> (u64, Hash) {
        let s = self.shared().state.read().expect("state lock");
        (s.tree.size(), s.tree.root())
    }

    /// The root of the tree of the first `size` events.
    pub fn ledger_root_at(&self, size: u64) -> Result<Hash, StorageError> {
        Ok(self.tree().root_at(size, &LogLeaves(self))?)
    }

    /// The event of `lsn` and its inclusion in the tree of `tree_size` events.
    pub fn inclusion_proof(
        &self,
        lsn: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, StorageError> {
        let tree = self.tree();
        let index = lsn.checked_sub(1).ok_or(ProofError::IndexOutOfRange { index: 0, size: 0 })?;
        let path = tree.inclusion_proof(index, tree_size, &LogLeaves(self))?;
        let root = tree.root_at(tree_size, &LogLeaves(self))?;
        let mut event = None;
        self.scan_events(lsn, lsn, |e| event = Some(e))?;
        let e = event.ok_or(ProofError::IndexOutOfRange { index, size: tree.size() })?;
        let body = json::body(&e.event);
        let leaf_hash = log_leaf_hash(e.lsn, e.ts, body.as_bytes());
        Ok(InclusionProof { lsn, ts: e.ts, body, leaf_hash, tree_size, path, root })
    }

    /// That the tree of `old_size` events is a prefix of the tree of `new_size` events.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, StorageError> {
        let tree = self.tree();
        let leaves = LogLeaves(self);
        let path = tree.consistency_proof(old_size, new_size, &leaves)?;
        let old_root = tree.root_at(old_size, &leaves)?;
        let new_root = tree.root_at(new_size, &leaves)?;
        Ok(ConsistencyProof { old_size, new_size, old_root, new_root, path })
    }

    /// This node's signed checkpoint of the tree as it is now (the one it published before,
    /// when the tree has not grown since).
    pub fn publish_checkpoint(&self) -> Result<Checkpoint, StorageError> {
        let (size, root) = self.ledger_root();
        self.shared().checkpoints()?.publish(size, root)
    }

    /// The public key this node signs its checkpoints with (created on first use).
    pub fn checkpoint_key(&self) -> Result<[u8; 32], StorageError> {
        Ok(self.shared().checkpoints()?.public_key())
    }

    /// Every checkpoint this node has published, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StorageError> {
        Ok(self.shared().checkpoints()?.all())
    }
}
