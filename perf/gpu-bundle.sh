#!/usr/bin/env bash
# Prepares, on a machine with the .NET SDK and NuGet, what perf/gpu-check.sh runs on a device machine that has neither
# (the lent GPU machines have no .NET and no network): a Release, self-contained linux-x64 publish of `wte`, packed as
# perf/gpu-bundle/wte-linux-x64.tar.gz (~38 MB), with the hash of the sources it was built from (perf/source-hash.sh).
# perf/gpu-bundle/ is git-ignored: hand it to the device run with carry=["perf/gpu-bundle"].
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=perf/gpu-bundle
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
echo "gpu-bundle: dotnet publish -c Release -r linux-x64 --self-contained" >&2
dotnet publish src/Cli/Cli.csproj -c Release -r linux-x64 --self-contained -o "$stage/wte" -nologo -v q
rm -rf "$bundle"; mkdir -p "$bundle"
tar -C "$stage" -czf "$bundle/wte-linux-x64.tar.gz" wte
perf/source-hash.sh > "$bundle/SOURCE_HASH"
echo "gpu-bundle: $(du -h "$bundle/wte-linux-x64.tar.gz" | cut -f1) in $bundle (sources $(cut -c1-12 "$bundle/SOURCE_HASH"))" >&2
