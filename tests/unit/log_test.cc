// Log lines: text as ever, or one JSON object per line that a pipeline parses whatever the
// message holds. (That --log-level stays over log.level is seen in test_cli: pinning is for the
// process's life.)
#include "util/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace spindle::log {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void TearDown() override { configure(Level::kInfo, Format::kText); }
};

TEST_F(LogTest, TextLinesAreAsBefore) {
  configure(Level::kInfo, Format::kText);
  EXPECT_EQ(render(Level::kWarn, {.endpoint = "10.0.0.1:80"}, "endpoint down"),
            "spindle: warn: endpoint down");
}

TEST_F(LogTest, JsonLinesCarryTimeLevelMessageAndTheFieldsGiven) {
  configure(Level::kInfo, Format::kJson);
  const std::string line =
      render(Level::kWarn, {.service = "echo", .endpoint = "10.0.0.1:80", .reason = "refused"},
             "endpoint 10.0.0.1:80: refused");
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["msg"], "endpoint 10.0.0.1:80: refused");
  EXPECT_EQ(j["service"], "echo");
  EXPECT_EQ(j["endpoint"], "10.0.0.1:80");
  EXPECT_EQ(j["reason"], "refused");
  EXPECT_FALSE(j.contains("source")) << "empty fields are left out";
  EXPECT_TRUE(std::string(j["time"]).ends_with("Z")) << j["time"];
  EXPECT_EQ(std::string(j["time"]).size(), std::string("2026-12-06T23:30:00.123Z").size());
}

TEST_F(LogTest, AJsonLineParsesWhateverTheMessageHolds) {
  configure(Level::kInfo, Format::kJson);
  const std::string message = std::string("quote \" backslash \\ newline \n tab \t ") +
                              "bad utf-8 \xff\xc3 ok é " + std::string(1, '\0') + " end";
  const nlohmann::json j = nlohmann::json::parse(render(Level::kError, {}, message));
  const std::string back = j["msg"];
  EXPECT_NE(back.find("quote \" backslash \\ newline \n tab \t "), std::string::npos);
  EXPECT_NE(back.find("ok é"), std::string::npos);
  EXPECT_NE(back.find("\xc3\xbf"), std::string::npos) << "0xff escaped as U+00FF";
  EXPECT_NE(back.find(" end"), std::string::npos);
}

TEST_F(LogTest, TheConfigSetsTheLevelByItsName) {
  configure(Level::kWarn, Format::kText);
  EXPECT_EQ(threshold(), Level::kWarn);
  configure(Level::kDebug, Format::kText);
  EXPECT_EQ(threshold(), Level::kDebug);
  EXPECT_EQ(parseLevel("error"), Level::kError);
  EXPECT_EQ(parseLevel("loud"), std::nullopt);
}

}  // namespace
}  // namespace spindle::log
