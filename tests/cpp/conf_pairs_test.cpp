#include "config/conf_pairs.h"

#include <gtest/gtest.h>

#include <string>

#include "common/errors.h"

namespace tms {
namespace {

TEST(ConfPairs, SplitsPairsInOrderAndTrimsBlanks) {
  const auto pairs = split_conf_pairs("TMS_CONF", " a=1, b = two ,,c=3,");
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[0].key, "a");
  EXPECT_EQ(pairs[0].value, "1");
  EXPECT_EQ(pairs[1].key, "b");
  EXPECT_EQ(pairs[1].value, "two");
  EXPECT_EQ(pairs[2].key, "c");
  EXPECT_TRUE(split_conf_pairs("TMS_CONF", "").empty());
}

TEST(ConfPairs, MalformedEntriesNameTheVariableAndTheEntry) {
  for (const char* text : {"a", "a=1,b", "=1", "a=", "a=1,a=2"}) {
    try {
      (void)split_conf_pairs("TMS_CONF", text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const ConfigError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("TMS_CONF"), std::string::npos) << message;
      EXPECT_NE(message.find("key=value"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace tms
