//! Batch-settlement figures (docs/benchmarks.md, "Batch settlement: CPU, GPU, DuckDB"):
//!
//! - `settle`: `CpuSettler` on one epoch's flat arrays (the `BatchSettler::settle` call alone),
//!   split into its phases; the same call inside `Ledger::simulate` on the engine's own arrays.
//! - `gpu`: `GpuSettler` on the same arrays (open, upload, kernels with data resident, download,
//!   end to end), every result compared with the CPU's; or "GPU: not available (why)".
//! - `export`: the same ledger as CSV for `benches/settle/duckdb_settle.py` (`--export DIR`).
//! - `resettle`: `Ledger::apply` of one revocation touching 0.1%–50% of the open epoch's
//!   inferences, one by one and through the batch path (`attach_batch_settler`).
//! - `simulate`: `Ledger::simulate` on the `tally demo` ledger, open and closed epoch.
//!
//! The settled ledger is the replay benchmark's (`Shape::bench`, seed 20261125, 8 entries per
//! inference, 40 revocations, a policy change) without its three settlements, so that all of it
//! is the open epoch: 1,000,000 inferences make 8,000,000 entries.
//!
//! `cargo bench -p tally-benches --bench settle_figures [-- --inferences N] [--parts a,b]
//! [--export DIR] [--runs N]`. Defaults: 1,000,000 inferences, parts settle,gpu,resettle,simulate,
//! 11 runs per figure (medians). `--inferences 12500000` settles 100 M entries (on Machine A
//! about 100 s to build; ledger and arrays 4.1 GB); `resettle` and `simulate` stay at 1 M.
//! With a GPU, `gpu`, `resettle` and `simulate` also run `GpuSettler` (results checked equal to
//! the CPU's); without one they print "GPU: not available (why)".

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_benches::{median, resident_bytes, SEED};
use tally_engine::settle::{add_up, divide_pools, split_fee, Bps};
use tally_engine::{
    BatchSettler, CpuSettler, Event, Inference, Ledger, LoggedEvent, Revocation, Role, SettleError,
    SettleInput, SettleOutput, DEFAULT_BATCH_RESETTLE_INFERENCES,
};
use tally_gpu::GpuSettler;
use tally_workload::{Generator, Shape};

