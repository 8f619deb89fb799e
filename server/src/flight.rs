//! Streaming ingest over Arrow Flight: `DoPut` of record batches into one write table, each
//! batch one atomic ledger batch, acknowledged once durable and applied (docs/ingest.md). It
//! only speaks the protocol: rows → events → ledger is `tally_query`'s path
//! (`Sql::submit_batch`), with the same checks and SQLSTATEs as SQL, and exactly-once is the
//! replicated producer table's (`tally_storage::producers`).
//!
//! A stream is read and acknowledged concurrently (a client may wait for each ack before
//! sending on), and never buffered without bound: at most `BATCHES_IN_FLIGHT` batches per
//! stream and `BYTES_IN_FLIGHT` bytes over all streams wait for the ledger, and at most
//! `MAX_STREAMS` streams run at once. Every other Flight call is refused as unimplemented.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tally_query::{DryRun, PendingBatch, QueryError, Sql};
use tally_storage::{Landed, Origin};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::tokens::Auth;

/// The address streaming ingest listens on unless told otherwise (surface.md).
pub const DEFAULT_INGEST_LISTEN: &str = "127.0.0.1:5434";
/// `DoPut` streams at once; more are refused (RESOURCE_EXHAUSTED: retry later). Streams wait
/// for room in `BYTES_IN_FLIGHT` before reading each message, so memory does not grow with it.
pub const MAX_STREAMS: usize = 64;
/// Batches of one stream handed to the ledger and not yet acknowledged. At most the
/// acknowledgements a producer keeps, so every batch a client may have to resend after a
/// broken stream is answered with its lsns.
pub const BATCHES_IN_FLIGHT: usize = 16;
/// Bytes of batches being read or waiting for the ledger, over all streams: with
/// `MAX_MESSAGE_BYTES` reserved per message being read, at most 3 streams read at once while
/// 256 MiB batches wait, and many more with everyday batches of a few MiB.
pub const BYTES_IN_FLIGHT: usize = 1 << 30;
/// Largest gRPC message: a batch of surface.md's 256 MiB, plus its framing.
pub const MAX_MESSAGE_BYTES: usize = (256 << 20) + (1 << 20);
/// The longest a stream may go without sending a message; then it is ended
/// (DEADLINE_EXCEEDED), so that silent streams cannot hold the stream slots.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Header naming the producer (an id of the ledger's alphabet).
pub const PRODUCER_HEADER: &str = "x-tally-producer";
/// Header asking for a dry run (`true`): batches are checked, nothing is appended.
pub const DRY_RUN_HEADER: &str = "x-tally-dry-run";

const _: () = assert!(BATCHES_IN_FLIGHT <= tally_storage::producers::ACKS_KEPT);
const _: () = assert!(MAX_MESSAGE_BYTES <= BYTES_IN_FLIGHT && BYTES_IN_FLIGHT <= u32::MAX as usize);

/// The Flight service.
#[derive(Clone)]
pub(crate) struct Ingest {
    sql: Sql,
    auth: Arc<Auth>,
    streams: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// What one `DoPut` stream is: its table, producer and mode.
struct Put {
    table: String,
    producer: String,
    dry_run: Option<DryRun>,
}

/// A batch handed to the ledger, waiting for its acknowledgement.
struct InFlight {
    seq: u64,
    rows: u64,
    landing: Landing,
    _bytes: OwnedSemaphorePermit,
}

enum Landing {
    Write(PendingBatch),
    Checked,
}

type Acks = mpsc::Sender<Result<PutResult, Status>>;
type Input = BoxStream<'static, Result<FlightData, Status>>;

impl Ingest {
    pub fn new(sql: Sql, auth: Arc<Auth>) -> Ingest {
        Ingest {
            sql,
            auth,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            bytes: Arc::new(Semaphore::new(BYTES_IN_FLIGHT)),
        }
    }

    /// The tonic service, with the message size limit.
    pub fn service(self) -> FlightServiceServer<Ingest> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(1 << 20)
    }

    /// Reads the stream's batches and hands them to the ledger; a second task acknowledges
    /// them in order. A refusal ends the stream after the acknowledgements before it.
    async fn receive(self, input: Input, mut put: Put, acks: Acks) {
        let (in_flight, landing) = mpsc::channel::<InFlight>(BATCHES_IN_FLIGHT);
        let mut acker = tokio::spawn(acknowledge(self.sql.clone(), landing, acks.clone()));
        let joined = |j: Result<_, tokio::task::JoinError>| {
            j.unwrap_or_else(|e| Err(Status::internal(e.to_string())))
        };
        let read = self.read(input, &mut put, in_flight);
        let ended = tokio::select! {
            // A refusal found when a batch lands is answered at once, and reading stops:
            // the client may be waiting for acknowledgements before it ends its input.
            acked = &mut acker => joined(acked),
            read = read => {
                let acked = joined(acker.await);
                acked.and(read)
            }
        };
        if let Err(status) = ended {
            let _ = acks.send(Err(status)).await;
        }
    }

