#include "dns/discovery.h"

#include "util/log.h"

namespace spindle::dns {
namespace {
// How often due names are looked for. Refresh times are at least dns.refresh.min (1 s by
// default), so a tenth of a second is precise enough.
constexpr auto kTick = std::chrono::milliseconds(100);
}  // namespace

Discovery::Discovery(loop::Loop& loop, DnsResolver& resolver, PolicySettings settings)
    : loop_(loop), resolver_(resolver), settings_(settings), tick_(loop, [this] { onTick(); }) {}

void Discovery::watch(const std::string& name, OnChange on_change, OnResult on_result) {
  auto watched = std::make_unique<Watched>(Watched{name, NameState(settings_), std::move(on_change),
                                                   std::move(on_result), false, std::nullopt,
                                                   std::nullopt, std::nullopt, std::nullopt});
  query(*watched);
  names_.push_back(std::move(watched));
  if (!tick_.armed()) tick_.arm(kTick);
}

bool Discovery::allResolved(std::string* pending) const {
  for (const auto& watched : names_) {
    if (!watched->state.resolved()) {
      if (pending != nullptr) *pending = watched->name;
      return false;
    }
  }
  return true;
}

std::optional<Discovery::Freshness> Discovery::freshness(const std::string& name) const {
  for (const auto& watched : names_) {
    if (watched->name != name) continue;
    auto age = watched->state.staleness(Clock::now());
    if (!age) return std::nullopt;
    return Freshness{*age, watched->state.goodFor()};
  }
  return std::nullopt;
}

void Discovery::query(Watched& watched) {
  watched.in_flight = true;
  watched.a.reset();
  watched.aaaa.reset();
  // Watched objects live as long as the Discovery, which outlives the resolver's callbacks.
  resolver_.query(watched.name, RecordType::kA, [this, &watched](Answer answer) {
    watched.a = std::move(answer);
    onAnswer(watched);
  });
  resolver_.query(watched.name, RecordType::kAAAA, [this, &watched](Answer answer) {
    watched.aaaa = std::move(answer);
    onAnswer(watched);
  });
}

void Discovery::onAnswer(Watched& watched) {
  if (!watched.a || !watched.aaaa) return;  // the other family is still on its way
  watched.in_flight = false;
  // One family that failed while the other answered is replaced by its last good answer:
  // keep what it gave before. When both fail it is an outage, and it is reported as one (the
  // failure policy keeps the endpoints, the metric and staleness show it).
  const bool outage =
      watched.a->outcome == Outcome::kFailure && watched.aaaa->outcome == Outcome::kFailure;
  auto effective = [outage](const Answer& answer,
                            std::optional<Answer>& last_good) -> const Answer& {
    if (answer.outcome != Outcome::kFailure) {
      last_good = answer;
      return answer;
    }
    return last_good && !outage ? *last_good : answer;
  };
  const Answer answer = combine(effective(*watched.a, watched.last_good_a),
                                effective(*watched.aaaa, watched.last_good_aaaa));
  const auto now = Clock::now();
  auto changed = watched.state.onAnswer(answer, now);
  if (watched.on_result) watched.on_result(answer.outcome);
  if (answer.outcome == Outcome::kFailure) {
    log::warn({.reason = answer.error}, "dns: {}: {} (keeping {} endpoints; {} failures in a row)",
              watched.name, answer.error, watched.state.addresses().size(),
              watched.state.consecutiveFailures());
  } else if (answer.outcome == Outcome::kEmpty && !changed) {
    log::warn({.reason = answer.error},
              "dns: {}: {} ({} of {} answers in a row before endpoints are dropped)", watched.name,
              answer.error, watched.state.consecutiveEmpty(), settings_.empty_confirmations);
  }
  if (changed) watched.on_change(*changed);
}

void Discovery::onTick() {
  const auto now = Clock::now();
  for (const auto& watched : names_) {
    if (!watched->in_flight && watched->state.nextQuery() <= now) query(*watched);
  }
  tick_.arm(kTick);
}

}  // namespace spindle::dns
