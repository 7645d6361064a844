// IDX image and label files (raw or gzip), as loadIdx reads them from
// disk. Input: one byte of options, a 16-bit length of the image file, the
// image file, then the label file. A loaded dataset has the sizes its
// header claims and labels below the class count.

#include "edgefl/shared/datasets.hpp"
#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::InputReader in(ByteView(data, size));
  const std::uint8_t flags = in.u8();
  const ByteView images = in.take(in.u16());
  const ByteView labels = in.rest();

  constexpr std::size_t kFirstN[4] = {0, 1, 2, 5};
  IdxOptions options;
  options.firstN = kFirstN[flags & 3];
  if ((flags & 4) != 0) {
    options.maxItems = 16;
    options.maxSide = 8;
    options.maxDecompressedBytes = 1024;
  }
  const std::uint32_t classCount = (flags & 8) != 0 ? 3 : 10;

  auto loaded = loadIdx(fuzz::scratchFile("images", images), fuzz::scratchFile("labels", labels),
                        classCount, options);
  if (!loaded.ok()) return 0;
  const Dataset& d = *loaded;
  EDGEFL_FUZZ_CHECK(d.featureCount > 0 && d.features.size() == d.labels.size() * d.featureCount,
                    "features " + std::to_string(d.features.size()) + " for " +
                        std::to_string(d.labels.size()) + " labels of " +
                        std::to_string(d.featureCount));
  EDGEFL_FUZZ_CHECK(options.firstN == 0 || d.labels.size() <= options.firstN,
                    "loaded more than firstN samples");
  for (std::int32_t label : d.labels) {
    EDGEFL_FUZZ_CHECK(label >= 0 && static_cast<std::uint32_t>(label) < classCount,
                      "label " + std::to_string(label));
  }
  return 0;
}
