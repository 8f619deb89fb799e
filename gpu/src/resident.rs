//! An epoch's flat arrays resident on the GPU: uploaded once, settled as often as wanted (after
//! a new `revoked` array, say), results downloaded on demand. Transfers and kernels are timed
//! apart: kernels with CUDA events on the stream, transfers by the host clock around
//! synchronous copies.
//!
//! Owns the device buffers and the launch sequence: zero the totals, one thread per inference,
//! then one thread per contribution, all on one stream (so in that order). Never launches on
//! arrays `SettleInput::check` has not accepted, and never a kernel over zero items (a grid of
//! zero blocks is a launch error).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use tally_engine::{SettleInput, SettleOutput};

use crate::device::Device;
use crate::GpuError;

/// Threads per block of both kernels: one thread per item, 8 warps per block.
pub const THREADS_PER_BLOCK: u32 = 256;

/// How long each part of one settlement took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettleTimings {
    /// Host to device: the input arrays (or only `revoked`), host clock.
    pub upload: Duration,
    /// On the device: zeroing the totals and both kernels, CUDA events.
    pub kernel: Duration,
    /// Device to host: the four output arrays, host clock.
    pub download: Duration,
}

/// One epoch's arrays on the device. Create with `GpuSettler::upload`.
#[derive(Debug)]
pub struct ResidentEpoch {
    device: Arc<Device>,
    shape: Shape,
    input: Inputs,
    output: Outputs,
    /// Whether `output` holds the results of the current inputs.
    settled: bool,
    /// How long the first upload of all the input arrays took.
    upload_time: Duration,
}

/// Element counts, checked to fit the kernels' 32-bit indices.
#[derive(Debug, Clone, Copy)]
struct Shape {
    inferences: u32,
    entries: usize,
    contributions: u32,
    accounts: usize,
}

#[derive(Debug)]
struct Inputs {
    entry_start: CudaSlice<u32>,
    pool: CudaSlice<u64>,
    contribution: CudaSlice<u32>,
    weight: CudaSlice<u32>,
    revoked: CudaSlice<u8>,
    contributor: CudaSlice<u32>,
}

#[derive(Debug)]
struct Outputs {
    reward: CudaSlice<u64>,
    unassigned: CudaSlice<u64>,
    contribution_total: CudaSlice<u64>,
    account_total: CudaSlice<u64>,
}

impl ResidentEpoch {
    /// Uploads `input`, which the caller has checked with `SettleInput::check`.
    pub(crate) fn upload(
        device: Arc<Device>,
        input: &SettleInput<'_>,
    ) -> Result<ResidentEpoch, GpuError> {
        let shape = Shape::of(input)?;
        let started = Instant::now();
        let stream = &device.stream;
        let inputs = Inputs {
            entry_start: to_device(stream, input.entry_start)?,
            pool: to_device(stream, input.pool)?,
            contribution: to_device(stream, input.contribution)?,
            weight: to_device(stream, input.weight)?,
            revoked: to_device(stream, input.revoked)?,
            contributor: to_device(stream, input.contributor)?,
        };
        let outputs = Outputs {
            reward: zeros(stream, shape.entries)?,
            unassigned: zeros(stream, shape.inferences as usize)?,
            contribution_total: zeros(stream, shape.contributions as usize)?,
            account_total: zeros(stream, shape.accounts)?,
        };
        stream.synchronize().map_err(GpuError::cuda("cuStreamSynchronize"))?;
        let upload_time = started.elapsed();
        Ok(ResidentEpoch {
            device,
            shape,
            input: inputs,
            output: outputs,
            settled: false,
            upload_time,
        })
    }

    /// How long uploading the input arrays took (host clock, copies finished).
    pub fn upload_time(&self) -> Duration {
        self.upload_time
    }

    pub fn inferences(&self) -> usize {
        self.shape.inferences as usize
    }

    pub fn entries(&self) -> usize {
        self.shape.entries
    }

    pub fn contributions(&self) -> usize {
        self.shape.contributions as usize
    }

    pub fn accounts(&self) -> usize {
        self.shape.accounts
    }

    /// Replaces the revocation flags (one per contribution, 0 = not revoked); the next
    /// `settle` uses them. Returns the upload time.
    pub fn set_revoked(&mut self, revoked: &[u8]) -> Result<Duration, GpuError> {
        if revoked.len() != self.contributions() {
            return Err(GpuError::Misuse("revoked must have one flag per contribution"));
        }
        let started = Instant::now();
        self.settled = false;
        if !revoked.is_empty() {
            let stream = &self.device.stream;
            stream
                .memcpy_htod(revoked, &mut self.input.revoked)
                .map_err(GpuError::cuda("cuMemcpyHtoDAsync"))?;
            stream.synchronize().map_err(GpuError::cuda("cuStreamSynchronize"))?;
        }
        Ok(started.elapsed())
    }

    /// Settles the resident epoch on the device; returns the device time (CUDA events).
    pub fn settle(&mut self) -> Result<Duration, GpuError> {
        let stream = Arc::clone(&self.device.stream);
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = stream.record_event(timing).map_err(GpuError::cuda("cuEventRecord"))?;
        self.zero_totals(&stream)?;
        self.launch_settle(&stream)?;
        self.launch_accounts(&stream)?;
        let end = stream.record_event(timing).map_err(GpuError::cuda("cuEventRecord"))?;
        let millis = start.elapsed_ms(&end).map_err(GpuError::cuda("cuEventElapsedTime"))?;
        self.settled = true;
        Ok(Duration::from_secs_f64(f64::from(millis) / 1e3))
    }

