// edgefl::Device on the device's hot paths, beside their bounds:
// - batch-1 Device::score of mlp:784-128-10 (validation, drift statistics
//   and latency histogram included) next to the bare Scorer it wraps, with
//   the heap allocations per call counted by a replaced operator new;
// - the heap an idle Device holds once a model is active (the first device
//   of a process, and each further one sharing the model cache);
// - the cost of observe() per labelled sample with the memory and the
//   SQLite store;
// - one client-round of a simulated device, all in one process and on one
//   core: a signed round task in, local training on 60 samples (1 epoch,
//   batch 32), delta, float32 encoding, signing, then the coordinator's
//   verification of the signed update (envelope, signature, decode, norm),
//   next to the local training alone. The simulation goal is 150 such
//   client-rounds per second per core (the MQTT hops and the registry
//   commit come on top).

#include <benchmark/benchmark.h>
#include <capnp/message.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <new>
#include <random>

#include "edgefl/device/device.hpp"
#include "edgefl/device/update_builder.hpp"
#include "edgefl/server/update_verifier.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/shared/topics.hpp"

namespace {
std::atomic<std::uint64_t> newCalls{0};
std::atomic<std::int64_t> liveBytes{0};

void* counted(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  newCalls.fetch_add(1, std::memory_order_relaxed);
  liveBytes.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  return p;
}
void release(void* p) {
  if (p == nullptr) return;
  liveBytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}
}  // namespace

void* operator new(std::size_t size) {
  return counted(size);
}
void* operator new[](std::size_t size) {
  return counted(size);
}
void operator delete(void* p) noexcept {
  release(p);
}
void operator delete[](void* p) noexcept {
  release(p);
}
void operator delete(void* p, std::size_t) noexcept {
  release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  release(p);
}

namespace edgefl {
namespace {
namespace fs = std::filesystem;

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A fleet root, a delegated coordinator, a device key, in a scratch
// directory; and signed deployments of a model.
struct Fleet {
  fs::path dir;
  KeyPair root = KeyPair::generate();
  KeyPair coordinator = KeyPair::generate();
  KeyPair device = KeyPair::generate();
  Bytes delegation;

  Fleet() {
    char tmpl[] = "/tmp/edgefl-bench-XXXXXX";
    dir = ::mkdtemp(tmpl);
    (void)savePublicKey(dir / "root.pub", root.publicKey());
    (void)device.save(dir / "device");
    DelegationSpec spec;
    spec.fleet = "bench";
    spec.subjectKey = coordinator.publicKey();
    spec.issuedAt = unixNow();
    spec.notBefore = spec.issuedAt - 60;
    spec.notAfter = spec.issuedAt + 86400;
    delegation = issueDelegation(root, spec);
  }
  ~Fleet() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  Bytes deployment(const Model& model, std::uint64_t sequence = 1) const {
    const Bytes bytes = modelToBytes(model);
    capnp::MallocMessageBuilder b(static_cast<unsigned>(bytes.size() / 8 + 256));
    auto d = b.initRoot<wire::Deployment>();
    d.setFleet("bench");
    d.setSequence(sequence);
    d.setPercent(100);
    d.setModelVersion(model.meta().version);
    const Digest digest = parameterDigest(model);
    d.setModelDigest(kj::arrayPtr(digest.data(), digest.size()));
    d.setModel(kj::arrayPtr(bytes.data(), bytes.size()));
    d.setParameterCount(model.parameterCount());
    d.setModelBytes(bytes.size());
    return seal(Kind::DEPLOYMENT, toBytes(b), coordinator, delegation);
  }

