// edgefl model init | train | eval: models outside a fleet, and the
// centralized baselines federated runs are compared with.

#include <chrono>
#include <cstdio>
#include <sstream>

#include "commands.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/train.hpp"
#include "edgefl/tools/inspect.hpp"
#include "edgefl/tools/model_setup.hpp"

namespace edgefl::tools {
namespace {

Node metricsNode(const Metrics& m, const std::vector<std::string>& classNames) {
  Node::Object o{{"dataset", Node(m.dataset)},
                 {"samples", Node(m.sampleCount)},
                 {"accuracy", Node(static_cast<double>(m.accuracy))},
                 {"loss", Node(static_cast<double>(m.loss))}};
  Node::Array perClass;
  for (std::size_t c = 0; c < m.perClassAccuracy.size(); ++c) {
    Node::Object e;
    e.emplace_back("class", static_cast<std::uint64_t>(c));
    if (c < classNames.size()) e.emplace_back("name", classNames[c]);
    e.emplace_back("accuracy", static_cast<double>(m.perClassAccuracy[c]));
    if (c < m.perClassCount.size()) e.emplace_back("count", m.perClassCount[c]);
    perClass.emplace_back(Node(std::move(e)));
  }
  o.emplace_back("perClass", std::move(perClass));
  return Node(std::move(o));
}

void printMetrics(const Metrics& m, const std::vector<std::string>& classNames) {
  std::printf("%s: accuracy %.4f, loss %.4f on %llu samples\n", m.dataset.c_str(), m.accuracy,
              m.loss, static_cast<unsigned long long>(m.sampleCount));
  for (std::size_t c = 0; c < m.perClassAccuracy.size(); ++c) {
    std::printf("  class %zu %-12s %.4f\n", c, c < classNames.size() ? classNames[c].c_str() : "",
                m.perClassAccuracy[c]);
  }
}

Result<Dataset> load(const std::string& spec) {
  auto d = loadDataset(spec);
  if (!d.ok()) return makeError(d.code(), spec + ": " + d.error().detail);
  return d;
}

}  // namespace

void addModelCommands(CLI::App& app, int& exitCode) {
  auto* model = app.add_subcommand("model", "Create, train and evaluate models");
  model->require_subcommand(1);

  struct InitArgs {
    std::string arch, out, dataset = "fashion-mnist";
    std::uint64_t seed = 1;
  };
  auto ia = std::make_shared<InitArgs>();
  auto* init = model->add_subcommand("init", "Write an initialized model");
  init->add_option("--arch", ia->arch, "logreg:IN-OUT, mlp:IN-H...-OUT or lenet")->required();
  init->add_option("--out", ia->out, "Model file to write")->required();
  init->add_option("--seed", ia->seed, "Initialization seed")->capture_default_str();
  init->add_option("--dataset", ia->dataset,
                   "Data the model is for (input schema, class names, reference statistics); "
                   "'none' for a bare model")
      ->capture_default_str();
  init->callback([ia, &exitCode] {
    std::optional<Dataset> train;
    if (ia->dataset != "none") {
      auto d = load(datasetSplit(ia->dataset, "train"));
      if (!d.ok()) {
        exitCode = reportError(d.error());
        return;
      }
      train = std::move(d.value());
    }
    auto m = createModelFor(ia->arch, ia->dataset, ia->seed, train ? &*train : nullptr);
    if (!m.ok()) {
      exitCode = reportError(m.error());
      return;
    }
    Status st = saveModel(*m, ia->out);
    if (!st.ok()) {
      exitCode = reportError(st.error());
      return;
    }
    std::printf("wrote %s: %s, %zu parameters, digest %s\n", ia->out.c_str(), m->arch().c_str(),
                m->parameterCount(), toHex(parameterDigest(*m)).c_str());
  });

  struct TrainArgs {
    std::string arch, out, dataset = "fashion-mnist", test, optimizer = "sgd", init;
    std::uint32_t epochs = 10, batch = 64, limit = 0, lrDrop = 0;
    float lr = 0.05f, momentum = 0.9f, weightDecay = 0;
    std::uint64_t seed = 1;
    bool json = false;
  };
  auto ta = std::make_shared<TrainArgs>();
  auto* train = model->add_subcommand("train", "Centralized training (the baseline)");
  train->add_option("--arch", ta->arch, "Architecture spec (ignored with --init)");
  train->add_option("--init", ta->init, "Start from this model file instead of --arch");
  train
      ->add_option("--dataset", ta->dataset,
                   "fashion-mnist (train split, test split for evaluation) or csv:PATH")
      ->capture_default_str();
  train->add_option("--test", ta->test, "Evaluation data (default: the dataset's test split)");
  train->add_option("--epochs", ta->epochs)->capture_default_str()->check(CLI::Range(1, 10000));
  train->add_option("--batch", ta->batch)->capture_default_str()->check(CLI::Range(1, 65536));
  train->add_option("--lr", ta->lr)->capture_default_str();
  train->add_option("--optimizer", ta->optimizer)
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "adam"}));
  train->add_option("--momentum", ta->momentum, "SGD momentum")->capture_default_str();
  train->add_option("--lr-drop", ta->lrDrop,
                    "Divide the learning rate by 10 from this epoch on (1-based; 0 = never)");
  train->add_option("--weight-decay", ta->weightDecay)->capture_default_str();
  train->add_option("--seed", ta->seed, "Initialization and shuffling seed")->capture_default_str();
  train->add_option("--limit", ta->limit, "Train on the first N samples only (0 = all)");
  train->add_option("--out", ta->out, "Model file to write")->required();
  train->add_flag("--json", ta->json, "Print the result as JSON");
  train->callback([ta, &exitCode] {
    auto trainData = load(datasetSplit(ta->dataset, "train"));
    if (!trainData.ok()) {
      exitCode = reportError(trainData.error());
      return;
    }
    const std::string testSpec = ta->test.empty() ? datasetSplit(ta->dataset, "test") : ta->test;
    auto testData = load(testSpec);
    if (!testData.ok()) {
      exitCode = reportError(testData.error());
      return;
    }
    Result<Model> m =
        !ta->init.empty()
            ? loadModel(ta->init)
            : (ta->arch.empty()
                   ? Result<Model>(makeError(Code::InvalidArgument, "--arch or --init is required"))
                   : createModelFor(ta->arch, ta->dataset, ta->seed, &*trainData));
    if (!m.ok()) {
      exitCode = reportError(m.error());
      return;
    }
    TrainOptions o;
    o.epochs = 1;  // one at a time, to report progress
    o.batchSize = ta->batch;
    o.learningRate = ta->lr;
    o.optimizer = ta->optimizer == "adam" ? OptimizerKind::Adam : OptimizerKind::Sgd;
    o.momentum = ta->optimizer == "sgd" ? ta->momentum : 0.0f;
    o.weightDecay = ta->weightDecay;
    o.seed = ta->seed;
    o.maxSamples = ta->limit;
    auto trainer = Trainer::prepare(*m, o);
    if (!trainer.ok()) {
      exitCode = reportError(trainer.error());
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    double trainSeconds = 0;
    std::uint64_t samples = 0;
    Node::Array epochs;
    for (std::uint32_t e = 0; e < ta->epochs; ++e) {
      if (ta->lrDrop > 0 && e + 1 == ta->lrDrop) {
        Status st = trainer->setLearningRate(ta->lr / 10.0f);
        if (!st.ok()) {
          exitCode = reportError(st.error());
          return;
        }
      }
      const auto te = std::chrono::steady_clock::now();
      auto report = trainer->train(*trainData);
      if (!report.ok()) {
        exitCode = reportError(report.error());
        return;
      }
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - te).count();
      trainSeconds += secs;
      samples += report->samples;
      auto metrics = evaluate(*m, *testData);
      if (!metrics.ok()) {
        exitCode = reportError(metrics.error());
        return;
      }
      const float loss = report->epochLoss.empty() ? 0.0f : report->epochLoss.back();
      std::fprintf(stderr,
                   "epoch %u/%u: train loss %.4f, %s accuracy %.4f (%.1f s, %.0f samples/s)\n",
                   e + 1, ta->epochs, loss, testSpec.c_str(), metrics->accuracy, secs,
                   static_cast<double>(report->samples) / secs);
      Node::Object ep;
      ep.emplace_back("epoch", static_cast<std::uint64_t>(e + 1));
      ep.emplace_back("trainLoss", static_cast<double>(loss));
      ep.emplace_back("testAccuracy", static_cast<double>(metrics->accuracy));
      ep.emplace_back("seconds", secs);
      epochs.emplace_back(Node(std::move(ep)));
    }
    auto metrics = evaluate(*m, *testData);
    if (!metrics.ok()) {
      exitCode = reportError(metrics.error());
      return;
    }
    m->meta().metrics = *metrics;
    Status st = saveModel(*m, ta->out);
    if (!st.ok()) {
      exitCode = reportError(st.error());
      return;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (ta->json) {
      Node::Object o2{{"model", Node(ta->out)},
                      {"arch", Node(m->arch())},
                      {"parameters", Node(static_cast<std::uint64_t>(m->parameterCount()))},
                      {"trainSeconds", Node(trainSeconds)},
                      {"wallSeconds", Node(wall)},
                      {"trainSamplesPerSecond", Node(static_cast<double>(samples) / trainSeconds)},
                      {"epochs", Node(std::move(epochs))},
                      {"test", metricsNode(*metrics, m->classNames())}};
      std::printf("%s\n", toJson(Node(std::move(o2))).c_str());
    } else {
      std::printf("trained %s (%zu parameters) in %.1f s (%.0f samples/s); wrote %s\n",
                  m->arch().c_str(), m->parameterCount(), trainSeconds,
                  static_cast<double>(samples) / trainSeconds, ta->out.c_str());
      printMetrics(*metrics, m->classNames());
    }
  });

  struct EvalArgs {
    std::string file, dataset = "fashion-mnist";
    bool json = false;
  };
  auto ea = std::make_shared<EvalArgs>();
  auto* eval = model->add_subcommand("eval", "Evaluate a model file");
  eval->add_option("FILE", ea->file, "Model file")->required();
  eval->add_option("--dataset", ea->dataset, "fashion-mnist (test split), a full spec or csv:PATH")
      ->capture_default_str();
  eval->add_flag("--json", ea->json, "Print the result as JSON");
  eval->callback([ea, &exitCode] {
    auto m = loadModel(ea->file);
    if (!m.ok()) {
      exitCode = reportError(m.error());
      return;
    }
    auto data = load(datasetSplit(ea->dataset, "test"));
    if (!data.ok()) {
      exitCode = reportError(data.error());
      return;
    }
    auto metrics = evaluate(*m, *data);
    if (!metrics.ok()) {
      exitCode = reportError(metrics.error());
      return;
    }
    if (ea->json) {
      std::printf("%s\n", toJson(metricsNode(*metrics, m->classNames())).c_str());
    } else {
      printMetrics(*metrics, m->classNames());
    }
  });
}

}  // namespace edgefl::tools
