//! Compiles `cuda/settle.cuh` for the host through `cuda/host_settle.cpp` (g++), so that the
//! settlement code the kernels run is also linked into this crate, where `host.rs` exposes it
//! and the property tests compare it with the engine's CPU settler. Links no CUDA: the kernels
//! themselves are compiled at run time by NVRTC.

fn main() {
    for file in ["cuda/settle.cuh", "cuda/host_settle.cpp"] {
        println!("cargo:rerun-if-changed={file}");
    }
    cc::Build::new()
        .cpp(true)
        // The wrapper uses templates only, no C++ library: nothing to link beyond libc.
        .cpp_link_stdlib(None)
        .std("c++17")
        .file("cuda/host_settle.cpp")
        .include("cuda")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("tally_settle_host");
}
