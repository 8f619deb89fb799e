//! The embedded database: a data directory opened in-process as a one-node Raft group that
//! needs no configuration. Writes go the one way every write goes — proposed to Raft, durable
//! in the log, applied to the engine — and come back with their lsns. The server is built on
//! this same type.
//!
//! Directory layout: `LOCK` (held while open), `log/` (segments, vote, committed, purged),
//! `snapshot.bin` (latest engine snapshot).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tally_engine::{
    Applied, BatchSettler, CpuSettler, Event, InferenceHistory, Ledger, LoggedEvent, Refusal,
    DEFAULT_BATCH_RESETTLE_INFERENCES,
};

use crate::cluster::{self, Forward, ForwardError, ForwardFuture, Forwarded, Members, Node};
use crate::error::StorageError;
use crate::history::LogHistory;
use crate::log::{Recovery, SEGMENT_BYTES};
use crate::payload::{self, BatchRecord, Origin, Outcome, Proposal};
use crate::producers::{Admission, MAX_PRODUCER_BYTES};
use crate::raft::{LogStore, NodeId, Shared, StateMachine, TypeConfig};
use crate::record::Kind;
use rkyv::util::AlignedVec;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// This node's id in its one-node group.
const NODE: NodeId = 1;
/// The id a directory opened offline runs as: a member of no cluster, so it never votes.
const OFFLINE_NODE: NodeId = u64::MAX;

/// How a data directory is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A lone node: its own one-voter cluster.
    Alone,
    /// A node of a cluster.
    Member,
    /// No part in any cluster (`open_offline`).
    Offline,
}
/// How long opening waits for the node to elect itself and catch up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Options {
    pub segment_bytes: u64,
    /// A snapshot is taken after this many ledger events since the last one (and on close).
    pub snapshot_every_events: u64,
    /// The batch-settlement backend (CPU or GPU: the caller picks): re-settles what a revocation
    /// touches once it touches `batch_resettle_inferences` open-epoch inferences or more, and
    /// settles past states (`Database::ledger_at`). Every backend gives the same numbers.
    pub settler: Arc<dyn BatchSettler>,
    pub batch_resettle_inferences: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES,
            snapshot_every_events: 4_000_000,
            settler: Arc::new(CpuSettler),
            batch_resettle_inferences: DEFAULT_BATCH_RESETTLE_INFERENCES,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_bytes", &self.segment_bytes)
            .field("snapshot_every_events", &self.snapshot_every_events)
            .field("settler", &self.settler.name())
            .field("batch_resettle_inferences", &self.batch_resettle_inferences)
            .finish()
    }
}

/// A batch handed over by `Database::submit`, not yet known durable.
pub struct PendingWrite(oneshot::Receiver<Result<Landed, WriteError>>);

/// What became of a batch that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// Appended and applied, with these lsns.
    Applied(Applied),
    /// Its producer had this batch number applied before (`Origin`): not applied again. The
    /// original lsns, when still kept (`producers::ACKS_KEPT`).
    Duplicate(Option<Applied>),
}

struct Request {
    part: AlignedVec<16>,
    /// What `part` was archived from, for applying it here without a decode.
    record: BatchRecord,
    reply: Reply,
}