struct Args {
    inferences: u64,
    parts: Vec<String>,
    export: Option<PathBuf>,
    runs: usize,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            inferences: 1_000_000,
            parts: ["settle", "gpu", "resettle", "simulate"].map(String::from).to_vec(),
            export: None,
            runs: 11,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--inferences" => args.inferences = value().parse().expect("--inferences N"),
                "--parts" => args.parts = value().split(',').map(String::from).collect(),
                "--export" => args.export = Some(PathBuf::from(value())),
                "--runs" => args.runs = value().parse().expect("--runs N"),
                // What `cargo bench` passes to every bench binary.
                "--bench" => {}
                other => eprintln!("settle_figures: ignoring unknown argument {other}"),
            }
        }
        if args.export.is_some() && !args.parts.iter().any(|p| p == "export") {
            args.parts.push("export".into());
        }
        args
    }

    fn wants(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

fn main() {
    let args = Args::parse();
    let threads = rayon::current_num_threads();
    println!("rayon threads: {threads}; runs per figure: {}", args.runs);
    if ["settle", "gpu", "export"].iter().any(|p| args.wants(p)) {
        settle_section(&args);
    }
    if args.wants("resettle") {
        resettle_section(&args);
    }
    if args.wants("simulate") {
        simulate_section(&args);
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger as flat arrays, built from the same events the ledger applies.

struct FlatModel {
    name: String,
    owner: u32,
    base_owner: Option<u32>,
}

/// The open epoch as `SettleInput` wants it, plus what an SQL settlement needs (fee, model and
/// policy per inference, names), built from the workload's events as they are applied.
#[derive(Default)]
struct Flat {
    entry_start: Vec<u32>,
    pool: Vec<u64>,
    contribution: Vec<u32>,
    weight: Vec<u32>,
    revoked: Vec<u8>,
    contributor: Vec<u32>,
    fee: Vec<u64>,
    model: Vec<u32>,
    policy: Vec<u8>,
    policies: Vec<Bps>,
    accounts: Vec<String>,
    models: Vec<FlatModel>,
    contribution_names: Vec<String>,
    account_ids: HashMap<String, u32>,
    contribution_ids: HashMap<String, u32>,
    model_ids: HashMap<String, u32>,
}

impl Flat {
    fn new() -> Flat {
        let mut flat =
            Flat { entry_start: vec![0], policies: vec![Bps::DEFAULT], ..Flat::default() };
        flat.account(tally_engine::id::PROTOCOL_ACCOUNT);
        flat
    }

    fn account(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.account_ids.get(name) {
            return id;
        }
        let id = self.accounts.len() as u32;
        self.accounts.push(name.to_string());
        self.account_ids.insert(name.to_string(), id);
        id
    }

    fn add(&mut self, event: &Event) {
        match event {
            Event::Datanet(_) => {}
            Event::Contribution(c) => {
                let account = self.account(&c.contributor);
                let id = self.contributor.len() as u32;
                self.contributor.push(account);
                self.revoked.push(0);
                self.contribution_ids.insert(c.contribution.to_string(), id);
                self.contribution_names.push(c.contribution.to_string());
            }
            Event::Model(m) => {
                let owner = self.account(&m.owner);
                let base_owner = m
                    .base_model
                    .as_ref()
                    .map(|b| self.models[self.model_ids[b.as_str()] as usize].owner);
                self.model_ids.insert(m.model.to_string(), self.models.len() as u32);
                self.models.push(FlatModel { name: m.model.to_string(), owner, base_owner });
            }
            Event::Inference(inf) => self.add_inference(inf),
            Event::Revocation(r) => {
                self.revoked[self.contribution_ids[r.contribution.as_str()] as usize] = 1
            }
            Event::Policy(p) => {
                let bps = Bps::new(p.protocol_bps, p.model_bps, p.base_bps).expect("valid policy");
                self.policies.push(bps);
            }
            Event::Settlement(_) => {
                // A new epoch: only the open one is kept.
                for v in [&mut self.pool, &mut self.fee] {
                    v.clear();
                }
                for v in [&mut self.contribution, &mut self.weight, &mut self.model] {
                    v.clear();
                }
                self.policy.clear();
                self.entry_start.truncate(1);
            }
        }
    }

    fn add_inference(&mut self, inf: &Inference) {
        let fee = u64::try_from(inf.fee).expect("valid fee");
        let model = self.model_ids[inf.model.as_str()];
        let policy = self.policies.len() - 1;
        let adapter = self.models[model as usize].base_owner.is_some();
        self.pool.push(split_fee(fee, self.policies[policy], adapter).pool);
        self.fee.push(fee);
        self.model.push(model);
        self.policy.push(policy as u8);
        for a in &inf.attributions {
            self.contribution.push(self.contribution_ids[a.contribution.as_str()]);
            self.weight.push(a.weight);
        }
        self.entry_start.push(self.weight.len() as u32);
    }

    fn input(&self) -> SettleInput<'_> {
        SettleInput {
            entry_start: &self.entry_start,
            pool: &self.pool,
            contribution: &self.contribution,
            weight: &self.weight,
            revoked: &self.revoked,
            contributor: &self.contributor,
            accounts: self.accounts.len(),
        }
    }

    /// Per (account name, role): what the open epoch credits, from `settled` (this epoch's
    /// batch settlement) and the fixed parts of each fee.
    fn credits(&self, settled: &Settled) -> HashMap<(String, Role), u64> {
        let mut credits = vec![[0u64; 4]; self.accounts.len()];
        for (i, &fee) in self.fee.iter().enumerate() {
            let model = &self.models[self.model[i] as usize];
            let split =
                split_fee(fee, self.policies[self.policy[i] as usize], model.base_owner.is_some());
            credits[0][Role::Protocol as usize] += split.protocol + settled.unassigned[i];
            credits[model.owner as usize][Role::Model as usize] += split.model;
            if let Some(base) = model.base_owner {
                credits[base as usize][Role::BaseModel as usize] += split.base;
            }
        }
        for (a, &total) in settled.account_total.iter().enumerate() {
            credits[a][Role::Contributor as usize] += total;
        }
        let mut out = HashMap::new();
        for (a, roles) in credits.iter().enumerate() {
            for role in Role::ALL {
                if roles[role as usize] > 0 {
                    out.insert((self.accounts[a].clone(), role), roles[role as usize]);
                }
            }
        }
        out
    }
}

/// The open epoch's credits per (account, role) as the ledger keeps them.
fn ledger_credits(ledger: &Ledger) -> HashMap<(String, Role), u64> {
    let open = ledger.open_epoch();
    ledger
        .rewards()
        .filter(|r| r.epoch == open)
        .map(|r| ((r.account.to_string(), r.role), r.amount))
        .collect()
}

/// A batch backend's outputs.
#[derive(Clone, PartialEq, Eq)]
struct Settled {
    reward: Vec<u64>,
    unassigned: Vec<u64>,
    contribution_total: Vec<u64>,
    account_total: Vec<u64>,
}

impl Settled {
    fn for_input(input: &SettleInput<'_>) -> Settled {
        Settled {
            reward: vec![u64::MAX; input.entries()],
            unassigned: vec![u64::MAX; input.inferences()],
            contribution_total: vec![u64::MAX; input.revoked.len()],
            account_total: vec![u64::MAX; input.accounts],
        }
    }

    fn zeroed(input: &SettleInput<'_>) -> Settled {
        Settled {
            reward: vec![0; input.entries()],
            unassigned: vec![0; input.inferences()],
            contribution_total: vec![0; input.revoked.len()],
            account_total: vec![0; input.accounts],
        }
    }

    fn output(&mut self) -> SettleOutput<'_> {
        SettleOutput {
            reward: &mut self.reward,
            unassigned: &mut self.unassigned,
            contribution_total: &mut self.contribution_total,
            account_total: &mut self.account_total,
        }
    }

    /// The first array in which `other` differs, and where.
    fn difference(&self, other: &Settled) -> Option<String> {
        let arrays = [
            ("reward", &self.reward, &other.reward),
            ("unassigned", &self.unassigned, &other.unassigned),
            ("contribution_total", &self.contribution_total, &other.contribution_total),
            ("account_total", &self.account_total, &other.account_total),
        ];
        for (name, a, b) in arrays {
            if let Some(k) = a.iter().zip(b.iter()).position(|(x, y)| x != y) {
                return Some(format!("{name}[{k}]: {} vs {}", a[k], b[k]));
            }
        }
        None
    }
}

/// The benchmark ledger and the same epoch as flat arrays.
fn build(shape: Shape) -> (Ledger, Flat) {
    let mut ledger = Ledger::new();
    let mut flat = Flat::new();
    for (k, batch) in Generator::new(shape).enumerate() {
        for event in &batch {
            flat.add(event);
        }
        ledger.apply(&batch, 1_000 + k as i64).expect("valid workload");
    }
    (ledger, flat)
}

// ---------------------------------------------------------------------------------------------
// Settle: CPU, GPU, export.

fn settle_section(args: &Args) {
    let shape = Shape { closed_epochs: 0, ..Shape::bench(SEED, args.inferences) };
    let started = Instant::now();
    let rss = resident_bytes();
    let (ledger, flat) = build(shape);
    let input = flat.input();
    println!(
        "\n== batch settlement: open epoch of {} inferences, {} entries, {} contributions ({} revoked), {} accounts (built in {:.1} s, RSS +{:.1} GB)",
        input.inferences(),
        input.entries(),
        input.revoked.len(),
        flat.revoked.iter().filter(|&&r| r != 0).count(),
        input.accounts,
        started.elapsed().as_secs_f64(),
        (resident_bytes() - rss) as f64 / 1e9
    );

    // The flat arrays settled by the CPU give the ledger's numbers exactly: they are its epoch.
    let mut expected = Settled::for_input(&input);
    CpuSettler.settle(&input, expected.output()).expect("cpu settles");
    let credits = flat.credits(&expected);
    assert_eq!(credits, ledger_credits(&ledger), "flat arrays disagree with the ledger");
    println!(
        "check: CpuSettler on the flat arrays gives the ledger's open-epoch credits exactly ({} account-role rows)",
        credits.len()
    );

    let cpu_median =
        if args.wants("settle") { Some(bench_cpu(args, &ledger, &input, &expected)) } else { None };
    if args.wants("gpu") {
        bench_gpu(args, &input, &expected);
    }
    if let Some(dir) = &args.export {
        let started = Instant::now();
        export(dir, &ledger, &flat, cpu_median).expect("export");
        println!("exported to {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
    }
}

fn bench_cpu(
    args: &Args,
    ledger: &Ledger,
    input: &SettleInput<'_>,
    expected: &Settled,
) -> Duration {
    let entries = input.entries() as f64;
    let rate = |d: Duration| entries / d.as_secs_f64() / 1e6;
    let mut out = Settled::for_input(input);
    let (mut times, mut check, mut divide, mut totals) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
        let started = Instant::now();
        CpuSettler.settle(input, out.output()).expect("cpu settles");
        times.push(started.elapsed());
        assert!(out == *expected);
        // The same phases from outside (copies of CpuSettler's code), timed apart.
        let started = Instant::now();
        input.check().expect("valid input");
        check.push(started.elapsed());
        let started = Instant::now();
        divide_pools(input, &mut out.reward, &mut out.unassigned);
        divide.push(started.elapsed());
        let started = Instant::now();
        add_up(input, &out.reward, &mut out.contribution_total, &mut out.account_total);
        totals.push(started.elapsed());
        assert!(out == *expected, "the phase copies disagree with CpuSettler");
    }
    let all = times.clone();
    let settle = median(times);
    println!(
        "cpu settle (BatchSettler::settle, {} threads): median {:.1} ms ({:.0} M entries/s; runs {})",
        rayon::current_num_threads(),
        ms(settle),
        rate(settle),
        list(&all)
    );
    println!(
        "  phases (copies of CpuSettler's, run after each settle): check {:.1} ms, divide pools {:.1} ms, totals (add_up, one thread) {:.1} ms",
        ms(median(check)),
        ms(median(divide)),
        ms(median(totals))
    );

    // Into output arrays allocated for the call (zeroed, their pages not yet touched), as
    // `settle_deferred` and `simulate` allocate them.
    let mut fresh = Vec::new();
    for _ in 0..args.runs {
        let mut out = Settled::zeroed(input);
        let started = Instant::now();
        CpuSettler.settle(input, out.output()).expect("cpu settles");
        fresh.push(started.elapsed());
        drop(out);
    }
    println!("  into freshly allocated output arrays: median {:.1} ms", ms(median(fresh)));

    // The call on the engine's own arrays: `simulate` of the open epoch under the policies in
    // force hands them to the settler as they are (pools recomputed from fees).
    let timed = Timed::new(CpuSettler);
    let bps = ledger.policies().last().map_or(Bps::DEFAULT, |p| {
        Bps::new(p.protocol_bps.into(), p.model_bps.into(), p.base_bps.into()).unwrap()
    });
    let mut whole = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        let rows =
            ledger.simulate(ledger.open_epoch(), bps, std::iter::empty::<LoggedEvent>(), &timed);
        whole.push(started.elapsed());
        assert!(!rows.expect("simulates").is_empty());
    }
    println!(
        "  same call on the engine's own arrays (inside Ledger::simulate): median {:.1} ms (simulate in all: {:.1} ms)",
        ms(timed.median()),
        ms(median(whole))
    );
    settle
}

