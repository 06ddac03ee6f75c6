cmake_minimum_required(VERSION 3.20)
# cmake -DIN=<raw.ptx> -DOUT=<ptx> -DCOMPILER=<version line> -DARCH=<sm_XY> -DROOT=<repository root> -P StampPtx.cmake
# Prefixes the compiler's PTX with a provenance header (PTX comments). The "// compiler:" line lets
# the up-to-date check tell "stale" apart from "built by a different compiler"; the "// source sha256"
# lines record the sources it was built from, so a test (tests/WhereToEdit.Tests/Gpu/PtxSourceHashTests.cs)
# can tell a stale committed PTX from C#, whatever compiler the checking machine has.
foreach(v IN ITEMS IN OUT COMPILER ARCH ROOT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "StampPtx.cmake: -D${v}=... missing")
  endif()
endforeach()
file(READ "${IN}" body)
string(REPLACE "\r\n" "\n" body "${body}")
set(header "// wte_kernels.ptx - generated from native/wte_kernels.cu by CMakeLists.txt; do not edit.\n")
string(APPEND header "// Regenerate: native/build.sh --update-ptx (or: cmake --build <dir> --target wte_update_committed_ptx)\n")
string(APPEND header "// compiler: ${COMPILER}\n")
string(APPEND header "// target: ${ARCH}\n")
foreach(source IN ITEMS native/wte_kernels.cu native/wte_kernels.h native/cuda_shim.h)
  file(SHA256 "${ROOT}/${source}" hash)
  string(APPEND header "// source sha256 ${source}: ${hash}\n")
endforeach()
file(WRITE "${OUT}" "${header}${body}")
