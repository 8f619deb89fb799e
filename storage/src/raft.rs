//! openraft's storage over the segmented log: `RaftLogStorage` (entries, vote, committed,
//! truncate, purge) and `RaftStateMachine` (the engine's `Ledger`, snapshots). The state
//! machine is where lsns are born: a batch entry that the engine accepts at apply gets the next
//! lsns; one it refuses gets none and leaves no ledger event.
//!
//! Never: acknowledge an append before its fsync (the flusher fires openraft's callback), or
//! delete ledger records — `purge` only moves Raft's view of the log forward.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, OptionalSend,
    RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError as RaftStorageError,
    StorageIOError, StoredMembership, Vote,
};
use tally_engine::{InferenceHistory, Ledger};

use crate::checkpoints::NodeCheckpoints;
use crate::error::StorageError;
use crate::flusher::Flusher;
use crate::history::{LogHistory, Records};
use crate::log::{Log, NewRecord, Recovery};
use crate::lsn::LsnIndex;
use crate::meta;
use crate::payload::{self, BatchRecord, Outcome, Outcomes, Proposal};
use crate::producers::{Admission, Producers};
use crate::record::Kind;
use crate::snapshot::{self, SnapshotFile};
use crate::tree::{Keeper, StateTree};

openraft::declare_raft_types!(
    /// Tally's Raft types: entries carry ledger batches, applying one gives an `Outcome`.
    pub TypeConfig:
        D = Proposal,
        R = Outcomes,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
type RaftError = RaftStorageError<NodeId>;

fn write_err(e: impl std::error::Error + 'static) -> RaftError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> RaftError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

struct LogInner {
    log: Log,
    flusher: Flusher,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    /// Entries this node proposed, appended and not yet applied, by index: read back from
    /// here, they still carry their batches unarchived (`Proposal::take_batches`).
    recent: BTreeMap<u64, (LogId<NodeId>, Proposal)>,
}

/// Most entries kept in `LogInner::recent`. The coalescer has at most a few entries in flight;
/// past this, the oldest are dropped (and decoded from the log when applied).
const RECENT_KEPT: usize = 64;

/// The Raft log over the segmented log. Cheap to clone (shared).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    dir: PathBuf,
}

/// Room kept for Raft's blank and membership entries.
const RAFT_HEADROOM: u64 = 16 << 10;

const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StorageError> {
    match meta::read(path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", path.display()))),
    }
}

impl LogStore {
    /// Opens the log in `dir` (recovering it) and its Raft metadata.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(LogStore, Recovery), StorageError> {
        let (log, recovery) = Log::open(dir, segment_bytes)?;
        let flusher = Flusher::start(log.durable());
        let vote = read_json(&dir.join(VOTE_FILE))?;
        // The committed index is a hint for restart (entries up to it are re-applied at once);
        // it is written without fsync, so a missing or stale one is harmless.
        let committed = read_json(&dir.join(COMMITTED_FILE)).unwrap_or(None);
        let purged = read_json(&dir.join(PURGED_FILE))?;
        if let (Some(torn), Some(c)) = (&recovery.torn, &committed) {
            let c: &LogId<NodeId> = c;
            if torn.index <= c.index {
                return Err(StorageError::Corrupt {
                    path: torn.path.clone(),
                    offset: torn.offset,
                    index: torn.index,
                    last_good: torn.index.saturating_sub(1),
                });
            }
        }
        let recent = BTreeMap::new();
        let inner = LogInner { log, flusher, vote, committed, purged, recent };
        Ok((LogStore { inner: Arc::new(Mutex::new(inner)), dir: dir.into() }, recovery))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log lock poisoned")
    }

    /// Lets Raft read the log from its start again: the state machine has no snapshot (lost,
    /// damaged or removed), and since `purge` never deleted a record, a full replay is possible.
    pub fn forget_purged(&self) -> Result<(), StorageError> {
        let path = self.dir.join(PURGED_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => crate::segment::sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&path, e)),
        }
        self.lock().purged = None;
        Ok(())
    }

    /// Makes sure the log can take `bytes` more (plus room for Raft's own small entries)
    /// without creating a file: if the active segment is short of room, the next segment is
    /// created now. Fails, having written nothing, when the disk is full.
    pub fn reserve(&self, bytes: u64) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if let Some(reason) = inner.flusher.poisoned() {
            return Err(StorageError::Poisoned { path: self.dir.clone(), reason });
        }
        inner.log.ensure_room(bytes + RAFT_HEADROOM)
    }

    /// Checks every record from log index `from` to the end: a damaged one is reported as
    /// corruption that stops the database from opening.
    pub fn check_readable_from(&self, from: u64) -> Result<(), StorageError> {
        self.with_log(|l| {
            for r in l.iter_from(from) {
                match r {
                    Ok(_) => {}
                    Err(StorageError::Damaged { path, offset, index }) => {
                        let last_good = index.saturating_sub(1);
                        return Err(StorageError::Corrupt { path, offset, index, last_good });
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// The last log index this node knew committed when it last stopped (a hint: see `open`).
    pub fn committed_index(&self) -> Option<u64> {
        self.lock().committed.map(|c| c.index)
    }

    /// Runs `f` on the log, to change it outside Raft's path (repairs).
    pub(crate) fn with_log_mut<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        f(&mut self.lock().log)
    }

    /// Forgets the kept copy of entry `index` (`LogInner::recent`): it is being applied.
    fn applying(&self, index: u64) {
        self.lock().recent.remove(&index);
    }

    /// Runs `f` on the log (for scans, verification and tools).
    pub fn with_log<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.lock().log)
    }
}

impl LogInner {
    /// Keeps the appended entries that carry their batches unarchived (see `recent`).
    fn keep_recent(&mut self, entries: Vec<Entry<TypeConfig>>) {
        for e in entries {
            if let EntryPayload::Normal(p) = e.payload {
                if p.has_batches() {
                    self.recent.insert(e.log_id.index, (e.log_id, p));
                }
            }
        }
        while self.recent.len() > RECENT_KEPT {
            self.recent.pop_first();
        }
    }
}

fn log_id_of(h: &crate::record::Header) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(h.term, h.node), h.index)
}

