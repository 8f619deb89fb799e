//! `tally ingest`: streams CSV or JSON-lines files (or stdin) into a server's Arrow Flight
//! ingest endpoint, batched, with retries that never double-count, progress and a summary.
//! This file owns the command line (flags, inputs, exit codes) and the wiring; reading is in
//! `ingest/read.rs` and `parse.rs`, batching in `batch.rs`, sending and retries in `send.rs`,
//! the protocol in the `tally-client` crate. It must never validate ledger data itself: the
//! server does, and its refusals are reported at the file and line of the refused row.

mod batch;
mod columns;
mod error;
mod parse;
mod progress;
mod read;
mod send;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tally_client::{ConnectOptions, PutOptions};

use batch::Limits;
use columns::{Format, Table};
use error::IngestError;
use progress::Progress;
use read::InputSpec;
use send::{Sender, Target};

/// Default rows per batch: big enough to amortise a group commit, small enough that a
/// refusal or a resend costs little.
const DEFAULT_BATCH_ROWS: usize = 10_000;
/// Most rows per batch: the server's batch limit (surface.md).
const MAX_BATCH_ROWS: usize = 1_000_000;
/// Default input bytes per batch: well under the server's 256 MiB, so that up to
/// `--in-flight` batches held for resending stay a modest amount of memory.
const DEFAULT_BATCH_BYTES: u64 = 16 << 20;
/// Most input bytes per batch: the server's batch limit (surface.md).
const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Default wait of a partial batch from stdin or a pipe for more rows, in milliseconds.
const DEFAULT_LINGER_MS: u64 = 200;
/// Default transport failures in a row before giving up.
const DEFAULT_RETRIES: u32 = 10;
/// Environment variables holding the password, in order of preference.
const PASSWORD_VARIABLES: [&str; 2] = ["TALLY_PASSWORD", "PGPASSWORD"];

const AFTER_HELP: &str = "\
The password comes from TALLY_PASSWORD (or PGPASSWORD), never from a flag; without one, no
authentication is attempted (a server in development mode takes loopback writes as is).

Exactly once: each batch is numbered (--first-seq, then +1) and sent under the producer id.
The server applies a (producer, seq) at most once, so retries resend unacknowledged batches
without double counting. To resume a run that stopped, rerun it with the same --producer and
--first-seq on the same input with the same batch flags: batches already applied come back as
duplicates and are skipped.

Exit status:
  0  every row was acknowledged
  1  bad data: a line that cannot be read, or a batch the server refused; nothing of that
     batch was appended, batches before it were
  2  usage, file or credential errors
  3  the server could not be reached, or the retries ran out";

/// `tally ingest`'s options.
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// CSV (with a header line) or JSON-lines files, sent in order; `-` reads stdin (needs
    /// --table and --format).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The server's ingest endpoint: host:port, or http(s)://host:port.
    #[arg(long, value_name = "ADDR", default_value = tally_client::DEFAULT_ADDR)]
    pub server: String,
    /// Table to write into; default: each file's name up to its first dot
    /// (inferences.csv → inferences).
    #[arg(long)]
    pub table: Option<String>,
    /// Input format; default: from the extension (.csv, .jsonl, .ndjson).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// User to authenticate as (with a password in TALLY_PASSWORD).
    #[arg(long, default_value = "tally")]
    pub user: String,
    /// PEM file of the CA that signed the server's certificate: connect with TLS.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Producer id, to resume an earlier run exactly once; default: a fresh one per run.
    #[arg(long, value_name = "ID")]
    pub producer: Option<String>,
    /// Seq of the first batch (each next batch +1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub first_seq: u64,
    /// Most rows per batch (each batch is one atomic write).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_ROWS)]
    pub batch_rows: usize,
    /// Most input bytes per batch (a single bigger row goes alone).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BATCH_BYTES)]
    pub batch_bytes: u64,
    /// Milliseconds a partial batch from stdin or a pipe waits for more rows (0: until full).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_LINGER_MS)]
    pub linger: u64,
    /// Transport failures in a row (no acknowledgement between them) before giving up.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES)]
    pub retries: u32,
    /// Most batches sent and not yet acknowledged.
    #[arg(long, value_name = "N", default_value_t = PutOptions::DEFAULT_MAX_IN_FLIGHT)]
    pub in_flight: usize,
    /// Validate every batch on the server without appending anything.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress display (the summary and errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: Args) -> super::Result<ExitCode> {
    let (inputs, target) = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => return Ok(fail(&e)),
    };
    let producer = target.put.producer.clone();
    let limits = Limits { rows: args.batch_rows, bytes: args.batch_bytes };
    let linger = (args.linger > 0).then(|| Duration::from_millis(args.linger));
    let total_bytes = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
    let names = inputs.iter().map(|i| i.name.clone()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let mut sender = Sender::new(target, names, Progress::new(total_bytes, args.quiet));
    let result = runtime.block_on(async {
        let mut pieces = read::spawn(inputs, limits, linger);
        sender.run(&mut pieces).await
    });
    sender.progress.finish();
    println!("{}", sender.stats.summary(&producer, started.elapsed()));
    match result {
        Ok(()) => Ok(ExitCode::from(error::EXIT_OK)),
        Err(e) => Ok(fail(&e)),
    }
}

