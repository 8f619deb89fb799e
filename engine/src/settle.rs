//! The settlement math of settlement.md §2–§3, and the batch-settlement interface that the CPU
//! and GPU backends implement. Pure integer arithmetic on plain arrays: no state, no strings,
//! never a floating-point number.

use rayon::prelude::*;

/// Basis points in 1/10000.
pub const BPS_SCALE: u64 = 10_000;

/// Largest fee (ledger.md): 2^40. With weights ≤ 10^6 every product below fits in 64 bits.
pub const MAX_FEE: i64 = 1 << 40;

/// Most attribution entries in one inference.
pub const MAX_ENTRIES: usize = 1024;

/// A fee split in force, in basis points; validated so that the sum is at most 10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bps {
    pub protocol: u16,
    pub model: u16,
    pub base: u16,
}

impl Bps {
    /// The split before any policy event (ledger.md "Policy").
    pub const DEFAULT: Bps = Bps { protocol: 1000, model: 2000, base: 1000 };

    /// A split as a user writes it: `None` unless each part is from 0 to 10000 and their sum
    /// at most 10000 (what a `policy` event must satisfy).
    pub fn new(protocol: i64, model: i64, base: i64) -> Option<Bps> {
        let part = |b: i64| u16::try_from(b).ok().filter(|&b| u64::from(b) <= BPS_SCALE);
        let bps = Bps { protocol: part(protocol)?, model: part(model)?, base: part(base)? };
        let sum = u64::from(bps.protocol) + u64::from(bps.model) + u64::from(bps.base);
        (sum <= BPS_SCALE).then_some(bps)
    }

    pub fn contributors(self) -> u16 {
        let sum = self.protocol + self.model + self.base;
        debug_assert!(u64::from(sum) <= BPS_SCALE);
        BPS_SCALE as u16 - sum
    }
}

/// Where one fee goes before the pool is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub protocol: u64,
    /// To the served model's owner (the adapter's owner for an adapter).
    pub model: u64,
    /// To the base model's owner; 0 unless the model is an adapter.
    pub base: u64,
    /// The contributors' pool; it absorbs the rounding.
    pub pool: u64,
}

/// settlement.md §2.
pub fn split_fee(fee: u64, bps: Bps, adapter: bool) -> Split {
    assert!(fee <= MAX_FEE as u64, "fee {fee} above 2^40 reached settlement");
    let part = |b: u16| fee * u64::from(b) / BPS_SCALE;
    let protocol = part(bps.protocol);
    let (model, base) =
        if adapter { (part(bps.model), part(bps.base)) } else { (part(bps.model + bps.base), 0) };
    let pool = fee - protocol - model - base;
    Split { protocol, model, base, pool }
}

/// settlement.md §3 for one inference: divides `pool` among the valid entries (`valid(i)`
/// and weight > 0), writing each entry's reward (0 when invalid). Returns what goes to
/// `$protocol`: the whole pool when no entry is valid, else 0.
#[inline]
pub fn divide_pool(
    pool: u64,
    weights: &[u32],
    valid: impl Fn(usize) -> bool,
    rewards: &mut [u64],
) -> u64 {
    debug_assert_eq!(weights.len(), rewards.len());
    debug_assert!(weights.len() <= MAX_ENTRIES);
    let mut total: u64 = 0;
    let mut top: Option<usize> = None;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0 && valid(i) {
            total += u64::from(w);
            // Strictly greater: the first of several equal top weights wins the dust.
            if top.is_none_or(|t| w > weights[t]) {
                top = Some(i);
            }
        }
    }
    let Some(top) = top else {
        rewards.fill(0);
        return pool;
    };
    let mut given: u64 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let share = if w > 0 && valid(i) { pool * u64::from(w) / total } else { 0 };
        rewards[i] = share;
        given += share;
    }
    rewards[top] += pool - given;
    0
}

/// One epoch's inferences as flat arrays, for a batch backend (CPU or GPU).
///
/// Inference `i` owns entries `entry_start[i]..entry_start[i + 1]`. An entry is valid when its
/// weight is > 0 and `revoked[contribution]` is 0. `revoked` and `contributor` have one
/// element per contribution of the ledger; `contributor[c]` is the account (< `accounts`) that
/// contribution `c`'s rewards are credited to.
#[derive(Debug, Clone, Copy)]
pub struct SettleInput<'a> {
    pub entry_start: &'a [u32],
    pub pool: &'a [u64],
    pub contribution: &'a [u32],
    pub weight: &'a [u32],
    pub revoked: &'a [u8],
    pub contributor: &'a [u32],
    pub accounts: usize,
}

