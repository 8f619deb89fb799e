//! The input side of `tally ingest`: one thread reads and parses the inputs in order, a second
//! cuts the rows into batches, and the batches reach the async sender through a small bounded
//! channel, so that reading, batching and sending overlap and memory stays bounded (a few
//! batches, whatever the input's size).
//!
//! Why two threads: `--linger` must cut a batch while the parser is blocked reading a slow
//! stdin, so the clock lives in the batching thread, which waits for rows with a timeout.
//! Linger applies only to inputs that are not regular files: for files the batches depend on
//! the rows and the limits alone, which is what makes a rerun exactly-once.
//!
//! On a bad line the rows before it still flow (so the batches completed before it are sent,
//! the same batches whatever the timing), the partial batch holding it is dropped, and the
//! error follows them: nothing from the bad line's batch on is sent.

use std::path::PathBuf;
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};

use tally_client::arrow_schema::SchemaRef;
use tokio::sync::mpsc;

use super::batch::{Batcher, Built, Limits};
use super::columns::{Format, Kind, Table};
use super::error::IngestError;
use super::parse::{Row, Source};

/// One input as the command line named it.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// For messages: the path as given, or `<stdin>`.
    pub name: String,
    /// `None` for stdin.
    pub path: Option<PathBuf>,
    pub format: Format,
    pub table: Table,
    /// Bytes, when known (regular files).
    pub size: Option<u64>,
}

impl InputSpec {
    /// True when batches may be cut by time: stdin, pipes, devices.
    fn lingers(&self) -> bool {
        self.size.is_none()
    }
}

/// What the sender receives, in input order.
#[derive(Debug)]
pub enum Piece {
    /// The batches that follow come from this input.
    Start {
        input: usize,
        table: Table,
        schema: SchemaRef,
    },
    Batch(Built),
    /// The input failed here; nothing follows.
    Failed(IngestError),
}

/// From the parsing thread to the batching thread.
enum Parsed {
    Start { input: usize, columns: Vec<(&'static str, Kind)>, lingers: bool },
    Rows(Vec<Row>),
    Failed(IngestError),
}

/// Rows handed over at once from a regular file (fewer channel operations); one at a time
/// from a lingering input, so that no row waits in the parser while it blocks on a read.
const HANDOVER_ROWS: usize = 1024;
/// Hand-overs queued between the two threads.
const HANDOVERS_QUEUED: usize = 4;
/// Batches queued for the sender beyond those it holds in flight.
const BATCHES_QUEUED: usize = 2;

/// Starts the two threads; batches arrive on the returned channel, which closes at the end.
pub fn spawn(
    inputs: Vec<InputSpec>,
    limits: Limits,
    linger: Option<Duration>,
) -> mpsc::Receiver<Piece> {
    let (parsed_tx, parsed_rx) = sync_mpsc::sync_channel(HANDOVERS_QUEUED);
    let (piece_tx, piece_rx) = mpsc::channel(BATCHES_QUEUED);
    let tables: Vec<Table> = inputs.iter().map(|i| i.table).collect();
    std::thread::Builder::new()
        .name("ingest-read".into())
        .spawn(move || parse_all(&inputs, &parsed_tx))
        .expect("spawning the reading thread");
    std::thread::Builder::new()
        .name("ingest-batch".into())
        .spawn(move || batch_all(&tables, parsed_rx, &piece_tx, limits, linger))
        .expect("spawning the batching thread");
    piece_rx
}

fn parse_all(inputs: &[InputSpec], out: &sync_mpsc::SyncSender<Parsed>) {
    for (index, spec) in inputs.iter().enumerate() {
        if let Err(e) = parse_one(index, spec, out) {
            let _ = out.send(Parsed::Failed(e));
            return;
        }
    }
}

/// Parses one input; `Ok` also when the receiver is gone (the sender stopped).
fn parse_one(
    index: usize,
    spec: &InputSpec,
    out: &sync_mpsc::SyncSender<Parsed>,
) -> Result<(), IngestError> {
    let input: Box<dyn std::io::Read + Send> = match &spec.path {
        None => Box::new(std::io::stdin()),
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|source| IngestError::Read { name: spec.name.clone(), source })?,
        ),
    };
    let mut source = Source::open(&spec.name, input, spec.format, spec.table)?;
    let lingers = spec.lingers();
    let start = Parsed::Start { input: index, columns: source.columns().to_vec(), lingers };
    if out.send(start).is_err() {
        return Ok(());
    }
    let handover = if lingers { 1 } else { HANDOVER_ROWS };
    let mut rows = Vec::with_capacity(handover);
    loop {
        match source.next_row() {
            Ok(Some(row)) => {
                rows.push(row);
                let full = rows.len() >= handover;
                if full && out.send(Parsed::Rows(std::mem::take(&mut rows))).is_err() {
                    return Ok(());
                }
            }
            end => {
                // The rows before the end (or the bad line) go first, then the error.
                if !rows.is_empty() && out.send(Parsed::Rows(rows)).is_err() {
                    return Ok(());
                }
                return end.map(|_| ());
            }
        }
    }
}

