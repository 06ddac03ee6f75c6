cmake_minimum_required(VERSION 3.20)
# cmake -DFRESH=<built.ptx> -DCOMMITTED=<committed.ptx> -P ComparePtx.cmake
# The committed copy (what the C# Engine embeds) must equal the freshly built PTX. When the two
# were produced by different compilers (their "// compiler:" lines differ) the comparison is
# meaningless and the test reports SKIPPED (CTest: SKIP_REGULAR_EXPRESSION).
foreach(v IN ITEMS FRESH COMMITTED)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "ComparePtx.cmake: -D${v}=... missing")
  endif()
endforeach()
if(NOT EXISTS "${COMMITTED}")
  message(FATAL_ERROR "committed PTX missing: ${COMMITTED}\nRun: native/build.sh --update-ptx")
endif()
file(READ "${FRESH}" fresh)
file(READ "${COMMITTED}" committed)
string(REPLACE "\r\n" "\n" fresh "${fresh}")
string(REPLACE "\r\n" "\n" committed "${committed}")
string(REGEX MATCH "// compiler: [^\n]*" fresh_compiler "${fresh}")
string(REGEX MATCH "// compiler: [^\n]*" committed_compiler "${committed}")
if(NOT fresh_compiler STREQUAL committed_compiler)
  message("SKIPPED: the committed PTX was built by another compiler\n  committed: ${committed_compiler}\n  this build: ${fresh_compiler}")
  return()
endif()
if(NOT fresh STREQUAL committed)
  message(FATAL_ERROR "the committed PTX is out of date: ${COMMITTED}\n"
                      "differs from the fresh build ${FRESH}\n"
                      "Run: native/build.sh --update-ptx  (or cmake --build <dir> --target wte_update_committed_ptx) and commit it.")
endif()
message(STATUS "committed PTX is up to date (${committed_compiler})")