  DeviceConfig config(const std::string& id, SampleStoreKind store) const {
    DeviceConfig c;
    c.deviceId = id;
    c.fleet = "bench";
    c.storageDir = dir / id;
    c.deviceKeyFile = dir / "device.key";
    c.rootPublicKeyFile = dir / "root.pub";
    c.transport.enabled = false;
    c.sampleStore = store;
    c.limits.telemetryInterval = std::chrono::seconds(0);
    c.log = [](LogLevel, std::string_view) {};
    return c;
  }
};

// mlp:784-128-10 over 28x28 images (pixels 0..255), with reference
// statistics, so scoring does everything a device does in the field.
Model imageModel() {
  ModelOptions options;
  options.inputShape = {1, 28, 28};
  Model m = createModel("mlp:784-128-10", options).value();
  Dataset d;
  d.featureCount = 784;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> pixel(0, 255);
  for (int i = 0; i < 256; ++i) {
    for (int f = 0; f < 784; ++f) d.features.push_back(pixel(rng));
    d.labels.push_back(i % 10);
  }
  m.referenceStats() = computeReferenceStats(m, d, 10).value();
  m.meta().version = 1;
  return m;
}

std::unique_ptr<Device> openWithModel(const DeviceConfig& config, const Bytes& deployment) {
  auto device = Device::open(config);
  if (!device.ok()) return nullptr;
  if (!device.value()->handleMessage(deployTopic("bench", "stable"), deployment).ok()) {
    return nullptr;
  }
  return std::move(device.value());
}

std::vector<float> pixels(std::uint64_t seed) {
  std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
  std::uniform_real_distribution<float> pixel(0, 255);
  std::vector<float> x(784);
  for (float& v : x) v = pixel(rng);
  return x;
}

void BM_DeviceScore(benchmark::State& state) {
  Fleet fleet;
  const Model model = imageModel();
  auto device =
      openWithModel(fleet.config("dev", SampleStoreKind::Memory), fleet.deployment(model));
  if (!device) {
    state.SkipWithError("cannot open the device");
    return;
  }
  const std::vector<float> x = pixels(1);
  std::vector<float> y(10);
  (void)device->score(x, y);
  const std::uint64_t before = newCalls.load();
  std::uint64_t failures = 0;
  for (auto _ : state) {
    failures += device->score(x, y).ok() ? 0 : 1;
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["allocs_per_call"] = benchmark::Counter(
      static_cast<double>(newCalls.load() - before), benchmark::Counter::kAvgIterations);
  if (failures != 0) state.SkipWithError("score failed");
}
BENCHMARK(BM_DeviceScore);

// The bound: the prepared model's forward pass alone.
void BM_ScorerScore(benchmark::State& state) {
  const Model model = imageModel();
  auto scorer = Scorer::prepare(model).value();
  const std::vector<float> x = pixels(1);
  std::vector<float> y(10);
  const std::uint64_t before = newCalls.load();
  for (auto _ : state) {
    scorer.score(x, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["allocs_per_call"] = benchmark::Counter(
      static_cast<double>(newCalls.load() - before), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_ScorerScore);

// Heap held by an idle device with an active model: the first one of a
// process (it decodes the model), then each further device sharing it
// through the model cache. Measured with mallinfo2, so what SQLite and
// libsodium allocate with malloc counts too. Timing is not the point: one
// iteration.
std::int64_t heapInUse() {
  const struct mallinfo2 info = ::mallinfo2();
  return static_cast<std::int64_t>(info.uordblks + info.hblkhd);
}

void BM_IdleDeviceHeap(benchmark::State& state) {
  const auto store = state.range(0) == 0 ? SampleStoreKind::Memory : SampleStoreKind::Sqlite;
  Fleet fleet;
  const Model model = imageModel();
  const Bytes deployment = fleet.deployment(model);
  auto cache = std::make_shared<ModelCache>();
  std::vector<std::unique_ptr<Device>> devices;
  std::int64_t first = 0, further = 0;
  for (auto _ : state) {
    const std::int64_t start = heapInUse();
    DeviceConfig config = fleet.config("dev-0", store);
    config.modelCache = cache;
    devices.push_back(openWithModel(config, deployment));
    first = heapInUse() - start;
    constexpr int kMore = 16;
    const std::int64_t mid = heapInUse();
    for (int i = 1; i <= kMore; ++i) {
      DeviceConfig c = fleet.config("dev-" + std::to_string(i), store);
      c.modelCache = cache;
      devices.push_back(openWithModel(c, deployment));
    }
    further = (heapInUse() - mid) / kMore;
  }
  state.counters["first_device_bytes"] = static_cast<double>(first);
  state.counters["per_further_device_bytes"] = static_cast<double>(further);
  state.counters["model_parameter_bytes"] = static_cast<double>(model.parameterCount() * 4);
}
BENCHMARK(BM_IdleDeviceHeap)->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_Observe(benchmark::State& state) {
  const auto store = state.range(0) == 0 ? SampleStoreKind::Memory : SampleStoreKind::Sqlite;
  Fleet fleet;
  const Model model = imageModel();
  auto device = openWithModel(fleet.config("dev", store), fleet.deployment(model));
  if (!device) {
    state.SkipWithError("cannot open the device");
    return;
  }
  std::vector<std::vector<float>> samples;
  for (int i = 0; i < 64; ++i) samples.push_back(pixels(static_cast<std::uint64_t>(i)));
  std::size_t i = 0;
  std::uint64_t failures = 0;
  for (auto _ : state) {
    failures += device->observe(samples[i % samples.size()], static_cast<int>(i % 10)).ok() ? 0 : 1;
    ++i;
  }
  state.SetLabel(store == SampleStoreKind::Memory ? "memory store" : "sqlite store (WAL)");
  if (failures != 0) state.SkipWithError("observe failed");
}
BENCHMARK(BM_Observe)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// A signed round task for `round` on `model` selecting every device.
Bytes roundTask(const Fleet& fleet, const Model& model, const Digest& digest, std::uint64_t round) {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::RoundTask>();
  t.setFleet("bench");
  t.setRound(round);
  t.setState(wire::RoundState::OPEN);
  t.setBaseVersion(model.meta().version);
  t.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  t.setOpenedAt(unixNow());
  t.setDeadline(unixNow() + 3600);
  t.setFraction(1.0f);
  t.setMinSamples(1);
  auto training = t.initTraining();
  training.setEpochs(1);
  training.setBatchSize(32);
  training.setLearningRate(0.05f);
  training.setSeed(round);
  writeDeltaPolicy(DeltaOptions{}, t.initDelta());
  return seal(Kind::ROUND_TASK, toBytes(b), fleet.coordinator, fleet.delegation);
}

// Both storage modes, durable:1 fsyncing every state change (a real
// device) and durable:0 not (edgefl-sim's scratch storage), in CPU time of
// the whole process.
void durableAndNot(benchmark::internal::Benchmark* b) {
  b->ArgName("durable")
      ->Arg(1)
      ->Arg(0)
      ->Unit(benchmark::kMillisecond)
      ->MeasureProcessCPUTime()
      ->UseRealTime();
}

void BM_ClientRound(benchmark::State& state) {
  Fleet fleet;
  const Model model = imageModel();
  // The device's timer thread may pick the training job up first and run
  // it there, so the update is handed over under a lock, and CPU time is
  // the whole process's.
  std::mutex sentMu;
  std::condition_variable sentCv;
  Bytes sent;
  DeviceConfig c = fleet.config("dev", SampleStoreKind::Memory);
  c.executor = [](std::function<void()> job) { job(); };  // train on the calling thread
  // 1: fsync every state change (a real device); 0: as edgefl-sim runs its
  // virtual devices on scratch storage.
  c.durableWrites = state.range(0) != 0;
  c.transport.publish = [&](std::string_view topic, std::span<const std::uint8_t> payload, bool) {
    if (topic.ends_with("/update")) {
      std::lock_guard lock(sentMu);
      sent.assign(payload.begin(), payload.end());
      sentCv.notify_all();
    }
    return true;
  };
  auto device = openWithModel(c, fleet.deployment(model));
  if (!device) {
    state.SkipWithError("cannot open the device");
    return;
  }
  for (int i = 0; i < 60; ++i) {
    (void)device->observe(pixels(static_cast<std::uint64_t>(i)), i % 10);
  }
  server::VerifierOptions vo;
  vo.fleet = "bench";
  vo.enforceSelection = false;
  vo.maxUpdateNorm = 1e9;
  server::UpdateVerifier verifier(vo);
  auto keys = std::make_shared<server::DeviceKeys>();
  keys->enrolled.add(fleet.device.publicKey(), Role::DEVICE, "dev");
  verifier.setKeys(keys);
  server::RoundContext ctx;
  ctx.baseVersion = model.meta().version;
  ctx.baseDigest = parameterDigest(model);
  ctx.tensorSizes.assign(model.tensorSizes().begin(), model.tensorSizes().end());
  const std::string topic = deviceTopic("bench", "dev", "update");
  std::uint64_t round = 0, rejected = 0;
  std::string why;
  for (auto _ : state) {
    ++round;
    {
      std::lock_guard lock(sentMu);
      sent.clear();
    }
    (void)device->handleMessage(roundTopic("bench"),
                                roundTask(fleet, model, ctx.baseDigest, round));
    {
      std::unique_lock lock(sentMu);
      sentCv.wait_for(lock, std::chrono::seconds(10), [&] { return !sent.empty(); });
    }
    ctx.round = round;
    const server::Verdict v = verifier.verify(topic, sent, ctx);
    if (!v.accepted() && rejected++ == 0) {
      const DeviceStatus st = device->status();
      why = std::string(codeName(v.code)) + " in round " + std::to_string(round) + ": " + v.detail +
            " (device: " + st.roundState + "; " + st.lastError + ")";
    }
    benchmark::DoNotOptimize(v.norm);
  }
  if (rejected != 0) state.SkipWithError(("the coordinator rejected an update: " + why).c_str());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["per_core_vs_goal_150"] = benchmark::Counter(
      static_cast<double>(state.iterations()) / 150.0, benchmark::Counter::kIsRate);
  state.SetLabel("round task -> train 60 samples -> sign -> coordinator verify");
}
BENCHMARK(BM_ClientRound)->Apply(durableAndNot);

// A device taking a new stable model: the signed 400 KB deployment
// verified, its model checked and written, the swap committed, the model
// loaded and health-checked. Two models alternate, so every iteration
// really swaps; the deployments are sealed before the timing.
void BM_Deployment(benchmark::State& state) {
  Fleet fleet;
  Model a = imageModel(), b = imageModel();
  b.meta().version = 2;
  for (float& x : b.parameters()) x *= 0.5f;
  std::vector<Bytes> deployments;
  for (std::uint64_t s = 1; s <= 64; ++s) deployments.push_back(fleet.deployment(s % 2 ? a : b, s));
  DeviceConfig c = fleet.config("dev", SampleStoreKind::Memory);
  c.durableWrites = state.range(0) != 0;
  auto device = Device::open(c);
  if (!device.ok()) {
    state.SkipWithError(device.error().toString().c_str());
    return;
  }
  for (int i = 0; i < 20; ++i)
    (void)device.value()->observe(pixels(static_cast<std::uint64_t>(i)), i % 10);
  std::size_t next = 0;
  const std::string topic = deployTopic("bench", "stable");
  for (auto _ : state) {
    if (next > 0 && next % deployments.size() == 0) {
      state.PauseTiming();
      deployments.clear();
      for (std::uint64_t s = next + 1; s <= next + 64; ++s) {
        deployments.push_back(fleet.deployment(s % 2 ? a : b, s));
      }
      state.ResumeTiming();
    }
    const DeviceError st = device.value()->handleMessage(topic, deployments[next % 64]);
    ++next;
    if (!st.ok()) {
      state.SkipWithError(st.toString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Deployment)->Apply(durableAndNot);

// The local training of the same client-round alone (copy of the base,
// 60 samples, 1 epoch, batch 32, evaluation before and after).
void BM_ClientRoundTrainingOnly(benchmark::State& state) {
  Fleet fleet;
  const Model model = imageModel();
  Dataset data;
  data.featureCount = 784;
  data.classCount = 10;
  for (int i = 0; i < 60; ++i) {
    const auto x = pixels(static_cast<std::uint64_t>(i));
    data.features.insert(data.features.end(), x.begin(), x.end());
    data.labels.push_back(i % 10);
  }
  device::UpdateBuilder builder(fleet.device, "bench", "dev");
  device::RoundPlan plan;
  plan.round = 1;
  plan.training.epochs = 1;
  plan.training.batchSize = 32;
  plan.training.learningRate = 0.05f;
  for (auto _ : state) {
    auto trained = builder.train(model, data, plan);
    if (!trained.ok()) {
      state.SkipWithError(trained.error().toString().c_str());
      break;
    }
    benchmark::DoNotOptimize(trained->after.loss);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ClientRoundTrainingOnly)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace edgefl

BENCHMARK_MAIN();
