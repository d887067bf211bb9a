// UniqueHandle: the one shape of every move-only owner in the engine.
//
// It owns a value (a VA range, a physical memory handle, a stream, ...) and
// gives it back through its deleter when it is destroyed or reset, unless
// release() hands the value to someone else first. It is unique_ptr for
// values that are not pointers to memory: no copies, moves leave the source
// empty, and an empty owner (the default-constructed value, "null") does
// nothing.
//
// The deleter is a policy object stored with the value, so it can carry what
// the give-back needs (the ParkingLot, the driver and device). It must not
// throw: owners are destroyed while unwinding from another failure, and a
// give-back that fails must not replace that failure or terminate. What it
// does instead is its policy: the VMM owners (vmm/vmm_handles.h) park the
// resource in the ParkingLot to be given back later, copy streams
// (backup/copy_stream.h) log.
//
// Named owners derive from it and add the factories that make or adopt the
// resource (VaReservation::reserve, Mapping::map, CopyStream::create, ...):
// a factory constructs the owner as soon as the resource exists, so a later
// step of the same factory that throws gives it back.
#pragma once

#include <type_traits>
#include <utility>

namespace tms {

/// Owns a `Value`; `Deleter` gives it back. `Value{}` is the empty value and
/// must compare equal only to itself; `Deleter` is called as
/// `deleter(value)` and must be noexcept.
template <typename Value, typename Deleter>
class UniqueHandle {
  static_assert(std::is_nothrow_invocable_v<const Deleter&, const Value&>,
                "a deleter runs while unwinding: it must be noexcept");
  static_assert(std::is_nothrow_move_constructible_v<Value> &&
                    std::is_nothrow_move_constructible_v<Deleter>,
                "moving an owner must not throw");

 public:
  using value_type = Value;
  using deleter_type = Deleter;

  /// Empty: owns nothing.
  UniqueHandle() = default;
  /// Takes ownership of `value`, to be given back by `deleter`.
  UniqueHandle(Value value, Deleter deleter) noexcept
      : value_(std::move(value)), deleter_(std::move(deleter)) {}

  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;

  UniqueHandle(UniqueHandle&& other) noexcept
      : value_(std::exchange(other.value_, Value{})), deleter_(std::move(other.deleter_)) {}
  /// Gives back what this one owns, then takes over what `other` owns.
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      reset();
      value_ = std::exchange(other.value_, Value{});
      deleter_ = std::move(other.deleter_);
    }
    return *this;
  }

  ~UniqueHandle() { reset(); }

  /// The owned value (the empty value when it owns nothing). Not on a
  /// temporary: its value would be given back before the caller used it.
  [[nodiscard]] const Value& get() const& noexcept { return value_; }
  const Value& get() const&& = delete;

  [[nodiscard]] explicit operator bool() const noexcept { return !(value_ == Value{}); }

  /// Gives up ownership: the caller now gives the value back. Empty after.
  Value release() noexcept { return std::exchange(value_, Value{}); }

  /// Gives the value back now (through the deleter, once). Empty after.
  void reset() noexcept {
    if (*this) deleter_(std::exchange(value_, Value{}));
  }

 private:
  Value value_{};
  Deleter deleter_{};
};

}  // namespace tms
