//! One `DoPut` stream: each record batch goes out as exactly one Arrow IPC message (one atomic
//! ledger batch) tagged `{"seq": n}`, and each comes back as one acknowledgement, in order.
//!
//! Sending and acknowledging run concurrently: tonic sends the request body from its own task
//! while the caller reads acknowledgements, and at most `max_in_flight` batches are ever
//! unacknowledged (`send` waits for acknowledgements when the window is full, and hands them
//! back). A batch is never split: the server's one-message-per-batch rule is what makes a batch
//! atomic, so this must never use a size-splitting encoder.
//!
//! Failure: any error ends the stream. Acknowledgements that arrived before it are always
//! delivered first (`send` never fails because the server closed the call; the reason comes
//! from `next_ack`/`finish`, after the acknowledgements before it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::{FlightData, PutResult};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::SchemaRef;
use futures::channel::mpsc;
use futures::SinkExt as _;

use crate::connect::timed_out;
use crate::{seq_metadata, Ack, ClientError};

/// Messages queued between the caller and tonic's sending task; backpressure from HTTP/2 flow
/// control reaches `send` beyond this.
pub(crate) const SEND_BUFFER: usize = 1;

/// Options of one stream.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// The producer id (`x-tally-producer`); with the seqs, what makes resends exactly-once.
    pub producer: String,
    /// Validate only: acknowledgements carry `dry_run: true` and nothing is appended.
    pub dry_run: bool,
    /// Most batches unacknowledged at once (1 to [`PutOptions::MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// Longest wait for the server to take a batch or to acknowledge the oldest one; past it
    /// the stream fails as a transport failure (`DeadlineExceeded`).
    pub ack_timeout: Duration,
}

impl PutOptions {
    /// Default window: enough to keep a group commit busy while the next batches travel.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
    /// The server keeps the acknowledgements of a producer's last 64 batches; with no more in
    /// flight, every batch resent after a reconnect is answered with its original lsns.
    pub const MAX_IN_FLIGHT: usize = 64;
    /// Time for the server to validate and durably append one batch (up to 256 MiB, surface.md)
    /// and answer, with room for a leader election in between.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

    pub fn new(producer: impl Into<String>) -> PutOptions {
        PutOptions {
            producer: producer.into(),
            dry_run: false,
            max_in_flight: PutOptions::DEFAULT_MAX_IN_FLIGHT,
            ack_timeout: PutOptions::DEFAULT_ACK_TIMEOUT,
        }
    }
}

/// An open `DoPut` stream (see the module header).
pub struct PutStream {
    sink: mpsc::Sender<FlightData>,
    /// False once the server stopped taking messages; the reason comes with the acks.
    sink_open: bool,
    acks: tonic::Streaming<PutResult>,
    schema: SchemaRef,
    encoder: Encoder,
    in_flight: VecDeque<u64>,
    max_in_flight: usize,
    ack_timeout: Duration,
    last_seq: u64,
}

impl std::fmt::Debug for PutStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutStream")
            .field("in_flight", &self.in_flight)
            .field("max_in_flight", &self.max_in_flight)
            .field("last_seq", &self.last_seq)
            .field("sink_open", &self.sink_open)
            .finish_non_exhaustive()
    }
}

impl PutStream {
    pub(crate) fn new(
        sink: mpsc::Sender<FlightData>,
        acks: tonic::Streaming<PutResult>,
        schema: SchemaRef,
        options: &PutOptions,
    ) -> PutStream {
        PutStream {
            sink,
            sink_open: true,
            acks,
            schema,
            encoder: Encoder::default(),
            in_flight: VecDeque::new(),
            max_in_flight: options.max_in_flight.clamp(1, PutOptions::MAX_IN_FLIGHT),
            ack_timeout: options.ack_timeout,
            last_seq: 0,
        }
    }

