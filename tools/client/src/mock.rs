//! An in-process ingest endpoint for tests (this crate's, and `tally ingest`'s through the
//! `mock-server` feature): it speaks the protocol the real server speaks (Basic → Bearer
//! handshake, `DoPut` with the producer header, one acknowledgement per batch, duplicates by
//! (producer, seq)), keeps what it applied in memory, and fails on request, so that retries and
//! refusals can be tested without a node. It must never be used outside tests: it validates
//! nothing but the protocol.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::utils::flight_data_to_arrow_batch;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::{Schema, SchemaRef};
use base64::Engine as _;
use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::SinkExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::{Ack, DRY_RUN_HEADER, PRODUCER_HEADER};

/// A failure to inject, used once, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// In the next stream, after acknowledging this many batches, apply the next one and then
    /// fail the stream (`Unavailable`) without acknowledging it: an acknowledgement lost.
    LoseAckAfter(usize),
    /// Refuse the batch with this seq, naming this 1-based row (`InvalidArgument`, 22023).
    Refuse { seq: u64, row: u64 },
}

/// A batch the mock applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedBatch {
    pub producer: String,
    pub table: String,
    pub seq: u64,
    pub rows: u64,
    /// Column names of the batch's schema.
    pub columns: Vec<String>,
}

#[derive(Default)]
struct State {
    credentials: Option<(String, String)>,
    last_seq: HashMap<String, u64>,
    lsns: HashMap<(String, u64), (u64, u64)>,
    next_lsn: u64,
    applied: Vec<AppliedBatch>,
    faults: VecDeque<Fault>,
    streams: usize,
}

type Shared = Arc<Mutex<State>>;

/// A running mock endpoint; stops when dropped.
pub struct MockServer {
    pub addr: SocketAddr,
    state: Shared,
    _stop: futures::channel::oneshot::Sender<()>,
}

const TOKEN: &str = "Bearer mock-token";

impl MockServer {
    /// Starts on a free loopback port; with `credentials`, calls need the handshake's token.
    pub async fn start(credentials: Option<(&str, &str)>) -> MockServer {
        let state: Shared = Arc::new(Mutex::new(State {
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            next_lsn: 1,
            ..State::default()
        }));
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .expect("binding a loopback port");
        let addr = incoming.local_addr().expect("a bound address");
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let service = FlightServiceServer::new(Mock { state: state.clone() })
            .max_decoding_message_size(usize::MAX);
        tokio::spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = stopped.await;
                },
            ),
        );
        MockServer { addr, state, _stop: stop }
    }

    /// Queues a failure.
    pub fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// What was applied, in order.
    pub fn applied(&self) -> Vec<AppliedBatch> {
        self.state.lock().unwrap().applied.clone()
    }

    /// `DoPut` calls accepted so far.
    pub fn streams(&self) -> usize {
        self.state.lock().unwrap().streams
    }
}

struct Mock {
    state: Shared,
}

impl Mock {
    fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let needs_token = self.state.lock().unwrap().credentials.is_some();
        let given = metadata.get("authorization").and_then(|v| v.to_str().ok());
        if needs_token && given != Some(TOKEN) {
            return Err(Status::unauthenticated("mock: no valid token"));
        }
        Ok(())
    }
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("mock: only Handshake and DoPut"))
}

#[tonic::async_trait]
impl FlightService for Mock {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = mpsc::Receiver<Result<PutResult, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let expected = self.state.lock().unwrap().credentials.clone();
        let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let basic = given
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        let (user, password) = expected.unwrap_or_default();
        if basic.as_deref() != Some(format!("{user}:{password}").as_bytes()) {
            return Err(Status::unauthenticated("mock: wrong user or password"));
        }
        let answer = HandshakeResponse { protocol_version: 0, payload: Default::default() };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(answer)])) as _);
        response.metadata_mut().insert("authorization", TOKEN.parse().unwrap());
        Ok(response)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.check(request.metadata())?;
        let header = |name: &str| {
            request.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let producer = header(PRODUCER_HEADER)
            .ok_or_else(|| Status::invalid_argument("mock: no producer header"))?;
        let dry_run = header(DRY_RUN_HEADER).as_deref() == Some("true");
        let mut input = request.into_inner();
        let first =
            input.message().await?.ok_or_else(|| Status::invalid_argument("mock: empty"))?;
        let table = match &first.flight_descriptor {
            Some(FlightDescriptor { path, .. }) if path.len() == 1 => path[0].clone(),
            _ => {
                return Err(Status::invalid_argument("mock: the descriptor must be a path [table]"))
            }
        };
        let schema: SchemaRef = Arc::new(
            Schema::try_from(&first).map_err(|e| Status::invalid_argument(e.to_string()))?,
        );
        let (tx, rx) = mpsc::channel(16);
        let stream = Stream { state: self.state.clone(), producer, table, schema, dry_run };
        self.state.lock().unwrap().streams += 1;
        tokio::spawn(stream.run(input, tx));
        Ok(Response::new(rx))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented()
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented()
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented()
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented()
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        unimplemented()
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented()
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented()
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented()
    }
}

