//! `--settler cpu|gpu|auto`: which batch-settlement backend a node or `tally verify` uses.
//! Every backend gives the same numbers to the unit (settlement.md); they differ in speed. The
//! choice is made once, at startup, by probing: a missing GPU, driver or NVRTC is a sentence
//! saying so, never a panic, and `auto` then runs on the CPU.

use std::sync::Arc;

use tally_engine::{BatchSettler, CpuSettler};
use tally_gpu::GpuSettler;

/// What `--settler` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// The CPU's cores (rayon).
    Cpu,
    /// An NVIDIA GPU through CUDA (driver and NVRTC loaded at run time); an error without one.
    Gpu,
    /// The GPU when one can be used, else the CPU.
    Auto,
}

/// The backend `choice` gives on this machine, and one line saying which and why.
pub fn choose(choice: Choice) -> Result<(Arc<dyn BatchSettler>, String), String> {
    if choice == Choice::Cpu {
        return Ok((Arc::new(CpuSettler), "cpu (--settler cpu)".into()));
    }
    match (GpuSettler::open(), choice) {
        (Ok(gpu), _) => {
            let why = format!("gpu: {}", gpu.describe());
            Ok((Arc::new(gpu), why))
        }
        (Err(e), Choice::Gpu) => {
            Err(format!("--settler gpu: no GPU can be used on this machine: {e}"))
        }
        (Err(e), _) => {
            Ok((Arc::new(CpuSettler), format!("cpu (--settler auto found no usable GPU: {e})")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_there_and_auto_says_why_it_took_it() {
        let (settler, why) = choose(Choice::Cpu).unwrap();
        assert_eq!((settler.name(), why.as_str()), ("cpu", "cpu (--settler cpu)"));
        let (settler, why) = choose(Choice::Auto).unwrap();
        // With a usable GPU auto takes it; without one it says what is missing.
        match choose(Choice::Gpu) {
            Ok(_) => assert_eq!(settler.name(), "gpu"),
            Err(gpu) => {
                assert_eq!(settler.name(), "cpu");
                assert!(why.starts_with("cpu (--settler auto found no usable GPU: "), "{why}");
                assert!(gpu.starts_with("--settler gpu: no GPU can be used"), "{gpu}");
            }
        }
    }
}
