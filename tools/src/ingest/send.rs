//! The sending side of `tally ingest`: numbers batches (`--first-seq`, then +1 each, across
//! all inputs), streams each input's batches into its table, and owns the retry loop.
//!
//! Exactly-once: a batch stays in the outbox until the server acknowledges it. On a transport
//! failure the connection is dropped, the outbox is rewound, and after a backoff a new
//! connection resends every unacknowledged batch, oldest first, under its original seq and the
//! same producer; a resent batch the server had already applied comes back `duplicate` and is
//! counted as such, never twice. A refusal is never retried: it ends the run, placed back at
//! the file and line of the refused row. `--retries` bounds failures in a row; any
//! acknowledgement resets the count.

use tally_client::arrow_schema::SchemaRef;
use tally_client::{
    Ack, Backoff, ClientError, ConnectOptions, IngestClient, Outbox, PutOptions, PutStream,
};
use tokio::sync::mpsc;

use super::batch::Built;
use super::columns::Table;
use super::error::{IngestError, Refused};
use super::progress::{Progress, Stats};
use super::read::Piece;

/// Where and how to send.
pub struct Target {
    pub addr: String,
    pub connect: ConnectOptions,
    pub put: PutOptions,
    pub first_seq: u64,
    pub retries: u32,
}

/// The input being sent.
struct Current {
    input: usize,
    table: Table,
    schema: SchemaRef,
}

pub struct Sender {
    target: Target,
    /// Input names, by index, for messages.
    names: Vec<String>,
    client: Option<IngestClient>,
    outbox: Outbox<Built>,
    backoff: Backoff,
    next_seq: u64,
    /// True once the current attempt's stream is open (a refusal before it concerns no batch).
    stream_open: bool,
    pub stats: Stats,
    pub progress: Progress,
}

impl Sender {
    pub fn new(target: Target, names: Vec<String>, progress: Progress) -> Sender {
        Sender {
            outbox: Outbox::new(target.put.max_in_flight),
            backoff: Backoff::new(target.retries),
            next_seq: target.first_seq,
            target,
            names,
            client: None,
            stream_open: false,
            stats: Stats::default(),
            progress,
        }
    }

    /// Sends everything the inputs give, in order; returns when all of it is acknowledged.
    pub async fn run(&mut self, pieces: &mut mpsc::Receiver<Piece>) -> Result<(), IngestError> {
        let mut next = pieces.recv().await;
        loop {
            let current = match next {
                None => return Ok(()),
                Some(Piece::Failed(e)) => return Err(e),
                Some(Piece::Batch(_)) => unreachable!("batches follow their input's start"),
                Some(Piece::Start { input, table, schema }) => Current { input, table, schema },
            };
            next = self.send_input(&current, pieces).await?;
        }
    }

    /// Sends one input's batches; returns the piece that followed them.
    async fn send_input(
        &mut self,
        current: &Current,
        pieces: &mut mpsc::Receiver<Piece>,
    ) -> Result<Option<Piece>, IngestError> {
        let mut ended: Option<Option<Piece>> = None;
        loop {
            match self.attempt(current, pieces, &mut ended).await {
                Ok(()) => return Ok(ended.expect("an attempt succeeds once its input ended")),
                Err(e) if e.is_retryable() => self.before_retry(e).await?,
                Err(e) => return Err(self.explain(e, current)),
            }
        }
    }

    /// One connection's worth: resend what is unacknowledged, then stream new batches while
    /// reading acknowledgements, until the input ended and everything is acknowledged.
    async fn attempt(
        &mut self,
        current: &Current,
        pieces: &mut mpsc::Receiver<Piece>,
        ended: &mut Option<Option<Piece>>,
    ) -> Result<(), ClientError> {
        self.stream_open = false;
        let mut client = self.connected().await?;
        let (table, schema) = (current.table.name, current.schema.clone());
        let mut stream = client.put(table, schema, &self.target.put).await?;
        self.stream_open = true;
        while let Some((seq, built)) = self.outbox.next_to_send() {
            let acks = stream.send(seq, &built.batch).await?;
            self.acknowledged(acks)?;
        }
        while ended.is_none() || !self.outbox.is_empty() {
            tokio::select! {
                piece = pieces.recv(), if ended.is_none() && !self.outbox.is_full() => match piece {
                    Some(Piece::Batch(built)) => self.send_new(&mut stream, built).await?,
                    other => *ended = Some(other),
                },
                ack = stream.next_ack(), if stream.in_flight() > 0 => {
                    self.acknowledged(ack?.into_iter().collect())?;
                }
                else => return Err(ClientError::Protocol("nothing in flight and the outbox full".into())),
            }
        }
        let acks = stream.finish().await?;
        self.acknowledged(acks)
    }

