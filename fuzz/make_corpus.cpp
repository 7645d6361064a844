// Writes the seed corpora of the fuzz targets: small valid inputs that
// reach deep into each decoder (messages signed and addressed for the
// fleet in fuzz_support.hpp, models of every layer kind, every delta
// encoding, IDX and CSV files in their variants).
//
//   edgefl_fuzz_corpus <fuzz/corpus>
//
// Output is deterministic (fixed keys, seeds and timestamps), so running
// it again changes no file unless a format changed.

#include <capnp/message.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;
namespace fs = std::filesystem;

class CorpusWriter {
 public:
  explicit CorpusWriter(fs::path root) : root_(std::move(root)) {}

  void add(const std::string& target, const std::string& name, ByteView bytes) {
    fs::create_directories(root_ / target);
    std::ofstream out(root_ / target / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s/%s\n", target.c_str(), name.c_str());
      std::exit(1);
    }
  }
  void add(const std::string& target, const std::string& name, const std::string& text) {
    add(target, name, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  }

 private:
  fs::path root_;
};

template <typename T>
T require(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, r.error().toString().c_str());
    std::exit(1);
  }
  return std::move(r.value());
}

Bytes withFlags(std::uint8_t flags, ByteView rest) {
  Bytes out{flags};
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

// --- models -----------------------------------------------------------

// A classification MLP with names, ranges, standardization and reference
// statistics filled in, so every optional list of the format is present.
Model tabularModel() {
  ModelOptions options;
  options.seed = 7;
  options.classNames = {"low", "high"};
  Model m = require(createModel("mlp:4-3-2", options), "mlp");
  auto& schema = m.inputSchema();
  schema.names = {"a", "b", "c", "d"};
  schema.minValue.assign(4, -10.0f);
  schema.maxValue.assign(4, 10.0f);
  Dataset data;
  data.featureCount = 4;
  data.features = {1, 2, 3, 4, -1, 0, 1, 2, 5, -5, 0.5f, 0};
  data.labels = {0, 1, 1};
  data.classCount = 2;
  if (!fitStandardization(m, data).ok()) std::exit(1);
  m.referenceStats() = require(computeReferenceStats(m, data, 4), "stats");
  m.meta().version = 4;
  m.meta().fleet = fuzz::kFleet;
  m.meta().description = "fuzz seed";
  return m;
}

// conv -> relu -> maxpool -> flatten -> dense: every layer kind.
Model convModel() {
  InputSchema schema;
  schema.featureCount = 36;
  schema.shape = {1, 6, 6};
  std::vector<Layer> layers = {Layer::conv2d(1, 2, 3, 1, 1, 6, 6), Layer::relu(72),
                               Layer::maxPool2d(2, 2, 2, 6, 6), Layer::flatten(18),
                               Layer::dense(18, 3)};
  Model m = require(
      Model::fromLayers("conv:fuzz", Task::Classification, std::move(layers), std::move(schema)),
      "conv");
  initializeParameters(m, 3);
  return m;
}

Model regressionModel() {
  ModelOptions options;
  options.task = Task::Regression;
  return require(createModel("logreg:3-1", options), "logreg");
}

// --- deltas and updates ----------------------------------------------

Bytes deltaMessage(DeltaEncoding encoding, Rounding rounding) {
  std::vector<float> delta = {0.5f, -0.25f, 0.125f, 1.0f, 0.01f, -0.02f};
  const std::uint32_t sizes[] = {4, 2};
  DeltaOptions options;
  options.encoding = encoding;
  options.rounding = rounding;
  options.topKFraction = 0.5f;
  std::mt19937_64 rng(5);
  return require(encodeDeltaMessage(delta, sizes, options, {}, rng), "delta");
}

Bytes updatePayload(DeltaEncoding encoding, std::uint64_t round, std::uint8_t digestByte) {
  const Bytes delta = deltaMessage(encoding, Rounding::NEAREST);
  auto parsed = require(parseMessage<wire::Delta>(delta), "delta parse");
  capnp::MallocMessageBuilder b;
  auto u = b.initRoot<wire::Update>();
  u.setFleet(fuzz::kFleet);
  u.setDeviceId(fuzz::kDevice);
  u.setRound(round);
  u.setBaseVersion(fuzz::kBaseVersion);
  const Bytes digest(kDigestBytes, digestByte);
  u.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  u.setSampleCount(64);
  u.setDelta(parsed.root());
  u.setLossBefore(0.9f);
  u.setLossAfter(0.6f);
  u.setRuntimeVersion("fuzz");
  return toBytes(b);
}

// --- control messages --------------------------------------------------

Bytes deploymentPayload(const Model& model, wire::Channel channel, std::uint64_t sequence) {
  const Bytes modelBytes = modelToBytes(model);
  const Digest digest = parameterDigest(model);
  capnp::MallocMessageBuilder b;
  auto d = b.initRoot<wire::Deployment>();
  d.setFleet(fuzz::kFleet);
  d.setSequence(sequence);
  d.setChannel(channel);
  d.setPercent(channel == wire::Channel::CANARY ? 25.0f : 100.0f);
  d.setModelVersion(model.meta().version);
  d.setModelDigest(kj::arrayPtr(digest.data(), digest.size()));
  d.setModel(kj::arrayPtr(modelBytes.data(), modelBytes.size()));
  d.setParameterCount(model.parameterCount());
  d.setModelBytes(modelBytes.size());
  d.setCreatedAt(fuzz::kNow - 10);
  d.setExpiresAt(channel == wire::Channel::CANARY ? fuzz::kNow + 3600 : 0);
  d.setReason("seed");
  return toBytes(b);
}

Bytes roundTaskPayload(wire::DeltaEncoding encoding, bool listed) {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::RoundTask>();
  t.setFleet(fuzz::kFleet);
  t.setRound(fuzz::kRound);
  t.setBaseVersion(fuzz::kBaseVersion);
  const Bytes digest(kDigestBytes, fuzz::kBaseDigestByte);
  t.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  t.setOpenedAt(fuzz::kNow);
  t.setDeadline(fuzz::kNow + 120);
  t.setFraction(0.5f);
  t.setSelectionSalt(9);
  if (listed) {
    auto devices = t.initDevices(2);
    devices.set(0, fuzz::kDevice);
    devices.set(1, "dev-2");
  }
  t.setMinSamples(8);
  auto training = t.initTraining();
  training.setEpochs(1);
  training.setBatchSize(16);
  training.setLearningRate(0.05f);
  training.setOptimizer(listed ? wire::Optimizer::ADAM : wire::Optimizer::SGD);
  training.setMomentum(0.5f);
  auto policy = t.initDelta();
  policy.setEncoding(encoding);
  policy.setClipNorm(5.0f);
  policy.setTopKFraction(0.1f);
  t.setTrigger("manual");
  return toBytes(b);
}

Bytes telemetryPayload() {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::Telemetry>();
  t.setFleet(fuzz::kFleet);
  t.setDeviceId(fuzz::kDevice);
  t.setSequence(3);
  t.setTimestamp(fuzz::kNow);
  t.setActiveVersion(fuzz::kBaseVersion);
  t.setChannel(wire::Channel::CANARY);
  auto reasons = t.initRejected(2);
  reasons[0].setReason("OutOfRange");
  reasons[0].setCount(4);
  reasons[1].setReason("NonFinite");
  reasons[1].setCount(1);
  auto bounds = t.initLatencyBoundsMicros(2);
  bounds.set(0, 100.0f);
  bounds.set(1, 1000.0f);
  auto counts = t.initLatencyCounts(3);
  for (unsigned i = 0; i < 3; ++i) counts.set(i, 10 * (i + 1));
  t.getHealth().setModelLoaded(true);
  t.getDrift().setPsiMean(0.05f);
  t.getLocal().setLabelled(40);
  t.getLocal().setAccuracy(0.8f);
  t.getStorage().setNewSamples(12);
  return toBytes(b);
}

Bytes ackPayload(wire::Verdict verdict, const char* reason) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<wire::Ack>();
  a.setFleet(fuzz::kFleet);
  a.setDeviceId(fuzz::kDevice);
  a.setRound(fuzz::kRound);
  a.setVerdict(verdict);
  a.setReason(reason);
  const Bytes digest(kDigestBytes, 0x11);
  a.setUpdateDigest(kj::arrayPtr(digest.data(), digest.size()));
  a.setReceivedAt(fuzz::kNow);
  return toBytes(b);
}