fn fail(e: &IngestError) -> ExitCode {
    eprintln!("tally ingest: {e}");
    e.exit_code()
}

/// Checks the flags and the inputs before anything is read or sent.
fn prepare(args: &Args) -> Result<(Vec<InputSpec>, Target), IngestError> {
    check_limits(args)?;
    let producer = args.producer.clone().unwrap_or_else(default_producer);
    if !tally_client::is_valid_producer(&producer) {
        return Err(IngestError::Usage(format!(
            "--producer {producer:?}: use 1 to {} characters from [A-Za-z0-9._:@/-]",
            tally_client::MAX_PRODUCER_BYTES
        )));
    }
    let inputs = inputs(args)?;
    let connect = ConnectOptions {
        user: args.user.clone(),
        password: password(),
        tls_ca: args.tls_ca.clone(),
        tls_domain: None,
    };
    let put = PutOptions {
        producer,
        dry_run: args.dry_run,
        max_in_flight: args.in_flight,
        ..PutOptions::new("")
    };
    let target = Target {
        addr: args.server.clone(),
        connect,
        put,
        first_seq: args.first_seq,
        retries: args.retries,
    };
    Ok((inputs, target))
}

fn check_limits(args: &Args) -> Result<(), IngestError> {
    let usage = |m: String| Err(IngestError::Usage(m));
    if !(1..=MAX_BATCH_ROWS).contains(&args.batch_rows) {
        return usage(format!(
            "--batch-rows must be from 1 to {MAX_BATCH_ROWS} (the server's batch limit)"
        ));
    }
    if !(1..=MAX_BATCH_BYTES).contains(&args.batch_bytes) {
        return usage(format!(
            "--batch-bytes must be from 1 to {MAX_BATCH_BYTES} (the server's batch limit)"
        ));
    }
    if !(1..=PutOptions::MAX_IN_FLIGHT).contains(&args.in_flight) {
        return usage(format!(
            "--in-flight must be from 1 to {} (the acknowledgements the server keeps per producer)",
            PutOptions::MAX_IN_FLIGHT
        ));
    }
    if args.first_seq == 0 {
        return usage("--first-seq must be at least 1".into());
    }
    Ok(())
}

/// Each input with its format, table and size, or the first reason one cannot be sent.
fn inputs(args: &Args) -> Result<Vec<InputSpec>, IngestError> {
    if args.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        return Err(IngestError::Usage("stdin (-) can be read only once".into()));
    }
    args.files.iter().map(|path| input(args, path)).collect()
}

