//! `GpuError`: the one error type of this crate. Each variant says why the GPU backend cannot
//! run or what failed, in words a log line can carry as they are; nothing here panics, and a
//! caller that gets an error falls back to the CPU settler.

use cudarc::driver::DriverError;
use tally_engine::settle::SettleError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no CUDA driver library could be loaded (libcuda.so): no NVIDIA driver on this machine, \
         or it is not on the loader path"
    )]
    NoDriver,

    #[error(
        "no NVRTC library could be loaded (libnvrtc.so.13): install the CUDA 13 runtime compiler \
         (e.g. pip install 'nvidia-cuda-nvrtc==13.0.*') and put its nvidia/cu13/lib directory on \
         LD_LIBRARY_PATH"
    )]
    NoNvrtc,

    #[error("the CUDA driver is present but reports no usable GPU: {0}")]
    NoDevice(String),

    #[error(
        "the NVIDIA driver supports CUDA {}.{}; this build needs a driver for CUDA {}.{} or newer",
        found.0, found.1, needed.0, needed.1
    )]
    DriverTooOld { found: (i32, i32), needed: (i32, i32) },

    #[error("NVRTC could not compile the settlement kernels for {target}:\n{log}")]
    Compile { target: String, log: String },

    #[error("NVRTC call {call} failed: {message}")]
    Nvrtc { call: &'static str, message: String },

    #[error("CUDA call failed ({call}): {source}")]
    Cuda {
        call: &'static str,
        #[source]
        source: DriverError,
    },

    #[error(transparent)]
    Input(#[from] SettleError),

    #[error("{what} has {len} elements; the kernels index with 32 bits")]
    TooLarge { what: &'static str, len: usize },

    #[error("{0}")]
    Misuse(&'static str),
}

impl GpuError {
    /// A closure for `map_err` that names the CUDA call that failed.
    pub(crate) fn cuda(call: &'static str) -> impl FnOnce(DriverError) -> GpuError {
        move |source| GpuError::Cuda { call, source }
    }
}

impl From<GpuError> for SettleError {
    fn from(error: GpuError) -> SettleError {
        match error {
            GpuError::Input(input) => input,
            other => SettleError(format!("gpu settlement failed: {other}")),
        }
    }
}
