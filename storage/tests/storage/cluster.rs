//! Three databases of one cluster in this process, joined by an in-memory Raft network (calls
//! go straight to the target's `Raft` and `Database::propose`): replication, forwarding from
//! followers, and the order of a producer's batches, without processes or sockets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tally_engine::{Datanet, Event};
use tally_storage::cluster::{
    BasicNode, FetchFuture, Forward, ForwardError, ForwardFuture, Node, ReadIndexFuture,
};
use tally_storage::payload::Proposal;
use tally_storage::raft::{NodeId, TypeConfig};
use tally_storage::{Database, Landed, Options, Origin};

/// The databases of the cluster, by node id.
#[derive(Clone, Default)]
struct Net(Arc<Mutex<HashMap<NodeId, Weak<Database>>>>);

#[derive(Debug, thiserror::Error)]
#[error("node {0} is down")]
struct Down(NodeId);

impl Net {
    fn get(&self, id: NodeId) -> Option<Arc<Database>> {
        self.0.lock().unwrap().get(&id).and_then(Weak::upgrade)
    }
}

struct Peer {
    net: Net,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Net {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Peer {
        Peer { net: self.clone(), target }
    }
}

type Rpc<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl Peer {
    // openraft's error types are large; they are what its network trait returns.
    #[allow(clippy::result_large_err)]
    fn db<E: std::error::Error>(&self) -> Rpc<Arc<Database>, E> {
        self.net
            .get(self.target)
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Down(self.target))))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        let db = self.db()?;
        let raft = db.raft().clone();
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let db = self.db()?;
        let raft = db.raft().clone();
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>> {
        let db = self.db()?;
        let raft = db.raft().clone();
        raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl Forward for Net {
    fn forward(&self, leader: NodeId, _node: &BasicNode, proposal: &Proposal) -> ForwardFuture {
        let (db, proposal) = (self.get(leader), Proposal::from_bytes(proposal.as_bytes()));
        Box::pin(async move {
            let db = db.ok_or_else(|| ForwardError::Unreachable(Down(leader).to_string()))?;
            db.propose(proposal).await
        })
    }

    fn fetch_record(&self, peer: NodeId, _node: &BasicNode, index: u64) -> FetchFuture {
        let db = self.get(peer);
        Box::pin(async move {
            let db = db.ok_or_else(|| ForwardError::Unreachable(Down(peer).to_string()))?;
            db.peer_record(index).map_err(|e| ForwardError::Unreachable(e.to_string()))
        })
    }

    fn read_index(&self, leader: NodeId, _node: &BasicNode) -> ReadIndexFuture {
        let db = self.get(leader);
        Box::pin(async move {
            let db = db.ok_or_else(|| ForwardError::Unreachable(Down(leader).to_string()))?;
            db.read_index().await
        })
    }
}

/// A cluster of `size` databases in `root`, once it has a leader.
fn cluster(root: &std::path::Path, size: u64) -> (Net, Vec<Arc<Database>>) {
    cluster_with(root, size, Options::default())
}

fn cluster_with(root: &std::path::Path, size: u64, options: Options) -> (Net, Vec<Arc<Database>>) {
    let net = Net::default();
    let peers: BTreeMap<NodeId, BasicNode> =
        (1..=size).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
    let dbs: Vec<Arc<Database>> = (1..=size)
        .map(|id| {
            let node = Node {
                id,
                peers: peers.clone(),
                network: net.clone(),
                forward: Arc::new(net.clone()),
            };
            let db = Database::open_node(root.join(format!("n{id}")), options.clone(), node);
            let db = Arc::new(db.unwrap());
            net.0.lock().unwrap().insert(id, Arc::downgrade(&db));
            db
        })
        .collect();
    let started = std::time::Instant::now();
    while dbs[0].cluster_status().leader.is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
    (net, dbs)
}

fn datanet(id: &str) -> Vec<Event> {
    vec![Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() })]
}

