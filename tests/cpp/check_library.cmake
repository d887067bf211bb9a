# Fails unless LIBRARY, the shipped library built from target TARGET, has no
# NEEDED entry for libcuda/libcudart, exports exactly the functions its
# sources mark TMS_API (cmake/exports.cmake: for torch_memory_saver the C ABI
# and the cudaMalloc/cudaFree interposers), and contains none of the tests'
# doubles; and unless the library's own sources (SOURCE_DIR/src) call none of
# the functions that end the process. (The binary itself may import abort:
# libstdc++'s inline assertion paths reference it on some toolchains, e.g.
# g++ 13.)
execute_process(COMMAND readelf -d ${LIBRARY} OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf -d failed on ${LIBRARY}")
endif()
if(dynamic MATCHES "NEEDED[^\n]*libcuda")
  message(FATAL_ERROR "${LIBRARY} links against the CUDA driver or runtime:\n${dynamic}")
endif()
include(${SOURCE_DIR}/cmake/exports.cmake)
tms_exported_names(${SOURCE_DIR} ${TARGET} expected)
execute_process(COMMAND readelf --dyn-syms --wide ${LIBRARY} OUTPUT_VARIABLE symbols RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf --dyn-syms failed on ${LIBRARY}")
endif()
# Defined (section index not UND), non-local symbols, of any type and binding
# (GLOBAL, WEAK, GNU_UNIQUE); the version suffix (name@@VERSION) is cut off.
string(REPLACE "\n" ";" symbol_lines "${symbols}")
set(exported)
foreach(line ${symbol_lines})
  if(line MATCHES "^ *[0-9]+: [0-9a-f]+ +[0-9]+ [A-Z_]+ +(GLOBAL|WEAK|UNIQUE|GNU_UNIQUE) +[A-Z]+ +([0-9]+|ABS|COM) +([^ @]+)")
    list(APPEND exported ${CMAKE_MATCH_3})
  endif()
endforeach()
list(SORT exported)
list(REMOVE_DUPLICATES exported)
if(NOT exported STREQUAL expected)
  set(extra ${exported})
  list(REMOVE_ITEM extra ${expected})
  set(missing ${expected})
  list(REMOVE_ITEM missing ${exported})
  message(FATAL_ERROR "${LIBRARY} exports other symbols than its C ABI.\n"
    "  exported but not TMS_API: ${extra}\n  TMS_API but not exported: ${missing}")
endif()
list(LENGTH exported count)

# Test doubles (tests/cpp) are built into the tests only. Their names would
# show in the symbol table or debug information of a library built with them.
foreach(double FaultyFileIo)
  file(STRINGS ${LIBRARY} hits REGEX "${double}" LIMIT_COUNT 1)
  if(hits)
    message(FATAL_ERROR "${LIBRARY} contains the test double ${double}")
  endif()
endforeach()

file(GLOB_RECURSE sources ${SOURCE_DIR}/src/*.cpp ${SOURCE_DIR}/src/*.h)
foreach(source ${sources})
  file(STRINGS ${source} lines REGEX "(^|[^a-z_.>:])(std::)?(abort|exit|quick_exit|_exit|_Exit|terminate)[ ]*\\(")
  foreach(line ${lines})
    if(NOT line MATCHES "^[ ]*//")
      message(FATAL_ERROR "${source} ends the process: ${line}")
    endif()
  endforeach()
endforeach()
message(STATUS "${LIBRARY}: no libcuda/libcudart NEEDED; exports exactly the ${count} TMS_API functions; "
               "no test doubles; no exit/abort/terminate in src/")
