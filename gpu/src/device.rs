//! Opening the GPU: the probe order (driver library, NVRTC library, a device), the context and
//! stream on device 0, and the kernels compiled for that device's own architecture and loaded.
//!
//! Owns the only calls that can find CUDA missing. Never calls into a CUDA library before
//! `is_culib_present` has said it is there (cudarc panics otherwise), so a machine without a
//! GPU gets a `GpuError` saying which piece is missing, never a panic.

use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::{self as driver_sys, CUdevice_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use crate::nvrtc::{self, KernelTarget, ACCOUNTS_KERNEL, SETTLE_KERNEL};
use crate::GpuError;

/// The device the backend uses: the first one. One process, one GPU.
const DEVICE_ORDINAL: usize = 0;

/// The CUDA version cudarc's bindings are generated for (the `cuda-13000` feature). An older
/// driver lacks symbols they call (cuEventElapsedTime_v2), and cudarc panics on a missing
/// symbol, so such a driver is refused up front.
const BINDINGS_CUDA_VERSION: i32 = 13_000;

/// What `describe()` shows of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability (major, minor): (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    pub driver_cuda: (i32, i32),
    pub nvrtc: (i32, i32),
}

impl DeviceInfo {
    /// The architecture number NVRTC is given, 90 for compute capability 9.0.
    pub fn arch(&self) -> u32 {
        let (major, minor) = self.compute_capability;
        (major * 10 + minor) as u32
    }
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const GIB: f64 = (1u64 << 30) as f64;
        write!(
            f,
            "{} (sm_{}, {:.1} GiB, driver CUDA {}.{}, NVRTC {}.{})",
            self.name,
            self.arch(),
            self.memory_bytes as f64 / GIB,
            self.driver_cuda.0,
            self.driver_cuda.1,
            self.nvrtc.0,
            self.nvrtc.1
        )
    }
}

/// An open device with the settlement kernels loaded.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) settle: CudaFunction,
    pub(crate) accounts: CudaFunction,
    pub(crate) info: DeviceInfo,
}

impl Device {
    pub(crate) fn open() -> Result<Device, GpuError> {
        let context = open_context()?;
        let info = read_info(&context)?;
        let cubin = nvrtc::compile_kernels(KernelTarget::Cubin { arch: info.arch() })?;
        let module = context
            .load_module(Ptx::from_binary(cubin))
            .map_err(GpuError::cuda("cuModuleLoadData"))?;
        let settle =
            module.load_function(SETTLE_KERNEL).map_err(GpuError::cuda("cuModuleGetFunction"))?;
        let accounts =
            module.load_function(ACCOUNTS_KERNEL).map_err(GpuError::cuda("cuModuleGetFunction"))?;
        Ok(Device { stream: context.default_stream(), settle, accounts, info })
    }
}

/// Whether the CUDA driver library can be loaded (checked once per process).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the candidate library names; calls nothing in them.
    *PRESENT.get_or_init(|| unsafe { driver_sys::is_culib_present() })
}

/// Checks the libraries and the device count, then retains device 0's primary context.
pub(crate) fn open_context() -> Result<Arc<CudaContext>, GpuError> {
    if !driver_present() {
        return Err(GpuError::NoDriver);
    }
    if !nvrtc::nvrtc_present() {
        return Err(GpuError::NoNvrtc);
    }
    let driver = driver_version()?;
    if driver < BINDINGS_CUDA_VERSION {
        return Err(GpuError::DriverTooOld {
            found: cuda_version(driver),
            needed: cuda_version(BINDINGS_CUDA_VERSION),
        });
    }
    let count = CudaContext::device_count().map_err(no_device_or("cuInit/cuDeviceGetCount"))?;
    if count <= DEVICE_ORDINAL as i32 {
        return Err(GpuError::NoDevice(format!("the driver counts {count} devices")));
    }
    CudaContext::new(DEVICE_ORDINAL).map_err(no_device_or("cuDevicePrimaryCtxRetain"))
}

/// Maps the driver's "no device" answers to `NoDevice`, anything else to a failed call.
fn no_device_or(call: &'static str) -> impl FnOnce(DriverError) -> GpuError {
    move |error| match error.0 {
        // A stub libcuda (a toolkit's, without a driver) answers CUDA_ERROR_STUB_LIBRARY.
        CUresult::CUDA_ERROR_NO_DEVICE
        | CUresult::CUDA_ERROR_INVALID_DEVICE
        | CUresult::CUDA_ERROR_STUB_LIBRARY => GpuError::NoDevice(error.to_string()),
        _ => GpuError::Cuda { call, source: error },
    }
}

pub(crate) fn read_info(context: &Arc<CudaContext>) -> Result<DeviceInfo, GpuError> {
    let name = context.name().map_err(GpuError::cuda("cuDeviceGetName"))?;
    let major = context
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .map_err(GpuError::cuda("cuDeviceGetAttribute"))?;
    let minor = context
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .map_err(GpuError::cuda("cuDeviceGetAttribute"))?;
    let memory_bytes = context.total_mem().map_err(GpuError::cuda("cuDeviceTotalMem"))?;
    Ok(DeviceInfo {
        name,
        compute_capability: (major, minor),
        memory_bytes,
        driver_cuda: cuda_version(driver_version()?),
        nvrtc: nvrtc::nvrtc_version()?,
    })
}

/// The CUDA version the driver supports, as CUDA writes it: 13000 for 13.0. Needs no cuInit.
fn driver_version() -> Result<i32, GpuError> {
    let mut version = 0;
    // SAFETY: the driver library is present (every caller checks `driver_present` first) and
    // `version` is a valid out pointer.
    let result = unsafe { driver_sys::cuDriverGetVersion(&mut version) };
    result.result().map_err(GpuError::cuda("cuDriverGetVersion"))?;
    Ok(version)
}

/// 13000 as (13, 0).
fn cuda_version(version: i32) -> (i32, i32) {
    (version / 1000, version % 1000 / 10)
}