/// How often the background checker re-reads every sealed segment's checksum.
const BACKGROUND_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Re-checks the checksums of sealed segments in the background (first right after open, then
/// every `BACKGROUND_CHECK_EVERY`), so that damage at rest is found before a reader needs the
/// records. Sealed segments never change, so this reads them without holding the log's lock.
struct Checker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

/// What the background check calls when it finds damage: repairs from peers, when there are.
type Repair = Box<dyn Fn() -> Result<usize, StorageError> + Send>;

impl Checker {
    fn start(log: LogStore, repair: Repair) -> Checker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let problem = Arc::new(std::sync::Mutex::new(None));
        let found = problem.clone();
        let thread = std::thread::Builder::new()
            .name("tally-checker".into())
            .spawn(move || loop {
                let sealed: Vec<PathBuf> = log.with_log(|l| {
                    l.segments()
                        .iter()
                        .filter(|s| s.sealed.is_some())
                        .map(|s| s.path.clone())
                        .collect()
                });
                for path in sealed {
                    let check = |p: &PathBuf| {
                        crate::segment::Segment::open(p).and_then(|s| s.verify_sealed())
                    };
                    if let Err(e) = check(&path) {
                        tracing::error!("background check: {e}");
                        let repaired = repair().and_then(|n| check(&path).map(|()| n));
                        match repaired {
                            Ok(n) => tracing::info!(
                                "background check: {n} damaged records repaired from peers"
                            ),
                            Err(r) => {
                                tracing::error!("background check: {r}");
                                found.lock().expect("checker lock").get_or_insert(e.to_string());
                            }
                        }
                    }
                    if stopped.try_recv().is_ok() {
                        return;
                    }
                }
                match stopped.recv_timeout(BACKGROUND_CHECK_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            })
            .expect("spawn checker thread");
        Checker { stop: Some(stop), thread: Some(thread), problem }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Submitted batches waiting for the coalescer.
const QUEUE: usize = 4096;
/// Raft entries proposed and not yet applied; while they are in flight, new batches gather
/// into the next entry.
const ENTRIES_IN_FLIGHT: usize = 4;
/// A group stops growing at this many bytes (a single larger batch still goes alone).
const GROUP_BYTES: usize = 64 << 20;

/// Where the coalescer sends an entry: to Raft here when this node leads (or is alone), else
/// to the leader through `forward`.
struct Route {
    id: NodeId,
    forward: Option<Arc<dyn Forward>>,
}

impl Route {
    /// The leader to forward to, when it is not this node.
    fn forward_to(&self, raft: &Raft<TypeConfig>) -> Option<&Arc<dyn Forward>> {
        let forward = self.forward.as_ref()?;
        (raft.metrics().borrow().current_leader != Some(self.id)).then_some(forward)
    }
}

/// Groups submitted batches into Raft entries (see `submit`) and routes each batch's outcome
/// back to its writer.
async fn coalesce(
    raft: Raft<TypeConfig>,
    log: LogStore,
    route: Route,
    mut rx: mpsc::Receiver<Request>,
) {
    let slots = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    // Bytes of entries proposed and not yet applied: the log must have room for them too.
    let in_flight = Arc::new(AtomicU64::new(0));
    // A batch that did not fit the last group starts the next one.
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let group = gather(first, &mut rx, &mut carry);
        let mut parts = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for r in group {
            parts.push(r.part);
            records.push(r.record);
            replies.push(r.reply);
        }
        let proposal = Proposal::group_records(&parts, records);
        drop(parts);
        if let Some(forward) = route.forward_to(&raft) {
            // One forwarded entry at a time: entries reach the leader in the order their
            // batches were submitted here (a producer's numbered batches must).
            let outcomes = forward_entry(&raft, &route, forward, &proposal).await;
            route_outcomes(outcomes, replies);
            drop(permit);
            continue;
        }
        let size = proposal.as_bytes().len() as u64;
        // Make sure the log has room before Raft sees the entry: a full disk then refuses
        // these batches with a clear error, and Raft (for which a failed append is fatal)
        // never sees a write it cannot make.
        if let Err(e) = log.reserve(size + in_flight.load(Ordering::Acquire)) {
            route_outcomes(Err(WriteError::Storage(e.to_string())), replies);
            continue;
        }
        in_flight.fetch_add(size, Ordering::AcqRel);
        let done = in_flight.clone();
        match raft.client_write_ff(proposal).await {
            Err(e) => {
                in_flight.fetch_sub(size, Ordering::AcqRel);
                route_outcomes(Err(WriteError::Raft(e.to_string())), replies);
            }
            Ok(response) => {
                tokio::spawn(async move {
                    let outcomes = match response.await {
                        Ok(Ok(r)) => Ok(r.data.0),
                        Ok(Err(e)) => Err(lost_leadership(e)),
                        Err(e) => Err(WriteError::Raft(e.to_string())),
                    };
                    route_outcomes(outcomes, replies);
                    done.fetch_sub(size, Ordering::AcqRel);
                    drop(permit);
                });
            }
        }
    }
}

/// What a write that Raft took and then failed became. openraft answers "forward to the
/// leader" both when this node was not the leader as the entry arrived (nothing appended) and
/// when the entry was appended here and later cut off by a new leader's log: the entry may
/// still be on another node, which can become leader and commit it (Raft's figure 8, with five
/// voters or more). The two cannot be told apart here, so the outcome is unknown, never "not
/// written" (which invites a resend that could apply the write twice).
fn lost_leadership(e: openraft::error::ClientWriteError<NodeId, BasicNode>) -> WriteError {
    match e {
        openraft::error::ClientWriteError::ForwardToLeader(f) => WriteError::Raft(format!(
            "the leadership moved to {:?} while the write was being committed; it may or may not \
             have been applied: check before writing it again",
            f.leader_id
        )),
        other => WriteError::Raft(other.to_string()),
    }
}

/// Takes the batches waiting behind `first` into one group, up to the entry limits; the first
/// that does not fit is left in `carry`.
fn gather(
    first: Request,
    rx: &mut mpsc::Receiver<Request>,
    carry: &mut Option<Request>,
) -> Vec<Request> {
    let mut data = payload::aligned(first.part.len());
    let mut group = vec![first];
    while group.len() < payload::MAX_PARTS && data < GROUP_BYTES {
        match rx.try_recv() {
            Ok(r) => {
                let more = data + payload::aligned(r.part.len());
                if payload::group_bytes(group.len() + 1, more) > payload::MAX_PROPOSAL_BYTES {
                    *carry = Some(r);
                    break;
                }
                data = more;
                group.push(r);
            }
            Err(_) => break,
        }
    }
    group
}

/// Sends an entry to the leader and waits until this node has applied it too, so that a read
/// here right after the write sees it. A definite "not the leader" is retried (`MAX_HOPS`);
/// an unknown outcome never is.
async fn forward_entry(
    raft: &Raft<TypeConfig>,
    route: &Route,
    forward: &Arc<dyn Forward>,
    proposal: &Proposal,
) -> Result<Vec<Outcome>, WriteError> {
    // A leader that could not take the entry: the next try waits for another one.
    let mut passed: Option<NodeId> = None;
    for _ in 0..cluster::MAX_HOPS {
        let (leader, node) = wait_for_leader(raft, passed).await?;
        if leader == route.id {
            // This node became the leader while the entry waited.
            return match raft.client_write(proposal.clone()).await {
                Ok(r) => Ok(r.data.0),
                Err(openraft::error::RaftError::APIError(e)) => Err(lost_leadership(e)),
                Err(e) => Err(WriteError::Raft(e.to_string())),
            };
        }
        match forward.forward(leader, &node, proposal).await {
            Ok(done) => {
                raft.wait(Some(cluster::APPLY_WAIT))
                    .applied_index_at_least(Some(done.index), "forwarded write")
                    .await
                    .map_err(|e| {
                        WriteError::Raft(format!(
                            "the write was committed (log index {}), but this node has not \
                             applied it yet: {e}",
                            done.index
                        ))
                    })?;
                return Ok(done.outcomes.0);
            }
            Err(ForwardError::NotLeader(_) | ForwardError::Unreachable(_)) => passed = Some(leader),
            Err(ForwardError::NotWritten(e)) => return Err(WriteError::Storage(e)),
            Err(ForwardError::Unknown(e)) => {
                return Err(WriteError::Raft(format!("forwarded to node {leader}: {e}")))
            }
        }
    }
    Err(WriteError::NotLeader(format!(
        "the leader changed {} times while the write was forwarded",
        cluster::MAX_HOPS
    )))
}

/// The current leader (other than `passed`, a leader that could not take a write) and its
/// address, waiting up to `cluster::LEADER_WAIT` for one.
async fn wait_for_leader(
    raft: &Raft<TypeConfig>,
    passed: Option<NodeId>,
) -> Result<(NodeId, BasicNode), WriteError> {
    let metrics = raft
        .wait(Some(cluster::LEADER_WAIT))
        .metrics(|m| m.current_leader.is_some() && m.current_leader != passed, "a leader")
        .await
        .map_err(|_| {
            WriteError::NotLeader(format!(
                "no leader could take the write for {:?}: is a majority of the cluster's \
                 voters reachable?",
                cluster::LEADER_WAIT
            ))
        })?;
    let leader = metrics.current_leader.expect("waited for a leader");
    let node = metrics.membership_config.membership().get_node(&leader).cloned();
    let node = node.ok_or_else(|| {
        WriteError::NotLeader(format!(
            "the leader, node {leader}, has no address in the membership"
        ))
    })?;
    Ok((leader, node))
}

type Reply = oneshot::Sender<Result<Landed, WriteError>>;

fn route_outcomes(outcomes: Result<Vec<Outcome>, WriteError>, replies: Vec<Reply>) {
    match outcomes {
        Ok(outcomes) if outcomes.len() == replies.len() => {
            for (o, r) in outcomes.into_iter().zip(replies) {
                let _ = r.send(match o {
                    Outcome::Applied(a) => Ok(Landed::Applied(a)),
                    Outcome::Duplicate(a) => Ok(Landed::Duplicate(a)),
                    Outcome::OutOfOrder { expected } => Err(WriteError::OutOfOrder { expected }),
                    Outcome::Refused(refusal) => Err(WriteError::Refused(refusal)),
                    Outcome::Malformed(m) => Err(WriteError::Malformed(m)),
                });
            }
        }
        Ok(outcomes) => {
            let why = format!("{} outcomes for {} batches", outcomes.len(), replies.len());
            for r in replies {
                let _ = r.send(Err(WriteError::Raft(why.clone())));
            }
        }
        Err(e) => {
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

/// A producer id is an id of the ledger's alphabet (surface.md) and a batch number is ≥ 1.
fn check_origin(origin: &Origin) -> Result<(), WriteError> {
    let id = origin.producer.as_str();
    if !tally_engine::id::is_valid_id(id) {
        return Err(WriteError::BadOrigin(format!(
            "producer id {:?} must be 1 to {MAX_PRODUCER_BYTES} characters of A-Z a-z 0-9 . _ : @ / -",
            id.chars().take(64).collect::<String>()
        )));
    }
    if origin.seq == 0 {
        return Err(WriteError::BadOrigin("batch numbers start at 1".into()));
    }
    Ok(())
}

/// What opening a database found and did.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    pub log: Recovery,
    /// Why the snapshot could not be used (the state was rebuilt from the log instead).
    pub snapshot_discarded: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The engine refused the batch; nothing of it was appended to the ledger.
    #[error(transparent)]
    Refused(Refusal),
    #[error("the batch could not be read back: {0}")]
    Malformed(String),
    #[error("the write did not complete: {0}")]
    Raft(String),
    /// Nothing of the batch was written (e.g. the disk is full).
    #[error("{0}")]
    Storage(String),
    /// A streaming batch is not its producer's next (the one before it was not applied);
    /// nothing of it was written.
    #[error(
        "this batch is not its producer's next: expected seq {expected} (the batch before it \
         was not applied; resend from it)"
    )]
    OutOfOrder { expected: u64 },
    /// A streaming batch's producer id or number is not valid; nothing was written.
    #[error("{0}")]
    BadOrigin(String),
    /// The batch does not fit one log record once encoded; nothing of it was written.
    #[error(
        "the batch is {bytes} bytes once encoded, more than the {max} a log record holds: split it"
    )]
    TooLarge { bytes: usize, max: usize },
    /// This node could not get the batch to a leader (none is known, or leadership moved
    /// while it was on its way); nothing of it was written, so it may be sent again.
    #[error("not written: {0}")]
    NotLeader(String),
}

