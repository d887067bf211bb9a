// Splits a TMS_CONF value, "key=value,key=value", into its pairs: the
// syntax alone, in the style of PYTORCH_CUDA_ALLOC_CONF. Which keys exist
// and what their values mean is env_config.cpp's business.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tms {

struct ConfPair {
  std::string key;
  std::string value;
};

/// The pairs of `text` in order, blanks around keys and values trimmed;
/// empty entries (",,", a trailing comma) are skipped. @throws ConfigError,
/// naming `variable` and the entry, for an entry without '=', an empty key
/// or value, or a key given twice.
std::vector<ConfPair> split_conf_pairs(std::string_view variable, std::string_view text);

}  // namespace tms