    async fn send_new(&mut self, stream: &mut PutStream, built: Built) -> Result<(), ClientError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(ClientError::Sequence { seq, last: seq })?;
        self.outbox.push(seq, built).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (seq, built) = self.outbox.next_to_send().expect("a batch was just pushed");
        let acks = stream.send(seq, &built.batch).await?;
        self.acknowledged(acks)
    }

    fn acknowledged(&mut self, acks: Vec<Ack>) -> Result<(), ClientError> {
        for ack in acks {
            let built = self
                .outbox
                .acknowledge(ack.seq)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            self.backoff.reset();
            let rows = built.batch.num_rows() as u64;
            self.stats.record(&ack, rows);
            self.progress.acknowledged(rows, built.bytes);
        }
        Ok(())
    }

    async fn connected(&mut self) -> Result<IngestClient, ClientError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = IngestClient::connect(&self.target.addr, self.target.connect.clone()).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// After a transport failure: drop the connection, rewind the outbox, wait.
    async fn before_retry(&mut self, error: ClientError) -> Result<(), IngestError> {
        self.client = None;
        let resend = self.outbox.rewind();
        let Some(wait) = self.backoff.failed() else {
            return Err(IngestError::Exhausted { attempts: self.target.retries + 1, last: error });
        };
        self.stats.retries += 1;
        self.progress.note(&format!(
            "{error}\n  retrying in {:.1} s (attempt {} of {}); {resend} unacknowledged batches will be resent",
            wait.as_secs_f64(),
            self.backoff.failures() + 1,
            self.target.retries + 1,
        ));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// A final error, placed in the input: a refusal names the file line of the refused row.
    fn explain(&self, error: ClientError, current: &Current) -> IngestError {
        let ClientError::Refused(refusal) = error else {
            return IngestError::Client(error);
        };
        let name = self.names[current.input].clone();
        let seq = if self.stream_open {
            refusal
                .seq
                .filter(|s| self.outbox.get(*s).is_some())
                .or(self.outbox.oldest().map(|o| o.0))
        } else {
            None
        };
        let built = seq.and_then(|s| self.outbox.get(s));
        IngestError::Refused(Box::new(Refused {
            name,
            line: built.zip(refusal.row).and_then(|(b, row)| b.line_of(row)),
            seq: built.and(seq),
            lines: built.and_then(Built::line_range),
            message: refusal.message,
            acknowledged: self.stats.batches,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::batch::Limits;
    use crate::ingest::columns::Format;
    use crate::ingest::error::{EXIT_BAD_DATA, EXIT_UNREACHABLE};
    use crate::ingest::read::{self, InputSpec};
    use std::time::Duration;
    use tally_client::mock::{Fault, MockServer};

    /// `inferences.csv` with `rows` rows in a fresh directory.
    fn csv(dir: &tempfile::TempDir, rows: usize) -> InputSpec {
        let path = dir.path().join("inferences.csv");
        let mut text = String::from("inference,model,consumer,fee,attributions\n");
        for i in 0..rows {
            text.push_str(&format!("inf-{i},m,me,{i},c1:0.5\n"));
        }
        std::fs::write(&path, &text).unwrap();
        InputSpec {
            name: "inferences.csv".into(),
            path: Some(path),
            format: Format::Csv,
            table: Table::named("inferences").unwrap(),
            size: Some(text.len() as u64),
        }
    }

    async fn send(
        addr: String,
        input: InputSpec,
        retries: u32,
    ) -> (Sender, Result<(), IngestError>) {
        let target = Target {
            addr,
            connect: ConnectOptions::default(),
            put: PutOptions::new("test-producer"),
            first_seq: 1,
            retries,
        };
        let mut sender = Sender::new(target, vec![input.name.clone()], Progress::new(None, true));
        let mut pieces = read::spawn(vec![input], Limits { rows: 10, bytes: 1 << 20 }, None);
        let result = sender.run(&mut pieces).await;
        (sender, result)
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_is_retried_without_counting_twice() {
        let server = MockServer::start(None).await;
        server.fault(Fault::LoseAckAfter(1));
        let dir = tempfile::tempdir().unwrap();
        let (sender, result) = send(server.addr.to_string(), csv(&dir, 25), 3).await;
        result.unwrap();
        let s = &sender.stats;
        assert_eq!(
            (s.rows, s.batches, s.duplicates, s.duplicate_rows, s.retries),
            (25, 3, 1, 10, 1)
        );
        assert_eq!(
            (s.first_seq, s.last_seq, s.first_lsn, s.last_lsn),
            (Some(1), Some(3), Some(1), Some(25))
        );
        let applied = server.applied();
        assert_eq!(
            applied.iter().map(|b| (b.seq, b.rows)).collect::<Vec<_>>(),
            vec![(1, 10), (2, 10), (3, 5)]
        );
        assert!(applied.iter().all(|b| b.producer == "test-producer" && b.table == "inferences"));
    }

    #[tokio::test]
    async fn a_refusal_names_the_file_line_of_its_row() {
        let server = MockServer::start(None).await;
        server.fault(Fault::Refuse { seq: 2, row: 3 });
        let dir = tempfile::tempdir().unwrap();
        let (sender, result) = send(server.addr.to_string(), csv(&dir, 25), 3).await;
        let err = result.unwrap_err();
        // Batch 2 holds lines 12-21; its row 3 is line 14.
        assert!(
            err.to_string().starts_with("inferences.csv:14: refused by the server: batch 2, row 3"),
            "{err}"
        );
        assert!(err.to_string().contains("nothing of batch 2 (lines 12-21) was appended"), "{err}");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(EXIT_BAD_DATA));
        assert_eq!(sender.stats.batches, 1);
        assert_eq!(server.applied().len(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_server_exhausts_the_retries() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let (sender, result) = send(format!("127.0.0.1:{port}"), csv(&dir, 5), 2).await;
        let err = result.unwrap_err();
        assert!(matches!(err, IngestError::Exhausted { attempts: 3, .. }), "{err}");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(EXIT_UNREACHABLE));
        assert_eq!(sender.stats.retries, 2);
        // Backoff: 100 ms, then 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
