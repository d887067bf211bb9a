#include "config/conf_pairs.h"

#include "common/errors.h"

namespace tms {
namespace {

std::string_view trimmed(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!text.empty() && blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && blank(text.back())) text.remove_suffix(1);
  return text;
}

[[noreturn]] void malformed(std::string_view variable, std::string_view entry,
                            std::string_view why) {
  throw ConfigError("environment variable " + std::string(variable) + ": entry '" +
                    std::string(entry) + "' " + std::string(why) +
                    "; accepted values: comma-separated key=value pairs (docs/configuration.md)");
}

}  // namespace

std::vector<ConfPair> split_conf_pairs(std::string_view variable, std::string_view text) {
  std::vector<ConfPair> pairs;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    const std::string_view entry = trimmed(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (entry.empty()) continue;
    const std::size_t equals = entry.find('=');
    if (equals == std::string_view::npos) malformed(variable, entry, "has no '='");
    ConfPair pair{std::string(trimmed(entry.substr(0, equals))),
                  std::string(trimmed(entry.substr(equals + 1)))};
    if (pair.key.empty()) malformed(variable, entry, "has no key");
    if (pair.value.empty()) malformed(variable, entry, "has no value");
    for (const ConfPair& earlier : pairs) {
      // Which one would win is a guess the user should not have to make.
      if (earlier.key == pair.key) malformed(variable, entry, "sets a key given before");
    }
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

}  // namespace tms