fn bench_gpu(args: &Args, input: &SettleInput<'_>, expected: &Settled) {
    let started = Instant::now();
    let gpu = match GpuSettler::open() {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("GPU: not available ({e})");
            return;
        }
    };
    println!(
        "GPU: {} (opened in {:.0} ms, NVRTC compile included)",
        gpu.describe(),
        ms(started.elapsed())
    );
    let same = |got: &Settled, what: &str| {
        if let Some(d) = expected.difference(got) {
            panic!("GPU {what} differs from the CPU: {d}");
        }
    };
    // End to end: upload, kernels, download, as a BatchSettler.
    let (mut total, mut upload, mut kernel, mut download) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
        let mut got = Settled::for_input(input);
        let started = Instant::now();
        let t = gpu.settle_timed(input, got.output()).expect("gpu settles");
        total.push(started.elapsed());
        upload.push(t.upload);
        kernel.push(t.kernel);
        download.push(t.download);
        same(&got, "end to end");
    }
    println!(
        "gpu settle end to end (BatchSettler): median {:.1} ms (upload {:.1} ms, kernels {:.2} ms, download {:.1} ms)",
        ms(median(total)),
        ms(median(upload)),
        ms(median(kernel)),
        ms(median(download))
    );
    // Resident: uploaded once, settled many times.
    let mut epoch = gpu.upload(input).expect("upload");
    let upload = epoch.upload_time();
    let mut kernel = Vec::new();
    for _ in 0..args.runs {
        kernel.push(epoch.settle().expect("gpu settles"));
    }
    let mut got = Settled::for_input(input);
    let download = epoch.download(got.output()).expect("download");
    same(&got, "resident");
    println!(
        "gpu kernels, data resident: median {:.2} ms (upload once {:.1} ms, download {:.1} ms); results equal to the CPU's",
        ms(median(kernel)),
        ms(upload),
        ms(download)
    );
}

