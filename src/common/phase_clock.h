// Splits one operation's wall time into named phases, for the log line that
// reports a pause or resume: where the time went is the first question when
// a transition is slower than the raw driver calls.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace tms {

class PhaseClock {
 public:
  /// Ends the current phase and names it; the next phase starts now.
  /// Never throws (operations lap after their commit): without memory to
  /// keep it, the phase is left out of describe().
  void lap(std::string phase) noexcept;

  [[nodiscard]] double total_seconds() const;

  /// "synchronize 0.012 ms, unmap 0.210 ms, release 2.301 ms" (phases in
  /// order; a phase lapped twice is listed twice).
  [[nodiscard]] std::string describe() const;

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = start_;
  std::vector<std::pair<std::string, double>> phases_;
};

}  // namespace tms
