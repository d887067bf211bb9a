# What the shipped shared libraries export: the functions their sources mark
# TMS_API at the start of a line, and nothing else (no C++ runtime, template
# or typeinfo symbols). Marking a function TMS_API is the one place that
# exports it; the names are read from the sources to write each library's
# linker version script and by tests/cpp/check_library.cmake.

# The sources (relative to the source tree) whose TMS_API functions each
# shipped library exports.
set(TMS_EXPORT_SOURCES_torch_memory_saver include/torch_memory_saver/tms.h
    include/torch_memory_saver/tms_testing.h src/hooks/preload.cpp)
set(TMS_EXPORT_SOURCES_tms_vmm_floor bench/vmm_floor.cpp)

# The sorted names of the TMS_API functions declared in `files`.
function(tms_api_names source_dir out_var)
  set(names)
  foreach(file ${ARGN})
    file(STRINGS ${source_dir}/${file} lines REGEX "^TMS_API ")
    if(NOT CMAKE_SCRIPT_MODE_FILE)
      set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${source_dir}/${file})
    endif()
    foreach(line ${lines})
      if(line MATCHES "^TMS_API [^(]*[ *]([A-Za-z_][A-Za-z0-9_]*)\\(")
        list(APPEND names ${CMAKE_MATCH_1})
      endif()
    endforeach()
  endforeach()
  list(SORT names)
  set(${out_var} ${names} PARENT_SCOPE)
endfunction()

# The names `target` (a shipped library) exports.
function(tms_exported_names source_dir target out_var)
  tms_api_names(${source_dir} names ${TMS_EXPORT_SOURCES_${target}})
  set(${out_var} ${names} PARENT_SCOPE)
endfunction()

# Links `target` with a version script that exports its TMS_API functions and
# hides every other symbol.
function(tms_export_only_api target)
  tms_exported_names(${PROJECT_SOURCE_DIR} ${target} names)
  list(JOIN names ";\n    " exports)
  set(map ${CMAKE_BINARY_DIR}/${target}.map)
  file(WRITE ${map}.new
       "/* Generated from the TMS_API declarations (cmake/exports.cmake). */\n"
       "{\n  global:\n    ${exports};\n  local:\n    *;\n};\n")
  configure_file(${map}.new ${map} COPYONLY)
  target_link_options(${target} PRIVATE -Wl,--version-script=${map})
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${map})
endfunction()
