//! `tally demo`: writes the synthetic ledger of `tally-workload` through the embedded database
//! (the same durable write path as every write), with a progress bar and a summary.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tally_storage::Database;
use tally_workload::{Generator, Shape};

/// Batches in flight at once: their fsyncs are shared and applying one overlaps writing the next.
const IN_FLIGHT: usize = 4;

pub fn run(data: &Path, seed: u64, inferences: u64) -> super::Result<ExitCode> {
    if !is_empty(data)? {
        return Err(format!(
            "{} is not empty: `tally demo` fills a new data directory",
            data.display()
        )
        .into());
    }
    fill(data, seed, inferences)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `data` is missing or an empty directory.
pub fn is_empty(data: &Path) -> super::Result<bool> {
    Ok(!data.exists() || std::fs::read_dir(data)?.next().is_none())
}

/// Writes the demo ledger into the (empty) directory `data`.
pub fn fill(data: &Path, seed: u64, inferences: u64) -> super::Result<()> {
    let started = Instant::now();
    let db = Database::open(data)?;
    let bar = ProgressBar::new(inferences);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} inferences ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let mut events = 0u64;
    db.runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for batch in Generator::new(Shape::demo(seed, inferences)) {
            let n_inferences =
                batch.iter().filter(|e| matches!(e, tally_engine::Event::Inference(_))).count();
            events += batch.len() as u64;
            pending.push_back((db.submit(batch).await?, n_inferences));
            if pending.len() >= IN_FLIGHT {
                let (p, n) = pending.pop_front().expect("non-empty");
                db.finish(p).await?;
                bar.inc(n as u64);
            }
        }
        while let Some((p, n)) = pending.pop_front() {
            db.finish(p).await?;
            bar.inc(n as u64);
        }
        Ok::<(), tally_storage::WriteError>(())
    })?;
    bar.finish();
    let (lsn, epochs, open) = db.read(|l| (l.last_lsn(), l.epochs().count(), l.open_epoch()));
    let bytes = db.log().with_log(|l| l.data_bytes());
    db.close()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "demo ledger written to {}: {events} events (lsn 1..={lsn}), {inferences} inferences, {} closed epochs + epoch {open} open, {:.1} MB of log, {secs:.1} s ({:.0} events/s)",
        data.display(),
        epochs - 1,
        bytes as f64 / 1e6,
        events as f64 / secs
    );
    Ok(())
}