    /// The stream's schema; every batch must have it.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True when `send` would not have to wait for an acknowledgement first.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.max_in_flight
    }

    /// Sends `batch` as batch `seq` (≥ 1, above every seq sent on this stream). When the window
    /// is full it first waits for acknowledgements, and returns them.
    pub async fn send(&mut self, seq: u64, batch: &RecordBatch) -> Result<Vec<Ack>, ClientError> {
        if seq <= self.last_seq {
            return Err(ClientError::Sequence { seq, last: self.last_seq });
        }
        if !Arc::ptr_eq(&batch.schema(), &self.schema) && *batch.schema() != *self.schema {
            return Err(ClientError::Schema { seq });
        }
        let mut acks = Vec::new();
        while !self.has_room() {
            acks.push(self.next_ack().await?.expect("batches are in flight"));
        }
        let messages = self.encoder.encode(seq, batch)?;
        for message in messages {
            self.transmit(message).await?;
        }
        self.in_flight.push_back(seq);
        self.last_seq = seq;
        Ok(acks)
    }

    async fn transmit(&mut self, message: FlightData) -> Result<(), ClientError> {
        if !self.sink_open {
            return Ok(());
        }
        match tokio::time::timeout(self.ack_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            // The call is over on the server's side; `next_ack` will say why.
            Ok(Err(_)) => {
                self.sink_open = false;
                Ok(())
            }
            Err(_) => Err(timed_out("taking a batch", self.ack_timeout)),
        }
    }

    /// The acknowledgement of the oldest batch in flight; `Ok(None)` when none is in flight.
    /// Cancel-safe: usable in `tokio::select!`.
    pub async fn next_ack(&mut self) -> Result<Option<Ack>, ClientError> {
        let Some(&expected) = self.in_flight.front() else {
            return Ok(None);
        };
        let answer = match tokio::time::timeout(self.ack_timeout, self.acks.message()).await {
            Ok(answer) => answer.map_err(ClientError::from_status)?,
            Err(_) => return Err(timed_out("acknowledging a batch", self.ack_timeout)),
        };
        let Some(result) = answer else {
            return Err(ClientError::Transport {
                code: tonic::Code::Unavailable,
                message: format!(
                    "the server ended the stream with {} batches unacknowledged (from seq {expected})",
                    self.in_flight.len()
                ),
            });
        };
        let ack = Ack::parse(&result.app_metadata)?;
        if ack.seq != expected {
            return Err(ClientError::Protocol(format!(
                "acknowledgement for seq {} while the oldest batch in flight is {expected}",
                ack.seq
            )));
        }
        self.in_flight.pop_front();
        Ok(Some(ack))
    }

    /// Ends the input, waits for every outstanding acknowledgement and for the server to close
    /// the call cleanly, and returns those acknowledgements.
    pub async fn finish(mut self) -> Result<Vec<Ack>, ClientError> {
        self.sink.close_channel();
        let mut acks = Vec::new();
        while let Some(ack) = self.next_ack().await? {
            acks.push(ack);
        }
        match tokio::time::timeout(self.ack_timeout, self.acks.message()).await {
            Ok(Ok(None)) => Ok(acks),
            Ok(Ok(Some(extra))) => Err(ClientError::Protocol(format!(
                "an acknowledgement with no batch in flight: {:?}",
                String::from_utf8_lossy(&extra.app_metadata)
            ))),
            Ok(Err(status)) => Err(ClientError::from_status(status)),
            Err(_) => Err(timed_out("closing the stream", self.ack_timeout)),
        }
    }
}

/// Arrow IPC encoding, one message per batch (plus its dictionaries, if it has any).
#[derive(Default)]
struct Encoder {
    generator: IpcDataGenerator,
    dictionaries: Option<DictionaryTracker>,
    context: IpcWriteContext,
    options: IpcWriteOptions,
}

impl Encoder {
    fn encode(&mut self, seq: u64, batch: &RecordBatch) -> Result<Vec<FlightData>, ClientError> {
        let tracker = self.dictionaries.get_or_insert_with(|| DictionaryTracker::new(false));
        let (dictionaries, encoded) = self
            .generator
            .encode(batch, tracker, &self.options, &mut self.context)
            .map_err(|source| ClientError::Encode { seq, source })?;
        let mut messages: Vec<FlightData> = dictionaries.into_iter().map(Into::into).collect();
        messages.push(FlightData::from(encoded).with_app_metadata(seq_metadata(seq)));
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_flight::utils::flight_data_to_arrow_batch;
    use arrow_schema::{DataType, Field, Schema};
    use std::collections::HashMap;

    #[test]
    fn one_batch_is_one_message_tagged_with_its_seq() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("inference", DataType::Utf8, true),
            Field::new("fee", DataType::Int64, true),
        ]));
        // Far above the 2 MiB at which arrow-flight's own encoder would split a batch.
        let rows = 300_000;
        let ids: Vec<String> = (0..rows).map(|i| format!("inference-{i:012}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            ],
        )
        .unwrap();
        let mut encoder = Encoder::default();
        let messages = encoder.encode(5, &batch).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(Ack::parse(&messages[0].app_metadata).unwrap().seq, 5);
        let back = flight_data_to_arrow_batch(&messages[0], schema, &HashMap::new()).unwrap();
        assert_eq!(back, batch);
    }
}