#[test]
fn a_followers_pipelined_batches_are_applied_once_each_in_order_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_net, dbs) = cluster(dir.path(), 3);
    let leader = dbs[0].cluster_status().leader.unwrap();
    let follower = dbs.iter().find(|d| d.cluster_status().id != leader).unwrap();
    // 200 numbered batches submitted without waiting, through a follower: each must be
    // applied, in order (a batch ahead of its producer's next would be refused).
    let landed = follower.runtime().block_on(async {
        let mut pending = Vec::new();
        for seq in 1..=200u64 {
            let origin = Origin { producer: "p".into(), seq };
            pending.push(
                follower.submit_from(Some(origin), datanet(&format!("d{seq}"))).await.unwrap(),
            );
        }
        let mut landed = Vec::new();
        for p in pending {
            landed.push(follower.finish_from(p).await);
        }
        landed
    });
    for (k, l) in landed.iter().enumerate() {
        assert!(matches!(l, Ok(Landed::Applied(_))), "batch {}: {l:?}", k + 1);
    }
    // Read on the follower right after: it has applied them (it waits for its own apply).
    assert_eq!(follower.read(|l| l.last_lsn()), 200);
    let started = std::time::Instant::now();
    while dbs.iter().any(|d| d.read(|l| l.last_lsn()) < 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "not replicated");
        std::thread::sleep(Duration::from_millis(20));
    }
    let digests: Vec<_> = dbs.iter().map(|d| d.read(|l| l.digest())).collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "the replicas differ");
    assert!(dbs.iter().all(|d| d.producer_seq("p") == Some(200)));
    // A resent batch, through another node, is a duplicate everywhere.
    let other = dbs.iter().find(|d| !Arc::ptr_eq(d, follower)).unwrap();
    let again = other.runtime().block_on(async {
        let origin = Origin { producer: "p".into(), seq: 190 };
        let p = other.submit_from(Some(origin), datanet("d190")).await.unwrap();
        other.finish_from(p).await
    });
    assert!(matches!(again, Ok(Landed::Duplicate(Some(_)))), "{again:?}");
}

#[test]
fn a_linearizable_read_on_a_follower_sees_a_write_made_on_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (_net, dbs) = cluster(dir.path(), 3);
    let leader_id = dbs[0].cluster_status().leader.unwrap();
    let leader = &dbs[leader_id as usize - 1];
    let follower = dbs.iter().find(|d| d.cluster_status().id != leader_id).unwrap();
    for k in 0..20 {
        leader.write(datanet(&format!("x{k}"))).unwrap();
        follower.runtime().block_on(follower.linearize()).unwrap();
        assert_eq!(follower.read(|l| l.last_lsn()), k + 1);
    }
}

/// `batches` batches of `size` datanets `{prefix}-{k}-{j}`.
fn write_datanets(db: &Database, prefix: &str, batches: usize, size: usize) {
    for k in 0..batches {
        let batch: Vec<Event> = (0..size)
            .map(|j| {
                Event::Datanet(Datanet {
                    datanet: format!("{prefix}-{k}-{j}").into(),
                    owner: "o".into(),
                })
            })
            .collect();
        db.write(batch).unwrap();
    }
}

/// 40 batches of 50 datanets: 2,000 events, enough to seal a 64 KiB segment.
fn write_2000_datanets(db: &Database) {
    write_datanets(db, "d", 40, 50);
}

/// Damage at rest: one bit flipped in the middle of sealed segment `path`'s records, in place
/// (the file keeps its size: the running node has it mapped).
fn flip_a_bit(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 0).unwrap();
    let end = u64::from_le_bytes(header[24..32].try_into().unwrap());
    assert!(end > 1024, "the segment is sealed and holds records");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, (64 + end) / 2).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], (64 + end) / 2).unwrap();
    file.sync_all().unwrap();
}

/// Waits until `db` has applied `lsn`.
fn wait_for_lsn(db: &Database, lsn: u64) {
    let started = std::time::Instant::now();
    while db.read(|l| l.last_lsn()) < lsn {
        assert!(started.elapsed() < Duration::from_secs(30), "not replicated");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_damaged_record_in_a_sealed_segment_is_repaired_from_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() };
    let (_net, dbs) = cluster_with(dir.path(), 3, options);
    let leader_id = dbs[0].cluster_status().leader.unwrap();
    let leader = &dbs[leader_id as usize - 1];
    write_2000_datanets(leader);
    let follower = dbs.iter().find(|d| d.cluster_status().id != leader_id).unwrap();
    wait_for_lsn(follower, 2000);
    // Damage at rest: one bit of a record in the follower's first (sealed) segment.
    let id = follower.cluster_status().id;
    let first = dir.path().join(format!("n{id}/log")).join(tally_storage::segment::file_name(0));
    flip_a_bit(&first);
    assert!(follower.log().with_log(|l| l.verify_sealed()).is_err(), "the damage is there");
    assert_eq!(follower.repair().unwrap(), 1);
    assert!(follower.log().with_log(|l| l.verify_sealed()).is_ok());
    assert_eq!(follower.repair().unwrap(), 0, "nothing left to repair");
    // A read that runs into damage has it repaired at once, and goes on: every event once.
    flip_a_bit(&first);
    let mut lsns = Vec::new();
    follower.scan_events(1, 2000, |e| lsns.push(e.lsn)).unwrap();
    assert_eq!(lsns, (1..=2000).collect::<Vec<u64>>());
    assert!(follower.log().with_log(|l| l.verify_sealed()).is_ok(), "repaired by the read");
    // A lone node cannot: it says so, naming the record.
    let lone_dir = tempfile::tempdir().unwrap();
    let lone = Database::open_with(
        lone_dir.path(),
        Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() },
    )
    .unwrap();
    write_2000_datanets(&lone);
    let first = lone_dir.path().join("log").join(tally_storage::segment::file_name(0));
    flip_a_bit(&first);
    let err = lone.repair().unwrap_err().to_string();
    assert!(err.contains("lone node") && err.contains("tally salvage"), "{err}");
}

