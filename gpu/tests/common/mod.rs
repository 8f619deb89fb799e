//! Ledgers for the settlement tests, the device tests and the device-check example (which
//! includes this file by path): a proptest strategy for small adversarial ledgers, a fast
//! seeded generator for large realistic ones, the hand-picked edge cases, and a comparison of
//! two `BatchSettler`s that names the first element where they differ.
//!
//! Never: expected values computed by the code under test; the reference is always
//! `tally_engine::CpuSettler` (or a number worked out by hand in the test).
#![allow(dead_code)]

use proptest::prelude::*;
use tally_engine::settle::{MAX_ENTRIES, MAX_FEE};
use tally_engine::weight::WEIGHT_SCALE;
use tally_engine::{BatchSettler, SettleInput, SettleOutput};

/// One epoch's flat arrays, owned (`SettleInput` borrows them).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub entry_start: Vec<u32>,
    pub pool: Vec<u64>,
    pub contribution: Vec<u32>,
    pub weight: Vec<u32>,
    pub revoked: Vec<u8>,
    pub contributor: Vec<u32>,
    pub accounts: usize,
}

/// One inference before flattening: its pool and its (contribution, weight) entries.
pub type Inference = (u64, Vec<(u32, u32)>);

impl Ledger {
    /// A ledger with `contributors[c]` as contribution c's account, nothing revoked.
    pub fn new(contributor: Vec<u32>, accounts: usize) -> Ledger {
        let revoked = vec![0; contributor.len()];
        Ledger { entry_start: vec![0], contributor, revoked, accounts, ..Ledger::default() }
    }

    pub fn push(&mut self, pool: u64, entries: &[(u32, u32)]) {
        for &(c, w) in entries {
            self.contribution.push(c);
            self.weight.push(w);
        }
        self.pool.push(pool);
        self.entry_start.push(self.weight.len() as u32);
    }

    pub fn input(&self) -> SettleInput<'_> {
        SettleInput {
            entry_start: &self.entry_start,
            pool: &self.pool,
            contribution: &self.contribution,
            weight: &self.weight,
            revoked: &self.revoked,
            contributor: &self.contributor,
            accounts: self.accounts,
        }
    }
}

/// A backend's results. Every array starts filled with `UNWRITTEN`, so an element a backend
/// forgets to write shows up as a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub reward: Vec<u64>,
    pub unassigned: Vec<u64>,
    pub contribution_total: Vec<u64>,
    pub account_total: Vec<u64>,
}

pub const UNWRITTEN: u64 = 0xDEAD_BEEF_DEAD_BEEF;

impl Settled {
    pub fn unwritten(ledger: &Ledger) -> Settled {
        Settled {
            reward: vec![UNWRITTEN; ledger.weight.len()],
            unassigned: vec![UNWRITTEN; ledger.pool.len()],
            contribution_total: vec![UNWRITTEN; ledger.revoked.len()],
            account_total: vec![UNWRITTEN; ledger.accounts],
        }
    }

    pub fn output(&mut self) -> SettleOutput<'_> {
        SettleOutput {
            reward: &mut self.reward,
            unassigned: &mut self.unassigned,
            contribution_total: &mut self.contribution_total,
            account_total: &mut self.account_total,
        }
    }

    /// The first element where `self` and `other` differ, named, or None.
    pub fn first_difference(&self, other: &Settled, ledger: &Ledger) -> Option<String> {
        let arrays = [
            ("reward", &self.reward, &other.reward),
            ("unassigned", &self.unassigned, &other.unassigned),
            ("contribution_total", &self.contribution_total, &other.contribution_total),
            ("account_total", &self.account_total, &other.account_total),
        ];
        for (name, a, b) in arrays {
            if a.len() != b.len() {
                return Some(format!("{name}: lengths {} and {}", a.len(), b.len()));
            }
            if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                let at = if name == "reward" { locate_entry(ledger, i) } else { String::new() };
                return Some(format!("{name}[{i}]{at}: {} vs {}", a[i], b[i]));
            }
        }
        None
    }

    /// Money is conserved: rewards and unassigned pools add up to the pools, and both levels
    /// of totals add up to the rewards (sums in u128, so nothing can wrap).
    pub fn conservation_error(&self, ledger: &Ledger) -> Option<String> {
        let sum = |v: &[u64]| v.iter().map(|&x| u128::from(x)).sum::<u128>();
        let (pools, rewards) = (sum(&ledger.pool), sum(&self.reward));
        if rewards + sum(&self.unassigned) != pools {
            return Some(format!("rewards {rewards} + unassigned != pools {pools}"));
        }
        if sum(&self.contribution_total) != rewards || sum(&self.account_total) != rewards {
            return Some("the totals do not add up to the rewards".to_string());
        }
        None
    }
}

