//! `tally`: the one binary. Subcommands: `serve` (SQL over the PostgreSQL wire protocol),
//! `user add`, `demo` (fill a data directory with a synthetic ledger), `verify` (rebuild from
//! the log and compare), `salvage` (explicitly cut a corrupt log at its last good record),
//! `ingest` (stream CSV or JSON-lines files into a server over Arrow Flight).
//! Argument parsing and output only; the work is in the crates.

mod cluster;
mod demo;
mod ingest;
mod serve;
mod settler;
mod torture;
mod verify_proof;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The ingest paths allocate many small strings per row (ids, attribution lists); glibc's
// allocator spent a quarter of a COPY's time in malloc/free (perf, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (Linux), unless mimalloc's own
/// `MIMALLOC_ALLOW_THP` says otherwise. mimalloc asks for huge pages for its arenas, so every
/// fresh stretch of memory a batch's buffers touch was faulted in and zeroed 2 MiB at a time:
/// a third of the server's CPU during ingest, and ingest 1.1–1.25x faster without them
/// (docs/benchmarks.md, "2026-12-07"). The flag applies to mappings made before it too.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "note: could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: an event-sourced attribution ledger")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ledger over the PostgreSQL wire protocol (psql, drivers, BI tools).
    Serve(serve::Args),
    /// Manage the users a server accepts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Fill an empty data directory with a realistic synthetic ledger.
    Demo {
        /// Data directory (created if missing; must be empty).
        #[arg(long, default_value = "./tally-data")]
        data: PathBuf,
        /// Random seed; the same seed always gives the same ledger.
        #[arg(long, default_value_t = tally_workload::Shape::DEFAULT_SEED)]
        seed: u64,
        /// Number of inferences.
        #[arg(long, default_value_t = 1_000_000)]
        inferences: u64,
    },
    /// Rebuild every table from the log and check it against the live state and the ledger's
    /// invariants. Exits non-zero on any difference.
    Verify {
        #[arg(long, default_value = "./tally-data")]
        data: PathBuf,
        /// The backend of the batch replay: `cpu`, or `gpu` (an error without a usable GPU).
        #[arg(long, value_enum, default_value = "cpu")]
        settler: settler::Choice,
    },
    /// Check a proof (inclusion, consistency, payout, checkpoint) from SQL's `proof` column,
    /// with no server: prints `valid` (exit 0) or `invalid: why` (exit 1).
    VerifyProof(verify_proof::Args),
    /// Cut a log that `verify` or opening reports as corrupt at its last good record. Records
    /// after the damage are lost: copy the directory first.
    Salvage {
        #[arg(long, default_value = "./tally-data")]
        data: PathBuf,
    },
    /// Look at or change a cluster's members (through any node's Raft port).
    Cluster(cluster::Args),
    /// Stream CSV or JSON-lines files (or stdin) into a server's ingest endpoint, batched,
    /// with retries that never double-count.
    Ingest(ingest::Args),
    /// Fault-testing aid: write numbered batches until killed, acknowledging each.
    #[command(hide = true)]
    Torture {
        #[arg(long)]
        data: PathBuf,
        /// Stop after this many batches (default: never).
        #[arg(long)]
        batches: Option<u64>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add (or replace) a user; the password is read as one line from stdin and stored only
    /// as a SCRAM-SHA-256 verifier.
    Add {
        name: String,
        /// `reader` (SELECT only) or `writer` (also INSERT and COPY).
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "./tally-data")]
        data: PathBuf,
        /// Users file; default `<data>/users`.
        #[arg(long)]
        users: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging();
            serve::run(args)
        }
        Command::User { command: UserCommand::Add { name, role, data, users } } => {
            serve::add_user(&data, users.as_ref(), &name, &role)
        }
        Command::Demo { data, seed, inferences } => demo::run(&data, seed, inferences),
        Command::Verify { data, settler } => verify(&data, settler),
        Command::Salvage { data } => salvage(&data),
        Command::VerifyProof(args) => verify_proof::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Torture { data, batches } => torture::run(&data, batches),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tally: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Server logs go to stderr: ours from info up, the Raft library's from warnings up (its info
/// lines narrate every election of a one-node cluster).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("openraft", tracing::Level::WARN);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false))
        .with(filter)
        .init();
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn verify(data: &std::path::Path, settler: settler::Choice) -> Result<ExitCode> {
    let (settler, why) = settler::choose(settler)?;
    let started = std::time::Instant::now();
    let report = tally_storage::verify::verify_with(data, settler.as_ref())?;
    if let Some(torn) = &report.opened.log.torn {
        println!(
            "recovered: cut a torn tail at {} offset {} (log index {})",
            torn.path.display(),
            torn.offset,
            torn.index
        );
    }
    if let Some(why) = &report.opened.snapshot_discarded {
        println!("snapshot not usable ({why}); state rebuilt from the log");
    }
    println!("sealed segments checked: {}", report.sealed_segments_checked);
    println!(
        "batches: {} accepted, {} refused; events: {}",
        report.batches_accepted, report.batches_refused, report.events
    );
    println!("live state digest:        {}", report.live_digest);
    println!("replay digest:            {}", report.replay_digest);
    println!("batch replay digest:      {} (settled by {why})", report.batch_replay_digest);
    println!("log tree root:            {} (size {})", report.tree_root, report.tree_size);
    if report.ok() {
        println!("OK: the ledger verifies ({:.1} s)", started.elapsed().as_secs_f64());
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        Ok(ExitCode::from(2))
    }
}

fn salvage(data: &std::path::Path) -> Result<ExitCode> {
    let s = tally_storage::salvage::salvage(data)?;
    match &s.cut {
        Some(t) if s.damaged => println!(
            "salvaged: cut {} at offset {} (log index {} and everything after it, {} bytes)",
            t.path.display(),
            t.offset,
            t.index,
            t.bytes
        ),
        Some(t) => println!(
            "cut a torn tail at {} offset {} (log index {})",
            t.path.display(),
            t.offset,
            t.index
        ),
        None if s.resealed.is_empty() => println!("nothing to salvage: the log is intact"),
        None => {}
    }
    for p in &s.resealed {
        println!(
            "{}: damage in padding only, every record intact; checksum recomputed",
            p.display()
        );
    }
    for p in &s.removed {
        println!("removed {} (it followed the damage)", p.display());
    }
    if let Some(p) = &s.snapshot_moved {
        println!(
            "the snapshot was set aside as {}; the state will be rebuilt from the log",
            p.display()
        );
    }
    println!(
        "the log now ends at index {}",
        s.last_index.map_or("(empty)".into(), |i| i.to_string())
    );
    Ok(ExitCode::SUCCESS)
}
