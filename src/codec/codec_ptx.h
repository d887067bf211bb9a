// The PTX of kernels/codec.cu (generated into codec_ptx.cpp by
// scripts/gen_codec_ptx.sh) and the names and launch shape of its kernels.
#pragma once

namespace tms::codec {

/// NUL-terminated PTX text, for cuModuleLoadData.
extern const char kCodecPtx[];

inline constexpr const char* kMeasureKernel = "tms_codec_measure";
inline constexpr const char* kEncodeKernel = "tms_codec_encode";
inline constexpr const char* kDecodeKernel = "tms_codec_decode";
/// Threads per block of every kernel (one block per chunk).
inline constexpr unsigned kKernelThreads = 256;

}  // namespace tms::codec
