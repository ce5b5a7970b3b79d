// Bytes of one direction of one call, between the session that received them and the one
// that sends them. Optionally keeps what was read (up to a limit) so that a request can be
// sent again to another endpoint.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace spindle::proxy {

class ByteQueue {
 public:
  void append(const uint8_t* data, size_t length) {
    buffer_.append(reinterpret_cast<const char*>(data), length);
  }
  size_t readable() const { return buffer_.size() - read_; }

  // Copies up to `length` bytes out; returns the count.
  size_t read(uint8_t* out, size_t length) {
    const size_t n = std::min(length, readable());
    std::memcpy(out, buffer_.data() + read_, n);
    read_ += n;
    if (!retaining_) compact();
    return n;
  }

  // Keep read bytes for rewind() while they total at most `limit`; past that, stop keeping.
  void retain(size_t limit) {
    retaining_ = true;
    retain_limit_ = limit;
  }
  // Whether every byte ever appended is still here to be read again.
  bool replayable() const { return retaining_ && dropped_ == 0; }
  void rewind() {
    if (replayable()) read_ = 0;
  }
  // Read bytes are no longer needed (the response started).
  void stopRetaining() {
    retaining_ = false;
    compact();
  }
  // Drops everything and frees the memory (the call was abandoned).
  void release() {
    std::string().swap(buffer_);
    dropped_ += read_;
    read_ = 0;
    retaining_ = false;
  }
  // Called after reads while retaining: drops the kept bytes once past the limit.
  void enforceRetainLimit() {
    if (retaining_ && read_ > retain_limit_) {
      retaining_ = false;
      dropped_ += read_;
      compact();
    }
  }

 private:
  // Erasing the front costs a move of what is left: do it once the read part is at least
  // half of the buffer, so each byte is moved at most about once.
  void compact() {
    if (read_ == 0) return;
    if (read_ == buffer_.size()) {
      dropped_ += read_;
      buffer_.clear();
      read_ = 0;
    } else if (read_ >= buffer_.size() / 2) {
      dropped_ += read_;
      buffer_.erase(0, read_);
      read_ = 0;
    }
  }

  std::string buffer_;
  size_t read_ = 0;
  size_t dropped_ = 0;
  size_t retain_limit_ = 0;
  bool retaining_ = false;
};

}  // namespace spindle::proxy
