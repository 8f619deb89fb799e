//! Compiles the settlement kernels (`cuda/settle_kernels.cu` with `cuda/settle.cuh` passed as
//! a named header) with NVRTC, to PTX or to a CUBIN for one real architecture. Needs no GPU and
//! no driver, only the NVRTC library, so CI compile-checks the kernels on CPU-only machines.
//!
//! Owns the NVRTC program's lifetime and the compile options. Never panics on a missing
//! library: every entry point checks `nvrtc_present()` first (cudarc panics when a symbol is
//! loaded from a library that is not there). A compile failure returns NVRTC's log whole.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

use cudarc::nvrtc::sys::{self, nvrtcProgram, nvrtcResult};

use crate::GpuError;

/// The CUDA C source of the kernels.
pub const KERNEL_SOURCE: &str = include_str!("../cuda/settle_kernels.cu");
/// The settlement math both the kernels and the host build include.
pub const HEADER_SOURCE: &str = include_str!("../cuda/settle.cuh");
/// The name the kernel source `#include`s the header by.
const HEADER_NAME: &str = "settle.cuh";
/// The kernels' program name, as NVRTC's log shows it.
const PROGRAM_NAME: &str = "settle_kernels.cu";
/// The names of the two kernels (`extern "C"`, so unmangled).
pub const SETTLE_KERNEL: &str = "tally_settle_inferences";
pub const ACCOUNTS_KERNEL: &str = "tally_account_totals";

/// What to compile to. Architectures are written as CUDA numbers: 90 for compute capability 9.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelTarget {
    /// PTX for a virtual architecture (`compute_XY`), JIT-compiled by the driver at load.
    Ptx { arch: u32 },
    /// Machine code for one real architecture (`sm_XY`): what `GpuSettler` loads, so that a
    /// driver older than the NVRTC never has to understand NVRTC's PTX.
    Cubin { arch: u32 },
}

impl KernelTarget {
    fn arch_option(self) -> String {
        match self {
            KernelTarget::Ptx { arch } => format!("--gpu-architecture=compute_{arch}"),
            KernelTarget::Cubin { arch } => format!("--gpu-architecture=sm_{arch}"),
        }
    }
}

impl std::fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelTarget::Ptx { arch } => write!(f, "PTX compute_{arch}"),
            KernelTarget::Cubin { arch } => write!(f, "CUBIN sm_{arch}"),
        }
    }
}

/// Whether an NVRTC library can be loaded (checked once per process).
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the candidate library names; calls nothing in them.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// NVRTC's version, (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    require_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for the call.
    let result = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(result, "nvrtcVersion")?;
    Ok((major, minor))
}

/// Compiles the settlement kernels to `target`: PTX text (NUL-free) or a CUBIN (an ELF image).
pub fn compile_kernels(target: KernelTarget) -> Result<Vec<u8>, GpuError> {
    compile(KERNEL_SOURCE, target)
}

/// Compiles `source` (which may `#include "settle.cuh"`) to `target`.
pub(crate) fn compile(source: &str, target: KernelTarget) -> Result<Vec<u8>, GpuError> {
    require_nvrtc()?;
    let program = Program::create(source)?;
    let options = [target.arch_option(), "--std=c++17".to_string()];
    program.compile(&options, target)?;
    match target {
        KernelTarget::Ptx { .. } => {
            let mut text = program.output(&PTX)?;
            // PTX comes with its terminating NUL; callers get the text alone.
            if text.last() == Some(&0) {
                text.pop();
            }
            Ok(text)
        }
        KernelTarget::Cubin { .. } => program.output(&CUBIN),
    }
}

fn require_nvrtc() -> Result<(), GpuError> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(GpuError::NoNvrtc)
    }
}

fn check(result: nvrtcResult, call: &'static str) -> Result<(), GpuError> {
    if result == nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a pointer to a static NUL-terminated string.
    let message = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(result)) };
    Err(GpuError::Nvrtc { call, message: message.to_string_lossy().into_owned() })
}

fn c_string(text: &str, what: &'static str) -> Result<CString, GpuError> {
    CString::new(text).map_err(|_| GpuError::Nvrtc {
        call: "nvrtcCreateProgram",
        message: format!("the {what} contains a NUL byte"),
    })
}

/// An NVRTC program, destroyed on drop. Holds the strings it was created from, which NVRTC
/// may refer to until then.
struct Program {
    handle: nvrtcProgram,
    _strings: [CString; 4],
}

/// One of a program's outputs: the NVRTC functions that give its size and copy it out.
struct Output {
    size: unsafe fn(nvrtcProgram, *mut usize) -> nvrtcResult,
    size_call: &'static str,
    copy: unsafe fn(nvrtcProgram, *mut c_char) -> nvrtcResult,
    copy_call: &'static str,
}

const PTX: Output = Output {
    size: sys::nvrtcGetPTXSize,
    size_call: "nvrtcGetPTXSize",
    copy: sys::nvrtcGetPTX,
    copy_call: "nvrtcGetPTX",
};
const CUBIN: Output = Output {
    size: sys::nvrtcGetCUBINSize,
    size_call: "nvrtcGetCUBINSize",
    copy: sys::nvrtcGetCUBIN,
    copy_call: "nvrtcGetCUBIN",
};
const LOG: Output = Output {
    size: sys::nvrtcGetProgramLogSize,
    size_call: "nvrtcGetProgramLogSize",
    copy: sys::nvrtcGetProgramLog,
    copy_call: "nvrtcGetProgramLog",
};

