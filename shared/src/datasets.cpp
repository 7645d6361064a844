// Named datasets: Fashion-MNIST from its Debian package, and the spec
// strings that command lines and configs use to pick a dataset.

#include <charconv>

#include "edgefl/shared/datasets.hpp"

namespace edgefl {
namespace {

constexpr std::uint32_t kFashionSide = 28;
constexpr const char* kFashionClassNames[] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};
constexpr std::uint32_t kFashionClassCount = std::size(kFashionClassNames);

constexpr std::string_view kSpecForms =
    "expected fashion-mnist:train, fashion-mnist:test, fashion-mnist:<split>:<N>, csv:<path> or a "
    "path ending in .csv";

}  // namespace

Result<Dataset> loadFashionMnist(std::string_view split, const IdxOptions& options,
                                 std::filesystem::path dir) {
  // The files keep the upstream "t10k" name for the test split.
  std::string_view stem;
  if (split == "train") {
    stem = "train";
  } else if (split == "test") {
    stem = "t10k";
  } else {
    return makeError(Code::InvalidArgument,
                     "fashion-mnist split '" + std::string(split) + "': expected train or test");
  }
  const std::string prefix(stem);
  auto data = loadIdx(dir / (prefix + "-images-idx3-ubyte.gz"),
                      dir / (prefix + "-labels-idx1-ubyte.gz"), kFashionClassCount, options);
  if (!data.ok()) return data.error();
  // Models for this dataset take 784 inputs; another size is another dataset.
  if (data->featureCount != std::size_t{kFashionSide} * kFashionSide) {
    return makeError(Code::BadDataset, (dir / (prefix + "-images-idx3-ubyte.gz")).string() +
                                           ": Fashion-MNIST images are 28x28 (784 pixels), got " +
                                           std::to_string(data->featureCount) + " pixels");
  }
  data->classNames.assign(std::begin(kFashionClassNames), std::end(kFashionClassNames));
  data->name = "fashion-mnist:" + std::string(split);
  return data;
}

Result<Dataset> loadDataset(std::string_view spec) {
  constexpr std::string_view kFashion = "fashion-mnist:";
  constexpr std::string_view kCsv = "csv:";
  if (spec.starts_with(kFashion)) {
    std::string_view rest = spec.substr(kFashion.size());
    IdxOptions options;
    const auto colon = rest.find(':');
    if (colon != std::string_view::npos) {
      const std::string_view count = rest.substr(colon + 1);
      std::size_t n = 0;
      const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
      if (ec != std::errc() || end != count.data() + count.size() || n == 0) {
        return makeError(Code::InvalidArgument, "dataset spec '" + std::string(spec) + "': '" +
                                                    std::string(count) +
                                                    "' is not a sample count >= 1");
      }
      options.firstN = n;
      rest = rest.substr(0, colon);
    }
    if (rest != "train" && rest != "test") {
      return makeError(Code::InvalidArgument, "dataset spec '" + std::string(spec) +
                                                  "': unknown split '" + std::string(rest) + "'; " +
                                                  std::string(kSpecForms));
    }
    return loadFashionMnist(rest, options);
  }
  if (spec.starts_with(kCsv) && spec.size() > kCsv.size()) {
    return loadCsv(std::filesystem::path(spec.substr(kCsv.size())));
  }
  if (spec.size() > 4 && spec.ends_with(".csv")) return loadCsv(std::filesystem::path(spec));
  return makeError(Code::InvalidArgument,
                   "dataset spec '" + std::string(spec) + "': " + std::string(kSpecForms));
}

}  // namespace edgefl