/// A position in the log between two batches, where a scan continues (`Database::scan_chunk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCursor {
    /// Log index of the entry, and the part (batch) in it, the scan continues at.
    index: u64,
    part: u32,
    /// The lsn of that batch's first event, and the ledger's timestamp before it.
    lsn: u64,
    ts: i64,
}

enum Step {
    Done,
    More,
    Stop(ScanCursor),
}

/// Log records a scan reads per hold of the log's lock (a record is one Raft entry: up to a few
/// hundred thousand events when a large COPY was appended).
const SCAN_RECORDS_PER_LOCK: usize = 8;

pub struct Database {
    rt: tokio::runtime::Runtime,
    raft: Raft<TypeConfig>,
    /// This node's id in its Raft group.
    id: NodeId,
    /// How this node reaches the leader (lone node: never needed).
    forward: Arc<dyn Forward>,
    shared: Arc<Shared>,
    log: LogStore,
    dir: PathBuf,
    recovery: Opened,
    options: Options,
    snapshot_lsn: AtomicU64,
    coalescer: mpsc::Sender<Request>,
    checker: Checker,
    /// Set by `close`, so that dropping a closed database does not shut Raft down twice.
    closed: bool,
    _lock: File,
}

fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_micros() as i64
}

/// Brings Raft up. A node whose log is empty initialises the cluster when it has the lowest id
/// of `peers` (a restart never does: its log is not empty). Alone, it then waits to lead and to
/// re-apply its log; in a cluster, it waits only to re-apply what it knows was committed.
async fn start(
    raft: &Raft<TypeConfig>,
    id: NodeId,
    peers: Members,
    committed: Option<u64>,
    mode: Mode,
) -> Result<(), StorageError> {
    let raft_err = |e: &dyn std::fmt::Display| StorageError::Invalid(format!("raft: {e}"));
    if !raft.is_initialized().await.map_err(|e| raft_err(&e))? && peers.keys().next() == Some(&id) {
        raft.initialize(peers).await.map_err(|e| raft_err(&e))?;
    }
    let caught_up = if mode == Mode::Alone {
        let m = raft
            .wait(Some(OPEN_TIMEOUT))
            .state(ServerState::Leader, "open")
            .await
            .map_err(|e| raft_err(&e))?;
        m.last_log_index
    } else {
        committed
    };
    raft.wait(Some(OPEN_TIMEOUT))
        .applied_index_at_least(caught_up, "catch up")
        .await
        .map_err(|e| raft_err(&e))?;
    Ok(())
}