// ---------------------------------------------------------------------------------------------
// Export for DuckDB.

fn export(dir: &Path, ledger: &Ledger, flat: &Flat, cpu: Option<Duration>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = |name: &str| -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        Ok(std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(name))?))
    };
    let mut w = file("inferences.csv")?;
    writeln!(w, "inference,fee,model,protocol_bps,model_bps,base_bps")?;
    for (i, (&fee, &model)) in flat.fee.iter().zip(&flat.model).enumerate() {
        let bps = flat.policies[flat.policy[i] as usize];
        writeln!(w, "{i},{fee},{model},{},{},{}", bps.protocol, bps.model, bps.base)?;
    }
    w.flush()?;
    let mut w = file("entries.csv")?;
    writeln!(w, "entry,inference,contribution,weight")?;
    for i in 0..flat.pool.len() {
        for e in flat.entry_start[i] as usize..flat.entry_start[i + 1] as usize {
            writeln!(w, "{e},{i},{},{}", flat.contribution[e], flat.weight[e])?;
        }
    }
    w.flush()?;
    let mut w = file("contributions.csv")?;
    writeln!(w, "contribution,name,contributor,revoked")?;
    for (c, (&account, &revoked)) in flat.contributor.iter().zip(&flat.revoked).enumerate() {
        writeln!(
            w,
            "{c},{},{},{revoked}",
            flat.contribution_names[c], flat.accounts[account as usize]
        )?;
    }
    w.flush()?;
    let mut w = file("models.csv")?;
    writeln!(w, "model,name,owner,base_owner")?;
    for (m, model) in flat.models.iter().enumerate() {
        let base = model.base_owner.map_or("", |b| flat.accounts[b as usize].as_str());
        writeln!(w, "{m},{},{},{base}", model.name, flat.accounts[model.owner as usize])?;
    }
    w.flush()?;
    // Tally's answer: the open epoch's credits as the ledger keeps them (applied incrementally).
    let mut w = file("tally_rewards.csv")?;
    writeln!(w, "account,role,amount")?;
    let mut rows: Vec<_> = ledger_credits(ledger).into_iter().collect();
    rows.sort();
    for ((account, role), amount) in rows {
        writeln!(w, "{account},{},{amount}", role.as_str())?;
    }
    w.flush()?;
    let mut figures = String::new();
    let _ = writeln!(figures, "inferences={}", flat.pool.len());
    let _ = writeln!(figures, "entries={}", flat.weight.len());
    if let Some(cpu) = cpu {
        let _ = writeln!(figures, "cpu_settle_ms={:.3}", ms(cpu));
    }
    std::fs::write(dir.join("tally_figures.txt"), figures)
}

