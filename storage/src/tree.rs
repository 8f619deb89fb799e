//! The log's Merkle tree as a node keeps it (RFC 9162; the tree itself is
//! `tally_engine::log_tree`): each applied event's leaf hash is added as its batch is applied,
//! the tree goes into snapshots with the rest of the state (a restart rehashes nothing before
//! the snapshot), and roots and proofs for any earlier size read back from the log the leaves
//! the tree does not keep. Every node applies the same log, so every node has the same roots.
//!
//! Leaf i is the event of lsn i + 1, hashed from its lsn, its ts and its `events.body` bytes,
//! exactly as the `events` table shows them. Hashing costs about half as much as applying, so
//! the live state machine hands each large applied batch to a thread of the tree's own
//! (`Keeper`) and goes on; a small batch it hashes itself when that thread is idle (cheaper
//! than a hand-over), and it waits only when the thread is `TREE_BACKLOG_BATCHES` behind. A
//! reader of the tree (a root, a proof, a snapshot) waits until the tree has caught up with
//! the lsn it asks about, never while holding the state's lock; proofs work on a copy of the
//! tree, so reading leaves back from the log holds no lock either. The keeper signs a
//! checkpoint at each epoch close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender};
use tally_engine::log_tree::{
    batch_leaf_hashes, event_leaf_hash, log_leaf_hash, Leaves, LogTree, ProofError,
};
use tally_engine::merkle::Hash;
use tally_engine::{json, Applied, Event};

use crate::checkpoints::{Checkpoint, NodeCheckpoints};
use crate::db::Database;
use crate::error::StorageError;

/// Applied batches the tree's thread may be behind by; past that, applying waits for it, so
/// the batches it holds (their events) stay bounded in memory.
const TREE_BACKLOG_BATCHES: usize = 64;
/// Batches smaller than this are added by the applying thread itself when the tree's thread
/// has nothing left to do: handing one over costs a thread wake-up, more than hashing a few
/// events (docs/benchmarks.md, "The log tree's cost").
const INLINE_EVENTS: usize = 1024;

/// Where a state's tree grows.
pub enum StateTree {
    /// In the applying thread: replays (`verify.rs`) and a state just loaded.
    Inline(LogTree),
    /// On the keeper's thread: the live state machine.
    Kept(Arc<Keeper>),
}

impl StateTree {
    pub(crate) fn empty() -> StateTree {
        StateTree::Inline(LogTree::new())
    }

    /// Adds an applied batch's leaves (on the keeper's thread when kept).
    pub(crate) fn grow(&mut self, events: Vec<Event>, applied: Applied) {
        match self {
            StateTree::Inline(tree) => {
                tree.push_batch(&events, applied);
            }
            StateTree::Kept(keeper) => keeper.add(events, applied),
        }
    }

    /// The tree once it has exactly `size` leaves, for a snapshot of a state whose last lsn
    /// is `size`. Called holding the state's lock, so no batch is added meanwhile.
    pub(crate) fn at(&self, size: u64) -> Result<LogTree, StorageError> {
        let tree = match self {
            StateTree::Inline(tree) => tree.clone(),
            StateTree::Kept(keeper) => keeper.reached(size)?,
        };
        if tree.size() != size {
            let found = tree.size();
            return Err(StorageError::Invalid(format!("log tree at {found} leaves, not {size}")));
        }
        Ok(tree)
    }
}

/// The tree's thread and what readers wait on.
pub struct Keeper {
    jobs: Sender<(Vec<Event>, Applied)>,
    /// Batches sent to the thread and not yet added.
    pending: AtomicUsize,
    checkpoints: Arc<NodeCheckpoints>,
    state: Mutex<Kept>,
    grown: Condvar,
}

struct Kept {
    tree: LogTree,
    /// The tree's size once the checkpoints of the epoch closes in it are signed: what readers
    /// wait for, so that a close's checkpoint is there as soon as its tree is.
    ready: u64,
    /// Set when a batch could not be added (a bug): readers get it instead of waiting.
    failed: Option<String>,
}

impl Keeper {
    /// Starts keeping `tree` on a thread of its own; checkpoints at epoch closes go to
    /// `checkpoints`. The thread ends when the keeper is dropped.
    pub(crate) fn start(tree: LogTree, checkpoints: Arc<NodeCheckpoints>) -> Arc<Keeper> {
        let (jobs, rx) = crossbeam_channel::bounded(TREE_BACKLOG_BATCHES);
        let ready = tree.size();
        let state = Mutex::new(Kept { tree, ready, failed: None });
        let pending = AtomicUsize::new(0);
        let grown = Condvar::new();
        let keeper = Arc::new(Keeper { jobs, pending, checkpoints, state, grown });
        let weak = Arc::downgrade(&keeper);
        std::thread::Builder::new()
            .name("tally-tree".into())
            .spawn(move || keep(&weak, &rx))
            .expect("starting the log tree's thread");
        keeper
    }