impl Program {
    fn create(source: &str) -> Result<Program, GpuError> {
        let strings = [
            c_string(source, "kernel source")?,
            c_string(PROGRAM_NAME, "program name")?,
            c_string(HEADER_SOURCE, "header")?,
            c_string(HEADER_NAME, "header name")?,
        ];
        let headers = [strings[2].as_ptr()];
        let include_names = [strings[3].as_ptr()];
        let mut handle: nvrtcProgram = std::ptr::null_mut();
        // SAFETY: the library is present (checked by the caller); every pointer is to a live
        // NUL-terminated string, and the two arrays hold exactly the one header announced.
        let result = unsafe {
            sys::nvrtcCreateProgram(
                &mut handle,
                strings[0].as_ptr(),
                strings[1].as_ptr(),
                1,
                headers.as_ptr(),
                include_names.as_ptr(),
            )
        };
        check(result, "nvrtcCreateProgram")?;
        Ok(Program { handle, _strings: strings })
    }

    fn compile(&self, options: &[String], target: KernelTarget) -> Result<(), GpuError> {
        let options: Vec<CString> =
            options.iter().map(|o| c_string(o, "compile option")).collect::<Result<_, _>>()?;
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: `handle` is a live program; `pointers` holds `len` live C strings.
        let result = unsafe {
            sys::nvrtcCompileProgram(self.handle, pointers.len() as c_int, pointers.as_ptr())
        };
        match result {
            nvrtcResult::NVRTC_ERROR_COMPILATION => {
                Err(GpuError::Compile { target: target.to_string(), log: self.log()? })
            }
            // What a wheel's libnvrtc gives when its lib directory is not on the loader path.
            nvrtcResult::NVRTC_ERROR_BUILTIN_OPERATION_FAILURE => Err(GpuError::Nvrtc {
                call: "nvrtcCompileProgram",
                message:
                    "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE: NVRTC could not load its builtins \
                          library (libnvrtc-builtins.so.13.0); put the directory holding it \
                          (the wheel's nvidia/cu13/lib) on LD_LIBRARY_PATH"
                        .to_string(),
            }),
            _ => check(result, "nvrtcCompileProgram"),
        }
    }

    fn log(&self) -> Result<String, GpuError> {
        let bytes = self.output(&LOG)?;
        let text = CStr::from_bytes_until_nul(&bytes).map(CStr::to_bytes).unwrap_or(&bytes);
        Ok(String::from_utf8_lossy(text).trim_end().to_string())
    }

    /// One of the program's outputs (PTX, CUBIN, log).
    fn output(&self, output: &Output) -> Result<Vec<u8>, GpuError> {
        let mut len = 0usize;
        // SAFETY: `handle` is a live program and `len` a valid out pointer.
        check(unsafe { (output.size)(self.handle, &mut len) }, output.size_call)?;
        let mut bytes = vec![0u8; len];
        // SAFETY: `bytes` has the `len` bytes NVRTC just said it will write.
        check(unsafe { (output.copy)(self.handle, bytes.as_mut_ptr().cast()) }, output.copy_call)?;
        Ok(bytes)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `handle` was created by nvrtcCreateProgram and is destroyed only here. A
        // failure leaks the program, which is all that can be done in a destructor.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_engine::settle::{MAX_ENTRIES, MAX_FEE};
    use tally_engine::weight::WEIGHT_SCALE;

    /// The value of `#define NAME VALUE` in the header, without a `U` suffix.
    fn header_define(name: &str) -> String {
        let line = HEADER_SOURCE
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("no #define {name} in settle.cuh"));
        line.trim().trim_end_matches('U').to_string()
    }

    #[test]
    fn header_limits_match_the_engine() {
        assert_eq!(header_define("TALLY_POOL_MAX"), "(1ULL << 40)");
        assert_eq!(1u64 << 40, MAX_FEE as u64);
        assert_eq!(header_define("TALLY_WEIGHT_MAX"), WEIGHT_SCALE.to_string());
        assert_eq!(header_define("TALLY_ENTRIES_MAX"), MAX_ENTRIES.to_string());
    }

    #[test]
    fn a_compile_error_carries_nvrtc_log() {
        if !nvrtc_present() {
            let required = std::env::var("TALLY_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "TALLY_REQUIRE_NVRTC=1 but {}", GpuError::NoNvrtc);
            let result = compile_kernels(KernelTarget::Ptx { arch: 90 });
            assert!(matches!(result, Err(GpuError::NoNvrtc)), "{result:?}");
            eprintln!("skipped: {}", GpuError::NoNvrtc);
            return;
        }
        let broken =
            "#include \"settle.cuh\"\nextern \"C\" __global__ void k() { undeclared_name; }";
        let error = compile(broken, KernelTarget::Cubin { arch: 90 }).unwrap_err();
        let GpuError::Compile { target, log } = &error else {
            panic!("not a compile error: {error}")
        };
        assert_eq!(target, "CUBIN sm_90");
        assert!(log.contains("undeclared_name"), "log without the culprit: {log}");
        assert!(error.to_string().contains(PROGRAM_NAME), "{error}");
    }
}