// ---------------------------------------------------------------------------------------------
// Re-settlement after a revocation: one by one against the batch path.

/// Fractions of the open epoch's inferences that one revocation touches.
const FRACTIONS: [f64; 6] = [0.001, 0.01, 0.05, 0.10, 0.25, 0.50];

/// The ingest ledger (`Shape::bench`, no settlements, no revocations) with one extra datanet in
/// every base model's lineage and one contribution per fraction in it, `hot-K`, put in place
/// of the last entries of that fraction of the inferences (chosen by a hash of the inference's
/// number). The generated ledger's most attributed contribution is in 7% of its inferences; this
/// reaches 50%. Entries stay 8 per inference, weights as generated.
fn hot_ledger(inferences: u64) -> (Ledger, Vec<String>) {
    let shape = Shape { closed_epochs: 0, revocations: 0, ..Shape::bench(SEED, inferences) };
    let hot: Vec<String> = (0..FRACTIONS.len()).map(|k| format!("hot-{k}")).collect();
    let mut ledger = Ledger::new();
    let mut n = 0u64;
    for (k, mut batch) in Generator::new(shape).enumerate() {
        if k == 0 {
            let mut universe = vec![Event::Datanet(tally_engine::Datanet {
                datanet: "dn-hot".into(),
                owner: "org-hot".into(),
            })];
            for (j, name) in hot.iter().enumerate() {
                universe.push(Event::Contribution(tally_engine::Contribution {
                    contribution: name.clone().into(),
                    datanet: "dn-hot".into(),
                    contributor: format!("hot-user-{j}").into(),
                    content_hash: format!("{:064x}", 0xfeed_0000_u64 + j as u64).into(),
                }));
            }
            for mut event in batch {
                if let Event::Model(m) = &mut event {
                    if m.base_model.is_none() {
                        m.datanets.push("dn-hot".into());
                    }
                }
                universe.push(event);
            }
            batch = universe;
        } else {
            for event in &mut batch {
                let Event::Inference(inf) = event else { continue };
                let mut last = inf.attributions.len();
                for (j, &fraction) in FRACTIONS.iter().enumerate() {
                    if last > 1 && unit(n * 8 + j as u64) < fraction {
                        last -= 1;
                        inf.attributions[last].contribution = hot[j].clone().into();
                    }
                }
                n += 1;
            }
        }
        ledger.apply(&batch, 1_000 + k as i64).expect("valid workload");
    }
    (ledger, hot)
}

