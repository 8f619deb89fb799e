//! The kernels' own settlement code (`cuda/settle.cuh`) compiled for the CPU by build.rs, as
//! safe functions and as a `BatchSettler` ("gpu-host"). It exists so that the math the GPU
//! runs is checked against the engine's `CpuSettler` on machines without a GPU; it is
//! single-threaded and not meant for production settlement.
//!
//! Owns the FFI boundary to `cuda/host_settle.cpp`. Never passes the C++ side an array that
//! has not been checked for length and index bounds: the C++ side checks nothing.

use tally_engine::settle::{MAX_ENTRIES, MAX_FEE};
use tally_engine::weight::WEIGHT_SCALE;
use tally_engine::{BatchSettler, SettleError, SettleInput, SettleOutput};

mod ffi {
    extern "C" {
        pub fn tally_host_div(n: u64, w: u64) -> u64;
        pub fn tally_host_divide_pool(
            pool: u64,
            contribution: *const u32,
            weight: *const u32,
            count: u32,
            revoked: *const u8,
            reward: *mut u64,
        ) -> u64;
        pub fn tally_host_settle_batch(
            entry_start: *const u32,
            pool: *const u64,
            contribution: *const u32,
            weight: *const u32,
            revoked: *const u8,
            contributor: *const u32,
            inferences: u32,
            contributions: u32,
            accounts: u64,
            reward: *mut u64,
            unassigned: *mut u64,
            contribution_total: *mut u64,
            account_total: *mut u64,
        );
    }
}

/// The largest numerator the kernels divide: a pool times a weight, below 2^60.
pub const MAX_NUMERATOR: u64 = MAX_FEE as u64 * WEIGHT_SCALE as u64;
/// The largest divisor: a weight total, below 2^30.
pub const MAX_DIVISOR: u64 = MAX_ENTRIES as u64 * WEIGHT_SCALE as u64;

/// `n / w` computed as the kernels do (multiply by a reciprocal, one correction).
///
/// Panics unless `1 <= w <= MAX_DIVISOR` and `n <= MAX_NUMERATOR`, the range the
/// exactness argument in settle.cuh covers.
pub fn div(n: u64, w: u64) -> u64 {
    assert!((1..=MAX_DIVISOR).contains(&w), "divisor {w} outside 1..=2^30");
    assert!(n <= MAX_NUMERATOR, "numerator {n} above 2^40 * 10^6");
    // SAFETY: a pure function of two integers.
    unsafe { ffi::tally_host_div(n, w) }
}

/// settlement.md §3 for one inference as the kernels do it: writes each entry's reward and
/// returns what goes to `$protocol`. Entry j is valid when `weight[j] > 0` and
/// `revoked[contribution[j]] == 0`.
///
/// Panics on arrays the engine would never produce: unequal lengths, more than 1024
/// entries, a contribution id outside `revoked`, a weight above 10^6 or a pool above 2^40.
pub fn divide_pool(
    pool: u64,
    contribution: &[u32],
    weight: &[u32],
    revoked: &[u8],
    reward: &mut [u64],
) -> u64 {
    let count = weight.len();
    assert!(contribution.len() == count && reward.len() == count, "unequal entry arrays");
    assert!(count <= MAX_ENTRIES, "{count} entries, at most {MAX_ENTRIES}");
    assert!(
        contribution.iter().all(|&c| (c as usize) < revoked.len()),
        "contribution id out of range"
    );
    assert!(weight.iter().all(|&w| w <= WEIGHT_SCALE), "weight above 10^6");
    assert!(pool <= MAX_FEE as u64, "pool above 2^40");
    // SAFETY: contribution, weight and reward have `count` elements (count <= 1024 fits u32),
    // every contribution id indexes into `revoked`, and only `reward` is written.
    unsafe {
        ffi::tally_host_divide_pool(
            pool,
            contribution.as_ptr(),
            weight.as_ptr(),
            count as u32,
            revoked.as_ptr(),
            reward.as_mut_ptr(),
        )
    }
}

/// The kernels' code run on the host, one inference after another, as a `BatchSettler`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostKernels;

impl BatchSettler for HostKernels {
    fn name(&self) -> &str {
        "gpu-host"
    }

    fn settle(&self, input: &SettleInput<'_>, out: SettleOutput<'_>) -> Result<(), SettleError> {
        input.check()?;
        out.check(input)?;
        let too_large =
            |what: &str| SettleError(format!("{what} above 2^32 elements for the kernels"));
        let inferences = u32::try_from(input.inferences()).map_err(|_| too_large("inferences"))?;
        let contributions =
            u32::try_from(input.revoked.len()).map_err(|_| too_large("contributions"))?;
        // SAFETY: `input.check()` and `out.check()` accepted the arrays: entry_start has
        // inferences + 1 non-decreasing offsets ending at the entry count, each inference has
        // at most 1024 entries, contribution ids are below `revoked.len()` (= contribution
        // total's length), contributor ids below `accounts` (= account total's length), and
        // every output array has its input's length. The C++ side writes only the outputs.
        unsafe {
            ffi::tally_host_settle_batch(
                input.entry_start.as_ptr(),
                input.pool.as_ptr(),
                input.contribution.as_ptr(),
                input.weight.as_ptr(),
                input.revoked.as_ptr(),
                input.contributor.as_ptr(),
                inferences,
                contributions,
                input.accounts as u64,
                out.reward.as_mut_ptr(),
                out.unassigned.as_mut_ptr(),
                out.contribution_total.as_mut_ptr(),
                out.account_total.as_mut_ptr(),
            );
        }
        Ok(())
    }
}
