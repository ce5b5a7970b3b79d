#include "dns/policy.h"

#include <algorithm>

namespace spindle::dns {
namespace {

void sortUnique(std::vector<net::SocketAddress>& addresses) {
  auto less = [](const net::SocketAddress& a, const net::SocketAddress& b) {
    return a.mapped() < b.mapped() || (a.mapped() == b.mapped() && a.port() < b.port());
  };
  std::sort(addresses.begin(), addresses.end(), less);
  addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
}

}  // namespace

Answer combine(const Answer& a, const Answer& aaaa) {
  if (a.outcome == Outcome::kFailure && aaaa.outcome == Outcome::kFailure) return a;
  if (a.outcome == Outcome::kFailure) return aaaa;
  if (aaaa.outcome == Outcome::kFailure) return a;
  Answer out;
  if (a.outcome == Outcome::kEmpty && aaaa.outcome == Outcome::kEmpty) {
    out.outcome = Outcome::kEmpty;
    out.error = a.error;
    return out;
  }
  out.outcome = Outcome::kRecords;
  out.addresses = a.addresses;
  out.addresses.insert(out.addresses.end(), aaaa.addresses.begin(), aaaa.addresses.end());
  if (a.outcome == Outcome::kRecords && aaaa.outcome == Outcome::kRecords) {
    out.ttl = std::min(a.ttl, aaaa.ttl);
  } else {
    out.ttl = a.outcome == Outcome::kRecords ? a.ttl : aaaa.ttl;
  }
  return out;
}

std::chrono::milliseconds NameState::clampRefresh(std::chrono::milliseconds wanted) const {
  return std::clamp(wanted, settings_.refresh_min, settings_.refresh_max);
}

std::optional<std::vector<net::SocketAddress>> NameState::onAnswer(const Answer& answer,
                                                                   Clock::time_point now) {
  switch (answer.outcome) {
    case Outcome::kRecords: {
      failures_ = 0;
      empties_ = 0;
      last_good_ = now;
      good_for_ = clampRefresh(answer.ttl);
      next_query_ = now + good_for_;
      std::vector<net::SocketAddress> addresses = answer.addresses;
      sortUnique(addresses);
      const bool changed = !resolved_ || addresses != addresses_;
      resolved_ = true;
      if (!changed) return std::nullopt;
      addresses_ = std::move(addresses);
      return addresses_;
    }
    case Outcome::kEmpty: {
      failures_ = 0;
      ++empties_;
      // Until it is confirmed, ask again soon: the next answer decides.
      next_query_ = now + settings_.refresh_min;
      if (empties_ < settings_.empty_confirmations) return std::nullopt;
      last_good_ = now;
      good_for_ = settings_.refresh_min;
      const bool changed = !resolved_ || !addresses_.empty();
      resolved_ = true;
      if (!changed) return std::nullopt;
      addresses_.clear();
      return addresses_;
    }
    case Outcome::kFailure: break;
  }
  ++failures_;
  // Backoff: refresh_min, doubling per failure in a row, at most refresh_max.
  auto backoff = settings_.refresh_min;
  for (uint32_t i = 1; i < failures_ && backoff < settings_.refresh_max; ++i) backoff *= 2;
  next_query_ = now + clampRefresh(backoff);
  return std::nullopt;
}

std::optional<std::chrono::seconds> NameState::staleness(Clock::time_point now) const {
  if (!last_good_) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::seconds>(now - *last_good_);
}

}  // namespace spindle::dns
