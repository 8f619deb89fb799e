//! The Raft port (default 5435): what the other nodes of a cluster call. It speaks gRPC as
//! Arrow Flight's `DoAction`, one action per call (`raft_network::Action`), bodies as bytes:
//! openraft's AppendEntries, Vote and InstallSnapshot, and `propose`, through which a follower
//! hands the leader the writes it took (`Database::propose`). It only speaks: every decision is
//! openraft's or the database's.
//!
//! Never: answer a caller without the cluster secret (when one is set), or listen beyond
//! loopback without one.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_storage::payload::Proposal;
use tally_storage::Database;
use tonic::{Request, Response, Status, Streaming};

use crate::raft_network::{self, Action, Secret};

/// The Raft service of one node.
#[derive(Clone)]
pub(crate) struct RaftService {
    db: Arc<Database>,
    secret: Secret,
}

impl RaftService {
    pub(crate) fn new(db: Arc<Database>, secret: Secret) -> RaftService {
        RaftService { db, secret }
    }

    pub(crate) fn service(self) -> FlightServiceServer<RaftService> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(raft_network::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(raft_network::MAX_MESSAGE_BYTES)
    }

    async fn act(&self, action: Action, body: &[u8]) -> Result<Vec<u8>, Status> {
        let raft = self.db.raft();
        match action {
            Action::Append => answer(raft.append_entries(decode(body)?).await),
            Action::Vote => answer(raft.vote(decode(body)?).await),
            Action::Snapshot => answer(raft.install_snapshot(decode(body)?).await),
            Action::Propose => answer(self.db.propose(Proposal::from_bytes(body)).await),
            Action::ReadIndex => answer(self.db.read_index().await),
            Action::Status => answer(Ok::<_, ()>(self.db.cluster_status())),
            Action::Change => answer(self.db.change_members(decode(body)?).await),
            Action::ReadRecord => {
                let index: u64 = decode(body)?;
                answer(self.db.peer_record(index).map_err(|e| e.to_string()))
            }
        }
    }
}

/// Where the Raft port listens: without a cluster secret, loopback only.
pub(crate) fn check_listen(addr: SocketAddr, secret: &Secret) -> Result<(), String> {
    if secret.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to take Raft traffic on {addr} without a cluster secret (any machine could \
             write the ledger); give every node the same --cluster-secret-file, or listen on \
             127.0.0.1"
        ));
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(body).map_err(|e| Status::invalid_argument(format!("bad request: {e}")))
}

/// The whole result, error included, goes back as the body: openraft's errors are answers.
fn answer<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Vec<u8>, Status> {
    postcard::to_stdvec(&result).map_err(|e| Status::internal(format!("encoding an answer: {e}")))
}

type Boxed<T> = BoxStream<'static, Result<T, Status>>;

fn not_here<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("{what}: this is a Tally node's Raft port")))
}

#[tonic::async_trait]
impl FlightService for RaftService {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn do_action(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        raft_network::check_secret(&self.secret, request.metadata())?;
        let request = request.into_inner();
        let action = Action::from_name(&request.r#type)
            .ok_or_else(|| Status::unimplemented(format!("no action {:?}", request.r#type)))?;
        let body = self.act(action, &request.body).await?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        not_here("Handshake")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        not_here("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        not_here("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        not_here("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        not_here("GetSchema")
    }

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        not_here("DoGet")
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        not_here("DoPut")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        not_here("DoExchange")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        not_here("ListActions")
    }
}
