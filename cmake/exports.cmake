# The library's exported dynamic symbols: every function declared TMS_API in
# the C ABI header and the LD_PRELOAD interposers. Read from the sources, so
# that marking a function TMS_API is the one place that exports it; used to
# write the linker version script and by tests/cpp/check_library.cmake.
function(tms_exported_names source_dir out_var)
  set(names)
  foreach(file include/torch_memory_saver/tms.h src/hooks/preload.cpp)
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