#[test]
fn bits_flipped_in_a_followers_sealed_segments_under_load_are_healed_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() };
    let (_net, dbs) = cluster_with(dir.path(), 3, options);
    let leader_id = dbs[0].cluster_status().leader.unwrap();
    let leader = dbs[leader_id as usize - 1].clone();
    write_2000_datanets(&leader);
    write_datanets(&leader, "e", 80, 50);
    let follower = dbs.iter().find(|d| d.cluster_status().id != leader_id).unwrap().clone();
    wait_for_lsn(&follower, 6000);
    // Writes go on through the follower (forwarded) while its sealed segments rot.
    let writing = {
        let follower = follower.clone();
        std::thread::spawn(move || {
            write_datanets(&follower, "l", 40, 25);
        })
    };
    let sealed: Vec<_> = follower.log().with_log(|l| {
        l.segments().iter().filter(|s| s.sealed.is_some()).map(|s| s.path.clone()).collect()
    });
    assert!(sealed.len() >= 3, "{} sealed segments", sealed.len());
    for path in sealed.iter().step_by(2) {
        flip_a_bit(path);
        // Each read that meets the damage repairs it and answers in full: every event once.
        let mut lsns = Vec::new();
        follower.scan_events(1, u64::MAX, |e| lsns.push(e.lsn)).unwrap();
        assert!(lsns.len() >= 6000 && lsns.iter().zip(1..).all(|(l, n)| *l == n), "{lsns:?}");
    }
    writing.join().unwrap();
    // A flip that fell into padding between records is no read's business: the repair
    // reseals such a segment.
    follower.repair().unwrap();
    assert!(follower.log().with_log(|l| l.verify_sealed()).is_ok());
    let digests: Vec<_> = dbs
        .iter()
        .map(|d| {
            wait_for_lsn(d, 7000);
            d.read(|l| l.digest())
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "the replicas differ");
    let mut lsns = Vec::new();
    follower.scan_events(1, 7000, |e| lsns.push(e.lsn)).unwrap();
    assert_eq!(lsns, (1..=7000).collect::<Vec<u64>>(), "every event once, none lost");
}

#[test]
fn a_node_restarted_with_a_damaged_sealed_segment_repairs_it_before_raft_starts() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() };
    let (net, mut dbs) = cluster_with(dir.path(), 3, options.clone());
    let leader_id = dbs[0].cluster_status().leader.unwrap();
    write_2000_datanets(&dbs[leader_id as usize - 1]);
    let f = dbs.iter().position(|d| d.cluster_status().id != leader_id).unwrap();
    let id = dbs[f].cluster_status().id;
    let started = std::time::Instant::now();
    while dbs[f].read(|l| l.last_lsn()) < 2000 {
        assert!(started.elapsed() < Duration::from_secs(30), "not replicated");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The network upgrades its weak handle while it delivers a message: wait for the moment
    // none is in flight.
    let mut handle = dbs.remove(f);
    let follower = loop {
        match Arc::try_unwrap(handle) {
            Ok(db) => break db,
            Err(back) => handle = back,
        }
        assert!(started.elapsed() < Duration::from_secs(60), "another handle stays");
        std::thread::sleep(Duration::from_millis(5));
    };
    follower.close().unwrap();
    let first = dir.path().join(format!("n{id}/log")).join(tally_storage::segment::file_name(0));
    flip_a_bit(&first);
    let peers: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
    let node = Node { id, peers, network: net.clone(), forward: Arc::new(net.clone()) };
    let db =
        Arc::new(Database::open_node(dir.path().join(format!("n{id}")), options, node).unwrap());
    net.0.lock().unwrap().insert(id, Arc::downgrade(&db));
    assert!(db.log().with_log(|l| l.verify_sealed()).is_ok(), "repaired at open");
    let mut seen = 0;
    db.scan_events(1, 2000, |_| seen += 1).unwrap();
    assert_eq!(seen, 2000);
}
