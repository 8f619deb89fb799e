//! The GPU settlement benchmark and equivalence check, for gpu/device-check.sh on a GPU machine:
//! one large generated epoch (default 1M inferences, about 8M entries; `device_check N` for N
//! inferences) settled by `CpuSettler` and by `GpuSettler`, end to end and resident (kernel
//! time by CUDA events, transfers apart), then re-settled after new revocations. Every GPU result
//! is compared with the CPU's to the unit; any difference makes the exit status 1.
//! Writes its report to stdout and, when `$OUT` is set, to `$OUT/gpu-bench.txt`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{generate, settle, Ledger, Settled, Shape};
use tally_engine::CpuSettler;
use tally_gpu::{probe, GpuError, GpuSettler, ResidentEpoch};

/// Timed repetitions of each measurement; the report gives the minimum and the median.
const RUNS: usize = 7;
const SEED: u64 = 42;

fn main() -> ExitCode {
    let mut report = Report::default();
    let result = run(&mut report);
    if let Err(error) = &result {
        report.line(format!("FAILED: {error}"));
    }
    report.save();
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(report: &mut Report) -> Result<(), String> {
    report.line(format!("probe: {}", probe().map_err(|e| e.to_string())?));
    let started = Instant::now();
    let gpu = GpuSettler::open().map_err(|e| e.to_string())?;
    report.line(format!(
        "opened in {} (NVRTC compile included): {}",
        ms(started.elapsed()),
        gpu.describe()
    ));

    let inferences = std::env::args().nth(1).map_or(Ok(Shape::LARGE.inferences), |n| n.parse());
    let shape = Shape {
        inferences: inferences.map_err(|e| format!("inference count: {e}"))?,
        ..Shape::LARGE
    };
    let mut ledger = generate(SEED, shape);
    report.line(format!(
        "ledger: {} inferences, {} entries, {} contributions ({} revoked), {} accounts",
        ledger.pool.len(),
        ledger.weight.len(),
        ledger.revoked.len(),
        ledger.revoked.iter().filter(|&&r| r != 0).count(),
        ledger.accounts
    ));

    let expected = bench_cpu(report, &ledger);
    bench_end_to_end(report, &gpu, &ledger, &expected)?;
    let mut epoch = bench_resident(report, &gpu, &ledger, &expected)?;
    resettle_after_revocations(report, &mut epoch, &mut ledger)?;
    report.line("equivalence: every GPU result equal to the CPU settler's".to_string());
    Ok(())
}

fn bench_cpu(report: &mut Report, ledger: &Ledger) -> Settled {
    let mut times = Vec::new();
    let mut expected = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        expected = Some(settle(&CpuSettler, ledger));
        times.push(started.elapsed());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.timing(&format!("cpu settle ({threads} threads)"), &mut times, ledger);
    expected.expect("RUNS > 0")
}

fn bench_end_to_end(
    report: &mut Report,
    gpu: &GpuSettler,
    ledger: &Ledger,
    expected: &Settled,
) -> Result<(), String> {
    let (mut total, mut upload, mut kernel, mut download) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let mut got = Settled::unwritten(ledger);
        let started = Instant::now();
        let t = gpu.settle_timed(&ledger.input(), got.output()).map_err(|e| e.to_string())?;
        total.push(started.elapsed());
        upload.push(t.upload);
        kernel.push(t.kernel);
        download.push(t.download);
        same(expected, &got, ledger, "end to end")?;
    }
    report.timing("gpu settle end to end (BatchSettler)", &mut total, ledger);
    report.timing("  of which upload", &mut upload, ledger);
    report.timing("  of which kernels", &mut kernel, ledger);
    report.timing("  of which download", &mut download, ledger);
    Ok(())
}

fn bench_resident(
    report: &mut Report,
    gpu: &GpuSettler,
    ledger: &Ledger,
    expected: &Settled,
) -> Result<ResidentEpoch, String> {
    let started = Instant::now();
    let mut epoch = gpu.upload(&ledger.input()).map_err(|e| e.to_string())?;
    let copy = ms(epoch.upload_time());
    report.line(format!("resident upload: {} (copies {copy})", ms(started.elapsed())));
    let mut kernel = Vec::new();
    for _ in 0..RUNS {
        kernel.push(epoch.settle().map_err(|e| e.to_string())?);
    }
    report.timing("gpu kernels, data resident", &mut kernel, ledger);
    let mut got = Settled::unwritten(ledger);
    let download = epoch.download(got.output()).map_err(|e| e.to_string())?;
    report.line(format!("resident download: {}", ms(download)));
    same(expected, &got, ledger, "resident")?;
    Ok(epoch)
}

/// Revokes one contribution in 50 more, uploads only `revoked`, settles again on the device
/// and compares with the CPU settling the changed ledger.
fn resettle_after_revocations(
    report: &mut Report,
    epoch: &mut ResidentEpoch,
    ledger: &mut Ledger,
) -> Result<(), String> {
    for (c, flag) in ledger.revoked.iter_mut().enumerate() {
        if c % 50 == 7 {
            *flag = 1;
        }
    }
    let gpu_err = |e: GpuError| e.to_string();
    let upload = epoch.set_revoked(&ledger.revoked).map_err(gpu_err)?;
    let kernel = epoch.settle().map_err(gpu_err)?;
    let mut got = Settled::unwritten(ledger);
    let download = epoch.download(got.output()).map_err(gpu_err)?;
    report.line(format!(
        "re-settle after revocations: revoked upload {}, kernels {}, download {}",
        ms(upload),
        ms(kernel),
        ms(download)
    ));
    same(&settle(&CpuSettler, ledger), &got, ledger, "after revocations")
}

fn same(expected: &Settled, got: &Settled, ledger: &Ledger, what: &str) -> Result<(), String> {
    match expected.first_difference(got, ledger) {
        Some(difference) => Err(format!("{what}: cpu vs gpu: {difference}")),
        None => Ok(()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The lines printed and saved.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, line: String) {
        println!("{line}");
        let _ = writeln!(self.0, "{line}");
    }

    /// Min and median of `times`, and entries per second at the minimum.
    fn timing(&mut self, what: &str, times: &mut [Duration], ledger: &Ledger) {
        times.sort();
        let (min, median) = (times[0], times[times.len() / 2]);
        let rate = ledger.weight.len() as f64 / min.as_secs_f64().max(1e-9) / 1e6;
        self.line(format!(
            "{what:<40} min {:>12}  median {:>12}  {rate:>10.1} M entries/s",
            ms(min),
            ms(median)
        ));
    }

    fn save(&self) {
        let Some(dir) = std::env::var_os("OUT") else { return };
        let path = std::path::Path::new(&dir).join("gpu-bench.txt");
        if let Err(e) = std::fs::write(&path, &self.0) {
            eprintln!("could not write {}: {e}", path.display());
        }
    }
}