/// Repairs damaged sealed segments from the peers named at open (Raft is not running yet);
/// what cannot be repaired is logged, and opening then names it.
async fn repair_at_open<N>(log: &LogStore, node: &Node<N>, committed: Option<u64>) {
    let peers = node.peers.iter().filter(|(p, _)| **p != node.id);
    let source =
        crate::repair::Source { peers: peers.map(|(p, n)| (*p, n.clone())).collect(), committed };
    if let Err(e) = crate::repair::from_peers(log, &*node.forward, &source).await {
        tracing::error!("{e}");
    }
}

/// Once this node leads, makes the cluster's configuration carry the Raft address it was
/// started with, when it carries another: a lone node's directory (whose entry has no address)
/// started as node of a cluster, or a node moved to a new address. Followers need the leader's
/// address to forward writes to it.
async fn publish_own_address(raft: Raft<TypeConfig>, id: NodeId, own: BasicNode) {
    let Ok(m) = raft.wait(None).metrics(|m| m.current_leader == Some(id), "leading").await else {
        return;
    };
    if m.membership_config.membership().get_node(&id) == Some(&own) {
        return;
    }
    let change = openraft::ChangeMembers::SetNodes([(id, own.clone())].into());
    match raft.change_membership(change, true).await {
        Ok(_) => tracing::info!(
            "node {id}'s Raft address is now {} in the cluster's configuration",
            own.addr
        ),
        Err(e) => tracing::warn!("node {id} could not record its address {}: {e}", own.addr),
    }
}

/// Takes the data directory's lock file; refused while another process holds it.
pub fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path: dir.into() }),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io(&path, e)),
    }
}