    async fn read(
        &self,
        input: Input,
        put: &mut Put,
        in_flight: mpsc::Sender<InFlight>,
    ) -> Result<(), Status> {
        let mut decoder = FlightDataDecoder::new(input.map(|r| r.map_err(FlightError::from)));
        let mut last_seq = 0u64;
        loop {
            // Room for the largest message is reserved before reading one, and what the
            // message does not use is given back: memory for batches read and not yet
            // acknowledged stays within BYTES_IN_FLIGHT over all streams.
            let reserved = self.bytes.clone().acquire_many_owned(MAX_MESSAGE_BYTES as u32).await;
            let mut reserved =
                reserved.map_err(|_| Status::unavailable("the server is shutting down"))?;
            let Some(data) = idle_limited(decoder.next()).await? else { break };
            let data =
                data.map_err(|e| Status::invalid_argument(format!("bad Flight data: {e}")))?;
            let DecodedPayload::RecordBatch(batch) = data.payload else { continue };
            let seq = batch_seq(&data.inner.app_metadata, last_seq)?;
            last_seq = seq;
            let size = data.inner.data_body.len() + data.inner.data_header.len();
            let bytes = reserved.split(size.clamp(1, MAX_MESSAGE_BYTES)).expect("reserved");
            let refused = |e: QueryError| refusal(seq, e);
            let rows = batch.num_rows() as u64;
            let landing = match &mut put.dry_run {
                Some(dry) => {
                    self.sql.dry_run_batch(dry, &put.table, &batch).map_err(refused)?;
                    Landing::Checked
                }
                None => {
                    let origin = Origin { producer: put.producer.clone(), seq };
                    let pending = self.sql.submit_batch(origin, &put.table, &batch).await;
                    Landing::Write(pending.map_err(refused)?)
                }
            };
            let item = InFlight { seq, rows, landing, _bytes: bytes };
            if in_flight.send(item).await.is_err() {
                // The acknowledger stopped at a refusal: it answers the stream.
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Acknowledges batches in order as they land; stops at the first refusal.
async fn acknowledge(
    sql: Sql,
    mut landing: mpsc::Receiver<InFlight>,
    acks: Acks,
) -> Result<(), Status> {
    while let Some(batch) = landing.recv().await {
        let ack = match batch.landing {
            Landing::Checked => serde_json::json!({
                "seq": batch.seq, "rows": batch.rows, "first_lsn": null, "last_lsn": null,
                "duplicate": false, "dry_run": true,
            }),
            Landing::Write(pending) => {
                let landed = sql.finish_batch(pending).await.map_err(|e| refusal(batch.seq, e))?;
                ack_json(batch.seq, landed)
            }
        };
        let result = PutResult { app_metadata: ack.to_string().into_bytes().into() };
        if acks.send(Ok(result)).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    Ok(())
}

/// `next` unless the stream stays silent for `STREAM_IDLE_TIMEOUT`.
async fn idle_limited<T>(next: impl std::future::Future<Output = T>) -> Result<T, Status> {
    tokio::time::timeout(STREAM_IDLE_TIMEOUT, next).await.map_err(|_| {
        let secs = STREAM_IDLE_TIMEOUT.as_secs();
        Status::deadline_exceeded(format!("no message for {secs} s: the stream was ended"))
    })
}

/// `{"seq", "rows", "first_lsn", "last_lsn", "duplicate"}` (docs/ingest.md).
fn ack_json(seq: u64, landed: Landed) -> serde_json::Value {
    let (applied, duplicate) = match landed {
        Landed::Applied(a) => (Some(a), false),
        Landed::Duplicate(a) => (a, true),
    };
    let rows = applied.map(|a| (a.last_lsn + 1).saturating_sub(a.first_lsn));
    let lsns = applied.filter(|a| a.first_lsn <= a.last_lsn);
    serde_json::json!({
        "seq": seq,
        "rows": rows,
        "first_lsn": lsns.map(|a| a.first_lsn),
        "last_lsn": lsns.map(|a| a.last_lsn),
        "duplicate": duplicate,
    })
}

/// A batch's number from its `app_metadata` (`{"seq": n}`), strictly above the last one.
fn batch_seq(metadata: &[u8], last: u64) -> Result<u64, Status> {
    let bad = |why: String| Status::invalid_argument(format!("batch after seq {last}: {why}"));
    let value: serde_json::Value = serde_json::from_slice(metadata)
        .map_err(|_| bad("its app_metadata must be JSON {\"seq\": n}".into()))?;
    let seq = value.get("seq").and_then(serde_json::Value::as_u64).filter(|s| *s >= 1);
    let seq = seq.ok_or_else(|| bad("its app_metadata needs \"seq\", an integer ≥ 1".into()))?;
    if seq <= last {
        return Err(bad(format!("seq {seq} does not increase (numbers must grow in a stream)")));
    }
    Ok(seq)
}

/// A batch's refusal as a gRPC status whose message names the batch, row, field and
/// SQLSTATE. Data errors are not worth retrying; a ledger that cannot write right now is.
fn refusal(seq: u64, e: QueryError) -> Status {
    let e = e.unwrap_external();
    let code = e.sqlstate();
    let message = format!("batch seq {seq}: {} (SQLSTATE {code})", e.message());
    match code {
        "42501" => Status::permission_denied(message),
        "55000" => Status::failed_precondition(message),
        // Nothing written, or (08007) maybe written: resending the batch with its number is
        // safe either way.
        "58030" | "57P01" | "57P03" | "08007" => Status::unavailable(message),
        c if c.starts_with("XX") => Status::data_loss(message),
        _ => Status::invalid_argument(message),
    }
}

/// The stream's table (its descriptor path), producer and mode, from its first message and
/// headers.
fn put_of(first: &FlightData, metadata: &MetadataMap) -> Result<Put, Status> {
    let descriptor: &FlightDescriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
        Status::invalid_argument("the first message needs a descriptor: the path [table]")
    })?;
    if descriptor.r#type() != DescriptorType::Path || descriptor.path.len() != 1 {
        return Err(Status::invalid_argument(
            "the descriptor must be a path of one element: the table (e.g. [\"inferences\"])",
        ));
    }
    let producer = header(metadata, PRODUCER_HEADER)?.ok_or_else(|| {
        Status::invalid_argument(format!(
            "name the producer in the {PRODUCER_HEADER} header (an id; resend with the same \
             id and batch numbers after a failure, and nothing is counted twice)"
        ))
    })?;
    if !tally_engine::id::is_valid_id(&producer) {
        return Err(Status::invalid_argument(format!(
            "{PRODUCER_HEADER}: 1 to 128 characters of A-Z a-z 0-9 . _ : @ / -"
        )));
    }
    let dry_run = match header(metadata, DRY_RUN_HEADER)?.as_deref() {
        None | Some("false") => None,
        Some("true") => Some(DryRun::default()),
        Some(_) => {
            return Err(Status::invalid_argument(format!("{DRY_RUN_HEADER}: true or false")))
        }
    };
    Ok(Put { table: descriptor.path[0].clone(), producer, dry_run })
}

fn header(metadata: &MetadataMap, name: &str) -> Result<Option<String>, Status> {
    match metadata.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|_| Status::invalid_argument(format!("{name} is not text"))),
    }
}

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what}: this endpoint takes streaming writes (DoPut) only; query over SQL (port 5433)"
    )))
}

