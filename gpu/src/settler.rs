//! `GpuSettler`: the engine's `BatchSettler` on an NVIDIA GPU, and `probe()`, which says what
//! would be used or why nothing can be.
//!
//! Owns the public face of the backend: open (probe libraries, device 0, compile for its
//! architecture, load), settle one batch (check, upload, launch, download), upload an epoch to
//! keep resident. Never hands the kernels unchecked input, and never panics for a missing GPU,
//! driver or NVRTC: those are `GpuError`s, which a caller answers with the CPU settler.

use std::sync::Arc;

use tally_engine::{BatchSettler, SettleError, SettleInput, SettleOutput};

use crate::device::{self, Device, DeviceInfo};
use crate::resident::{ResidentEpoch, SettleTimings};
use crate::GpuError;

/// The settlement kernels loaded on device 0.
#[derive(Debug, Clone)]
pub struct GpuSettler {
    device: Arc<Device>,
}

impl GpuSettler {
    /// Opens device 0 and compiles the kernels for it with NVRTC (a second or so).
    pub fn open() -> Result<GpuSettler, GpuError> {
        Ok(GpuSettler { device: Arc::new(Device::open()?) })
    }

    /// One line for the log: device name, architecture, memory, CUDA and NVRTC versions.
    pub fn describe(&self) -> String {
        self.device.info.to_string()
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.device.info
    }

    /// Checks `input` and uploads it to stay on the device for repeated settlement.
    pub fn upload(&self, input: &SettleInput<'_>) -> Result<ResidentEpoch, GpuError> {
        input.check()?;
        ResidentEpoch::upload(Arc::clone(&self.device), input)
    }

    /// `BatchSettler::settle`, with the time each part took.
    pub fn settle_timed(
        &self,
        input: &SettleInput<'_>,
        out: SettleOutput<'_>,
    ) -> Result<SettleTimings, GpuError> {
        input.check()?;
        out.check(input)?;
        let mut epoch = ResidentEpoch::upload(Arc::clone(&self.device), input)?;
        let kernel = epoch.settle()?;
        let download = epoch.download(out)?;
        Ok(SettleTimings { upload: epoch.upload_time(), kernel, download })
    }
}

impl BatchSettler for GpuSettler {
    fn name(&self) -> &str {
        "gpu"
    }

    fn settle(&self, input: &SettleInput<'_>, out: SettleOutput<'_>) -> Result<(), SettleError> {
        self.settle_timed(input, out).map(drop).map_err(SettleError::from)
    }
}

/// What `GpuSettler::open` would use ("device 0 of 1: NVIDIA H100 …"), or why it cannot run.
/// Cheaper than `open`: compiles nothing.
pub fn probe() -> Result<String, GpuError> {
    let context = device::open_context()?;
    let info = device::read_info(&context)?;
    let count =
        cudarc::driver::CudaContext::device_count().map_err(GpuError::cuda("cuDeviceGetCount"))?;
    Ok(format!("device 0 of {count}: {info}"))
}
