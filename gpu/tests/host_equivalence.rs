//! The kernels' settlement code (settle.cuh, compiled for the host by build.rs) against the
//! engine's `CpuSettler`: every reward, unassigned pool, contribution total and account total,
//! to the unit. Runs everywhere; no GPU, driver or NVRTC needed.

mod common;

use common::{arb_ledger, compare, edge_cases, generate, settle, Ledger, Shape};
use proptest::prelude::*;
use tally_engine::settle::{divide_pool as engine_divide_pool, MAX_ENTRIES, MAX_FEE};
use tally_engine::weight::WEIGHT_SCALE;
use tally_engine::CpuSettler;
use tally_gpu::host::{self, HostKernels, MAX_DIVISOR, MAX_NUMERATOR};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn host_kernels_match_cpu_settler(ledger in arb_ledger()) {
        if let Some(difference) = compare(&CpuSettler, &HostKernels, &ledger) {
            prop_assert!(false, "{}", difference);
        }
    }

    #[test]
    fn one_inference_matches_engine_divide_pool(ledger in arb_ledger()) {
        for i in 0..ledger.pool.len() {
            let (s, e) = (ledger.entry_start[i] as usize, ledger.entry_start[i + 1] as usize);
            let (contribution, weight) = (&ledger.contribution[s..e], &ledger.weight[s..e]);
            let mut expected = vec![u64::MAX; e - s];
            let valid = |j: usize| ledger.revoked[contribution[j] as usize] == 0;
            let expected_left = engine_divide_pool(ledger.pool[i], weight, valid, &mut expected);
            let mut got = vec![u64::MAX; e - s];
            let left = host::divide_pool(ledger.pool[i], contribution, weight, &ledger.revoked, &mut got);
            prop_assert_eq!(left, expected_left, "unassigned of inference {}", i);
            prop_assert_eq!(&got, &expected, "rewards of inference {}", i);
        }
    }

    #[test]
    fn reciprocal_division_is_exact(n in 0..=MAX_NUMERATOR, w in 1..=MAX_DIVISOR) {
        prop_assert_eq!(host::div(n, w), n / w);
    }

    #[test]
    fn reciprocal_division_is_exact_near_multiples(q in 0..=MAX_NUMERATOR, w in 1..=MAX_DIVISOR, d in 0u64..=2) {
        // n = k * w - 1, k * w, k * w + 1: where an off-by-one quotient would show.
        let n = (q / w * w + d).saturating_sub(1).min(MAX_NUMERATOR);
        prop_assert_eq!(host::div(n, w), n / w);
    }
}

#[test]
fn reciprocal_division_at_the_extremes() {
    let divisors =
        [1, 2, 3, 7, 999_983, WEIGHT_SCALE as u64, 1 << 29, MAX_DIVISOR - 1, MAX_DIVISOR];
    for w in divisors {
        let last_multiple = MAX_NUMERATOR / w * w;
        let numerators = [0, 1, w - 1, w, w + 1, last_multiple - 1, last_multiple, MAX_NUMERATOR];
        for n in numerators.into_iter().filter(|&n| n <= MAX_NUMERATOR) {
            assert_eq!(host::div(n, w), n / w, "{n} / {w}");
        }
    }
}

#[test]
fn edge_cases_match_cpu_settler() {
    for (name, ledger) in edge_cases() {
        if let Some(difference) = compare(&CpuSettler, &HostKernels, &ledger) {
            panic!("{name}: {difference}");
        }
    }
}

/// The cases again, against numbers worked out by hand rather than by the CPU settler.
#[test]
fn edge_cases_give_the_hand_worked_numbers() {
    let cases: std::collections::HashMap<_, _> = edge_cases().into_iter().collect();
    let run = |name: &str| settle(&HostKernels, &cases[name]);

    let zero = run("all weights zero");
    assert_eq!((zero.reward, zero.unassigned), (vec![0; 3], vec![1000]));
    let revoked = run("all revoked");
    assert_eq!((revoked.reward, revoked.unassigned), (vec![0; 3], vec![1000]));
    // 10*5/19 = 2, 10*7/19 = 3 twice, dust 2 to the first 7.
    assert_eq!(run("tie for the top weight: the first wins the dust").reward, [2, 5, 3]);
    // 2^40 / 1024 = 2^30 each, no dust.
    let full = run("pool 2^40 over 1024 entries of 10^6 (W = 1.024e9)");
    assert_eq!(full.reward, vec![1u64 << 30; MAX_ENTRIES]);
    assert_eq!(full.contribution_total, vec![128u64 << 30; 8]);
    let w1 = run("W = 1");
    assert_eq!((w1.reward, w1.unassigned), (vec![0, MAX_FEE as u64, 0], vec![0]));
    assert_eq!(run("W = 1 after a revocation").reward, [0, 999]);
    // settlement.md §5: 601 over weights 1e6 and 333_333 (c3 revoked): x 451, y 150, z 0.
    let worked = run("settlement.md §5 worked example");
    assert_eq!(worked.reward, [451, 150, 0]);
    assert_eq!(worked.account_total, [451, 150, 0]);
    let mixed = run("empty inferences, a zero pool, a lone weight");
    assert_eq!(mixed.unassigned, [77, 0, 0, 12_345]);
    assert_eq!(mixed.reward, [0, 0, 0, MAX_FEE as u64]);
}

#[test]
fn generated_ledger_matches_cpu_settler() {
    for seed in 1..=3 {
        let ledger = generate(seed, Shape::small(20_000));
        if let Some(difference) = compare(&CpuSettler, &HostKernels, &ledger) {
            panic!("seed {seed}: {difference}");
        }
    }
}

#[test]
fn malformed_input_is_refused_before_the_ffi() {
    let mut ledger = Ledger::new(vec![0, 0], 1);
    ledger.push(10, &[(0, 1), (5, 1)]);
    let mut out = common::Settled::unwritten(&ledger);
    let error = tally_engine::BatchSettler::settle(&HostKernels, &ledger.input(), out.output());
    assert!(error.unwrap_err().0.contains("contribution id"));
    let mut ledger = Ledger::new(vec![0], 1);
    ledger.push(10, &[(0, WEIGHT_SCALE + 1)]);
    let mut out = common::Settled::unwritten(&ledger);
    let error = tally_engine::BatchSettler::settle(&HostKernels, &ledger.input(), out.output());
    assert!(error.unwrap_err().0.contains("weight"));
}