type Boxed<T> = BoxStream<'static, Result<T, Status>>;

fn boxed<T: Send + 'static>(s: impl Stream<Item = Result<T, Status>> + Send + 'static) -> Boxed<T> {
    s.boxed()
}

#[tonic::async_trait]
impl FlightService for Ingest {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let token = self.auth.handshake(request.metadata()).await?;
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response = Response::new(boxed(futures::stream::iter([Ok(reply)])));
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("a token is ASCII"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        if self.auth.caller(request.metadata()).await? != tally_query::Access::Writer {
            return Err(Status::permission_denied(
                "this user's role is reader, which may only read (SQLSTATE 42501)",
            ));
        }
        let stream = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("{MAX_STREAMS} ingest streams are open: retry"))
        })?;
        let (metadata, _, mut input) = request.into_parts();
        let Some(first) = idle_limited(input.message()).await?? else {
            return Ok(Response::new(boxed(futures::stream::empty())));
        };
        let put = put_of(&first, &metadata)?;
        let input = futures::stream::iter([Ok(first)]).chain(input).boxed();
        let (acks, answers) = mpsc::channel(BATCHES_IN_FLIGHT + 1);
        let this = self.clone();
        tokio::spawn(async move {
            this.receive(input, put, acks).await;
            drop(stream);
        });
        Ok(Response::new(boxed(tokio_stream_of(answers))))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented("GetSchema")
    }

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        unimplemented("DoGet")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("DoExchange")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented("DoAction")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("ListActions")
    }
}

/// The receiving end of a channel as a stream.
fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Where the endpoint listens, checked like the PostgreSQL port's: development mode
/// (no users) listens on loopback only.
pub(crate) fn check_listen(addr: SocketAddr, development_mode: bool) -> Result<(), String> {
    if development_mode && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to take streaming ingest on {addr}: no users are configured (development \
             mode accepts loopback connections only); add one with `tally user add`, or listen \
             on 127.0.0.1"
        ));
    }
    Ok(())
}