// openraft's own error type is large; it is what every storage method must return.
#[allow(clippy::result_large_err)]
fn to_entry(r: crate::log::RecordRef<'_>) -> Result<Entry<TypeConfig>, RaftError> {
    let payload = match r.header.kind {
        Kind::Blank => EntryPayload::Blank,
        Kind::Batch => EntryPayload::Normal(Proposal::from_bytes(r.payload)),
        Kind::Membership => {
            EntryPayload::Membership(serde_json::from_slice(r.payload).map_err(read_err)?)
        }
    };
    Ok(Entry { log_id: log_id_of(&r.header), payload })
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftError> {
        let inner = self.lock();
        let purged_next = inner.purged.map_or(0, |p| p.index + 1);
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        }
        .max(purged_next)
        .max(inner.log.first_index().unwrap_or(0));
        let mut out = Vec::new();
        if inner.log.last_index().is_none_or(|l| start > l) {
            return Ok(out);
        }
        for r in inner.log.iter_from(start) {
            let r = r.map_err(read_err)?;
            if !range.contains(&r.header.index) {
                break;
            }
            match inner.recent.get(&r.header.index) {
                Some((id, p)) if *id == log_id_of(&r.header) => {
                    out.push(Entry { log_id: *id, payload: EntryPayload::Normal(p.clone()) })
                }
                _ => out.push(to_entry(r)?),
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftError> {
        let inner = self.lock();
        let last = match inner.log.last_index() {
            Some(i) => inner.log.read(i).map_err(read_err)?.map(|r| log_id_of(&r.header)),
            None => None,
        };
        let last_log_id = match (last, inner.purged) {
            (Some(l), Some(p)) => Some(if p.index > l.index { p } else { l }),
            (l, p) => l.or(p),
        };
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftError> {
        let bytes = serde_json::to_vec(vote).expect("vote serialises");
        meta::write_atomic(&self.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| RaftError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), RaftError> {
        let bytes = serde_json::to_vec(&committed).expect("log id serialises");
        // Not fsynced: see `open`.
        std::fs::write(self.dir.join(COMMITTED_FILE), bytes).map_err(write_err)?;
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, RaftError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        if let Some(reason) = inner.flusher.poisoned() {
            return Err(write_err(StorageError::Poisoned { path: self.dir.clone(), reason }));
        }
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let memberships: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Membership(m) => {
                    serde_json::to_vec(m).expect("membership serialises")
                }
                _ => Vec::new(),
            })
            .collect();
        let records: Vec<NewRecord<'_>> = entries
            .iter()
            .zip(&memberships)
            .map(|(e, m)| {
                let (kind, payload): (Kind, &[u8]) = match &e.payload {
                    EntryPayload::Blank => (Kind::Blank, &[]),
                    EntryPayload::Normal(p) => (Kind::Batch, p.as_bytes()),
                    EntryPayload::Membership(_) => (Kind::Membership, m),
                };
                NewRecord {
                    index: e.log_id.index,
                    term: e.log_id.leader_id.term,
                    node: e.log_id.leader_id.node_id,
                    kind,
                    payload,
                }
            })
            .collect();
        let Some(last) = records.last().map(|r| r.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // After a snapshot was installed past the end of this log, the next entry starts
        // beyond it: the log continues in a new segment at that index.
        if let (Some(first), Some(p)) = (records.first(), inner.purged) {
            if inner.log.last_index().is_none_or(|l| l < first.index - 1)
                && first.index == p.index + 1
            {
                inner.log.start_at(first.index).map_err(write_err)?;
            }
        }
        let file = inner.log.append(&records).map_err(write_err)?;
        drop(records);
        inner.keep_recent(entries);
        let Some(file) = file else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let path = self.dir.clone();
        inner.flusher.request(
            file,
            path,
            last + 1,
            Box::new(move |r| callback.log_io_completed(r.map_err(std::io::Error::other))),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftError> {
        let mut inner = self.lock();
        inner.recent.retain(|&i, _| i < log_id.index);
        inner.log.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftError> {
        let bytes = serde_json::to_vec(&log_id).expect("log id serialises");
        meta::write_atomic(&self.dir.join(PURGED_FILE), &bytes).map_err(write_err)?;
        let mut inner = self.lock();
        inner.purged = Some(log_id);
        inner.recent.retain(|&i, _| i > log_id.index);
        Ok(())
    }
}

/// The state machine's state: the ledger plus what Raft needs to know about it.
pub struct SmState {
    pub ledger: Ledger,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// Where each ledger lsn lives in the log.
    pub lsns: LsnIndex,
    /// Who had which batches applied, for exactly-once ingest.
    pub producers: Producers,
    /// The Merkle tree over every applied event (`tree.rs`).
    pub tree: StateTree,
}

impl SmState {
    pub(crate) fn empty() -> SmState {
        SmState {
            ledger: Ledger::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            lsns: LsnIndex::default(),
            producers: Producers::default(),
            tree: StateTree::empty(),
        }
    }

    /// This state with its tree kept on the tree's own thread (`tree.rs`), as the live state
    /// machine keeps it; epoch closes are signed into `checkpoints`.
    fn kept(mut self, checkpoints: &Arc<NodeCheckpoints>) -> SmState {
        if let StateTree::Inline(tree) = std::mem::replace(&mut self.tree, StateTree::empty()) {
            self.tree = StateTree::Kept(Keeper::start(tree, checkpoints.clone()));
        }
        self
    }
}

/// Shared between the state machine (openraft's) and the database's readers.
pub struct Shared {
    pub state: RwLock<SmState>,
    dir: PathBuf,
    current: Mutex<Option<SnapshotMeta<NodeId, BasicNode>>>,
    /// This node's key and signed checkpoints, opened on first use (`checkpoints.rs`).
    pub checkpoints: Arc<NodeCheckpoints>,
}

impl Shared {
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(snapshot::FILE)
    }
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    /// The log the applied batches came from: the history that settles inference-id
    /// fingerprint hits reads it (`history.rs`).
    log: LogStore,
}

impl StateMachine {
    /// Loads the latest snapshot in `dir`, if any; entries after it are re-applied by Raft.
    /// A damaged snapshot is set aside (renamed `snapshot.bin.damaged`) and the state is
    /// rebuilt from the log; the reason is returned.
    pub fn open(dir: &Path, log: LogStore) -> Result<(StateMachine, Option<String>), StorageError> {
        let path = dir.join(snapshot::FILE);
        let loaded = snapshot::load(&path).map(|f| match f {
            Some((meta, state)) => (state, Some(meta)),
            None => (SmState::empty(), None),
        });
        let (state, current, discarded) = match loaded {
            Ok((state, current)) => (state, current, None),
            Err(e) => {
                let aside = path.with_extension("bin.damaged");
                std::fs::rename(&path, &aside).map_err(|e| StorageError::io(&path, e))?;
                (SmState::empty(), None, Some(format!("{e}; moved to {}", aside.display())))
            }
        };
        let checkpoints = Arc::new(NodeCheckpoints::new(dir));
        let shared = Shared {
            state: RwLock::new(state.kept(&checkpoints)),
            dir: dir.into(),
            current: Mutex::new(current),
            checkpoints,
        };
        Ok((StateMachine { shared: Arc::new(shared), log }, discarded))
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

fn apply_entry(state: &mut SmState, entry: Entry<TypeConfig>, log: &LogStore) -> Outcomes {
    let index = entry.log_id.index;
    state.last_applied = Some(entry.log_id);
    match entry.payload {
        EntryPayload::Blank => Outcomes::default(),
        EntryPayload::Membership(m) => {
            state.membership = StoredMembership::new(Some(entry.log_id), m);
            Outcomes::default()
        }
        EntryPayload::Normal(p) => {
            log.applying(index);
            apply_proposal(state, index, &p, log)
        }
    }
}

/// Applies each batch of an entry's payload: all of each or, refused, none of it. Batches
/// that this node archived itself are taken as they were; the others are decoded.
fn apply_proposal(state: &mut SmState, index: u64, p: &Proposal, log: &LogStore) -> Outcomes {
    let parts = match payload::parts(p.as_bytes()) {
        Err(e) => {
            state.lsns.refused(index, 0);
            return Outcomes(vec![Outcome::Malformed(e)]);
        }
        Ok(parts) => parts,
    };
    let mut records = p.take_batches().map(Vec::into_iter);
    assert!(records.as_ref().is_none_or(|r| r.len() == parts.len()), "one record per part");
    let outcomes = parts.into_iter().enumerate().map(|(k, part)| {
        let batch = match records.as_mut().and_then(Iterator::next) {
            Some(record) => Ok(record),
            None => payload::decode(part),
        };
        apply_part(state, (index, k as u32), batch, Records::Store(log))
    });
    Outcomes(outcomes.collect())
}

/// Applies batch `at` = (log index, part) of an entry, given as decoded from its archive, to the
/// ledger and the producer table, records its lsns (or none) in the lsn index and its events'
/// leaves in the tree: what the state machine does, and what a replay of the log does again
/// (`verify.rs`). Inference-id fingerprint hits are settled by reading `records` through the
/// lsn index (`history.rs`).
pub(crate) fn apply_part(
    state: &mut SmState,
    at: (u64, u32),
    decoded: Result<BatchRecord, String>,
    records: Records<'_>,
) -> Outcome {
    let (index, part) = at;
    let SmState { ledger, producers, lsns, tree, .. } = state;
    let ts_before = ledger.last_ts();
    let (outcome, batch) = match decoded {
        // The lsn index is apart from the ledger: it is read while the ledger changes.
        Ok(batch) => {
            let history = LogHistory::with(lsns, records);
            (apply_record(ledger, producers, index, &batch, &history), Some(batch))
        }
        Err(e) => (Outcome::Malformed(e), None),
    };
    match (&outcome, batch) {
        (Outcome::Applied(a), Some(batch)) => {
            lsns.accepted(index, part, a.first_lsn, a.last_lsn, ts_before);
            tree.grow(batch.events, *a);
        }
        // Refused, malformed, a duplicate or out of order: a batch without lsns.
        _ => lsns.refused(index, part),
    }
    outcome
}

/// Applies a decoded batch of the entry at log `index` to the ledger and the producer table.
fn apply_record(
    ledger: &mut Ledger,
    producers: &mut Producers,
    index: u64,
    batch: &BatchRecord,
    history: &dyn InferenceHistory,
) -> Outcome {
    if let Some(origin) = &batch.origin {
        match producers.admit(origin) {
            Admission::Fresh => {}
            Admission::Duplicate(applied) => return Outcome::Duplicate(applied),
            Admission::Gap { expected } => return Outcome::OutOfOrder { expected },
        }
    }
    match ledger.apply_with_history(&batch.events, batch.ts, history) {
        Ok(applied) => {
            if let Some(origin) = &batch.origin {
                producers.record(origin, index, applied);
            }
            Outcome::Applied(applied)
        }
        Err(refusal) => Outcome::Refused(refusal),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), RaftError> {
        let s = self.shared.state.read().expect("state lock");
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcomes>, RaftError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.shared.state.write().expect("state lock");
        Ok(entries.into_iter().map(|e| apply_entry(&mut s, e, &self.log)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftError> {
        let bytes = snapshot.into_inner();
        let sig = Some(meta.signature());
        let file = SnapshotFile::decode(&bytes).map_err(|e| {
            RaftError::from(StorageIOError::read_snapshot(sig.clone(), AnyError::new(&e)))
        })?;
        let state = file.into_state().map_err(|e| {
            RaftError::from(StorageIOError::read_snapshot(sig.clone(), AnyError::new(&e)))
        })?;
        meta::write_atomic(&self.shared.snapshot_path(), &bytes)
            .map_err(|e| RaftError::from(StorageIOError::write_snapshot(sig, AnyError::new(&e))))?;
        let mut state = state.kept(&self.shared.checkpoints);
        let mut current = self.shared.state.write().expect("state lock");
        // The batch backend is the node's, not the snapshot's.
        if let Some((settler, min_inferences)) = current.ledger.batch_settler() {
            state.ledger.attach_batch_settler(settler, min_inferences);
        }
        *current = state;
        drop(current);
        *self.shared.current.lock().expect("snapshot lock") = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftError> {
        let Some(meta) = self.shared.current.lock().expect("snapshot lock").clone() else {
            return Ok(None);
        };
        let bytes = std::fs::read(self.shared.snapshot_path()).map_err(|e| {
            RaftError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds a snapshot from a copy of the state taken under a short read lock, so applying goes
/// on while the snapshot is encoded and written.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftError> {
        let (ledger, last_applied, membership, lsns, producers, tree) = {
            let s = self.shared.state.read().expect("state lock");
            let (lsns, producers) = (s.lsns.clone(), s.producers.clone());
            // Waits (holding the lock, so nothing is added) for the tree to reach the ledger.
            let tree = s.tree.at(s.ledger.last_lsn()).map_err(|e| {
                RaftError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
            })?;
            (s.ledger.clone(), s.last_applied, s.membership.clone(), lsns, producers, tree)
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".into(),
        };
        let meta =
            SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let bytes = SnapshotFile::encode(&meta, &lsns, &producers, &tree, &ledger);
        meta::write_atomic(&self.shared.snapshot_path(), &bytes).map_err(|e| {
            RaftError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        *self.shared.current.lock().expect("snapshot lock") = Some(meta.clone());
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

#[cfg(test)]
mod tests {
    use tally_engine::{Datanet, Event};

    /// The entries the log store keeps for their apply (`LogInner::recent`) are let go once
    /// applied, however many batches were in flight together.
    #[test]
    fn entries_kept_for_their_apply_are_let_go_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::Database::open(dir.path()).unwrap();
        let dn = |k: usize| {
            Event::Datanet(Datanet { datanet: format!("d{k}").into(), owner: "o".into() })
        };
        db.runtime().block_on(async {
            let mut pending = Vec::new();
            for k in 0..200 {
                pending.push(db.submit(vec![dn(k)]).await.unwrap());
            }
            for p in pending {
                db.finish(p).await.unwrap();
            }
        });
        assert_eq!(db.read(|l| l.datanets().count()), 200);
        assert!(db.log().lock().recent.is_empty(), "kept entries were not let go");
    }
}
