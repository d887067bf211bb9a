# Toolchain of the portable wheel: zig's clang, linking against glibc 2.17
# symbol stubs and a static libc++ (no GLIBCXX versions, no libstdc++ needed),
# so the library loads on any x86_64 Linux with glibc >= 2.17 (manylinux2014).
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/zig-toolchain.cmake -DTMS_ZIG=/path/to/zig ...
# scripts/build_wheel.sh does this with zig from the `ziglang` PyPI package.
set(TMS_ZIG_TARGET "x86_64-linux-gnu.2.17" CACHE STRING "zig target: architecture and oldest glibc")
if(NOT TMS_ZIG)
  find_program(TMS_ZIG zig)
endif()
if(NOT TMS_ZIG)
  message(FATAL_ERROR "zig not found: pass -DTMS_ZIG=<path> (pip install ziglang; see scripts/build_wheel.sh)")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TMS_ZIG TMS_ZIG_TARGET)

# CMake needs one executable per tool: small scripts that call `zig <tool>`.
set(_tms_zig_bin ${CMAKE_BINARY_DIR}/zig-tools)
foreach(tool cc c++ ar ranlib ld.lld)
  set(_target_flag "")
  if(tool STREQUAL "cc" OR tool STREQUAL "c++")
    set(_target_flag "-target ${TMS_ZIG_TARGET}")
  endif()
  file(WRITE ${_tms_zig_bin}/${tool} "#!/bin/sh\nexec '${TMS_ZIG}' ${tool} ${_target_flag} \"$@\"\n")
  file(CHMOD ${_tms_zig_bin}/${tool} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
       GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
set(CMAKE_C_COMPILER ${_tms_zig_bin}/cc)
set(CMAKE_CXX_COMPILER ${_tms_zig_bin}/c++)
set(CMAKE_AR ${_tms_zig_bin}/ar CACHE FILEPATH "" FORCE)
set(CMAKE_RANLIB ${_tms_zig_bin}/ranlib CACHE FILEPATH "" FORCE)
# Links the launcher-facing forwarder files (see CMakeLists.txt).
set(CMAKE_LINKER ${_tms_zig_bin}/ld.lld CACHE FILEPATH "" FORCE)