fn input(args: &Args, path: &Path) -> Result<InputSpec, IngestError> {
    let stdin = path.as_os_str() == "-";
    let name = if stdin { "<stdin>".to_string() } else { path.display().to_string() };
    let usage = |m: String| IngestError::Usage(format!("{name}: {m}"));
    let format = match args.format.or_else(|| Format::of_path(path)) {
        Some(f) => f,
        None if stdin => return Err(usage("give --format csv or --format jsonl".into())),
        None => return Err(usage("name it .csv, .jsonl or .ndjson, or give --format".into())),
    };
    let table_name = match args.table.as_deref() {
        Some(t) => t,
        None if stdin => return Err(usage("give --table".into())),
        None => columns::table_of_path(path).unwrap_or_default(),
    };
    let table = Table::named(table_name).ok_or_else(|| {
        usage(format!(
            "no table {table_name:?} takes writes (they are: {}); give --table or rename the file",
            Table::all_names()
        ))
    })?;
    let size = if stdin {
        None
    } else {
        let meta = std::fs::metadata(path)
            .map_err(|source| IngestError::Read { name: name.clone(), source })?;
        meta.is_file().then_some(meta.len())
    };
    let path = (!stdin).then(|| path.to_path_buf());
    Ok(InputSpec { name, path, format, table, size })
}

fn password() -> Option<String> {
    PASSWORD_VARIABLES.iter().find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
}

/// `ingest-<host>-<pid>-<unix seconds>`, within the id alphabet.
fn default_producer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '-' })
        .take(HOST_CHARS_MAX)
        .collect();
    let host = if host.is_empty() { "host".to_string() } else { host };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("ingest-{host}-{}-{now}", std::process::id())
}

/// Characters of the host name kept in a default producer id (well under the id limit).
const HOST_CHARS_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("ingest").chain(line.iter().copied())).unwrap().args
    }

    #[test]
    fn defaults_and_the_default_producer() {
        let a = args(&["x.csv"]);
        assert_eq!(
            (a.server.as_str(), a.batch_rows, a.batch_bytes),
            ("127.0.0.1:5434", 10_000, 16 << 20)
        );
        assert_eq!((a.linger, a.retries, a.in_flight, a.first_seq), (200, 10, 8, 1));
        let p = default_producer();
        assert!(p.starts_with("ingest-") && tally_client::is_valid_producer(&p), "{p}");
    }

    #[test]
    fn inputs_need_a_format_and_a_write_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inferences.2026.csv");
        std::fs::write(&file, "inference\n").unwrap();
        let f = file.to_str().unwrap();
        let spec = &inputs(&args(&[f])).unwrap()[0];
        assert_eq!(
            (spec.table.name, spec.format, spec.size),
            ("inferences", Format::Csv, Some(10))
        );
        let err = |line: &[&str]| inputs(&args(line)).unwrap_err().to_string();
        assert!(err(&["-"]).contains("<stdin>: give --format"));
        assert!(err(&["-", "--format", "csv"]).contains("<stdin>: give --table"));
        assert!(err(&[f, "--table", "events"]).contains("no table \"events\" takes writes"));
        assert!(err(&["notes.txt"]).contains("notes.txt: name it .csv"));
        assert!(err(&["-", "-", "--format", "csv", "--table", "models"]).contains("only once"));
        let missing = inputs(&args(&["/nonexistent/models.csv"])).unwrap_err();
        assert_eq!(missing.exit_code(), ExitCode::from(error::EXIT_USAGE));
        let stdin = &inputs(&args(&["-", "--format", "jsonl", "--table", "models"])).unwrap()[0];
        assert!(stdin.path.is_none() && stdin.size.is_none());
    }

    #[test]
    fn limits_are_checked() {
        for line in [
            &["x.csv", "--batch-rows", "0"][..],
            &["x.csv", "--batch-rows", "1000001"],
            &["x.csv", "--batch-bytes", "268435457"],
            &["x.csv", "--in-flight", "65"],
            &["x.csv", "--first-seq", "0"],
        ] {
            assert!(matches!(check_limits(&args(line)), Err(IngestError::Usage(_))), "{line:?}");
        }
        let bad_producer = prepare(&args(&["x.csv", "--producer", "has space"])).err().unwrap();
        assert!(bad_producer.to_string().contains("--producer"), "{bad_producer}");
    }
}
