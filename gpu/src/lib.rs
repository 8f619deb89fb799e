//! Tally's GPU settlement backend: the engine's `BatchSettler` (settlement.md §3, to the unit)
//! as two CUDA kernels, compiled at run time by NVRTC for the GPU found, loaded through the
//! driver API (cudarc, `dynamic-loading`). Nothing links CUDA at build time: this crate builds
//! and its tests pass on machines without CUDA, where `GpuSettler::open` and `probe` return a
//! `GpuError` saying what is missing.
//!
//! - `cuda/settle.cuh`: the settlement math, shared by the kernels and a host build (g++ via
//!   build.rs) that the property tests check against `tally_engine::CpuSettler` (`host`).
//! - `cuda/settle_kernels.cu`: one thread per inference (rewards, unassigned, u64 atomicAdd
//!   into contribution totals), then one per contribution (atomicAdd into account totals).
//! - `nvrtc`: compiling those to PTX or CUBIN; works without a GPU (CI's compile check).
//! - `GpuSettler` / `ResidentEpoch`: open, settle, or keep an epoch on the device and time
//!   the kernels apart from the transfers.
//!
//! Not here yet: multi-GPU, pinned host buffers, incremental (per-revocation) re-settlement on
//! the device.

mod device;
mod error;
pub mod host;
pub mod nvrtc;
mod resident;
mod settler;

pub use device::{driver_present, DeviceInfo};
pub use error::GpuError;
pub use nvrtc::{compile_kernels, nvrtc_present, KernelTarget};
pub use resident::{ResidentEpoch, SettleTimings, THREADS_PER_BLOCK};
pub use settler::{probe, GpuSettler};
