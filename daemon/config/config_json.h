// The running config as JSON, for the admin page /config. Built from the struct, with the
// YAML's own keys and value forms ("2s", "ip:port"), so that the page is itself a config
// spindle takes; tests/unit/config_json_test.cc checks that it carries every key there is
// (config::knownKeys) and reads back the same.
#pragma once

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace spindle::config {

nlohmann::json toJson(const Config& config);

// A duration as the config writes it: "1500ms", "2s", "5m", "1h"; "0s".
std::string durationText(Duration duration);

}  // namespace spindle::config
