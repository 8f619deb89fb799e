//! The client side of the Raft port: openraft's transport to the other nodes
//! (`RaftNetworkFactory`) and the forwarding of a follower's writes to the leader
//! (`tally_storage::cluster::Forward`), over one pooled gRPC channel per peer. Requests and
//! answers are postcard-encoded openraft messages in Flight `DoAction` bodies
//! (`raft_service.rs` answers them).
//!
//! Never: send more than `MAX_APPEND_BYTES` of entries in one AppendEntries (a prefix goes,
//! and partial success is reported, so a follower far behind still catches up within each
//! call's time limit), or treat a broken forwarding call as "not written".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use futures::future::{BoxFuture, FutureExt, Shared};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, LogId, Vote};
use serde::de::DeserializeOwned;
use tally_storage::cluster::{
    Change, ChangeError, FetchFuture, Forward, ForwardError, ForwardFuture, ReadIndexFuture,
    MAX_APPEND_BYTES,
};
use tally_storage::payload::Proposal;
use tally_storage::raft::{NodeId, TypeConfig};
use tally_storage::repair::PeerRecord;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

/// Largest gRPC message between nodes: one log record, plus framing.
pub const MAX_MESSAGE_BYTES: usize = tally_storage::log::MAX_RECORD_BYTES + (1 << 20);
/// Header carrying the cluster secret on every call between nodes.
pub const SECRET_HEADER: &str = "x-tally-cluster-secret";
/// How long a new connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the leader may take to commit and apply a forwarded write.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The calls of the Raft port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Append,
    Vote,
    Snapshot,
    Propose,
    ReadIndex,
    Status,
    Change,
    ReadRecord,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::Append,
        Action::Vote,
        Action::Snapshot,
        Action::Propose,
        Action::ReadIndex,
        Action::Status,
        Action::Change,
        Action::ReadRecord,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Append => "raft.append_entries",
            Action::Vote => "raft.vote",
            Action::Snapshot => "raft.install_snapshot",
            Action::Propose => "tally.propose",
            Action::ReadIndex => "tally.read_index",
            Action::Status => "tally.status",
            Action::Change => "tally.change_members",
            Action::ReadRecord => "tally.read_record",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The secret every node of a cluster shares; `None`: none (loopback only).
#[derive(Clone, Default)]
pub struct Secret(Option<Arc<str>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Secret(set)" } else { "Secret(none)" })
    }
}

impl Secret {
    pub fn new(secret: Option<String>) -> Secret {
        Secret(secret.map(Arc::from))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

/// Refuses a call that does not carry this node's secret (compared in constant time).
pub(crate) fn check_secret(secret: &Secret, metadata: &MetadataMap) -> Result<(), Status> {
    let Some(expected) = &secret.0 else { return Ok(()) };
    let given = metadata.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    let same = given.len() == expected.len()
        && given.iter().zip(expected.as_bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Status::unauthenticated("the cluster secret is missing or wrong"))
    }
}

/// Connections to the other nodes, shared by Raft's replication streams and forwarding.
#[derive(Clone)]
pub struct Network {
    secret: Secret,
    /// TLS to the other nodes, trusting these certificates; `None`: plain gRPC.
    tls: Option<ClientTlsConfig>,
    /// Raft's channels, connected lazily (tonic reconnects them).
    channels: Channels,
    /// Forwarding's channels, connected eagerly (see `forwarding`).
    forwarding: Channels,
    /// The address connections to the other nodes come from (`from_address`); `None`: the
    /// system picks.
    local: Option<std::net::IpAddr>,
}

type Channels = Arc<Mutex<HashMap<(NodeId, String), Channel>>>;

impl Network {
    /// Calls between nodes carry `secret`; with `trusted` (PEM certificates: the nodes' shared
    /// certificate or their CA), they go over TLS and a node must present a certificate for
    /// the host name or IP address it is reached at.
    pub fn new(secret: Secret, trusted: Option<&[u8]>) -> Network {
        let tls =
            trusted.map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
        Network { secret, tls, channels: Arc::default(), forwarding: Arc::default(), local: None }
    }

