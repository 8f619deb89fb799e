//! Opening the GPU backend where there is no GPU must be an error that says why, never a
//! panic; where there is one, it must open and describe itself.

use tally_gpu::{driver_present, nvrtc_present, probe, GpuError, GpuSettler};

#[test]
fn open_says_what_is_missing_or_opens() {
    let opened = GpuSettler::open();
    let probed = probe();
    if !driver_present() {
        assert!(matches!(opened, Err(GpuError::NoDriver)), "{opened:?}");
        assert!(matches!(probed, Err(GpuError::NoDriver)), "{probed:?}");
        let message = GpuError::NoDriver.to_string();
        assert!(
            message.contains("no CUDA driver library") && message.contains("libcuda"),
            "{message}"
        );
        eprintln!("no GPU here, as expected: {message}");
        return;
    }
    match (opened, nvrtc_present()) {
        (Ok(settler), true) => {
            let line = settler.describe();
            assert!(line.contains("sm_") && line.contains("GiB"), "{line}");
            assert!(probed.is_ok_and(|p| p.contains(&settler.info().name)));
            eprintln!("opened: {line}");
        }
        (Err(GpuError::NoNvrtc), false) => eprintln!("driver but no NVRTC: {}", GpuError::NoNvrtc),
        (Err(error @ (GpuError::NoDevice(_) | GpuError::DriverTooOld { .. })), _) => {
            eprintln!("driver but no usable device: {error}")
        }
        (other, nvrtc) => panic!("unexpected outcome (NVRTC present: {nvrtc}): {other:?}"),
    }
}
