cmake_minimum_required(VERSION 3.20)
# cmake -DIN=<raw.ptx> -DOUT=<ptx> -DCOMPILER=<version line> -DARCH=<sm_XY> -P StampPtx.cmake
# Prefixes the compiler's PTX with a provenance header (PTX comments). The "// compiler:" line lets
# the up-to-date check tell "stale" apart from "built by a different compiler".
foreach(v IN ITEMS IN OUT COMPILER ARCH)
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
file(WRITE "${OUT}" "${header}${body}")
