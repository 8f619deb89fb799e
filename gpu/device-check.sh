#!/usr/bin/env bash
# gpu/device-check.sh: the GPU backend's checks on a machine with an NVIDIA GPU, offline.
#
#   bash gpu/device-check.sh --prepare   on a build machine (no GPU needed): builds the release
#                                        test binaries and the device_check example, copies them
#                                        to gpu/prebuilt/ (git-ignored; carry it to the GPU box).
#   bash gpu/device-check.sh             on the GPU machine: prints nvidia-smi and the CUDA
#                                        libraries found, runs every tally-gpu test including the
#                                        #[ignore]d device tests (GpuSettler vs CpuSettler on
#                                        random, edge-case and 1M-inference ledgers), then the
#                                        benchmark (kernels with data resident, transfers apart,
#                                        CpuSettler on the same data). Uses gpu/prebuilt/ when
#                                        there, else builds with cargo --offline.
#
# Nothing is downloaded. Output goes to stdout and, when $OUT is set, to $OUT/*.log and
# $OUT/gpu-bench.txt. Exit status: 0 only if every test passed and the benchmark's GPU results
# equalled the CPU's. Budget: under 8 minutes on an H100 (each step has its own timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
PREBUILT=gpu/prebuilt
OUT_DIR=${OUT:-}

log() { echo "== $*"; }

# The test and example binaries of a release build, as "name path" lines.
built_binaries() {
  cargo test --release -p tally-gpu --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] != "build-script-build":
        print(m["target"]["name"], m["executable"])'
  cargo build --release -p tally-gpu --example device_check --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print("device_check", m["executable"])'
}

prepare() {
  log "building release binaries"
  cargo test --release -p tally-gpu --no-run && cargo build --release -p tally-gpu --example device_check \
    || { echo "build failed"; exit 1; }
  rm -rf "$PREBUILT" && mkdir -p "$PREBUILT"
  built_binaries | while read -r name path; do cp "$path" "$PREBUILT/$name"; done
  ls -la "$PREBUILT"
  du -sh "$PREBUILT"
  echo "newest glibc symbol needed:"
  objdump -T "$PREBUILT"/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1
}

# Puts every directory holding a CUDA driver or NVRTC library on LD_LIBRARY_PATH.
find_cuda_libraries() {
  local dirs=() dir lib
  for lib in $(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*lib(cuda|nvrtc)[^ ]*\.so[^ ]*'); do
    dirs+=("$(dirname "$lib")")
  done
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
    /usr/lib/x86_64-linux-gnu; do
    [ -d "$dir" ] && dirs+=("$dir")
  done
  # NVRTC wheels (PyTorch brings one): nvidia/cu13/lib, nvidia/cuda_nvrtc/lib.
  local site
  site=$(python3 -c 'import nvidia, os; print("\n".join(os.path.join(p, d) for p in nvidia.__path__ for d in ("cu13/lib", "cuda_nvrtc/lib")))' 2>/dev/null)
  for dir in $site; do [ -d "$dir" ] && dirs+=("$dir"); done
  for dir in "${dirs[@]}"; do
    case ":${LD_LIBRARY_PATH:-}:" in *":$dir:"*) ;; *) LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir" ;; esac
  done
  export LD_LIBRARY_PATH
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "CUDA libraries found:"
  for dir in $(echo "$LD_LIBRARY_PATH" | tr ':' ' '); do
    ls "$dir"/libcuda.so* "$dir"/libnvrtc.so* "$dir"/libnvrtc-builtins.so* 2>/dev/null
  done | sort -u
}

# Runs "$@" with a timeout, teeing to $OUT/<name>.log; records a failure.
FAILED=()
step() {
  local name=$1 limit=$2
  shift 2
  log "$name"
  local logfile=/dev/null
  [ -n "$OUT_DIR" ] && logfile="$OUT_DIR/$name.log"
  timeout "$limit" "$@" 2>&1 | tee "$logfile"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "!! $name failed (exit $rc)"; FAILED+=("$name"); }
}

binary() {
  local name=$1
  if [ -x "$PREBUILT/$name" ]; then
    echo "$PREBUILT/$name"
  else
    built_binaries | awk -v n="$name" '$1 == n { print $2 }' | head -1
  fi
}

check() {
  [ -n "$OUT_DIR" ] && mkdir -p "$OUT_DIR"
  log "nvidia-smi"
  nvidia-smi || echo "nvidia-smi failed"
  find_cuda_libraries
  if [ ! -d "$PREBUILT" ]; then
    log "no $PREBUILT: building with cargo --offline"
    export CARGO_NET_OFFLINE=true
    cargo build --release -p tally-gpu --example device_check && cargo test --release -p tally-gpu --no-run \
      || { echo "build failed"; exit 1; }
  fi
  export TALLY_REQUIRE_NVRTC=1
  local name path
  for name in tally_gpu open nvrtc host_equivalence; do
    path=$(binary "$name")
    [ -n "$path" ] || { echo "!! no binary for $name"; FAILED+=("$name"); continue; }
    step "test-$name" 120 "$path" --nocapture
  done
  path=$(binary device)
  step "test-device" 240 "$path" --ignored --nocapture --test-threads 1
  path=$(binary device_check)
  step "bench" 180 "$path"
  log "summary"
  if [ ${#FAILED[@]} -eq 0 ]; then
    echo "all device checks passed"
  else
    echo "FAILED: ${FAILED[*]}"
    exit 1
  fi
}

case "${1:-}" in
  --prepare) prepare ;;
  "") check ;;
  *) echo "usage: $0 [--prepare]"; exit 2 ;;
esac
