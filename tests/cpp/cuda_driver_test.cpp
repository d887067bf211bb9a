// CudaDriver tests. The first group runs anywhere (no GPU, no libcuda): it
// checks that a missing driver is reported, not crashed on. The GPU group
// skips itself unless a device is present.
#include "driver/cuda_driver.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"

namespace tms {
namespace {

constexpr const char* kMissingLibrary = "/nonexistent/libcuda.so.1";

TEST(CudaDriverTest, ConstructingWithMissingLibraryDoesNotThrow) {
  EXPECT_NO_THROW({ CudaDriver driver(kMissingLibrary); });
  CudaDriver driver(kMissingLibrary);
  EXPECT_EQ(driver.name(), "cuda");
  EXPECT_EQ(driver.library_path(), kMissingLibrary);
}

TEST(CudaDriverTest, MissingLibraryThrowsDriverUnavailableNamingThePath) {
  CudaDriver driver(kMissingLibrary);
  std::string first_message;
  try {
    driver.device_count();
    FAIL() << "device_count() returned without a driver";
  } catch (const DriverUnavailable& error) {
    first_message = error.what();
    EXPECT_EQ(error.status(), TMS_ERROR_DRIVER_UNAVAILABLE);
  }
  EXPECT_NE(first_message.find(kMissingLibrary), std::string::npos) << first_message;
  EXPECT_NE(first_message.find("TMS_DRIVER=sim"), std::string::npos) << first_message;

  // Later calls report the same failure again instead of crashing.
  try {
    driver.device_count();
    FAIL() << "second device_count() returned without a driver";
  } catch (const DriverUnavailable& error) {
    EXPECT_EQ(first_message, error.what());
  }
  EXPECT_THROW(driver.granularity(0), DriverUnavailable);
  EXPECT_THROW(driver.current_device(), DriverUnavailable);
  EXPECT_THROW(driver.reserve(2 << 20, 2 << 20), DriverUnavailable);
  std::vector<char> host(4096);
  EXPECT_THROW(driver.host_register(host.data(), host.size()), DriverUnavailable);
}

TEST(CudaDriverTest, ConcurrentFirstCallsAllSeeDriverUnavailable) {
  CudaDriver driver(kMissingLibrary);
  std::atomic<int> unavailable{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      try {
        driver.device_count();
      } catch (const DriverUnavailable&) {
        ++unavailable;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(unavailable.load(), 8);
}

TEST(CudaDriverTest, LibraryWithoutCuGetProcAddressIsUnavailable) {
  // libm is certainly loadable and certainly not libcuda.
  CudaDriver driver("libm.so.6");
  try {
    driver.device_count();
    FAIL() << "libm.so.6 was accepted as a CUDA driver";
  } catch (const DriverUnavailable& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("libm.so.6"), std::string::npos) << message;
    EXPECT_NE(message.find("cuGetProcAddress"), std::string::npos) << message;
  }
}

TEST(CudaDriverTest, HostMemoryNeedsNoDriver) {
  CudaDriver driver(kMissingLibrary);
  constexpr std::size_t kSize = std::size_t{4} << 20;
  void* ptr = driver.host_alloc(kSize);
  ASSERT_NE(ptr, nullptr);
  std::memset(ptr, 0x5a, kSize);
  EXPECT_EQ(static_cast<unsigned char*>(ptr)[kSize - 1], 0x5a);
  driver.host_free(ptr, kSize);
  EXPECT_THROW(driver.host_alloc(0), InvalidArgument);
}

TEST(CudaDriverTest, DefaultLibraryEitherCountsDevicesOrThrowsTypedError) {
  CudaDriver driver;
  try {
    EXPECT_GT(driver.device_count(), 0);
  } catch (const Error& error) {
    SUCCEED() << "no usable CUDA driver here: " << error.what();
  }
}

// --- a stand-in libcuda (fake_libcuda.c) -------------------------------------

// cuMemAddressReserve's CUDA_ERROR_OUT_OF_MEMORY means no free virtual range
// is that large: out of memory naming the size and the address space, as
// Python's OutOfMemoryError, not a DriverError.
TEST(CudaDriverTest, ReserveOutOfAddressSpaceIsOutOfMemory) {
  CudaDriver driver(TMS_FAKE_LIBCUDA);
  const std::size_t size = std::size_t{1} << 47;
  try {
    (void)driver.reserve(size, 2 << 20);
    FAIL() << "the fake driver reserved " << size << " bytes";
  } catch (const OutOfMemory& error) {
    EXPECT_EQ(error.status(), TMS_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(error.call(), "cuMemAddressReserve");
    EXPECT_EQ(error.bytes_needed(), size);
    const std::string message = error.what();
    EXPECT_NE(message.find(std::to_string(size)), std::string::npos) << message;
    EXPECT_NE(message.find("address space"), std::string::npos) << message;
  }
}

TEST(CudaDriverTest, ReserveFailingOtherwiseIsADriverErrorNamingTheResult) {
  CudaDriver driver(TMS_FAKE_LIBCUDA);
  try {
    (void)driver.reserve(2 << 20, 2 << 20);
    FAIL() << "the fake driver reserved 2 MiB";
  } catch (const OutOfMemory& error) {
    FAIL() << "not out of memory: " << error.what();
  } catch (const DriverError& error) {
    EXPECT_EQ(error.status(), TMS_ERROR_DRIVER);
    EXPECT_EQ(error.call(), "cuMemAddressReserve");
    EXPECT_EQ(error.result_name(), "CUDA_ERROR_INVALID_VALUE");
  }
}

// --- real GPU ---------------------------------------------------------------

class CudaDriverGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    try {
      count = driver_.device_count();
    } catch (const Error& error) {
      GTEST_SKIP() << "no usable CUDA driver: " << error.what();
    }
    if (count == 0) GTEST_SKIP() << "no CUDA device";
  }

  // Maps fresh physical memory of `size` at `va`, writes `pattern` to it from
  // one registered host buffer and reads it back into another.
  void write_and_check(DevicePtr va, std::size_t size, unsigned char seed) {
    void* source = driver_.host_alloc(size);
    void* target = driver_.host_alloc(size);
    driver_.host_register(source, size);
    driver_.host_register(target, size);
    auto* in = static_cast<unsigned char*>(source);
    for (std::size_t i = 0; i < size; ++i) in[i] = static_cast<unsigned char>(i * 31 + seed);
    std::memset(target, 0, size);

    StreamHandle stream = driver_.create_stream(kDevice);
    driver_.copy_to_device_async(kDevice, va, source, size, stream);
    driver_.copy_to_host_async(kDevice, target, va, size, stream);
    driver_.synchronize_stream(kDevice, stream);
    driver_.destroy_stream(kDevice, stream);
    EXPECT_EQ(std::memcmp(source, target, size), 0);

    for (void* buffer : {source, target}) {
      driver_.host_unregister(buffer);
      driver_.host_free(buffer, size);
    }
  }

  static constexpr int kDevice = 0;
  CudaDriver driver_;
};

TEST_F(CudaDriverGpuTest, ReserveMapCopyRemapFree) {
  // This thread never made a context current, and the guards pop theirs.
  EXPECT_EQ(driver_.current_device(), 0);
  const std::size_t granularity = driver_.granularity(kDevice);
  ASSERT_GT(granularity, 0u);
  EXPECT_EQ(driver_.granularity(kDevice), granularity);  // cached, same answer
  const DeviceMemoryInfo info = driver_.memory_info(kDevice);
  EXPECT_GT(info.total_bytes, 0u);
  EXPECT_LE(info.free_bytes, info.total_bytes);

  const std::size_t size = 3 * granularity;
  const DevicePtr va = driver_.reserve(size, granularity);
  ASSERT_NE(va, 0u);
  EXPECT_EQ(va % granularity, 0u);

  PhysicalHandle handle = driver_.create_physical(kDevice, size);
  driver_.map(va, size, handle);
  driver_.set_access(va, size, kDevice);
  write_and_check(va, size, 7);

  // Pause and resume: new physical memory under the same address.
  driver_.synchronize(kDevice);
  driver_.unmap(va, size);
  driver_.release_physical(handle);
  handle = driver_.create_physical(kDevice, size);
  driver_.map(va, size, handle);
  driver_.set_access(va, size, kDevice);
  write_and_check(va, size, 99);

  driver_.unmap(va, size);
  driver_.release_physical(handle);
  driver_.free_reservation(va, size);
  EXPECT_EQ(driver_.current_device(), 0);
}

TEST_F(CudaDriverGpuTest, OutOfMemoryNamesBytesNeededAndFree) {
  const std::size_t granularity = driver_.granularity(kDevice);
  const DeviceMemoryInfo info = driver_.memory_info(kDevice);
  const std::size_t size = (info.total_bytes / granularity + 1) * granularity;
  try {
    const PhysicalHandle handle = driver_.create_physical(kDevice, size);
    driver_.release_physical(handle);
    FAIL() << "cuMemCreate of more than the whole device succeeded";
  } catch (const OutOfMemory& error) {
    EXPECT_EQ(error.status(), TMS_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(error.call(), "cuMemCreate");
    EXPECT_EQ(error.bytes_needed(), size);
    EXPECT_GT(error.bytes_free(), 0u);
    EXPECT_LE(error.bytes_free(), info.total_bytes);
    EXPECT_NE(std::string(error.what()).find("device 0"), std::string::npos) << error.what();
  }
}

TEST_F(CudaDriverGpuTest, FailingCallsThrowDriverErrorNamingTheCall) {
  const std::size_t granularity = driver_.granularity(kDevice);
  try {
    driver_.unmap(granularity, granularity);  // nothing is mapped there
    FAIL() << "cuMemUnmap of an unmapped range succeeded";
  } catch (const DriverError& error) {
    EXPECT_EQ(error.status(), TMS_ERROR_DRIVER);
    EXPECT_EQ(error.call(), "cuMemUnmap");
    EXPECT_EQ(error.result_name().rfind("CUDA_ERROR_", 0), 0u) << error.result_name();
  }
  const int count = driver_.device_count();
  try {
    driver_.memory_info(count);
    FAIL() << "memory_info of device " << count << " succeeded";
  } catch (const DriverError& error) {
    EXPECT_EQ(error.call(), "cuDeviceGet");
  }
  int local = 0;
  try {
    driver_.host_unregister(&local);  // never registered
    FAIL() << "cuMemHostUnregister of unregistered memory succeeded";
  } catch (const DriverError& error) {
    EXPECT_EQ(error.call(), "cuMemHostUnregister");
  }
}

TEST_F(CudaDriverGpuTest, ThreadsWithoutContextsAllocateConcurrently) {
  const std::size_t granularity = driver_.granularity(kDevice);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int round = 0; round < 4; ++round) {
          const std::size_t size = granularity * static_cast<std::size_t>(t + 1);
          const DevicePtr va = driver_.reserve(size, granularity);
          const PhysicalHandle handle = driver_.create_physical(kDevice, size);
          driver_.map(va, size, handle);
          driver_.set_access(va, size, kDevice);
          write_and_check(va, size, static_cast<unsigned char>(t * 16 + round));
          driver_.unmap(va, size);
          driver_.release_physical(handle);
          driver_.free_reservation(va, size);
        }
      } catch (const Error& error) {
        ADD_FAILURE() << "thread " << t << ": " << error.what();
        ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace tms
