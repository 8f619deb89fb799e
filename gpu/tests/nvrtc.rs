//! NVRTC compile checks of the kernels, without a GPU: to PTX and to CUBIN for the H100's
//! sm_90 (and neighbours). Skips, saying so, where no NVRTC library can be loaded, unless
//! TALLY_REQUIRE_NVRTC=1 (CI sets it), which turns the skip into a failure.

use tally_gpu::nvrtc::{ACCOUNTS_KERNEL, SETTLE_KERNEL};
use tally_gpu::{compile_kernels, nvrtc_present, GpuError, KernelTarget};

/// The H100's architecture (compute capability 9.0).
const HOPPER: u32 = 90;

/// Whether to run; panics when NVRTC is missing but required.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc_present() {
        return true;
    }
    let required = std::env::var("TALLY_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    assert!(!required, "TALLY_REQUIRE_NVRTC=1 but {}", GpuError::NoNvrtc);
    eprintln!("{test}: skipped: {}", GpuError::NoNvrtc);
    false
}

/// The PTX of one kernel: from its `.entry` line to the next `.entry` (or the end).
fn kernel_ptx<'a>(ptx: &'a str, kernel: &str) -> &'a str {
    let start =
        ptx.find(&format!(".entry {kernel}(")).unwrap_or_else(|| panic!("no {kernel} in PTX"));
    let rest = &ptx[start + 1..];
    &ptx[start..start + 1 + rest.find(".entry").unwrap_or(rest.len())]
}

#[test]
fn kernels_compile_to_ptx_for_hopper() {
    if !nvrtc_or_skip("kernels_compile_to_ptx_for_hopper") {
        return;
    }
    let ptx = compile_kernels(KernelTarget::Ptx { arch: HOPPER }).unwrap_or_else(|e| panic!("{e}"));
    let ptx = String::from_utf8(ptx).expect("PTX is text");
    assert!(ptx.contains(".target sm_90"), "{ptx}");
    let settle = kernel_ptx(&ptx, SETTLE_KERNEL);
    let accounts = kernel_ptx(&ptx, ACCOUNTS_KERNEL);
    // The totals are native 64-bit atomics on global memory, no compare-and-swap loops.
    for kernel in [settle, accounts] {
        assert!(kernel.contains("atom.global.add.u64") || kernel.contains("red.global.add.u64"));
        assert!(!kernel.contains("atom.global.cas"), "a CAS loop: {kernel}");
        assert!(!kernel.contains(".f32") && !kernel.contains(".f64"), "floating point: {kernel}");
    }
    // One 64-bit division per inference (the reciprocal of W); each entry's share is a
    // multiply-high. A division in the per-entry loop would show up as more than one.
    assert_eq!(settle.matches("div.u64").count(), 1, "{settle}");
    assert!(settle.contains("mul.hi.u64"));
    assert!(!settle.contains("rem.u64") && !accounts.contains("div.u64"));
}

#[test]
fn kernels_compile_to_cubin_for_hopper_and_neighbours() {
    if !nvrtc_or_skip("kernels_compile_to_cubin_for_hopper_and_neighbours") {
        return;
    }
    for arch in [80, 89, HOPPER, 100] {
        let cubin = compile_kernels(KernelTarget::Cubin { arch })
            .unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "sm_{arch}: a CUBIN is an ELF image");
        for kernel in [SETTLE_KERNEL, ACCOUNTS_KERNEL] {
            let found = cubin.windows(kernel.len()).any(|w| w == kernel.as_bytes());
            assert!(found, "sm_{arch}: no symbol {kernel} in the CUBIN");
        }
    }
}

/// The PTX parameter types of `kernel`, in order.
fn parameter_types(ptx: &str, kernel: &str) -> Vec<String> {
    let signature = kernel_ptx(ptx, kernel).split(')').next().unwrap_or_default();
    signature
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".param ."))
        .map(|l| l[..3].to_string())
        .collect()
}

/// gpu/src/resident.rs launches tally_settle_inferences with 8 device pointers (entry_start,
/// pool, contribution, weight, revoked, reward, unassigned, contribution_total) and a u32
/// count, and tally_account_totals with 3 pointers and a u32 count. A kernel signature that
/// drifts from those launches must fail here rather than on a GPU.
#[test]
fn kernel_parameters_match_the_launches() {
    if !nvrtc_or_skip("kernel_parameters_match_the_launches") {
        return;
    }
    let ptx = compile_kernels(KernelTarget::Ptx { arch: HOPPER }).unwrap_or_else(|e| panic!("{e}"));
    let ptx = String::from_utf8(ptx).expect("PTX is text");
    let expected = |pointers: usize| {
        let mut types = vec!["u64".to_string(); pointers];
        types.push("u32".to_string());
        types
    };
    assert_eq!(parameter_types(&ptx, SETTLE_KERNEL), expected(8));
    assert_eq!(parameter_types(&ptx, ACCOUNTS_KERNEL), expected(3));
}
