#include "edgefl/tools/model_setup.hpp"

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
      return makeError(Code::ShapeMismatch, arch + " takes " +
                                                std::to_string(model->featureCount()) +
                                                " features; " + train->name + " has " +
                                                std::to_string(train->featureCount));
    }
    if (!images) EDGEFL_TRY(fitStandardization(*model, *train));
    auto stats = computeReferenceStats(*model, *train, 10);
    if (!stats.ok()) return stats.error();
    model->referenceStats() = std::move(stats.value());
  }
  return model;
}

}  // namespace edgefl::tools