/// The batching thread: rows in, batches out; a lingering input's partial batch is cut when it
/// has waited `linger`.
fn batch_all(
    tables: &[Table],
    parsed: sync_mpsc::Receiver<Parsed>,
    out: &mpsc::Sender<Piece>,
    limits: Limits,
    linger: Option<Duration>,
) {
    let mut current: Option<(Batcher, bool)> = None;
    let mut opened: Option<Instant> = None;
    loop {
        let deadline = match (&current, linger, opened) {
            (Some((_, true)), Some(linger), Some(opened)) => Some(opened + linger),
            _ => None,
        };
        let message = match deadline {
            None => parsed.recv().ok(),
            Some(deadline) => {
                match parsed.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(sync_mpsc::RecvTimeoutError::Timeout) => {
                        let batch = current.as_mut().and_then(|(b, _)| b.flush());
                        opened = None;
                        if !emit(out, batch.map(Piece::Batch)) {
                            return;
                        }
                        continue;
                    }
                    Err(sync_mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        let keep_going = match message {
            None => {
                let last = current.as_mut().and_then(|(b, _)| b.flush());
                emit(out, last.map(Piece::Batch));
                return;
            }
            Some(Parsed::Failed(e)) => {
                emit(out, Some(Piece::Failed(e)));
                return;
            }
            Some(Parsed::Start { input, columns, lingers }) => {
                let last = current.as_mut().and_then(|(b, _)| b.flush());
                let batcher = Batcher::new(&columns, limits);
                let schema = batcher.schema().clone();
                current = Some((batcher, lingers));
                opened = None;
                emit(out, last.map(Piece::Batch))
                    && emit(out, Some(Piece::Start { input, table: tables[input], schema }))
            }
            Some(Parsed::Rows(rows)) => {
                let (batcher, _) = current.as_mut().expect("rows follow their input's start");
                push_rows(batcher, rows, &mut opened, out)
            }
        };
        if !keep_going {
            return;
        }
    }
}

fn push_rows(
    batcher: &mut Batcher,
    rows: Vec<Row>,
    opened: &mut Option<Instant>,
    out: &mpsc::Sender<Piece>,
) -> bool {
    for row in rows {
        if batcher.is_empty() {
            *opened = Some(Instant::now());
        }
        for built in batcher.push(row) {
            if !emit(out, Some(Piece::Batch(built))) {
                return false;
            }
        }
        if batcher.is_empty() {
            *opened = None;
        }
    }
    true
}

/// Hands a piece to the sender; false when the sender is gone.
fn emit(out: &mpsc::Sender<Piece>, piece: Option<Piece>) -> bool {
    match piece {
        None => true,
        Some(piece) => out.blocking_send(piece).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn spec(path: PathBuf, format: Format, table: &str) -> InputSpec {
        let size = std::fs::metadata(&path).ok().map(|m| m.len());
        InputSpec {
            name: path.file_name().unwrap().to_string_lossy().into(),
            path: Some(path),
            format,
            table: Table::named(table).unwrap(),
            size,
        }
    }

    fn collect(mut rx: mpsc::Receiver<Piece>) -> Vec<Piece> {
        std::iter::from_fn(|| rx.blocking_recv()).collect()
    }

    #[test]
    fn files_flow_in_order_and_a_bad_line_stops_after_the_complete_batches() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("datanets.csv");
        std::fs::write(&a, "datanet,owner\nd1,o\nd2,o\nd3,o\n").unwrap();
        let b = dir.path().join("inferences.jsonl");
        let mut f = std::fs::File::create(&b).unwrap();
        for i in 0..5 {
            writeln!(f, "{{\"inference\":\"i{i}\",\"fee\":{i}}}").unwrap();
        }
        writeln!(f, "{{\"inference\":\"bad\",\"fee\":0.5}}").unwrap();
        writeln!(f, "{{\"inference\":\"never\",\"fee\":1}}").unwrap();
        drop(f);
        let inputs = vec![spec(a, Format::Csv, "datanets"), spec(b, Format::Jsonl, "inferences")];
        let pieces = collect(spawn(inputs, Limits { rows: 2, bytes: 1 << 20 }, None));
        let shape: Vec<String> = pieces
            .iter()
            .map(|p| match p {
                Piece::Start { table, .. } => format!("start {}", table.name),
                Piece::Batch(b) => format!("batch {}", b.batch.num_rows()),
                Piece::Failed(e) => format!("failed {e}"),
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                "start datanets",
                "batch 2",
                "batch 1",
                "start inferences",
                "batch 2",
                "batch 2",
                "failed inferences.jsonl:6: column fee: 0.5 is not a whole number in bigint range; \
                 nothing from this line's batch on was sent",
            ]
        );
    }

    #[test]
    fn a_lingering_input_cuts_a_partial_batch_on_time() {
        let (parsed_tx, parsed_rx) = sync_mpsc::sync_channel(HANDOVERS_QUEUED);
        let (piece_tx, mut piece_rx) = mpsc::channel(BATCHES_QUEUED);
        let table = Table::named("datanets").unwrap();
        let linger = Some(Duration::from_millis(50));
        let limits = Limits { rows: 1000, bytes: 1 << 20 };
        std::thread::spawn(move || batch_all(&[table], parsed_rx, &piece_tx, limits, linger));
        let row = |line| Row { line, bytes: 5, cells: vec![super::super::parse::Cell::Null; 2] };
        let columns = table.columns.to_vec();
        parsed_tx.send(Parsed::Start { input: 0, columns, lingers: true }).unwrap();
        parsed_tx.send(Parsed::Rows(vec![row(2), row(3)])).unwrap();
        assert!(matches!(piece_rx.blocking_recv(), Some(Piece::Start { .. })));
        // The sender of rows is still open (a slow stdin): the batch comes by time.
        let started = Instant::now();
        let Some(Piece::Batch(b)) = piece_rx.blocking_recv() else { panic!("no batch") };
        assert_eq!((b.lines.clone(), b.batch.num_rows()), (vec![2, 3], 2));
        assert!(started.elapsed() < Duration::from_secs(5));
        parsed_tx.send(Parsed::Rows(vec![row(4)])).unwrap();
        drop(parsed_tx);
        let Some(Piece::Batch(b)) = piece_rx.blocking_recv() else { panic!("no last batch") };
        assert_eq!(b.lines, vec![4]);
        assert!(piece_rx.blocking_recv().is_none());
    }

    #[test]
    fn a_missing_file_fails_as_a_read_error() {
        let spec = InputSpec {
            name: "nope.csv".into(),
            path: Some("/nonexistent/nope.csv".into()),
            format: Format::Csv,
            table: Table::named("datanets").unwrap(),
            size: None,
        };
        let pieces = collect(spawn(vec![spec], Limits { rows: 2, bytes: 100 }, None));
        assert!(matches!(&pieces[..], [Piece::Failed(IngestError::Read { .. })]));
    }
}