    /// Connections to the other nodes come from `ip` (a node listening on one address of a
    /// host with several talks from that address too, so that peers and firewalls see one
    /// address per node). An unspecified address (`0.0.0.0`, `::`) leaves it to the system.
    pub fn from_address(mut self, ip: std::net::IpAddr) -> Network {
        self.local = (!ip.is_unspecified()).then_some(ip);
        self
    }

    /// Where node `addr` is reached, with this network's TLS.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .local_address(self.local);
        match &self.tls {
            Some(tls) => {
                endpoint.tls_config(tls.clone()).map_err(|e| format!("TLS to {addr}: {e}"))
            }
            None => Ok(endpoint),
        }
    }

    /// The pooled channel to `node` (connected on first use, reconnected by tonic).
    fn peer(&self, target: NodeId, node: &BasicNode) -> Peer {
        let key = (target, node.addr.clone());
        let channel = self.channels.lock().expect("channels lock").get(&key).cloned();
        let channel = channel.unwrap_or_else(|| {
            let endpoint = self.endpoint(&node.addr).unwrap_or_else(|e| {
                tracing::error!("node {target}: {e}");
                Endpoint::from_static("http://invalid.address")
            });
            let channel = endpoint.connect_lazy();
            self.channels.lock().expect("channels lock").insert(key, channel.clone());
            channel
        });
        self.client(target, channel)
    }

    fn client(&self, target: NodeId, channel: Channel) -> Peer {
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Peer { target, client, secret: self.secret.clone(), transfer: None }
    }
}

/// One peer, as openraft's replication and election code talk to it.
pub struct Peer {
    target: NodeId,
    client: FlightServiceClient<Channel>,
    secret: Secret,
    /// The AppendEntries with entries still on its way, if openraft stopped waiting for it.
    transfer: Option<Transfer>,
}

/// The answer to one call: its body, or the gRPC status code and message.
type Answer = Result<Vec<u8>, (tonic::Code, String)>;

/// An AppendEntries carrying entries, sent by a task of its own: openraft limits each call to
/// a heartbeat interval, and a large entry (or a slow disk) can take longer. When openraft
/// gives up and asks again with the same starting point, the call still on its way is awaited
/// instead of sending the entries again, so a follower far behind always catches up.
struct Transfer {
    vote: Vote<NodeId>,
    prev: Option<LogId<NodeId>>,
    last: Option<LogId<NodeId>>,
    answer: Shared<BoxFuture<'static, Answer>>,
}

