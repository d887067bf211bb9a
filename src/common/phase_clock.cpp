#include "common/phase_clock.h"

#include <cstdio>
#include <exception>
#include <utility>

namespace tms {

void PhaseClock::lap(std::string phase) noexcept {
  const Clock::time_point now = Clock::now();
  try {
    phases_.emplace_back(std::move(phase), std::chrono::duration<double>(now - last_).count());
  } catch (const std::exception&) {
    // No memory: the phase's time goes to the next one.
    return;
  }
  last_ = now;
}

double PhaseClock::total_seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::string PhaseClock::describe() const {
  std::string text;
  for (const auto& [phase, seconds] : phases_) {
    char figure[32];
    std::snprintf(figure, sizeof figure, " %.3f ms", seconds * 1e3);
    if (!text.empty()) text += ", ";
    text += phase;
    text += figure;
  }
  return text;
}

}  // namespace tms