/// A number in [0, 1) from `x` (splitmix64).
fn unit(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn resettle_section(args: &Args) {
    let inferences = args.inferences.min(1_000_000);
    let started = Instant::now();
    let (ledger, hot) = hot_ledger(inferences);
    let open = ledger.open_epoch();
    let open_inferences = ledger.epochs().find(|e| e.epoch == open).unwrap().inferences;
    println!(
        "\n== re-settlement after one revocation: open epoch of {open_inferences} inferences (built in {:.1} s); default batch threshold {DEFAULT_BATCH_RESETTLE_INFERENCES}",
        started.elapsed().as_secs_f64()
    );
    let gpu: Option<Arc<dyn BatchSettler>> = match GpuSettler::open() {
        Ok(gpu) => Some(Arc::new(gpu)),
        Err(e) => {
            println!("GPU: not available ({e}); batch path on the CPU only");
            None
        }
    };
    let mut paths: Vec<(&str, Arc<dyn BatchSettler>, usize)> = vec![
        ("one by one", Arc::new(CpuSettler), usize::MAX),
        ("batch, cpu", Arc::new(CpuSettler), 1),
    ];
    if let Some(gpu) = gpu {
        paths.push(("batch, gpu", gpu, 1));
    }
    println!(
        "| touched inferences | share | {} |",
        paths.iter().map(|p| p.0).collect::<Vec<_>>().join(" | ")
    );
    for name in &hot {
        let touched = ledger.contribution(name).unwrap().inferences;
        let revoke = [Event::Revocation(Revocation {
            contribution: name.clone().into(),
            reason: "bench".into(),
        })];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
        let mut digests = Vec::new();
        for run in 0..args.runs {
            // Interleaved, so that drifts of the machine hit every path alike.
            for (p, (_, settler, threshold)) in paths.iter().enumerate() {
                let mut copy = ledger.clone();
                copy.attach_batch_settler(Arc::clone(settler), *threshold);
                let started = Instant::now();
                copy.apply(&revoke, 3).unwrap();
                times[p].push(started.elapsed());
                if run == 0 {
                    digests.push(copy.digest());
                }
            }
        }
        assert!(digests.windows(2).all(|d| d[0] == d[1]), "paths disagree on {name}");
        let cells: Vec<String> = times
            .into_iter()
            .map(|t| {
                let d = median(t);
                format!("{:.2} ms ({:.2} M inf/s)", ms(d), touched as f64 / d.as_secs_f64() / 1e6)
            })
            .collect();
        println!(
            "| {touched} | {:.2}% | {} |",
            touched as f64 * 100.0 / open_inferences as f64,
            cells.join(" | ")
        );
    }
    println!("(medians of {} runs each, interleaved; the same state after every path)", args.runs);
}

// ---------------------------------------------------------------------------------------------
// What-if settlement on the demo ledger.

/// A settler that records how long each `settle` call took.
struct Timed {
    inner: Box<dyn BatchSettler>,
    calls: Mutex<Vec<Duration>>,
}

impl Timed {
    fn new(inner: impl BatchSettler + 'static) -> Timed {
        Timed { inner: Box::new(inner), calls: Mutex::new(Vec::new()) }
    }

    fn median(&self) -> Duration {
        median(std::mem::take(&mut *self.calls.lock().unwrap()))
    }
}

impl BatchSettler for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn settle(&self, input: &SettleInput<'_>, out: SettleOutput<'_>) -> Result<(), SettleError> {
        let started = Instant::now();
        let result = self.inner.settle(input, out);
        self.calls.lock().unwrap().push(started.elapsed());
        result
    }
}