/// How long one transfer of entries may take, at most.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// One action: its body out, the answer's body back.
async fn call(
    mut client: FlightServiceClient<Channel>,
    secret: Secret,
    action: Action,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, Status> {
    let mut request = tonic::Request::new(arrow_flight::Action {
        r#type: action.name().into(),
        body: body.into(),
    });
    request.set_timeout(timeout);
    if let Some(secret) = &secret.0 {
        let value = MetadataValue::try_from(secret.as_ref())
            .map_err(|_| Status::invalid_argument("the cluster secret must be ASCII"))?;
        request.metadata_mut().insert(SECRET_HEADER, value);
    }
    let mut answers = client.do_action(request).await?.into_inner();
    let answer = answers.message().await?;
    answer.map(|r| r.body.to_vec()).ok_or_else(|| Status::internal("an empty answer"))
}

fn rpc_error<E: std::error::Error>(
    code: tonic::Code,
    message: &str,
) -> RPCError<NodeId, BasicNode, E> {
    let e = Status::new(code, message);
    if code == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl Peer {
    async fn call(
        &mut self,
        action: Action,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        call(self.client.clone(), self.secret.clone(), action, body, timeout).await
    }

    /// An answer's body as openraft's result: the peer's answer or its Raft error.
    // openraft's error types are large; they are what its network trait returns.
    #[allow(clippy::result_large_err)]
    fn result<Resp, E>(&self, answer: Answer) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer = answer.map_err(|(code, message)| rpc_error(code, &message))?;
        let result: Result<Resp, E> =
            postcard::from_bytes(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// A Raft RPC: openraft's request out, its result back.
    async fn rpc<Req, Resp, E>(
        &mut self,
        action: Action,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            postcard::to_stdvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self.call(action, body, option.hard_ttl()).await;
        self.result(answer.map_err(|s| (s.code(), s.message().to_owned())))
    }

    /// The transfer that answers `rpc`: the one on its way when it starts where `rpc` does
    /// and covers no more than it, else a new one.
    #[allow(clippy::result_large_err)]
    fn transfer(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<&Transfer, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let last = rpc.entries.last().map(|e| e.log_id);
        let reuse = self
            .transfer
            .as_ref()
            .is_some_and(|t| t.vote == rpc.vote && t.prev == rpc.prev_log_id && t.last <= last);
        if !reuse {
            let body =
                postcard::to_stdvec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let sending = call(
                self.client.clone(),
                self.secret.clone(),
                Action::Append,
                body,
                TRANSFER_TIMEOUT,
            );
            let task = tokio::spawn(async move {
                sending.await.map_err(|s| (s.code(), s.message().to_owned()))
            });
            let answer: BoxFuture<'static, Answer> = Box::pin(async move {
                task.await.unwrap_or_else(|e| Err((tonic::Code::Internal, e.to_string())))
            });
            self.transfer = Some(Transfer {
                vote: rpc.vote,
                prev: rpc.prev_log_id,
                last,
                answer: answer.shared(),
            });
        }
        Ok(self.transfer.as_ref().expect("a transfer"))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        self.peer(target, node)
    }
}

/// Bytes an entry adds to an AppendEntries request.
fn entry_bytes(payload: &EntryPayload<TypeConfig>) -> usize {
    match payload {
        EntryPayload::Normal(p) => p.as_bytes().len(),
        _ => 256,
    }
}

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        if rpc.entries.is_empty() {
            return self.rpc(Action::Append, &rpc, &option).await;
        }
        let mut bytes = 0;
        let keep = rpc
            .entries
            .iter()
            .take_while(|e| {
                bytes += entry_bytes(&e.payload);
                bytes <= MAX_APPEND_BYTES
            })
            .count()
            .max(1);
        // The last entry openraft handed over: a success for fewer is partial.
        let asked = rpc.entries.last().map(|e| e.log_id);
        rpc.entries.truncate(keep);
        let (answer, sent) = {
            let transfer = self.transfer(&rpc)?;
            (transfer.answer.clone(), transfer.last)
        };
        // openraft may stop waiting here (its time limit); the transfer goes on regardless.
        let answer = answer.await;
        self.transfer = None;
        Ok(match self.result(answer)? {
            // Fewer entries than openraft handed over went (the byte cap, or an earlier
            // transfer answered): the follower holds up to the last one sent.
            AppendEntriesResponse::Success if sent != asked => {
                AppendEntriesResponse::PartialSuccess(sent)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.rpc(Action::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.rpc(Action::Vote, &rpc, &option).await
    }
}

impl Network {
    /// A connected client to the leader for forwarding: an eager connection, so that a leader
    /// that is gone is known before anything is sent (`ForwardError::Unreachable`). A channel
    /// whose call failed is dropped, and the next forward connects afresh.
    async fn forwarding(&self, leader: NodeId, addr: &str) -> Result<Peer, ForwardError> {
        let key = (leader, addr.to_owned());
        let cached = self.forwarding.lock().expect("channels lock").get(&key).cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let endpoint = self.endpoint(addr).map_err(ForwardError::Unreachable)?;
                let channel = endpoint.connect().await.map_err(|e| {
                    ForwardError::Unreachable(format!("node {leader} at {addr}: {e}"))
                })?;
                self.forwarding.lock().expect("channels lock").insert(key, channel.clone());
                channel
            }
        };
        Ok(self.client(leader, channel))
    }
}

impl Network {
    /// One call to node `id` at `addr` over a forwarding channel, its answer decoded. Not
    /// reaching the node is `Unreachable` (nothing was sent); a failed call or an answer that
    /// cannot be read is `Unknown`, and the channel is dropped, so the next call connects
    /// afresh.
    async fn ask<T: DeserializeOwned>(
        &self,
        id: NodeId,
        addr: &str,
        action: Action,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, ForwardError> {
        let mut peer = self.forwarding(id, addr).await?;
        let answer = peer.call(action, body, timeout).await.map_err(|s| {
            self.forwarding.lock().expect("channels lock").remove(&(id, addr.to_owned()));
            ForwardError::Unknown(format!("the call to node {id} failed: {}", s.message()))
        })?;
        postcard::from_bytes(&answer)
            .map_err(|e| ForwardError::Unknown(format!("node {id}'s answer: {e}")))
    }
}

/// For calls that change nothing, a call that failed is as good as one never sent.
fn unreachable(e: ForwardError) -> ForwardError {
    match e {
        ForwardError::Unknown(why) => ForwardError::Unreachable(why),
        other => other,
    }
}

impl Forward for Network {
    fn forward(&self, leader: NodeId, node: &BasicNode, proposal: &Proposal) -> ForwardFuture {
        let body = proposal.as_bytes().to_vec();
        let (this, addr) = (self.clone(), node.addr.clone());
        Box::pin(
            async move { this.ask(leader, &addr, Action::Propose, body, PROPOSE_TIMEOUT).await? },
        )
    }

    fn fetch_record(&self, peer: NodeId, node: &BasicNode, index: u64) -> FetchFuture {
        let (this, addr) = (self.clone(), node.addr.clone());
        Box::pin(async move {
            let body = postcard::to_stdvec(&index)
                .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
            let asked = this.ask(peer, &addr, Action::ReadRecord, body, PROPOSE_TIMEOUT).await;
            let record: Result<Option<PeerRecord>, String> = asked.map_err(unreachable)?;
            record.map_err(ForwardError::Unreachable)
        })
    }

    fn read_index(&self, leader: NodeId, node: &BasicNode) -> ReadIndexFuture {
        let (this, addr) = (self.clone(), node.addr.clone());
        Box::pin(async move {
            let asked = this.ask(leader, &addr, Action::ReadIndex, Vec::new(), CONNECT_TIMEOUT * 5);
            asked.await.map_err(unreachable)?
        })
    }
}

/// `tally cluster status`: node `addr`'s (a Raft address) view of the cluster.
pub async fn cluster_status(
    network: &Network,
    addr: &str,
) -> Result<tally_storage::cluster::Status, String> {
    let asked = network.ask(0, addr, Action::Status, Vec::new(), CONNECT_TIMEOUT * 5).await;
    let status: Result<tally_storage::cluster::Status, ()> =
        asked.map_err(|e| format!("{addr}: {e}"))?;
    status.map_err(|()| format!("{addr}: no status"))
}

/// `tally cluster add|promote|remove`: makes `change` on the leader, found through node
/// `addr`; returns once the new configuration is committed.
pub async fn change_members(network: &Network, addr: &str, change: Change) -> Result<(), String> {
    let mut at = addr.to_owned();
    for _ in 0..=tally_storage::cluster::MAX_HOPS {
        let body = postcard::to_stdvec(&change).map_err(|e| e.to_string())?;
        let asked = network.ask(0, &at, Action::Change, body, PROPOSE_TIMEOUT).await;
        let done: Result<(), ChangeError> = asked.map_err(|e| format!("{at}: {e}"))?;
        match done {
            Ok(()) => return Ok(()),
            Err(ChangeError::NotLeader(Some(leader))) => {
                let status = cluster_status(network, &at).await?;
                let member = status.members.iter().find(|m| m.id == leader);
                at = member.map(|m| m.addr.clone()).ok_or("the leader has no address")?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the leader kept changing; try again".into())
}