    /// Adds an applied batch: here when it is small and the thread is idle (only the applying
    /// thread sends, so nothing can be queued meanwhile and the order holds), else on the
    /// thread.
    fn add(&self, events: Vec<Event>, applied: Applied) {
        if events.len() < INLINE_EVENTS && self.pending.load(Ordering::Acquire) == 0 {
            self.grow(&events, applied);
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        // The receiver lives as long as the keeper: sending cannot fail while it exists.
        let _ = self.jobs.send((events, applied));
    }

    /// Hashes a batch's leaves without the lock, adds them under it, signs the checkpoints of
    /// the epoch closes in it, then lets readers see it.
    fn grow(&self, events: &[Event], applied: Applied) {
        let leaves = batch_leaf_hashes(events, applied);
        let mut state = self.state.lock().expect("the tree's lock");
        let closes = if state.tree.size() + 1 == applied.first_lsn {
            state.tree.push_leaves(events, &leaves)
        } else {
            let why =
                format!("batch at lsn {} after {} leaves", applied.first_lsn, state.tree.size());
            state.failed.get_or_insert(why);
            Vec::new()
        };
        drop(state);
        self.checkpoints.publish_closes(&closes);
        self.state.lock().expect("the tree's lock").ready = applied.last_lsn;
        self.grown.notify_all();
    }

    /// A copy of the tree once it has at least `size` leaves.
    pub(crate) fn reached(&self, size: u64) -> Result<LogTree, StorageError> {
        let state = self.state.lock().expect("the tree's lock");
        let state = self
            .grown
            .wait_while(state, |k| k.ready < size && k.failed.is_none())
            .expect("the tree's lock");
        match &state.failed {
            Some(why) => Err(StorageError::Invalid(format!("the log tree stopped: {why}"))),
            None => Ok(state.tree.clone()),
        }
    }
}

/// The tree's thread: adds each batch sent to it, in order.
fn keep(keeper: &std::sync::Weak<Keeper>, jobs: &Receiver<(Vec<Event>, Applied)>) {
    while let Ok((events, applied)) = jobs.recv() {
        let Some(keeper) = keeper.upgrade() else { return };
        keeper.grow(&events, applied);
        keeper.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

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
    /// A copy of the tree once it holds every event applied when this is called.
    fn tree(&self) -> Result<LogTree, StorageError> {
        let (last, keeper) = {
            let s = self.shared().state.read().expect("state lock");
            let keeper = match &s.tree {
                StateTree::Kept(keeper) => keeper.clone(),
                StateTree::Inline(tree) => return Ok(tree.clone()),
            };
            (s.ledger.last_lsn(), keeper)
        };
        keeper.reached(last)
    }

    /// The tree's size (every event applied when this is called, or more) and its root.
    pub fn ledger_root(&self) -> Result<(u64, Hash), StorageError> {
        let tree = self.tree()?;
        Ok((tree.size(), tree.root()))
    }

    /// The root of the tree of the first `size` events.
    pub fn ledger_root_at(&self, size: u64) -> Result<Hash, StorageError> {
        Ok(self.tree()?.root_at(size, &LogLeaves(self))?)
    }

    /// The event of `lsn` and its inclusion in the tree of `tree_size` events.
    pub fn inclusion_proof(
        &self,
        lsn: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, StorageError> {
        let tree = self.tree()?;
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
        let tree = self.tree()?;
        let leaves = LogLeaves(self);
        let path = tree.consistency_proof(old_size, new_size, &leaves)?;
        let old_root = tree.root_at(old_size, &leaves)?;
        let new_root = tree.root_at(new_size, &leaves)?;
        Ok(ConsistencyProof { old_size, new_size, old_root, new_root, path })
    }

    /// This node's signed checkpoint of the tree as it is now (the one it published before,
    /// when the tree has not grown since).
    pub fn publish_checkpoint(&self) -> Result<Checkpoint, StorageError> {
        let (size, root) = self.ledger_root()?;
        self.shared().checkpoints.get()?.publish(size, root)
    }

    /// The public key this node signs its checkpoints with (created on first use).
    pub fn checkpoint_key(&self) -> Result<[u8; 32], StorageError> {
        Ok(self.shared().checkpoints.get()?.public_key())
    }

    /// Every checkpoint this node has published, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StorageError> {
        Ok(self.shared().checkpoints.get()?.all())
    }
}
