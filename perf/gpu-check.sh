#!/usr/bin/env bash
# The GPU check in one command, for a lent CUDA machine (H200): `wte gpu-check` — every GPU op and native kernel
# against the CPU backend, then SGEMM 4096³ (our ILGPU GemmKernel vs cuBLAS), ViT-B/16 forward (batch 64) and
# forward+backward (batch 32), the HPRD edit step (batch 1) and the fused native masked RMSprop vs ILGPU kernels.
# Writes gpu-check.md / .json / .log, nvidia-smi.txt and the spliced RESULTS.md to $OUT (perf/out when unset), and
# splices the table into perf/RESULTS.md between <!-- gpu-check:begin --> / <!-- gpu-check:end -->.
#
# The device machine has no .NET SDK and no network, so `wte` comes prebuilt: run perf/gpu-bundle.sh first (on a machine
# with the SDK), then, through the device tool: run(command="bash perf/gpu-check.sh", carry=["perf/gpu-bundle"], timeout_s=480).
# A bundle built from other sources than this tree is refused (WTE_ALLOW_STALE_BUNDLE=1 overrides). Where an SDK with the
# NuGet packages is present and no bundle is, it publishes from source instead.
# Exit: wte's (0 all parity checks passed, 2 some failed, 1 no CUDA device / error), 3 no runnable wte, 124 timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-perf/out}
mkdir -p "$out"
log="$out/gpu-check.log"
: > "$log"
say() { echo "gpu-check.sh: $*" | tee -a "$log" >&2; }
start=$(date +%s)

# ---- (a) the Release build -------------------------------------------------------------------------------------
wte=""
bundle=perf/gpu-bundle/wte-linux-x64.tar.gz
if [[ -f $bundle ]]; then
  want=$(cat perf/gpu-bundle/SOURCE_HASH 2>/dev/null || echo none)
  have=$(perf/source-hash.sh)
  if [[ $want != "$have" && ${WTE_ALLOW_STALE_BUNDLE:-0} != 1 ]]; then
    say "the bundle was built from other sources ($want) than this tree ($have): rerun perf/gpu-bundle.sh"
    exit 3
  fi
  dir=$(mktemp -d /tmp/wte-bundle.XXXXXX)
  tar -xzf "$bundle" -C "$dir" && wte="$dir/wte/wte"
  say "wte from $bundle (sources ${have:0:12}), unpacked in $(( $(date +%s) - start )) s"
elif command -v dotnet >/dev/null && dotnet --list-sdks 2>/dev/null | grep -q .; then
  say "no bundle: dotnet publish -c Release from source"
  dotnet publish src/Cli/Cli.csproj -c Release -o /tmp/wte-publish -nologo -v q 2>&1 | tee -a "$log" && wte=/tmp/wte-publish/wte
fi
if [[ -z $wte || ! -x $wte ]]; then
  say "no runnable wte: run perf/gpu-bundle.sh where the .NET SDK is, and carry perf/gpu-bundle"
  exit 3
fi

# ---- the machine ---------------------------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
  { nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv; } > "$out/nvidia-smi.txt" 2>&1
else
  echo "nvidia-smi: not on this machine" > "$out/nvidia-smi.txt"
fi
head -n 12 "$out/nvidia-smi.txt" | tee -a "$log" >&2

# cuBLAS for the SGEMM comparison: ILGPU 1.5.3 binds libcublas.so.10/11/12; a CUDA 13 image ships libcublas.so.13
# (system CUDA or the nvidia-cublas wheel). `wte` maps ILGPU's names to the file in WTE_CUBLAS.
find_cublas() {
  { ldconfig -p 2>/dev/null | grep -oE '/[^ ]*/libcublas\.so\.[0-9]+$'
    for d in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
      ls "$d"/libcublas.so.[0-9]* 2>/dev/null
    done
    for py in python3 /opt/torch/.venv/bin/python3; do
      site=$($py -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null) \
        && find "$site/nvidia" -name 'libcublas.so.[0-9]*' 2>/dev/null
    done
  } | grep -E '/libcublas\.so\.[0-9]+$' | awk -F/ '{print $NF " " $0}' | sort -V -r | head -n 1 | cut -d' ' -f2-
}
if [[ -z ${WTE_CUBLAS:-} ]]; then
  WTE_CUBLAS=$(find_cublas || true)
fi
if [[ -n ${WTE_CUBLAS:-} ]]; then
  export WTE_CUBLAS
  export LD_LIBRARY_PATH="$(dirname "$WTE_CUBLAS")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "cuBLAS: $WTE_CUBLAS"
else
  say "cuBLAS: no libcublas.so.N found (the SGEMM comparison will say so)"
fi

# ---- (b)-(d) parity, timings, report ----------------------------------------------------------------------------------
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
timeout --kill-after=10 420 "$wte" gpu-check --out "$out" --results perf/RESULTS.md --seconds "${WTE_GPU_SECONDS:-2}" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
[[ -f perf/RESULTS.md ]] && cp perf/RESULTS.md "$out/RESULTS.md"
say "wte gpu-check exit $rc after $(( $(date +%s) - start )) s; files in $out: $(ls "$out" | tr '\n' ' ')"
exit "$rc"
