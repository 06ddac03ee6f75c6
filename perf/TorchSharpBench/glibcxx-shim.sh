#!/usr/bin/env bash
# Makes TorchSharp 0.107.0 load on Debian 12, inside this folder's build output only.
# libLibTorchSharp.so asks for one symbol of a newer libstdc++ than Debian 12's (GCC 12: up to GLIBCXX_3.4.30):
# std::ios_base_library_init() at GLIBCXX_3.4.32 (GCC 13's iostream initialiser). Debian 13's libstdc++6 has it but
# needs glibc 2.38 (Debian 12: 2.36). So: build a tiny library that defines that function (it constructs the
# iostream objects, as GCC 13's does), drop the version requirement from that one symbol in the COPY of
# libLibTorchSharp.so in bin/ (patchelf, Debian package patchelf; the requirement itself marked weak by
# weak_verneed.py, else glibc's loader still refuses the file), and make it load the shim ($ORIGIN rpath).
# Usage: perf/TorchSharpBench/glibcxx-shim.sh [configuration=Release]
set -euo pipefail
cd "$(dirname "$0")"
native=bin/${1:-Release}/net10.0/runtimes/linux-x64/native
lib=$native/libLibTorchSharp.so
[[ -f $lib ]] || { echo "glibcxx-shim: $lib not found: build perf/TorchSharpBench first" >&2; exit 1; }
command -v patchelf >/dev/null || { echo "glibcxx-shim: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
if objdump -T /usr/lib/x86_64-linux-gnu/libstdc++.so.6 | grep 'GLIBCXX_3\.4\.32' >/dev/null; then exit 0; fi   # a new enough libstdc++
# Already patched (a rebuild copies the package's file over the patched one, so look at the file itself):
if ! objdump -T "$lib" | grep 'GLIBCXX_3\.4\.32' >/dev/null; then exit 0; fi
cat > "$native/wte_ios_init.cpp" <<'CPP'
#include <ios>
namespace std { void ios_base_library_init() { static ios_base::Init init; } }
CPP
g++ -shared -fPIC -O2 -o "$native/libwte_ios_init.so" "$native/wte_ios_init.cpp"
patchelf --clear-symbol-version _ZSt21ios_base_library_initv "$lib"
patchelf --add-needed libwte_ios_init.so "$lib"
patchelf --set-rpath '$ORIGIN' "$lib"
python3 weak_verneed.py "$lib" GLIBCXX_3.4.32
echo "glibcxx-shim: patched $lib" >&2
