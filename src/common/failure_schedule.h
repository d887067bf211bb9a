// Counts calls of each kind and decides which of them fail: the fault
// injection shared by the simulated driver and FaultyFileIo. Not thread-safe:
// its owner calls it under its own lock.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <vector>

namespace tms {

/// `Kind` is an enum class ending in kCount; `Failure` says how a call fails.
template <typename Kind, typename Failure>
class FailureSchedule {
 public:
  /// The `nth` (1-based) next call of `kind` fails with `failure`.
  void add(Kind kind, int nth, Failure failure) { pending_[index(kind)].push_back({nth, failure}); }

  void clear() {
    for (auto& pending : pending_) pending.clear();
  }

  [[nodiscard]] std::size_t count(Kind kind) const { return counts_[index(kind)]; }

  /// Counts one call of `kind`; returns the failure due now, if any. Every
  /// pending failure of the kind moves one call closer, so "fail the 2nd and
  /// the 3rd" both land as asked.
  std::optional<Failure> next(Kind kind) {
    ++counts_[index(kind)];
    auto& pending = pending_[index(kind)];
    for (auto& entry : pending) --entry.remaining;
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->remaining > 0) continue;
      const Failure failure = it->failure;
      pending.erase(it);
      return failure;
    }
    return std::nullopt;
  }

 private:
  static constexpr std::size_t kKinds = static_cast<std::size_t>(Kind::kCount);
  static std::size_t index(Kind kind) { return static_cast<std::size_t>(kind); }

  struct Pending {
    int remaining;
    Failure failure;
  };
  std::array<std::size_t, kKinds> counts_{};
  std::array<std::vector<Pending>, kKinds> pending_;
};

}  // namespace tms
