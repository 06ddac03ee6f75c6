#!/usr/bin/env bash
# Prints one hash of the sources `wte` is built from (C#, project files, the embedded PTX), so perf/gpu-check.sh can
# refuse a bundle built from other sources. Same result on the dev machine and on the device machine's copy.
set -euo pipefail
cd "$(dirname "$0")/.."
find src Directory.Build.props -type f \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.ptx' \) \
     -not -path '*/bin/*' -not -path '*/obj/*' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
