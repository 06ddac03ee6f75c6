#!/usr/bin/env bash
# Configure, build and test the native kernels (PTX + host logic tests); used by CI.
#
#   native/build.sh [--update-ptx] [--no-ptx] [--sanitize] [--build-dir DIR] [--jobs N] [-- CMAKE_ARGS...]
#
#   --update-ptx   copy the freshly built PTX over src/Engine/Backends/Gpu/Native/wte_kernels.ptx
#                  (commit it afterwards); the ptx_committed_up_to_date test then passes
#   --no-ptx       configure with -DWTE_BUILD_PTX=OFF (no CUDA compiler needed; the committed PTX is
#                  still checked by ptx_committed_entries)
#   --sanitize     host tests with AddressSanitizer + UBSan (default build dir build/native-sanitize)
#   --build-dir    build directory (default: build/native)
#   --jobs         parallel build jobs (default: number of CPUs)
# Environment: CMAKE_GENERATOR etc. are honoured by cmake as usual.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir=""
jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
update_ptx=0
sanitize=0
cmake_args=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --update-ptx) update_ptx=1 ;;
    --no-ptx) cmake_args+=(-DWTE_BUILD_PTX=OFF) ;;
    --sanitize) sanitize=1; cmake_args+=(-DWTE_SANITIZE=ON) ;;
    --build-dir) shift; build_dir="$1" ;;
    --jobs) shift; jobs="$1" ;;
    --) shift; cmake_args+=("$@"); break ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "native/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$build_dir" ]]; then
  if [[ $sanitize -eq 1 ]]; then build_dir="$root/build/native-sanitize"; else build_dir="$root/build/native"; fi
fi

set -x
cmake -S "$root" -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" --parallel "$jobs"
if [[ $update_ptx -eq 1 ]]; then
  cmake --build "$build_dir" --target wte_update_committed_ptx
fi
ctest --test-dir "$build_dir" --output-on-failure --parallel "$jobs"