fn simulate_section(args: &Args) {
    // `tally demo`'s ledger (tools/src/demo.rs): the same events, applied in memory.
    let started = Instant::now();
    let mut ledger = Ledger::new();
    let mut closed_log = Vec::new();
    let mut settlements = 0;
    let shape = Shape::demo(Shape::DEFAULT_SEED, 1_000_000);
    for (k, batch) in Generator::new(shape).enumerate() {
        let applied = ledger.apply(&batch, 1_000 + k as i64).expect("valid workload");
        for (i, event) in batch.into_iter().enumerate() {
            if matches!(event, Event::Settlement(_)) {
                settlements += 1;
            } else if settlements == 2 && matches!(event, Event::Inference(_)) {
                // Epoch 3, the last closed one.
                closed_log.push(LoggedEvent {
                    lsn: applied.first_lsn + i as u64,
                    ts: applied.ts,
                    event,
                });
            }
        }
    }
    let open = ledger.open_epoch();
    let epoch = |e: u64| ledger.epochs().find(|v| v.epoch == e).unwrap();
    let entries = ledger.memory().open_entries;
    println!(
        "\n== what-if settlement (Ledger::simulate) on the demo ledger (Shape::demo, seed {}, 1,000,000 inferences; built in {:.1} s): open epoch {open} has {} inferences, {entries} entries; closed epoch 3 has {} inferences",
        Shape::DEFAULT_SEED,
        started.elapsed().as_secs_f64(),
        epoch(open).inferences,
        epoch(3).inferences
    );
    let bps = Bps::new(700, 2300, 1000).unwrap();
    let mut settlers = vec![("cpu", Timed::new(CpuSettler))];
    match GpuSettler::open() {
        Ok(gpu) => settlers.push(("gpu", Timed::new(gpu))),
        Err(e) => println!("GPU: not available ({e})"),
    }
    for (name, timed) in settlers {
        for (what, e) in [("open", open), ("closed (3, events from the log)", 3)] {
            let mut times = Vec::new();
            let mut rows = 0;
            for _ in 0..args.runs {
                let started = Instant::now();
                let result = if e == open {
                    ledger.simulate(e, bps, std::iter::empty::<LoggedEvent>(), &timed)
                } else {
                    ledger.simulate(e, bps, &closed_log, &timed)
                };
                times.push(started.elapsed());
                rows = result.expect("simulates").len();
            }
            println!(
                "simulate {what} epoch under (700, 2300, 1000), {name}: median {:.1} ms, of which the settle call {:.1} ms ({rows} rows)",
                ms(median(times)),
                ms(timed.median())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn list(times: &[Duration]) -> String {
    let mut s = String::new();
    for (k, t) in times.iter().enumerate() {
        let _ = write!(s, "{}{:.0}", if k > 0 { "/" } else { "" }, ms(*t));
    }
    s
}
