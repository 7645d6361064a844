// Model files and Model messages (the content of Deployment.model): decode
// under the default limits, and for a model that decodes, everything a
// device then does with it: write it back, score a sample and take a
// training step. A model that decodes must round-trip to the same weights.

#include <cstring>
#include <vector>

#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/train.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;

void scoreOnce(const Model& model) {
  auto scorer = Scorer::prepare(model);
  EDGEFL_FUZZ_CHECK(scorer.ok(), "a decoded model does not prepare: " +
                                     (scorer.ok() ? std::string() : scorer.error().toString()));
  const std::vector<float> x(model.featureCount(), 0.5f);
  std::vector<float> out(model.outputCount());
  scorer->score(x, out);
}

void trainOnce(Model model) {
  TrainOptions options;
  options.batchSize = 1;
  auto trainer = Trainer::prepare(model, options);
  if (!trainer.ok()) return;
  const std::vector<float> x(model.featureCount(), 0.25f);
  if (model.task() == Task::Classification) {
    const std::int32_t label = 0;
    (void)trainer->step(x, std::span<const std::int32_t>(&label, 1));
  } else {
    const std::vector<float> target(model.outputCount(), 1.0f);
    (void)trainer->stepRegression(x, target);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto model = modelFromBytes(ByteView(data, size));
  if (!model.ok()) return 0;

  const Bytes again = modelToBytes(*model);
  auto reread = modelFromBytes(again);
  EDGEFL_FUZZ_CHECK(reread.ok(), "a decoded model does not decode after re-encoding: " +
                                     (reread.ok() ? std::string() : reread.error().toString()));
  EDGEFL_FUZZ_CHECK(parameterDigest(*reread) == parameterDigest(*model),
                    "re-encoding changed the parameters");
  EDGEFL_FUZZ_CHECK(reread->layers() == model->layers(), "re-encoding changed the layers");

  scoreOnce(*model);
  trainOnce(std::move(model.value()));
  return 0;
}
