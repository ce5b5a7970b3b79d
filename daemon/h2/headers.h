// A header block as received: names and values copied into one arena, so a block costs two
// allocations however many fields it has, and can be handed to nghttp2 as nghttp2_nv. A
// block that goes leaves its buffers to the next one made on the same thread: a call's three
// blocks then cost no allocation once a worker is warm.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spindle::h2 {

class HeaderBlock {
 public:
  HeaderBlock() = default;
  HeaderBlock(HeaderBlock&& other) noexcept;
  HeaderBlock& operator=(HeaderBlock&& other) noexcept;
  ~HeaderBlock();

  void add(std::string_view name, std::string_view value);
  // Replaces the value of every field called `name`, or adds one.
  void set(std::string_view name, std::string_view value);
  void clear();

  size_t count() const { return fields_.size(); }
  // Bytes as RFC 9113 counts them for SETTINGS_MAX_HEADER_LIST_SIZE: name + value + 32 each.
  size_t listSize() const { return list_size_; }
  std::string_view name(size_t i) const;
  std::string_view value(size_t i) const;
  // The first value of `name`, or empty.
  std::string_view find(std::string_view name) const;

  // nghttp2_nv entries pointing into this block; valid until the block changes.
  const std::vector<nghttp2_nv>& nv() const;

 private:
  struct Field {
    uint32_t name_offset;
    uint32_t name_length;
    uint32_t value_offset;
    uint32_t value_length;
  };
  struct Buffers {
    std::string arena;
    std::vector<Field> fields;
    std::vector<nghttp2_nv> nv;
  };
  class Spares;

  // Gives this block's buffers to the thread's spares, or takes spare ones for it.
  void recycle();
  void reuse();

  std::string arena_;
  std::vector<Field> fields_;
  size_t list_size_ = 0;
  mutable std::vector<nghttp2_nv> nv_;
};

}  // namespace spindle::h2