impl Database {
    pub fn open(dir: impl AsRef<Path>) -> Result<Database, StorageError> {
        Self::open_with(dir, Options::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Database, StorageError> {
        let config = Config {
            cluster_name: "tally".into(),
            // One voter: elections cannot split, so a short timeout only makes opening faster.
            heartbeat_interval: 50,
            election_timeout_min: 100,
            election_timeout_max: 150,
            snapshot_policy: SnapshotPolicy::Never,
            // Raft's view of the log moves past each snapshot (records stay: `purge`), so a
            // damaged old record does not keep a lone node from opening.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StorageError::Invalid(e.to_string()))?;
        let members = BTreeMap::from([(NODE, BasicNode::default())]);
        let node =
            Node { id: NODE, peers: members, network: NoNetwork, forward: Arc::new(NoNetwork) };
        Self::open_inner(dir.as_ref(), options, config, node, Mode::Alone)
    }

    /// Opens a data directory without taking part in its cluster (for `tally verify` and
    /// tools, on a stopped node): the state is the snapshot plus the entries this node knew
    /// committed; nothing is elected, nothing is written to the log, and writes are refused.
    pub fn open_offline(dir: impl AsRef<Path>, options: Options) -> Result<Database, StorageError> {
        let config = cluster::config().map_err(StorageError::Invalid)?;
        let node = Node {
            id: OFFLINE_NODE,
            peers: Members::new(),
            network: NoNetwork,
            forward: Arc::new(NoNetwork),
        };
        Self::open_inner(dir.as_ref(), options, config, node, Mode::Offline)
    }

    /// The voters of a data directory's cluster as last applied there (its snapshot's, or
    /// replayed): more than one means the directory belongs to a node of a cluster.
    pub fn voters(&self) -> Vec<NodeId> {
        let s = self.shared.state.read().expect("state lock");
        s.membership.membership().voter_ids().collect()
    }

    /// Opens the data directory as node `node.id` of a cluster. The node that has the lowest id
    /// of `node.peers` initialises the cluster with them as voters when its log is empty; the
    /// others wait to hear from a leader. Returns without waiting for a leader: the node serves
    /// reads of what it has applied, and writes once a leader is known.
    pub fn open_node<N: RaftNetworkFactory<TypeConfig>>(
        dir: impl AsRef<Path>,
        options: Options,
        node: Node<N>,
    ) -> Result<Database, StorageError> {
        if !node.peers.is_empty() && !node.peers.contains_key(&node.id) {
            return Err(StorageError::Invalid(format!(
                "node {} is not one of the peers {:?}",
                node.id,
                node.peers.keys().collect::<Vec<_>>()
            )));
        }
        let config = cluster::config().map_err(StorageError::Invalid)?;
        Self::open_inner(dir.as_ref(), options, config, node, Mode::Member)
    }

    fn open_inner<N: RaftNetworkFactory<TypeConfig>>(
        dir: &Path,
        options: Options,
        config: Config,
        node: Node<N>,
        mode: Mode,
    ) -> Result<Database, StorageError> {
        let dir = dir.to_path_buf();
        let lock = lock_dir(&dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tally-raft")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io(&dir, e))?;
        let (log, recovery) = LogStore::open(&dir.join("log"), options.segment_bytes)?;
        let (sm, snapshot_discarded) = StateMachine::open(&dir, log.clone())?;
        let shared = sm.shared();
        shared
            .state
            .write()
            .expect("state lock")
            .ledger
            .attach_batch_settler(options.settler.clone(), options.batch_resettle_inferences);
        let applied = shared.state.read().expect("state lock").last_applied;
        // Records are never deleted, so Raft may read the whole log again: without a snapshot
        // it must (to rebuild the state), and in a cluster it always may, since a follower that
        // is behind is sent log entries, never a snapshot (see `cluster::config`).
        if applied.is_none() || mode == Mode::Member {
            log.forget_purged()?;
        }
        if mode == Mode::Member {
            // Raft reads this node's log from its start when it starts: damage in sealed
            // segments is repaired from the peers first, where it can be.
            let committed = log.committed_index().max(applied.map(|a| a.index));
            rt.block_on(repair_at_open(&log, &node, committed));
        }
        // Everything Raft will re-apply must be readable: damage found now is named, with
        // what to do, instead of failing inside Raft with a missing entry.
        log.check_readable_from(applied.map_or(0, |l| l.index + 1))?;
        let raft_err = |e: &dyn std::fmt::Display| StorageError::Invalid(format!("raft: {e}"));
        let raft = rt
            .block_on(Raft::new(node.id, Arc::new(config), node.network, log.clone(), sm))
            .map_err(|e| raft_err(&e))?;
        let own = node.peers.get(&node.id).cloned();
        rt.block_on(start(&raft, node.id, node.peers, log.committed_index(), mode))?;
        if let (Mode::Member, Some(own)) = (mode, own) {
            rt.spawn(publish_own_address(raft.clone(), node.id, own));
        }
        let snapshot_lsn = AtomicU64::new(shared.state.read().expect("state").ledger.last_lsn());
        let recovery = Opened { log: recovery, snapshot_discarded };
        let (coalescer, rx) = mpsc::channel(QUEUE);
        let forward = node.forward.clone();
        let route = Route { id: node.id, forward: (mode != Mode::Alone).then_some(node.forward) };
        rt.spawn(coalesce(raft.clone(), log.clone(), route, rx));
        let repair: Repair = {
            let (raft, log, forward, id) = (raft.clone(), log.clone(), forward.clone(), node.id);
            let handle = rt.handle().clone();
            Box::new(move || {
                let source = crate::repair::Source::of(&raft, id);
                handle.block_on(crate::repair::from_peers(&log, &*forward, &source))
            })
        };
        let checker = Checker::start(log.clone(), repair);
        Ok(Database {
            rt,
            raft,
            id: node.id,
            forward,
            shared,
            log,
            dir,
            recovery,
            options,
            snapshot_lsn,
            coalescer,
            checker,
            closed: false,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with (its batch backend among them).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Damage the background check found in a sealed segment, if any.
    pub fn background_problem(&self) -> Option<String> {
        self.checker.problem.lock().expect("checker lock").clone()
    }

    /// What opening found (a torn tail cut off, rebuilt indexes, a damaged snapshot).
    pub fn recovery(&self) -> &Opened {
        &self.recovery
    }

    /// Appends one atomic batch and returns its lsns, once it is durable and applied.
    pub fn write(&self, events: Vec<Event>) -> Result<Applied, WriteError> {
        self.rt.block_on(self.write_async(events))
    }

    /// As `write`, for async callers.
    pub async fn write_async(&self, events: Vec<Event>) -> Result<Applied, WriteError> {
        let pending = self.submit(events).await?;
        self.finish(pending).await
    }

    /// Hands a batch over for appending and returns without waiting for it. Batches submitted
    /// one after another are appended and applied in that order. Batches waiting while the
    /// log syncs are grouped into one Raft entry, so they share one fsync (group commit) while
    /// each stays atomic on its own.
    ///
    /// Checks that need no ledger state (ids, sizes, fee range, entry counts) are made here,
    /// before anything is proposed: a batch refused for its shape costs no log space.
    pub async fn submit(&self, events: Vec<Event>) -> Result<PendingWrite, WriteError> {
        self.submit_from(None, events).await
    }

    /// `submit` for a batch of streaming ingest: `origin` names its producer and number, and
    /// a number its producer had applied already is not applied again (`Landed::Duplicate`;
    /// known duplicates are answered without proposing anything).
    pub async fn submit_from(
        &self,
        origin: Option<Origin>,
        events: Vec<Event>,
    ) -> Result<PendingWrite, WriteError> {
        if let Some(origin) = &origin {
            check_origin(origin)?;
            let known = self.shared.state.read().expect("state lock").producers.admit(origin);
            // Only duplicates are answered here. A number ahead of the last applied one is
            // normal while earlier batches are in flight: the state machine judges it.
            if let Admission::Duplicate(applied) = known {
                let (reply, rx) = oneshot::channel();
                let _ = reply.send(Ok(Landed::Duplicate(applied)));
                return Ok(PendingWrite(rx));
            }
        }
        if let Some(i) = tally_engine::first_malformed(&events) {
            // The exact refusal is validation's: an earlier event may fail a stateful rule.
            let checked = self.read_checked(|l, h| l.validate_with_history(&events[..=i], h));
            return Err(match checked {
                Err(refusal) => WriteError::Refused(refusal),
                Ok(()) => WriteError::Malformed(format!("event {i} is malformed")),
            });
        }
        let record = BatchRecord { ts: now_micros(), origin, events };
        let part = payload::encode_record(&record);
        let bytes = payload::group_bytes(1, payload::aligned(part.len()));
        if bytes > payload::MAX_PROPOSAL_BYTES {
            return Err(WriteError::TooLarge { bytes, max: payload::MAX_PROPOSAL_BYTES });
        }
        let (reply, rx) = oneshot::channel();
        self.coalescer
            .send(Request { part, record, reply })
            .await
            .map_err(|_| WriteError::Raft("the database is shutting down".into()))?;
        Ok(PendingWrite(rx))
    }

    /// Waits for a batch submitted without an origin: its lsns once durable and applied, or
    /// its refusal.
    pub async fn finish(&self, pending: PendingWrite) -> Result<Applied, WriteError> {
        match self.finish_from(pending).await? {
            Landed::Applied(applied) => Ok(applied),
            Landed::Duplicate(_) => {
                Err(WriteError::Malformed("a batch without an origin was a duplicate".into()))
            }
        }
    }

    /// Waits for a submitted batch: applied, or a duplicate of its producer's, or refused.
    pub async fn finish_from(&self, pending: PendingWrite) -> Result<Landed, WriteError> {
        let landed =
            pending.0.await.map_err(|_| WriteError::Raft("the write was dropped".into()))??;
        if let Landed::Applied(applied) = landed {
            let since = applied.last_lsn.saturating_sub(self.snapshot_lsn.load(Ordering::Relaxed));
            if since >= self.options.snapshot_every_events {
                self.snapshot_lsn.store(applied.last_lsn, Ordering::Relaxed);
                let _ = self.raft.trigger().snapshot().await;
            }
        }
        Ok(landed)
    }

    /// The highest batch number applied for streaming-ingest producer `producer`.
    pub fn producer_seq(&self, producer: &str) -> Option<u64> {
        self.shared.state.read().expect("state lock").producers.last_seq(producer)
    }

    /// Reads the ledger state (a consistent view: no batch is applied while `f` runs).
    pub fn read<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        f(&self.shared.state.read().expect("state lock").ledger)
    }

    /// As `read`, with the ledger's inference history over the log, for checks against the
    /// live state that must settle inference-id fingerprint hits exactly as applying will
    /// (`Ledger::validate_with_history`, `Ledger::validate_after_with_history`). A hit costs
    /// one log read while the view is held.
    pub fn read_checked<R>(&self, f: impl FnOnce(&Ledger, &dyn InferenceHistory) -> R) -> R {
        let state = self.shared.state.read().expect("state lock");
        f(&state.ledger, &LogHistory::new(&state.lsns, &self.log))
    }

    /// Calls `f` with every ledger event whose lsn is in `from..=to`, in order, with its lsn and
    /// timestamp, read from the log (the source of truth). Starts at the lsn index's point
    /// before `from`, not at the beginning of the log.
    pub fn scan_events(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(LoggedEvent),
    ) -> Result<(), StorageError> {
        let mut at = self.scan_start(from);
        while let Some(cursor) = at {
            at = self.scan_chunk(cursor, from, to, usize::MAX, &mut f)?;
        }
        Ok(())
    }

    /// Where a scan for lsn `from` starts (`None`: no event at or after it yet).
    pub fn scan_start(&self, from: u64) -> Option<ScanCursor> {
        let s = self.shared.state.read().expect("state lock");
        s.lsns.locate(from.max(1)).map(|p| ScanCursor {
            index: p.index,
            part: p.part,
            lsn: p.first_lsn,
            ts: p.ts_before,
        })
    }

    /// Continues a scan at `at`: calls `f` with the events of lsns `from..=to` found there,
    /// stopping at the end of a batch once at least `max_events` were passed. Returns where to
    /// continue, or `None` when the scan reached `to` or the end of the log. Each batch is
    /// decoded once however the scan is cut, and the log's lock is taken for a few records at
    /// a time, so appends interleave with a long scan.
    pub fn scan_chunk(
        &self,
        at: ScanCursor,
        from: u64,
        to: u64,
        max_events: usize,
        f: &mut dyn FnMut(LoggedEvent),
    ) -> Result<Option<ScanCursor>, StorageError> {
        if from > to {
            return Ok(None);
        }
        let refused = {
            let s = self.shared.state.read().expect("state lock");
            s.lsns.refused_batches().to_vec()
        };
        let (mut lsn, mut ts) = (at.lsn, at.ts);
        let mut passed = 0usize;
        let mut next = at.index;
        let mut repaired = false;
        loop {
            let step = self.log.with_log(|log| {
                let mut seen = 0;
                for r in log.iter_from(next).take(SCAN_RECORDS_PER_LOCK) {
                    let r = r?;
                    seen += 1;
                    let index = r.header.index;
                    next = index + 1;
                    if r.header.kind != Kind::Batch {
                        continue;
                    }
                    let parts = payload::parts(r.payload).map_err(StorageError::Invalid)?;
                    for (k, part) in parts.into_iter().enumerate() {
                        let k = k as u32;
                        if (index == at.index && k < at.part)
                            || refused.binary_search(&(index, k)).is_ok()
                        {
                            continue;
                        }
                        let batch = payload::decode(part).map_err(StorageError::Invalid)?;
                        ts = ts.max(batch.ts);
                        for event in batch.events {
                            if lsn > to {
                                return Ok(Step::Done);
                            }
                            if lsn >= from {
                                f(LoggedEvent { lsn, ts, event });
                                passed += 1;
                            }
                            lsn += 1;
                        }
                        if lsn > to {
                            return Ok(Step::Done);
                        }
                        if passed >= max_events {
                            return Ok(Step::Stop(ScanCursor { index, part: k + 1, lsn, ts }));
                        }
                    }
                }
                Ok::<Step, StorageError>(if seen < SCAN_RECORDS_PER_LOCK {
                    Step::Done
                } else {
                    Step::More
                })
            });
            // A damaged record stops the step before it (`next` is its index, and every event
            // before it was passed once), so after a repair the scan goes on from there.
            let step = match step {
                Err(e @ StorageError::Damaged { .. }) if !repaired => {
                    repaired = true;
                    if self.repair_on_read(&e) {
                        continue;
                    }
                    return Err(e);
                }
                other => other?,
            };
            match step {
                Step::Done => return Ok(None),
                Step::Stop(cursor) => return Ok(Some(cursor)),
                Step::More => {}
            }
        }
    }

    /// This node's Raft, for the network layer's RPC service (AppendEntries, Vote, snapshots).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// The leader's side of forwarding: appends an entry a follower grouped, and answers with
    /// its log index and each batch's outcome once it is committed and applied here.
    pub async fn propose(&self, proposal: Proposal) -> Result<Forwarded, ForwardError> {
        if let Err(e) = payload::parts(proposal.as_bytes()) {
            return Err(ForwardError::NotWritten(format!("malformed entry: {e}")));
        }
        // A node that knows it does not lead says so before proposing: that answer is certain
        // (nothing appended), and the follower may try the leader it names. Once proposed, a
        // lost leadership leaves the outcome unknown (`lost_leadership`).
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return Err(ForwardError::NotLeader(leader));
        }
        let size = proposal.as_bytes().len() as u64;
        self.log.reserve(size).map_err(|e| ForwardError::NotWritten(e.to_string()))?;
        match self.raft.client_write(proposal).await {
            Ok(r) => Ok(Forwarded { index: r.log_id.index, outcomes: r.data }),
            Err(openraft::error::RaftError::APIError(e)) => {
                Err(ForwardError::Unknown(lost_leadership(e).to_string()))
            }
            Err(e) => Err(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Repairs the damaged records of sealed segments from the other members' copies (what the
    /// background check does when it finds damage). Returns how many were rewritten.
    pub fn repair(&self) -> Result<usize, StorageError> {
        let source = crate::repair::Source::of(&self.raft, self.id);
        self.rt.block_on(crate::repair::from_peers(&self.log, &*self.forward, &source))
    }

    /// A read ran into `damage`: a node of a cluster repairs it from its peers at once (not at
    /// the next background check), so that the read can go on. Returns whether anything was
    /// repaired. The repair runs on a thread of its own: reads are called from async code, and
    /// the repair blocks on this database's runtime.
    fn repair_on_read(&self, damage: &StorageError) -> bool {
        if crate::repair::Source::of(&self.raft, self.id).peers.is_empty() {
            return false;
        }
        tracing::error!("a read found damage: {damage}; repairing from the peers");
        let repaired = std::thread::scope(|s| s.spawn(|| self.repair()).join());
        match repaired {
            Ok(Ok(n)) => {
                tracing::info!("{n} damaged records repaired from peers");
                n > 0
            }
            Ok(Err(e)) => {
                tracing::error!("the damage a read found was not repaired: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// This node's copy of log record `index`, for a peer repairing its own.
    pub fn peer_record(
        &self,
        index: u64,
    ) -> Result<Option<crate::repair::PeerRecord>, StorageError> {
        self.log.with_log(|l| crate::repair::PeerRecord::read(l, index))
    }

    /// The leader's read index (on the leader): once it is applied, a read sees every write
    /// acknowledged anywhere before this was called.
    pub async fn read_index(&self) -> Result<u64, ForwardError> {
        match self.raft.ensure_linearizable().await {
            Ok(at) => Ok(at.map_or(0, |l| l.index)),
            Err(e) => Err(match e.forward_to_leader::<BasicNode>() {
                Some(f) => ForwardError::NotLeader(f.leader_id),
                None => ForwardError::Unreachable(e.to_string()),
            }),
        }
    }

    /// Waits until this node has applied everything the leader had committed when this was
    /// called, so that a read after it is linearizable (`SET tally.read_consistency =
    /// 'linearizable'`). Costs the leader a heartbeat round to confirm it still leads.
    pub async fn linearize(&self) -> Result<(), WriteError> {
        let (leader, node) = wait_for_leader(&self.raft, None).await?;
        let index = if leader == self.id {
            self.read_index().await
        } else {
            self.forward.read_index(leader, &node).await
        };
        let index = index.map_err(|e| WriteError::NotLeader(format!("no read index: {e}")))?;
        self.raft
            .wait(Some(cluster::APPLY_WAIT))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|e| WriteError::NotLeader(format!("this node is behind the leader: {e}")))?;
        Ok(())
    }

    /// Changes the cluster's members, on the leader (`cluster::Change`); returns once the new
    /// configuration is committed.
    pub async fn change_members(
        &self,
        change: cluster::Change,
    ) -> Result<(), cluster::ChangeError> {
        use cluster::{Change, ChangeError};
        use openraft::ChangeMembers;
        let status = self.cluster_status();
        if status.leader != Some(self.id) {
            return Err(ChangeError::NotLeader(status.leader));
        }
        let member = |id| status.members.iter().find(|m| m.id == id);
        let done = match change {
            Change::Add { id, addr } => {
                if member(id).is_some() {
                    return Err(ChangeError::Refused(format!("node {id} is already a member")));
                }
                self.raft.add_learner(id, BasicNode::new(addr), false).await
            }
            Change::Promote { id } => {
                let m = member(id).ok_or_else(|| {
                    ChangeError::Refused(format!("node {id} is not a member; add it first"))
                })?;
                if m.voter {
                    return Err(ChangeError::Refused(format!("node {id} is already a voter")));
                }
                let last = status.last_log_index.unwrap_or(0);
                let lag = m.matched.map(|x| last.saturating_sub(x));
                if lag.is_none_or(|lag| lag > cluster::MAX_PROMOTE_LAG) {
                    return Err(ChangeError::Refused(format!(
                        "node {id} has not caught up (it holds log index {:?} of {last}); \
                         promote it once `cluster` shows its lag at most {}",
                        m.matched,
                        cluster::MAX_PROMOTE_LAG
                    )));
                }
                self.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), true).await
            }
            Change::Remove { id } => {
                let m = member(id)
                    .ok_or_else(|| ChangeError::Refused(format!("node {id} is not a member")))?;
                let voters = status.members.iter().filter(|m| m.voter).count();
                if m.voter && voters == 1 {
                    return Err(ChangeError::Refused("the last voter cannot be removed".into()));
                }
                let change = if m.voter {
                    ChangeMembers::RemoveVoters([id].into())
                } else {
                    ChangeMembers::RemoveNodes([id].into())
                };
                self.raft.change_membership(change, false).await
            }
        };
        done.map(|_| ()).map_err(|e| match e.forward_to_leader::<BasicNode>() {
            Some(f) => ChangeError::NotLeader(f.leader_id),
            None => ChangeError::Refused(e.to_string()),
        })
    }

    /// This node's view of the cluster: its role, the leader, and each member.
    pub fn cluster_status(&self) -> cluster::Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let role = match m.state {
            ServerState::Leader => cluster::Role::Leader,
            ServerState::Candidate => cluster::Role::Candidate,
            ServerState::Follower if voters.contains(&self.id) => cluster::Role::Follower,
            _ if membership.get_node(&self.id).is_some() => cluster::Role::Learner,
            _ => cluster::Role::Outside,
        };
        let matched = |id: &NodeId| {
            let replication = m.replication.as_ref()?;
            replication.get(id).copied().flatten().map(|l| l.index)
        };
        let members = membership
            .nodes()
            .map(|(id, node)| cluster::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched: matched(id),
            })
            .collect();
        cluster::Status {
            id: self.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            applied_lsn: self.read(|l| l.last_lsn()),
            members,
        }
    }

    /// The runtime the database runs on, for callers that want to drive `write_async`.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn log(&self) -> &LogStore {
        &self.log
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Takes a snapshot of the applied state now and waits for it to be on disk.
    pub fn snapshot(&self) -> Result<(), StorageError> {
        let last = self.shared.state.read().expect("state lock").last_applied;
        let Some(last) = last else { return Ok(()) };
        let failed = |e: &dyn std::fmt::Display| StorageError::Invalid(format!("snapshot: {e}"));
        self.rt.block_on(async {
            // A trigger is ignored while another snapshot is being built: ask again until one
            // covers `last`.
            for _ in 0..600 {
                self.raft.trigger().snapshot().await.map_err(|e| failed(&e))?;
                let covered = self
                    .raft
                    .wait(Some(Duration::from_secs(1)))
                    .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last.index), "snapshot")
                    .await;
                if covered.is_ok() {
                    return Ok(());
                }
            }
            Err(failed(&"no snapshot after 600 attempts"))
        })
    }

    /// Snapshots (so the next open replays nothing) and shuts down.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.snapshot()?;
        self.closed = true;
        self.rt.block_on(self.raft.shutdown()).map_err(|e| StorageError::Invalid(e.to_string()))?;
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.rt.block_on(self.raft.shutdown());
        }
    }
}

/// A one-node group has no peers to talk to; any attempt is a bug and reports unreachable.
struct NoNetwork;

#[derive(Debug, thiserror::Error)]
#[error("single-node database: node {0} is not reachable")]
struct NoPeer(NodeId);

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NoPeerClient(target)
    }
}

impl Forward for NoNetwork {
    fn forward(&self, leader: NodeId, _node: &BasicNode, _proposal: &Proposal) -> ForwardFuture {
        Box::pin(async move { Err(ForwardError::NotWritten(NoPeer(leader).to_string())) })
    }

    fn read_index(&self, leader: NodeId, _node: &BasicNode) -> cluster::ReadIndexFuture {
        Box::pin(async move { Err(ForwardError::Unreachable(NoPeer(leader).to_string())) })
    }

    fn fetch_record(&self, peer: NodeId, _node: &BasicNode, _index: u64) -> cluster::FetchFuture {
        Box::pin(async move { Err(ForwardError::Unreachable(NoPeer(peer).to_string())) })
    }
}

struct NoPeerClient(NodeId);

impl RaftNetwork<TypeConfig> for NoPeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer(self.0))))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer(self.0))))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer(self.0))))
    }
}