impl SettleInput<'_> {
    pub fn inferences(&self) -> usize {
        self.pool.len()
    }

    pub fn entries(&self) -> usize {
        self.weight.len()
    }

    /// Checks the shape every backend relies on; a backend must call it before trusting indices.
    pub fn check(&self) -> Result<(), SettleError> {
        let n = self.pool.len();
        let m = self.weight.len();
        let fail = |what: &str| Err(SettleError(format!("malformed settle input: {what}")));
        if self.entry_start.len() != n + 1 || self.entry_start[0] != 0 {
            return fail("entry_start must have one more element than pool and start at 0");
        }
        if self.entry_start[n] as usize != m || self.contribution.len() != m {
            return fail("entry arrays disagree in length");
        }
        if self.entry_start.windows(2).any(|w| w[0] > w[1] || (w[1] - w[0]) as usize > MAX_ENTRIES)
        {
            return fail("entry_start must be non-decreasing with at most 1024 entries each");
        }
        if self.contribution.iter().any(|&c| c as usize >= self.revoked.len()) {
            return fail("a contribution id is outside the revoked table");
        }
        if self.contributor.len() != self.revoked.len() {
            return fail("contributor and revoked must have one element per contribution");
        }
        if self.contributor.iter().any(|&a| a as usize >= self.accounts) {
            return fail("a contributor account is outside the account table");
        }
        if self.weight.iter().any(|&w| w > crate::weight::WEIGHT_SCALE) {
            return fail("a weight is above 1000000");
        }
        if self.pool.iter().any(|&p| p > MAX_FEE as u64) {
            return fail("a pool is above 2^40");
        }
        Ok(())
    }
}

/// Where a backend writes its results (every element overwritten): a reward per entry; per
/// inference the part of the pool that goes to `$protocol` (the whole pool when no entry is
/// valid); per contribution the sum of its entries' rewards; per account the sum of the
/// rewards of the contributions it is the contributor of (its `contributor` role credits).
#[derive(Debug)]
pub struct SettleOutput<'a> {
    pub reward: &'a mut [u64],
    pub unassigned: &'a mut [u64],
    pub contribution_total: &'a mut [u64],
    pub account_total: &'a mut [u64],
}

