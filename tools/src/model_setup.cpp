#include "edgefl/tools/model_setup.hpp"

#include <algorithm>
#include <cmath>

#include "edgefl/shared/arch.hpp"

namespace edgefl::tools {

std::string datasetSplit(const std::string& spec, const std::string& split) {
  if (spec == "fashion-mnist") return "fashion-mnist:" + split;
  return spec;
}

Result<Model> createModelFor(const std::string& arch, const std::string& datasetSpec,
                             std::uint64_t seed, const Dataset* train) {
  auto parsed = parseArch(arch);
  if (!parsed.ok()) return parsed.error();
  ModelOptions mo;
  mo.seed = seed;
  const bool images = datasetSpec.rfind("fashion-mnist", 0) == 0;
  if (images && parsed->inputShape.size() == 1 && parsed->inputShape[0] == 28 * 28) {
    mo.inputShape = {1, 28, 28};
  }
  if (train != nullptr && train->classNames.size() == parsed->outputCount) {
    mo.classNames = train->classNames;
  }
  auto model = createModel(arch, mo);
  if (!model.ok()) return model.error();
  if (train != nullptr) {
    if (train->featureCount != model->featureCount()) {
      return makeError(Code::ShapeMismatch,
                       arch + " takes " + std::to_string(model->featureCount()) + " features; " +
                           train->name + " has " + std::to_string(train->featureCount));
    }
    if (!images) {
      EDGEFL_TRY(fitStandardization(*model, *train));
    } else {
      // One mean and std over all pixels (Fashion-MNIST: 72.9 and 90.0):
      // centred inputs train faster than plain 1/255 scaling, and a
      // per-pixel std would blow up the always-black border pixels.
      double sum = 0, sumSq = 0;
      for (float v : train->features) {
        sum += v;
        sumSq += static_cast<double>(v) * v;
      }
      const double n = static_cast<double>(train->features.size());
      const double mean = n > 0 ? sum / n : 0.0;
      const double var = n > 0 ? std::max(0.0, sumSq / n - mean * mean) : 1.0;
      const double sd = var > 0 ? std::sqrt(var) : 1.0;
      model->preprocessing().shift.assign(model->featureCount(), static_cast<float>(mean));
      model->preprocessing().scale.assign(model->featureCount(), static_cast<float>(1.0 / sd));
    }
    auto stats = computeReferenceStats(*model, *train, 10);
    if (!stats.ok()) return stats.error();
    model->referenceStats() = std::move(stats.value());
  }
  return model;
}

}  // namespace edgefl::tools
