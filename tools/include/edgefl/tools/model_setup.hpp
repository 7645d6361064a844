#pragma once
// Creating a model for a dataset the way `edgefl fleet init` and
// `edgefl model init|train` all do: image inputs for Fashion-MNIST, class
// names, and reference statistics from training data (for drift).

#include <string>

#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/model.hpp"

namespace edgefl::tools {

// `datasetSpec` names the data the model is for ("fashion-mnist...",
// "csv:PATH"); with Fashion-MNIST an input of 784 becomes a 1x28x28 image
// (pixels 0..255 scaled by 1/255). `train`, when given, supplies class
// names and reference statistics (10 bins per feature), and for tabular
// data the standardization.
Result<Model> createModelFor(const std::string& arch, const std::string& datasetSpec,
                             std::uint64_t seed, const Dataset* train);

// "fashion-mnist" -> "fashion-mnist:<split>"; any other spec unchanged.
std::string datasetSplit(const std::string& spec, const std::string& split);

}  // namespace edgefl::tools