fn locate_entry(ledger: &Ledger, entry: usize) -> String {
    let inference = ledger.entry_start.partition_point(|&s| s as usize <= entry) - 1;
    let first = ledger.entry_start[inference] as usize;
    format!(" (inference {inference}, its entry {})", entry - first)
}

/// Settles `ledger` with `settler` into fresh `UNWRITTEN` arrays.
pub fn settle(settler: &dyn BatchSettler, ledger: &Ledger) -> Settled {
    let mut settled = Settled::unwritten(ledger);
    if let Err(e) = settler.settle(&ledger.input(), settled.output()) {
        panic!("{} failed: {e}", settler.name());
    }
    settled
}

/// Settles with both and returns a description of the first difference, or of a broken
/// conservation law, or None when they agree.
pub fn compare(
    reference: &dyn BatchSettler,
    tested: &dyn BatchSettler,
    ledger: &Ledger,
) -> Option<String> {
    let expected = settle(reference, ledger);
    let got = settle(tested, ledger);
    let describe = |what: String| format!("{} vs {}: {what}", reference.name(), tested.name());
    if let Some(what) = expected.first_difference(&got, ledger) {
        return Some(describe(what));
    }
    got.conservation_error(ledger).map(describe)
}

// ---- small adversarial ledgers (proptest) ----

fn arb_weight() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        2 => Just(0u32),
        2 => Just(WEIGHT_SCALE),
        4 => 0..=WEIGHT_SCALE,
        // Few distinct values: many ties, also for the top weight.
        2 => (1u32..=4).prop_map(|k| k * (WEIGHT_SCALE / 4)),
        1 => 1u32..=3,
    ]
}

fn arb_pool() -> impl Strategy<Value = u64> {
    let max = MAX_FEE as u64;
    prop_oneof![Just(0u64), Just(max), 0..=max, 0u64..=10_000, (max - 1024)..=max]
}

fn arb_entry_count() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..=16, 1 => 0usize..=MAX_ENTRIES, 1 => Just(MAX_ENTRIES)]
}

fn arb_inference(contributions: u32) -> impl Strategy<Value = Inference> {
    let entry = (0..contributions, arb_weight());
    (arb_pool(), arb_entry_count().prop_flat_map(move |n| prop::collection::vec(entry.clone(), n)))
}

/// Ledgers of up to 6 inferences of 0..=1024 entries, over 1..=64 contributions (so entries
/// share contributions, as the atomics must handle) of 1..=16 accounts, about one in five
/// contributions revoked.
pub fn arb_ledger() -> impl Strategy<Value = Ledger> {
    (1u32..=64, 1usize..=16, 0usize..=6)
        .prop_flat_map(|(contributions, accounts, inferences)| {
            let n = contributions as usize;
            (
                prop::collection::vec(0..accounts as u32, n),
                prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => Just(1u8)], n),
                prop::collection::vec(arb_inference(contributions), inferences),
                Just(accounts),
            )
        })
        .prop_map(|(contributor, revoked, inferences, accounts)| {
            let mut ledger = Ledger::new(contributor, accounts);
            ledger.revoked = revoked;
            for (pool, entries) in &inferences {
                ledger.push(*pool, entries);
            }
            ledger
        })
}

// ---- large realistic ledgers (seeded) ----

/// splitmix64: fast, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), with negligible bias for the sizes used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The shape of a generated ledger.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub inferences: usize,
    pub contributions: u32,
    pub accounts: u32,
    /// Mean entries per inference (uniform 1..=2*mean-1), plus one inference in 1000 with
    /// 64..=1024 entries.
    pub mean_entries: u32,
    /// Revoked contributions, per thousand.
    pub revoked_per_mille: u64,
}

impl Shape {
    /// 1M inferences, about 8M entries: the benchmark's size.
    pub const LARGE: Shape = Shape {
        inferences: 1_000_000,
        contributions: 200_000,
        accounts: 20_000,
        mean_entries: 8,
        revoked_per_mille: 30,
    };

    pub fn small(inferences: usize) -> Shape {
        Shape { inferences, contributions: 1_000, accounts: 100, ..Shape::LARGE }
    }
}

