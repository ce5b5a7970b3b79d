// The streams of one connection by stream id: open addressing over a power-of-two table,
// so looking a stream up (several times per call) is a probe or two, and opening one
// allocates nothing once the table has grown to the connection's concurrency.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace spindle::proxy {

// V is default-constructible and movable (a pointer, a unique_ptr). Stream id 0 is the
// connection, never a stream: it marks a free slot.
template <typename V>
class StreamMap {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  V* find(int32_t id) {
    if (slots_.empty()) return nullptr;
    for (size_t i = home(id);; i = next(i)) {
      if (slots_[i].id == id) return &slots_[i].value;
      if (slots_[i].id == 0) return nullptr;
    }
  }
  const V* find(int32_t id) const { return const_cast<StreamMap*>(this)->find(id); }

  // `id` is not in the map (a stream opens once).
  void insert(int32_t id, V value) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    size_t i = home(id);
    while (slots_[i].id != 0) i = next(i);
    slots_[i].id = id;
    slots_[i].value = std::move(value);
    ++size_;
  }

  // Removes `id` and gives back its value; V{} when it is not there.
  V take(int32_t id) {
    if (slots_.empty()) return V{};
    size_t i = home(id);
    while (slots_[i].id != id) {
      if (slots_[i].id == 0) return V{};
      i = next(i);
    }
    V value = std::move(slots_[i].value);
    --size_;
    // Backward-shift deletion: later entries of the probe run move into the gap, so no
    // tombstones pile up on a connection that opens streams for hours.
    for (size_t gap = i, j = next(i);; j = next(j)) {
      if (slots_[j].id == 0) {
        slots_[gap].id = 0;
        slots_[gap].value = V{};
        break;
      }
      const size_t want = home(slots_[j].id);
      // Entry j may fill the gap unless its home lies cyclically in (gap, j].
      const bool stays = gap <= j ? (gap < want && want <= j) : (gap < want || want <= j);
      if (stays) continue;
      slots_[gap] = std::move(slots_[j]);
      gap = j;
    }
    return value;
  }

  // Calls f(id, value) for every stream; f must not change the map.
  template <typename F>
  void forEach(F&& f) {
    for (Slot& slot : slots_) {
      if (slot.id != 0) f(slot.id, slot.value);
    }
  }

  void swap(StreamMap& other) noexcept {
    slots_.swap(other.slots_);
    std::swap(size_, other.size_);
    std::swap(shift_, other.shift_);
  }

 private:
  struct Slot {
    int32_t id = 0;
    V value{};
  };

  // Fibonacci hashing: the ids of one side go up by 2, and taken as they are they would fill
  // one contiguous run of slots, which deletion would then walk to its end every time.
  size_t home(int32_t id) const { return (static_cast<uint32_t>(id) * 0x9E3779B9u) >> shift_; }
  size_t next(size_t i) const { return (i + 1) & (slots_.size() - 1); }

  void grow() {
    std::vector<Slot> old(slots_.empty() ? 16 : slots_.size() * 2);
    old.swap(slots_);
    shift_ = 32 - static_cast<unsigned>(std::countr_zero(slots_.size()));
    size_ = 0;
    for (Slot& slot : old) {
      if (slot.id != 0) insert(slot.id, std::move(slot.value));
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
  unsigned shift_ = 32;  // 32 - log2(slots)
};

}  // namespace spindle::proxy
