/* Intentionally empty. Each torch_memory_saver_hook_mode_*.abi3.so is built
 * from this file as an ELF filter (DT_FILTER) of libtorch_memory_saver.so:
 * the dynamic loader puts the real library in the search order where the
 * filter stands, so preloading or dlopen-ing any of those names gives the one
 * engine (see CMakeLists.txt). ISO C wants a declaration in every file. */
typedef int tms_forwarder_has_no_code;