/// A deterministic ledger: skewed contribution popularity (low ids are hot, so many threads
/// add into the same totals), normalised weights (each inference's first entry has 10^6, as
/// settlement.md §1 gives the top score), some zero and tied weights, pools mostly up to 10^9
/// with some at 2^40.
pub fn generate(seed: u64, shape: Shape) -> Ledger {
    let mut rng = Rng::new(seed);
    let contributor =
        (0..shape.contributions).map(|_| rng.below(shape.accounts.into()) as u32).collect();
    let mut ledger = Ledger::new(contributor, shape.accounts as usize);
    for flag in &mut ledger.revoked {
        *flag = u8::from(rng.below(1000) < shape.revoked_per_mille);
    }
    let mut entries = Vec::with_capacity(MAX_ENTRIES);
    for _ in 0..shape.inferences {
        entries.clear();
        let count = entry_count(&mut rng, shape.mean_entries);
        for j in 0..count {
            entries.push((hot_contribution(&mut rng, shape.contributions), weight(&mut rng, j)));
        }
        let pool = if rng.below(100) == 0 {
            MAX_FEE as u64 - rng.below(1000)
        } else {
            rng.below(1_000_000_001)
        };
        ledger.push(pool, &entries);
    }
    ledger
}

fn entry_count(rng: &mut Rng, mean: u32) -> usize {
    if rng.below(1000) == 0 {
        return 64 + rng.below(MAX_ENTRIES as u64 - 63) as usize;
    }
    1 + rng.below(u64::from(2 * mean - 1)) as usize
}

/// Skewed: the minimum of two uniform draws favours low ids.
fn hot_contribution(rng: &mut Rng, contributions: u32) -> u32 {
    let n = u64::from(contributions);
    rng.below(n).min(rng.below(n)) as u32
}

fn weight(rng: &mut Rng, position: usize) -> u32 {
    match (position, rng.below(20)) {
        (0, _) => WEIGHT_SCALE,
        (_, 0) => 0,
        (_, 1) => WEIGHT_SCALE,
        (_, 2) => WEIGHT_SCALE / 2,
        _ => rng.below(u64::from(WEIGHT_SCALE) + 1) as u32,
    }
}

// ---- hand-picked edge cases ----

/// Named ledgers for the cases settlement.md singles out.
pub fn edge_cases() -> Vec<(&'static str, Ledger)> {
    let max_pool = MAX_FEE as u64;
    let full: Vec<(u32, u32)> = (0..MAX_ENTRIES as u32).map(|j| (j % 8, WEIGHT_SCALE)).collect();
    let mut uneven = full.clone();
    uneven[MAX_ENTRIES - 1].1 = WEIGHT_SCALE - 1;
    uneven[3].1 = 999_983;
    let one = |pool: u64, entries: &[(u32, u32)]| {
        let mut ledger = Ledger::new((0..8).map(|c| c % 3).collect(), 3);
        ledger.push(pool, entries);
        ledger
    };
    let mut all_revoked = one(1000, &[(0, 5), (1, 9), (2, 9)]);
    all_revoked.revoked = vec![1; 8];
    let mut worked = one(601, &[(0, 1_000_000), (1, 333_333), (2, 333_333)]);
    worked.revoked[2] = 1;
    let mut mixed = one(77, &[]);
    mixed.push(0, &[(1, 10), (2, 20)]);
    mixed.push(max_pool, &[(3, 0), (4, 1)]);
    mixed.push(12_345, &[]);
    vec![
        ("all weights zero", one(1000, &[(0, 0), (1, 0), (2, 0)])),
        ("all revoked", all_revoked),
        ("tie for the top weight: the first wins the dust", one(10, &[(0, 5), (1, 7), (2, 7)])),
        ("pool 2^40 over 1024 entries of 10^6 (W = 1.024e9)", one(max_pool, &full)),
        ("pool 2^40 over 1024 uneven entries (W near 2^30)", one(max_pool, &uneven)),
        ("W = 1", one(max_pool, &[(0, 0), (1, 1), (2, 0)])),
        ("W = 1 after a revocation", {
            let mut l = one(999, &[(0, 1_000_000), (1, 1)]);
            l.revoked[0] = 1;
            l
        }),
        ("settlement.md §5 worked example", worked),
        ("empty inferences, a zero pool, a lone weight", mixed),
        ("no inferences, no contributions, no accounts", Ledger::new(Vec::new(), 0)),
    ]
}
