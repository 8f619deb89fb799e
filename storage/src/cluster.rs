//! How a database takes part in a Raft cluster of `tally serve` nodes: who the node is, who its
//! first peers are, the Raft timing, and what the network layer (in `tally-server`) provides:
//! the Raft transport (openraft's `RaftNetworkFactory`) and `Forward`, which carries a
//! follower's writes to the leader. Storage never opens a socket; it only calls these.
//!
//! Never: retry a forwarded write whose outcome is unknown (it may have been applied: a retry
//! could apply it twice); only a definite "not the leader" is tried again, a bounded number of
//! times.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use openraft::BasicNode;
use openraft::{Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::payload::{Outcomes, Proposal};
use crate::raft::NodeId;

/// Node ids and their Raft addresses.
pub type Members = BTreeMap<NodeId, BasicNode>;

/// This node's part in a cluster (`Database::open_node`).
pub struct Node<N> {
    pub id: NodeId,
    /// The voters the cluster is first formed of, each with its Raft address. Every node is
    /// started with the same set; the one with the lowest id initialises the cluster, once.
    pub peers: Members,
    /// The Raft transport.
    pub network: N,
    /// Carries writes made on this node to the leader when this node is not the leader.
    pub forward: std::sync::Arc<dyn Forward>,
}

/// What forwarding returns: a boxed future, so the trait stays object-safe.
pub type ForwardFuture =
    Pin<Box<dyn Future<Output = Result<Forwarded, ForwardError>> + Send + 'static>>;

/// Sends a proposal to the leader, which appends it to the replicated log and answers with the
/// log index it got and each batch's outcome (`Database::propose` on the leader).
pub trait Forward: Send + Sync + 'static {
    /// `proposal` is read before this returns (the future owns what it sends).
    fn forward(&self, leader: NodeId, node: &BasicNode, proposal: &Proposal) -> ForwardFuture;

    /// Asks the leader for its read index: the log index every linearizable read must wait
    /// for (`Database::read_index` on the leader).
    fn read_index(&self, leader: NodeId, node: &BasicNode) -> ReadIndexFuture;

    /// Asks member `peer` for its copy of log record `index`, to repair a damaged one here
    /// (`Database::peer_record` there).
    fn fetch_record(&self, peer: NodeId, node: &BasicNode, index: u64) -> FetchFuture;
}

/// What fetching a peer's record returns (`None`: the peer does not hold it).
pub type FetchFuture = Pin<
    Box<
        dyn Future<Output = Result<Option<crate::repair::PeerRecord>, ForwardError>>
            + Send
            + 'static,
    >,
>;

/// What asking for the read index returns.
pub type ReadIndexFuture =
    Pin<Box<dyn Future<Output = Result<u64, ForwardError>> + Send + 'static>>;

/// A forwarded proposal's result on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    /// The log index of the entry: the follower waits until it has applied it too.
    pub index: u64,
    pub outcomes: Outcomes,
}

/// Why a forwarded proposal has no result.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ForwardError {
    /// The node asked is not the leader (it names the one it knows, if any); nothing was
    /// written, so the proposal may go to that one.
    #[error("node is not the leader (the leader it knows: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The leader could not be reached: nothing was sent.
    #[error("the leader could not be reached: {0}")]
    Unreachable(String),
    /// Nothing was written (the leader's disk is full, the proposal is malformed, …).
    #[error("{0}")]
    NotWritten(String),
    /// The proposal may or may not have been applied (the connection broke, the leader lost
    /// its leadership while committing, …).
    #[error("{0}")]
    Unknown(String),
}

/// Times a follower's write goes to a node that turned out not to be the leader, at most.
pub const MAX_HOPS: usize = 3;
/// How long a write waits for the cluster to have a leader before it is refused.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a follower waits to apply an entry the leader committed for it (after that the
/// write's outcome is reported unknown: it is committed, but this node is behind).
pub const APPLY_WAIT: Duration = Duration::from_secs(30);

/// Leader heartbeat, in milliseconds. openraft also uses it as the time limit of one
/// AppendEntries call; a call carrying entries that takes longer goes on in the background and
/// answers openraft's next try (the network layer's `Transfer`), so large entries and slow
/// disks never keep a follower from catching up.
pub const HEARTBEAT_MS: u64 = 100;
/// A follower that hears nothing from a leader for this long (randomised up to twice it)
/// starts an election: the bound on how long a dead leader goes unnoticed.
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Entries one AppendEntries request carries at most, before the byte cap below.
pub const MAX_APPEND_ENTRIES: u64 = 64;
/// Bytes of entries one AppendEntries request carries at most (the network layer sends a
/// prefix and reports partial success); a larger single entry goes alone.
pub const MAX_APPEND_BYTES: usize = 16 << 20;

/// Raft's configuration for a node of a cluster. The log is never purged (every node keeps
/// every event), so a follower that is behind, or joins late, always gets log entries, never a
/// snapshot with a gap before it.
pub(crate) fn config() -> Result<Config, String> {
    Config {
        cluster_name: "tally".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS,
        election_timeout_max: 2 * ELECTION_TIMEOUT_MS,
        max_payload_entries: MAX_APPEND_ENTRIES,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        install_snapshot_timeout: 60_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

/// A learner is promoted only when it is at most this many log entries behind the leader.
pub const MAX_PROMOTE_LAG: u64 = 16;

/// A change of the cluster's members (`tally cluster add|promote|remove`), made on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    /// Adds a node as a learner: it receives the whole log, and votes only once promoted.
    Add { id: NodeId, addr: String },
    /// Makes a learner that has caught up a voter.
    Promote { id: NodeId },
    /// Removes a node (voter or learner) from the cluster.
    Remove { id: NodeId },
}

/// Why a change was not made.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ChangeError {
    /// Changes are made on the leader; this node knows this one (or none).
    #[error("this node is not the leader (the leader it knows: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("{0}")]
    Refused(String),
}

/// A node's role as the cluster table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not (or no longer) a member of the cluster's configuration.
    Outside,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Outside => "outside",
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    /// Votes in elections and counts for commits (else a learner).
    pub voter: bool,
    /// The last log index the leader knows this member holds (only on the leader).
    pub matched: Option<u64>,
}

/// This node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The ledger's last lsn on this node.
    pub applied_lsn: u64,
    pub members: Vec<Member>,
}
