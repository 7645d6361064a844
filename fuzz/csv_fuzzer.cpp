// CSV tables as loadCsv reads them from disk. Input: one byte of options
// (task, class order, firstN, tight limits), then the file. A loaded table
// is rectangular, finite, and its labels index its class names.

#include <cmath>

#include "edgefl/shared/datasets.hpp"
#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::InputReader in(ByteView(data, size));
  const std::uint8_t flags = in.u8();

  CsvOptions options;
  const bool regression = (flags & 1) != 0;
  options.task = regression ? CsvOptions::Task::Regression : CsvOptions::Task::Classification;
  options.classOrder =
      (flags & 2) != 0 ? CsvOptions::ClassOrder::FirstSeen : CsvOptions::ClassOrder::Sorted;
  constexpr std::size_t kFirstN[4] = {0, 1, 3, 8};
  options.firstN = kFirstN[(flags >> 2) & 3];
  if ((flags & 16) != 0) {
    options.maxRecordBytes = 64;
    options.maxColumns = 8;
    options.maxRows = 16;
    options.maxClasses = 4;
  }

  auto loaded = loadCsv(fuzz::scratchFile("table.csv", in.rest()), options);
  if (!loaded.ok()) return 0;
  const Dataset& d = *loaded;
  const std::size_t rows = regression ? d.targets.size() : d.labels.size();
  EDGEFL_FUZZ_CHECK(d.featureCount > 0 && d.features.size() == rows * d.featureCount &&
                        d.featureNames.size() == d.featureCount,
                    "features " + std::to_string(d.features.size()) + " for " +
                        std::to_string(rows) + " rows of " + std::to_string(d.featureCount));
  for (float v : d.features) EDGEFL_FUZZ_CHECK(std::isfinite(v), "a non-finite feature");
  for (float v : d.targets) EDGEFL_FUZZ_CHECK(std::isfinite(v), "a non-finite target");
  for (std::int32_t label : d.labels) {
    EDGEFL_FUZZ_CHECK(label >= 0 && static_cast<std::size_t>(label) < d.classNames.size(),
                      "label " + std::to_string(label) + " of " +
                          std::to_string(d.classNames.size()) + " classes");
  }
  return 0;
}
