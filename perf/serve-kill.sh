#!/usr/bin/env bash
# SIGKILL durability run of `wte serve` (tests/WhereToEdit.Tests/Serving/ServeKillTests.cs) with many kills:
# a real server process on a loopback port is killed with SIGKILL during and after edits and reverts, restarted,
# and its state compared with the acknowledged one. Usage: bash perf/serve-kill.sh [KILLS=20]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
dotnet build tests/WhereToEdit.Tests -c Release -v q >/dev/null
WTE_SERVE_KILLS=$kills dotnet test tests/WhereToEdit.Tests -c Release --no-build \
  --filter "FullyQualifiedName~ServeKillTests" --logger "console;verbosity=detailed" 2>&1 | grep -E "SIGKILLs|Passed|Failed|Error"
