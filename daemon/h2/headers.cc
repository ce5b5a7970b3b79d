#include "h2/headers.h"

#include <utility>

namespace spindle::h2 {

// Buffers of blocks that went, kept per thread for the next blocks: enough for the calls that
// end in one batch of completions (three blocks each), bounded in count and in size so that
// a burst of big blocks does not stay held (at most 512 x 3.3 KiB).
class HeaderBlock::Spares {
 public:
  static constexpr size_t kMaxCount = 512;
  static constexpr size_t kMaxArena = 2048;
  static constexpr size_t kMaxFields = 24;

  static Spares* forThread() { return gone_ ? nullptr : &spares_; }

  // Keeps the buffers, unless there are enough spares or they are too big to hold on to.
  void put(Buffers& buffers) {
    if (items_.size() >= kMaxCount || buffers.arena.capacity() > kMaxArena ||
        buffers.fields.capacity() > kMaxFields || buffers.nv.capacity() > kMaxFields) {
      return;
    }
    buffers.arena.clear();
    buffers.fields.clear();
    buffers.nv.clear();
    items_.push_back(std::move(buffers));
  }

  bool take(Buffers& buffers) {
    if (items_.empty()) return false;
    buffers = std::move(items_.back());
    items_.pop_back();
    return true;
  }

  ~Spares() { gone_ = true; }  // blocks that go after this, at thread exit, just free

 private:
  std::vector<Buffers> items_;
  static thread_local Spares spares_;
  static thread_local bool gone_;  // trivially destructible: readable during thread exit
};

thread_local HeaderBlock::Spares HeaderBlock::Spares::spares_;
thread_local bool HeaderBlock::Spares::gone_ = false;

HeaderBlock::HeaderBlock(HeaderBlock&& other) noexcept
    : arena_(std::move(other.arena_)),
      fields_(std::move(other.fields_)),
      list_size_(std::exchange(other.list_size_, 0)),
      nv_(std::move(other.nv_)) {}

HeaderBlock& HeaderBlock::operator=(HeaderBlock&& other) noexcept {
  if (this != &other) {
    recycle();
    arena_ = std::move(other.arena_);
    fields_ = std::move(other.fields_);
    nv_ = std::move(other.nv_);
    list_size_ = std::exchange(other.list_size_, 0);
  }
  return *this;
}

HeaderBlock::~HeaderBlock() { recycle(); }

void HeaderBlock::recycle() {
  if (fields_.capacity() == 0) return;  // nothing worth keeping (a moved-from block)
  Spares* spares = Spares::forThread();
  if (spares == nullptr) return;
  Buffers buffers{std::move(arena_), std::move(fields_), std::move(nv_)};
  spares->put(buffers);
  list_size_ = 0;
}

void HeaderBlock::reuse() {
  Spares* spares = Spares::forThread();
  Buffers buffers;
  if (spares == nullptr || !spares->take(buffers)) {
    // New buffers, sized for a usual gRPC block rather than grown to it field by field.
    arena_.reserve(512);
    fields_.reserve(16);
    return;
  }
  arena_ = std::move(buffers.arena);
  fields_ = std::move(buffers.fields);
  nv_ = std::move(buffers.nv);
}

void HeaderBlock::add(std::string_view name, std::string_view value) {
  if (fields_.capacity() == 0) reuse();
  Field field{};
  field.name_offset = static_cast<uint32_t>(arena_.size());
  field.name_length = static_cast<uint32_t>(name.size());
  arena_.append(name);
  field.value_offset = static_cast<uint32_t>(arena_.size());
  field.value_length = static_cast<uint32_t>(value.size());
  arena_.append(value);
  fields_.push_back(field);
  list_size_ += name.size() + value.size() + 32;
}

void HeaderBlock::set(std::string_view wanted, std::string_view value) {
  // The new value goes at the end of the arena and the fields point at it: no rebuild of the
  // block on the call path (grpc-timeout is rewritten on every attempt of a call).
  const std::string copy(value);  // `value` may point into the arena, which may move
  bool found = false;
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (name(i) != wanted) continue;
    if (!found) {
      found = true;
      arena_.append(copy);
    }
    Field& field = fields_[i];
    list_size_ = list_size_ - field.value_length + copy.size();
    field.value_offset = static_cast<uint32_t>(arena_.size() - copy.size());
    field.value_length = static_cast<uint32_t>(copy.size());
  }
  if (!found) add(wanted, copy);
}

void HeaderBlock::clear() {
  arena_.clear();
  fields_.clear();
  nv_.clear();
  list_size_ = 0;
}

std::string_view HeaderBlock::name(size_t i) const {
  return std::string_view(arena_).substr(fields_[i].name_offset, fields_[i].name_length);
}

std::string_view HeaderBlock::value(size_t i) const {
  return std::string_view(arena_).substr(fields_[i].value_offset, fields_[i].value_length);
}

std::string_view HeaderBlock::find(std::string_view wanted) const {
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (name(i) == wanted) return value(i);
  }
  return {};
}

const std::vector<nghttp2_nv>& HeaderBlock::nv() const {
  nv_.clear();
  nv_.reserve(fields_.size());
  // nghttp2's API takes non-const pointers but only reads through them.
  auto* base = reinterpret_cast<uint8_t*>(const_cast<char*>(arena_.data()));
  for (const Field& field : fields_) {
    nghttp2_nv entry{};
    entry.name = base + field.name_offset;
    entry.namelen = field.name_length;
    entry.value = base + field.value_offset;
    entry.valuelen = field.value_length;
    // nghttp2 copies the block when it is submitted: the call that owns this block may be
    // gone before the frame is written.
    entry.flags = NGHTTP2_NV_FLAG_NONE;
    nv_.push_back(entry);
  }
  return nv_;
}

}  // namespace spindle::h2