// The KeyDelegation inside a Signed(keyDelegation).
Bytes delegationPayload(const Bytes& signedDelegation) {
  auto env = require(parseEnvelope(signedDelegation), "delegation envelope");
  const ByteView payload = fuzz::view(env.root().getPayload());
  return Bytes(payload.begin(), payload.end());
}

// --- datasets ------------------------------------------------------------

Bytes gzip(ByteView raw) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::exit(1);
  Bytes out(deflateBound(&z, static_cast<uLong>(raw.size())) + 32);
  z.next_in = const_cast<Bytef*>(raw.data());
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::exit(1);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

Bytes idxFile(std::uint32_t magic, const std::vector<std::uint32_t>& dims) {
  Bytes out;
  auto be32 = [&](std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(v >> s));
  };
  be32(magic);
  std::size_t count = 1;
  for (auto d : dims) {
    be32(d);
    count *= d;
  }
  for (std::size_t i = 0; i < count; ++i) out.push_back(static_cast<std::uint8_t>(i * 37 % 10));
  return out;
}

// The idx target's input: flags, 16-bit image length, images, labels.
Bytes idxInput(std::uint8_t flags, const Bytes& images, const Bytes& labels) {
  Bytes out{flags, static_cast<std::uint8_t>(images.size()),
            static_cast<std::uint8_t>(images.size() >> 8)};
  out.insert(out.end(), images.begin(), images.end());
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

void writeAll(CorpusWriter& w) {
  const fuzz::Fleet& f = fuzz::fleet();
  const Model tabular = tabularModel();
  const Model conv = convModel();
  const Model regression = regressionModel();

  w.add("model", "mlp_tabular", modelToBytes(tabular));
  w.add("model", "conv_all_layers", modelToBytes(conv));
  w.add("model", "logreg_regression", modelToBytes(regression));

  w.add("delta", "float32", deltaMessage(DeltaEncoding::FLOAT32, Rounding::NEAREST));
  w.add("delta", "int8_nearest", deltaMessage(DeltaEncoding::INT8, Rounding::NEAREST));
  w.add("delta", "int8_stochastic", deltaMessage(DeltaEncoding::INT8, Rounding::STOCHASTIC));
  w.add("delta", "topk", deltaMessage(DeltaEncoding::TOP_K, Rounding::NEAREST));

  const Bytes update = updatePayload(DeltaEncoding::FLOAT32, fuzz::kRound, fuzz::kBaseDigestByte);
  w.add("update", "float32", update);
  w.add("update", "int8", updatePayload(DeltaEncoding::INT8, fuzz::kRound, fuzz::kBaseDigestByte));
  w.add("update", "topk", updatePayload(DeltaEncoding::TOP_K, fuzz::kRound, fuzz::kBaseDigestByte));
  w.add("update", "stale_base", updatePayload(DeltaEncoding::FLOAT32, fuzz::kRound - 1, 0));

  const Bytes deployment = deploymentPayload(tabular, wire::Channel::STABLE, 1);
  w.add("deployment", "stable_mlp", deployment);
  w.add("deployment", "canary_conv", deploymentPayload(conv, wire::Channel::CANARY, 2));

  const Bytes roundTask = roundTaskPayload(wire::DeltaEncoding::FLOAT32, false);
  w.add("round_task", "fraction_float32", roundTask);
  w.add("round_task", "listed_int8", roundTaskPayload(wire::DeltaEncoding::INT8, true));
  w.add("round_task", "fraction_topk", roundTaskPayload(wire::DeltaEncoding::TOP_K, false));

  const Bytes telemetry = telemetryPayload();
  w.add("telemetry", "canary", telemetry);

  const Bytes ack = ackPayload(wire::Verdict::ACCEPTED, "");
  w.add("ack", "accepted", ack);
  w.add("ack", "rejected", ackPayload(wire::Verdict::REJECTED, "NormTooLarge"));

  w.add("key_delegation", "coordinator", delegationPayload(f.coordinatorDelegation));
  DelegationSpec deployer;
  deployer.fleet = fuzz::kFleet;
  deployer.subjectKey = f.coordinator.publicKey();
  deployer.role = Role::DEPLOYER;
  deployer.notBefore = fuzz::kNow - 60;
  deployer.notAfter = fuzz::kNow + 60;
  deployer.serial = 2;
  deployer.comment = "ci deployer";
  w.add("key_delegation", "deployer", delegationPayload(issueDelegation(f.root, deployer)));

  w.add("envelope", "update", fuzz::sealByDevice(Kind::UPDATE, update));
  w.add("envelope", "telemetry", fuzz::sealByDevice(Kind::TELEMETRY, telemetry));
  w.add("envelope", "deployment", fuzz::sealByCoordinator(Kind::DEPLOYMENT, deployment));
  w.add("envelope", "round_task", fuzz::sealByCoordinator(Kind::ROUND_TASK, roundTask));
  w.add("envelope", "ack", fuzz::sealByCoordinator(Kind::ACK, ack));
  w.add("envelope", "model", fuzz::sealByCoordinator(Kind::MODEL, modelToBytes(regression)));
  w.add("envelope", "key_delegation", f.coordinatorDelegation);

  server::CoordinatorConfig config;
  w.add("coordinator_config", "defaults", server::renderCoordinatorConfig(config));
  w.add("coordinator_config", "small",
        std::string("[fleet]\nname = \"demo\"\ndirectory = \"/tmp/demo\"\n\n[rounds]\n"
                    "mode = \"asynchronous\"\nasync_buffer = 4\nfraction = 0.5\n\n"
                    "[broker]\nport = 18830\n"));

  const Bytes images = idxFile(0x00000803, {3, 2, 2});
  const Bytes labels = idxFile(0x00000801, {3});
  w.add("idx", "raw", idxInput(0, images, labels));
  w.add("idx", "gzip_first2", idxInput(2, gzip(images), gzip(labels)));
  w.add("idx", "tight_limits", idxInput(4 | 8, images, gzip(labels)));

  const std::string table = "a,b,label\n1,2,cat\n\"3\",+4.5,dog\n-1e3, 0 ,\"c,\"\"at\"\"\"\n";
  const ByteView tableBytes(reinterpret_cast<const std::uint8_t*>(table.data()), table.size());
  w.add("csv", "classification", withFlags(0, tableBytes));
  w.add("csv", "first_seen_first3", withFlags(2 | 8, tableBytes));
  const std::string regressionTable = "\xEF\xBB\xBFx,label,y\r\n0.5,1.25,2\r\n\r\n1,2,3\r\n";
  w.add("csv", "regression_bom_crlf",
        withFlags(1 | 16, ByteView(reinterpret_cast<const std::uint8_t*>(regressionTable.data()),
                                   regressionTable.size())));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <fuzz/corpus directory>\n", argv[0]);
    return 2;
  }
  CorpusWriter writer(argv[1]);
  writeAll(writer);
  return 0;
}