/// One `DoPut` call being served.
struct Stream {
    state: Shared,
    producer: String,
    table: String,
    schema: SchemaRef,
    dry_run: bool,
}

impl Stream {
    async fn run(
        self,
        mut input: Streaming<FlightData>,
        mut out: mpsc::Sender<Result<PutResult, Status>>,
    ) {
        let fault = self.state.lock().unwrap().faults.pop_front();
        let mut acknowledged = 0;
        loop {
            let answer = match input.message().await {
                Ok(None) => return,
                Ok(Some(data)) => self.batch(&data, fault, acknowledged),
                Err(status) => Err(status),
            };
            let failed = answer.is_err();
            if out.send(answer).await.is_err() || failed {
                return;
            }
            acknowledged += 1;
        }
    }

    /// Applies one batch (or finds it a duplicate) and words its acknowledgement.
    fn batch(
        &self,
        data: &FlightData,
        fault: Option<Fault>,
        acknowledged: usize,
    ) -> Result<PutResult, Status> {
        let seq = Ack::parse(&data.app_metadata)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .seq;
        let batch = flight_data_to_arrow_batch(data, self.schema.clone(), &HashMap::new())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(Fault::Refuse { seq: refused, row }) = fault {
            if refused == seq {
                return Err(Status::invalid_argument(format!(
                    "batch {seq}, row {row}: field fee = \"x\": mock refusal (SQLSTATE 22023)"
                )));
            }
        }
        let rows = batch.num_rows() as u64;
        let mut state = self.state.lock().unwrap();
        let key = (self.producer.clone(), seq);
        let last = state.last_seq.get(&self.producer).copied().unwrap_or(0);
        let (lsns, duplicate) = if seq <= last {
            (state.lsns.get(&key).copied(), true)
        } else if self.dry_run {
            (None, false)
        } else {
            let first = state.next_lsn;
            state.next_lsn += rows.max(1);
            state.last_seq.insert(self.producer.clone(), seq);
            state.lsns.insert(key, (first, first + rows.max(1) - 1));
            let columns = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
            let (producer, table) = (self.producer.clone(), self.table.clone());
            state.applied.push(AppliedBatch { producer, table, seq, rows, columns });
            (Some((first, first + rows.max(1) - 1)), false)
        };
        if fault == Some(Fault::LoseAckAfter(acknowledged)) {
            return Err(Status::unavailable(
                "mock: the connection dropped before the acknowledgement",
            ));
        }
        let lsn = |l: Option<u64>| l.map_or("null".to_string(), |l| l.to_string());
        let json = format!(
            r#"{{"seq":{seq},"rows":{rows},"first_lsn":{},"last_lsn":{},"duplicate":{duplicate},"dry_run":{}}}"#,
            lsn(lsns.map(|l| l.0)),
            lsn(lsns.map(|l| l.1)),
            self.dry_run
        );
        Ok(PutResult { app_metadata: json.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientError, ConnectOptions, IngestClient, Outbox, PutOptions, PutStream};
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("inference", DataType::Utf8, true),
            Field::new("fee", DataType::Int64, true),
        ]))
    }

    fn batch(seq: u64, rows: usize) -> RecordBatch {
        let ids: Vec<String> = (0..rows).map(|i| format!("inf-{seq}-{i}")).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| i * 10))),
            ],
        )
        .unwrap()
    }

    async fn connect(
        server: &MockServer,
        password: Option<&str>,
    ) -> Result<IngestClient, ClientError> {
        let options = ConnectOptions {
            user: "alice".into(),
            password: password.map(str::to_string),
            ..ConnectOptions::default()
        };
        IngestClient::connect(&server.addr.to_string(), options).await
    }

    /// Sends every unsent batch of the outbox, then reads acknowledgements until the stream
    /// fails or everything is acknowledged.
    async fn drain(
        put: &mut PutStream,
        outbox: &mut Outbox<RecordBatch>,
    ) -> Result<Vec<Ack>, ClientError> {
        let mut acks = Vec::new();
        while let Some((seq, batch)) = outbox.next_to_send() {
            acks.extend(put.send(seq, batch).await?);
        }
        for ack in &acks {
            outbox.acknowledge(ack.seq).unwrap();
        }
        while let Some(ack) = put.next_ack().await? {
            outbox.acknowledge(ack.seq).unwrap();
            acks.push(ack);
        }
        Ok(acks)
    }

    #[tokio::test]
    async fn batches_are_acknowledged_in_order_within_the_window() {
        let server = MockServer::start(Some(("alice", "pw"))).await;
        let mut client = connect(&server, Some("pw")).await.unwrap();
        assert!(client.is_authenticated());
        let options = PutOptions { max_in_flight: 2, ..PutOptions::new("p-1") };
        let mut put = client.put("inferences", schema(), &options).await.unwrap();
        let mut acks = Vec::new();
        for seq in 1..=10 {
            acks.extend(put.send(seq, &batch(seq, 100)).await.unwrap());
            assert!(put.in_flight() <= 2);
        }
        acks.extend(put.finish().await.unwrap());
        assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
        assert!(acks.iter().all(|a| a.rows == 100 && !a.duplicate));
        assert_eq!((acks[0].first_lsn, acks[9].last_lsn), (Some(1), Some(1000)));
        let applied = server.applied();
        assert_eq!(applied.len(), 10);
        assert_eq!(
            (applied[0].producer.as_str(), applied[0].table.as_str()),
            ("p-1", "inferences")
        );
        assert_eq!(applied[0].columns, vec!["inference", "fee"]);
    }

    #[tokio::test]
    async fn credentials_are_checked() {
        let server = MockServer::start(Some(("alice", "pw"))).await;
        let wrong = connect(&server, Some("nope")).await.unwrap_err();
        assert!(matches!(wrong, ClientError::Auth { .. }) && !wrong.is_retryable(), "{wrong}");
        // Without a password nothing is sent on connect; the first call is refused.
        let mut client = connect(&server, None).await.unwrap();
        let err = client.put("inferences", schema(), &PutOptions::new("p")).await.unwrap_err();
        assert!(matches!(err, ClientError::Auth { .. }), "{err}");
        let err = client.put("events", schema(), &PutOptions::new("p")).await.unwrap_err();
        assert!(matches!(err, ClientError::Table(_)), "{err}");
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_sqlstate_and_the_batches_before_it() {
        let server = MockServer::start(None).await;
        server.fault(Fault::Refuse { seq: 3, row: 2 });
        let mut client = connect(&server, None).await.unwrap();
        let mut put = client.put("inferences", schema(), &PutOptions::new("p-2")).await.unwrap();
        let mut outbox = Outbox::new(8);
        for seq in 1..=5 {
            outbox.push(seq, batch(seq, 3)).unwrap();
        }
        let err = drain(&mut put, &mut outbox).await.unwrap_err();
        let refusal = err.refusal().expect("a refusal");
        assert_eq!((refusal.seq, refusal.row), (Some(3), Some(2)));
        assert_eq!(refusal.sqlstate.as_deref(), Some("22023"));
        assert_eq!(outbox.oldest().map(|o| o.0), Some(3));
        let applied: Vec<u64> = server.applied().iter().map(|b| b.seq).collect();
        assert_eq!(applied, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_is_resent_and_comes_back_duplicate() {
        let server = MockServer::start(None).await;
        server.fault(Fault::LoseAckAfter(2));
        let mut client = connect(&server, None).await.unwrap();
        let options = PutOptions::new("p-3");
        let mut outbox = Outbox::new(8);
        for seq in 1..=5 {
            outbox.push(seq, batch(seq, 4)).unwrap();
        }
        let mut put = client.put("inferences", schema(), &options).await.unwrap();
        let err = drain(&mut put, &mut outbox).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        // 3 was applied but its acknowledgement lost; 4 and 5 never reached the ledger.
        assert_eq!(outbox.rewind(), 3);
        let mut put = client.put("inferences", schema(), &options).await.unwrap();
        let acks = drain(&mut put, &mut outbox).await.unwrap();
        put.finish().await.unwrap();
        let seen: Vec<(u64, bool)> = acks.iter().map(|a| (a.seq, a.duplicate)).collect();
        assert_eq!(seen, vec![(3, true), (4, false), (5, false)]);
        assert_eq!((acks[0].first_lsn, acks[0].last_lsn), (Some(9), Some(12)));
        let applied: Vec<u64> = server.applied().iter().map(|b| b.seq).collect();
        assert_eq!(applied, vec![1, 2, 3, 4, 5]);
        assert_eq!(server.streams(), 2);
    }

    #[tokio::test]
    async fn a_dry_run_appends_nothing() {
        let server = MockServer::start(None).await;
        let mut client = connect(&server, None).await.unwrap();
        let options = PutOptions { dry_run: true, ..PutOptions::new("p-4") };
        let mut put = client.put("inferences", schema(), &options).await.unwrap();
        let mut acks = put.send(1, &batch(1, 5)).await.unwrap();
        acks.extend(put.finish().await.unwrap());
        assert!(acks[0].dry_run && acks[0].first_lsn.is_none());
        assert!(server.applied().is_empty());
    }
}
