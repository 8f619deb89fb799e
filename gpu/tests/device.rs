//! The GPU backend against the CPU settler, on a real device. `#[ignore]`d: they need an
//! NVIDIA GPU, its driver and NVRTC; gpu/device-check.sh runs them with `--ignored` on a GPU
//! machine. Without a device they fail (open's error says why) instead of passing vacuously.

mod common;

use common::{compare, edge_cases, generate, settle, Ledger, Settled, Shape};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_engine::CpuSettler;
use tally_gpu::{GpuError, GpuSettler};

fn gpu() -> GpuSettler {
    let settler = GpuSettler::open().unwrap_or_else(|e| panic!("these tests need a GPU: {e}"));
    eprintln!("gpu: {}", settler.describe());
    settler
}

fn assert_same(gpu: &GpuSettler, ledger: &Ledger, what: &str) {
    if let Some(difference) = compare(&CpuSettler, gpu, ledger) {
        panic!("{what}: {difference}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU (gpu/device-check.sh)"]
fn gpu_matches_cpu_on_edge_cases() {
    let gpu = gpu();
    for (name, ledger) in edge_cases() {
        assert_same(&gpu, &ledger, name);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU (gpu/device-check.sh)"]
fn gpu_matches_cpu_on_random_small_ledgers() {
    let gpu = gpu();
    let mut runner = TestRunner::new(Config { cases: 200, ..Config::default() });
    let result = runner.run(&common::arb_ledger(), |ledger| {
        let difference = compare(&CpuSettler, &gpu, &ledger);
        prop_assert!(difference.is_none(), "{}", difference.unwrap_or_default());
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU (gpu/device-check.sh)"]
fn gpu_matches_cpu_on_generated_ledgers() {
    let gpu = gpu();
    for (seed, inferences) in [(1, 1), (2, 255), (3, 257), (4, 100_000)] {
        assert_same(&gpu, &generate(seed, Shape::small(inferences)), &format!("seed {seed}"));
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU (gpu/device-check.sh)"]
fn gpu_matches_cpu_on_a_large_ledger() {
    let gpu = gpu();
    let ledger = generate(42, Shape::LARGE);
    eprintln!("{} inferences, {} entries", ledger.pool.len(), ledger.weight.len());
    assert_same(&gpu, &ledger, "1M inferences");
}

#[test]
#[ignore = "needs an NVIDIA GPU (gpu/device-check.sh)"]
fn resident_epoch_resettles_after_new_revocations() {
    let gpu = gpu();
    let mut ledger = generate(7, Shape::small(50_000));
    let mut epoch = gpu.upload(&ledger.input()).unwrap();
    let mut got = Settled::unwritten(&ledger);
    let early = epoch.download(got.output());
    assert!(matches!(early, Err(GpuError::Misuse(_))), "{early:?}");

    for round in 0..3u8 {
        epoch.settle().unwrap();
        let mut got = Settled::unwritten(&ledger);
        epoch.download(got.output()).unwrap();
        let expected = settle(&CpuSettler, &ledger);
        if let Some(difference) = expected.first_difference(&got, &ledger) {
            panic!("round {round}: {difference}");
        }
        // Revoke every 7th contribution more, un-revoke a few, and settle again.
        for (c, flag) in ledger.revoked.iter_mut().enumerate() {
            if c % 7 == usize::from(round) {
                *flag ^= 1;
            }
        }
        epoch.set_revoked(&ledger.revoked).unwrap();
    }
    assert!(matches!(epoch.set_revoked(&[0]), Err(GpuError::Misuse(_))));
}