impl SettleOutput<'_> {
    /// Checks that every output array has its input's length.
    pub fn check(&self, input: &SettleInput<'_>) -> Result<(), SettleError> {
        if self.reward.len() != input.entries()
            || self.unassigned.len() != input.inferences()
            || self.contribution_total.len() != input.revoked.len()
            || self.account_total.len() != input.accounts
        {
            return Err(SettleError("output arrays have the wrong length".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettleError(pub String);

/// Settles many inferences at once. Every implementation must give, to the unit, what
/// `divide_pool` gives for each inference, and the totals those rewards add up to.
pub trait BatchSettler: Send + Sync {
    fn name(&self) -> &str;
    fn settle(&self, input: &SettleInput<'_>, out: SettleOutput<'_>) -> Result<(), SettleError>;
}

/// The CPU backend: `divide_pool` over chunks of inferences, in parallel with rayon.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSettler;

/// Inferences per parallel task; large enough to amortise scheduling.
const CPU_CHUNK: usize = 16 * 1024;

impl BatchSettler for CpuSettler {
    fn name(&self) -> &str {
        "cpu"
    }

    fn settle(&self, input: &SettleInput<'_>, out: SettleOutput<'_>) -> Result<(), SettleError> {
        input.check()?;
        out.check(input)?;
        divide_pools(input, out.reward, out.unassigned);
        add_up(input, out.reward, out.contribution_total, out.account_total);
        Ok(())
    }
}

/// `CpuSettler`'s first phase: every inference's `divide_pool`, in parallel over chunks of
/// inferences. Public so that benchmarks can time the phases apart; `input` must be checked.
pub fn divide_pools(input: &SettleInput<'_>, mut reward: &mut [u64], mut unassigned: &mut [u64]) {
    // Cut both outputs at inference boundaries so each task owns disjoint slices.
    let mut tasks = Vec::new();
    let mut first = 0;
    while first < input.inferences() {
        let last = (first + CPU_CHUNK).min(input.inferences());
        let entries = (input.entry_start[last] - input.entry_start[first]) as usize;
        let (r, r_rest) = reward.split_at_mut(entries);
        let (u, u_rest) = unassigned.split_at_mut(last - first);
        tasks.push((first, r, u));
        reward = r_rest;
        unassigned = u_rest;
        first = last;
    }
    tasks.into_par_iter().for_each(|(first, reward, unassigned)| {
        let base = input.entry_start[first] as usize;
        for (k, slot) in unassigned.iter_mut().enumerate() {
            let i = first + k;
            let (s, e) = (input.entry_start[i] as usize, input.entry_start[i + 1] as usize);
            let contribution = &input.contribution[s..e];
            *slot = divide_pool(
                input.pool[i],
                &input.weight[s..e],
                |j| input.revoked[contribution[j] as usize] == 0,
                &mut reward[s - base..e - base],
            );
        }
    });
}

/// `CpuSettler`'s second phase: the per-contribution and per-account sums of `reward`. Integer
/// sums: any order gives the same totals, and each fits because it is a part of the ledger's
/// fee total. Public so that benchmarks can time the phases apart.
pub fn add_up(
    input: &SettleInput<'_>,
    reward: &[u64],
    by_contribution: &mut [u64],
    by_account: &mut [u64],
) {
    by_contribution.fill(0);
    by_account.fill(0);
    for (&c, &r) in input.contribution.iter().zip(reward) {
        by_contribution[c as usize] += r;
    }
    for (&account, &total) in input.contributor.iter().zip(by_contribution.iter()) {
        by_account[account as usize] += total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_split_and_pool() {
        // settlement.md §5.
        let split = split_fee(1001, Bps::DEFAULT, true);
        assert_eq!(split, Split { protocol: 100, model: 200, base: 100, pool: 601 });
        let weights = [1_000_000, 333_333, 333_333];
        let mut rewards = [0; 3];
        let to_protocol = divide_pool(601, &weights, |i| i != 2, &mut rewards);
        assert_eq!(rewards, [451, 150, 0]);
        assert_eq!(to_protocol, 0);
    }

    #[test]
    fn base_model_takes_model_and_base_bps() {
        let split = split_fee(1001, Bps::DEFAULT, false);
        assert_eq!(split, Split { protocol: 100, model: 300, base: 0, pool: 601 });
    }

    #[test]
    fn empty_pool_goes_to_protocol() {
        let mut rewards = [7u64; 2];
        assert_eq!(divide_pool(55, &[0, 0], |_| true, &mut rewards), 55);
        assert_eq!(rewards, [0, 0]);
        assert_eq!(divide_pool(55, &[10, 10], |_| false, &mut rewards), 55);
        assert_eq!(divide_pool(55, &[], |_| true, &mut []), 55);
    }

    #[test]
    fn dust_goes_to_first_of_tied_top_weights() {
        let mut rewards = [0u64; 3];
        assert_eq!(divide_pool(10, &[5, 7, 7], |_| true, &mut rewards), 0);
        // shares: 10*5/19=2, 10*7/19=3, 3; dust 2 -> entry 1 (first of the tied 7s)
        assert_eq!(rewards, [2, 5, 3]);
    }

    #[test]
    fn cpu_settler_matches_divide_pool() {
        let entry_start = [0u32, 3, 3, 5];
        let pool = [601u64, 9, 1000];
        let contribution = [0u32, 1, 2, 1, 2];
        let weight = [1_000_000u32, 333_333, 333_333, 0, 4];
        let revoked = [0u8, 0, 1];
        let contributor = [1u32, 2, 1];
        let input = SettleInput {
            entry_start: &entry_start,
            pool: &pool,
            contribution: &contribution,
            weight: &weight,
            revoked: &revoked,
            contributor: &contributor,
            accounts: 3,
        };
        let mut reward = [0u64; 5];
        let mut unassigned = [0u64; 3];
        let mut by_contribution = [7u64; 3];
        let mut by_account = [7u64; 3];
        let out = SettleOutput {
            reward: &mut reward,
            unassigned: &mut unassigned,
            contribution_total: &mut by_contribution,
            account_total: &mut by_account,
        };
        CpuSettler.settle(&input, out).unwrap();
        assert_eq!(reward, [451, 150, 0, 0, 0]);
        assert_eq!(unassigned, [0, 9, 1000]);
        assert_eq!(by_contribution, [451, 150, 0]);
        assert_eq!(by_account, [0, 451, 150]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let input = SettleInput {
            entry_start: &[0, 2],
            pool: &[5],
            contribution: &[0, 9],
            weight: &[1, 1],
            revoked: &[0],
            contributor: &[0],
            accounts: 1,
        };
        let (mut reward, mut unassigned, mut by_c, mut by_a) =
            ([0u64; 2], [0u64; 1], [0; 1], [0; 1]);
        let out = SettleOutput {
            reward: &mut reward,
            unassigned: &mut unassigned,
            contribution_total: &mut by_c,
            account_total: &mut by_a,
        };
        assert!(CpuSettler.settle(&input, out).is_err());
    }
}