    /// Copies the results of the last `settle` into `out`, whose arrays must have this
    /// epoch's lengths. Returns the download time.
    pub fn download(&self, out: SettleOutput<'_>) -> Result<Duration, GpuError> {
        if !self.settled {
            return Err(GpuError::Misuse("download before settle (or after set_revoked)"));
        }
        if out.reward.len() != self.entries()
            || out.unassigned.len() != self.inferences()
            || out.contribution_total.len() != self.contributions()
            || out.account_total.len() != self.accounts()
        {
            return Err(GpuError::Misuse("output arrays do not have the resident epoch's lengths"));
        }
        let started = Instant::now();
        let stream = &self.device.stream;
        to_host(stream, &self.output.reward, out.reward)?;
        to_host(stream, &self.output.unassigned, out.unassigned)?;
        to_host(stream, &self.output.contribution_total, out.contribution_total)?;
        to_host(stream, &self.output.account_total, out.account_total)?;
        stream.synchronize().map_err(GpuError::cuda("cuStreamSynchronize"))?;
        Ok(started.elapsed())
    }

    fn zero_totals(&mut self, stream: &Arc<CudaStream>) -> Result<(), GpuError> {
        let out = &mut self.output;
        stream
            .memset_zeros(&mut out.contribution_total)
            .map_err(GpuError::cuda("cuMemsetD8Async"))?;
        stream.memset_zeros(&mut out.account_total).map_err(GpuError::cuda("cuMemsetD8Async"))
    }

    fn launch_settle(&mut self, stream: &Arc<CudaStream>) -> Result<(), GpuError> {
        let count = self.shape.inferences;
        if count == 0 {
            return Ok(());
        }
        let (input, out) = (&self.input, &mut self.output);
        let mut launch = stream.launch_builder(&self.device.settle);
        launch
            .arg(&input.entry_start)
            .arg(&input.pool)
            .arg(&input.contribution)
            .arg(&input.weight)
            .arg(&input.revoked)
            .arg(&mut out.reward)
            .arg(&mut out.unassigned)
            .arg(&mut out.contribution_total)
            .arg(&count);
        // SAFETY: the arguments match tally_settle_inferences' parameters in order and type
        // (u32/u64/u8 device arrays, then a u32 count). `SettleInput::check` accepted the
        // arrays: entry_start has inferences + 1 non-decreasing offsets ending at the entry
        // count, every contribution id is below the revoked/contribution_total length, so every
        // index the kernel forms is in bounds; threads at or past `count` return at once.
        unsafe { launch.launch(grid(count)) }.map_err(GpuError::cuda("cuLaunchKernel settle"))?;
        Ok(())
    }

    fn launch_accounts(&mut self, stream: &Arc<CudaStream>) -> Result<(), GpuError> {
        let count = self.shape.contributions;
        if count == 0 {
            return Ok(());
        }
        let (input, out) = (&self.input, &mut self.output);
        let mut launch = stream.launch_builder(&self.device.accounts);
        launch
            .arg(&out.contribution_total)
            .arg(&input.contributor)
            .arg(&mut out.account_total)
            .arg(&count);
        // SAFETY: the arguments match tally_account_totals' parameters in order and type.
        // contribution_total and contributor have `count` elements and every contributor id is
        // below the account_total length (`SettleInput::check`); threads past `count` return.
        unsafe { launch.launch(grid(count)) }.map_err(GpuError::cuda("cuLaunchKernel accounts"))?;
        Ok(())
    }
}

impl Shape {
    fn of(input: &SettleInput<'_>) -> Result<Shape, GpuError> {
        Ok(Shape {
            inferences: fits_u32("the pool array", input.inferences())?,
            entries: input.entries(),
            contributions: fits_u32("the revoked array", input.revoked.len())?,
            accounts: input.accounts,
        })
    }
}

fn fits_u32(what: &'static str, len: usize) -> Result<u32, GpuError> {
    u32::try_from(len).map_err(|_| GpuError::TooLarge { what, len })
}

/// One thread per item, `THREADS_PER_BLOCK` to a block; `count` > 0.
fn grid(count: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (count.div_ceil(THREADS_PER_BLOCK), 1, 1),
        block_dim: (THREADS_PER_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A device copy of `host`. An empty array gets one zeroed element instead: CUDA refuses
/// zero-byte allocations, and no kernel reads an empty array.
fn to_device<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    host: &[T],
) -> Result<CudaSlice<T>, GpuError> {
    if host.is_empty() {
        return zeros(stream, 0);
    }
    stream.clone_htod(host).map_err(GpuError::cuda("cuMemAlloc/cuMemcpyHtoDAsync"))
}

/// `len` zeroed elements (at least one, as for `to_device`).
fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> Result<CudaSlice<T>, GpuError> {
    stream.alloc_zeros(len.max(1)).map_err(GpuError::cuda("cuMemAlloc/cuMemsetD8Async"))
}

/// Copies the first `host.len()` elements of `device` into `host`.
fn to_host(
    stream: &Arc<CudaStream>,
    device: &CudaSlice<u64>,
    host: &mut [u64],
) -> Result<(), GpuError> {
    if host.is_empty() {
        return Ok(());
    }
    let view = device.slice(..host.len());
    stream.memcpy_dtoh(&view, host).map_err(GpuError::cuda("cuMemcpyDtoHAsync"))
}
