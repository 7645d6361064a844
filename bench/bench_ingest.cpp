// Coordinator ingest through a real mosquitto, beside a raw libmosquitto
// publish/subscribe loop moving the same payloads through the same broker
// in the same iterations. Counter raw_ratio = ingest rate / raw rate; the
// goal is >= 0.5.
//
//   bench_ingest
//
// Subject: a fleet made as tests/support's TestFleet makes one (generated
// mosquitto config on a free loopback port), an in-process Coordinator with
// its control loop running and a round open, and enrolled devices whose
// signed Updates (own Ed25519 keys, distinct ids, float32 deltas) are built
// before the clock starts. One publisher connection sends them at QoS 1, as
// devices do, each to its device's update topic (a bench user whose ACL
// allows writing every device's update topic); the time runs from the first
// publish until the coordinator has recorded a verdict for every one (its
// accepted + rejected counters, which move after the registry commit).
// Bound: the same publisher sends the same bytes to a parallel topic tree
// that a raw libmosquitto subscriber, configured as the coordinator's
// connection (MQTT 3.1.1, persistent session, QoS 1, 1000 in flight),
// counts; the time runs until it has received every one.
//
// Second bound, in the same iterations: the same bytes written to a file
// beside the registry, an fdatasync per 64 (disk_updates_per_s; counter
// disk_ratio = ingest rate / that rate). The coordinator stores every
// accepted delta durably before it answers, and SQLite writes it twice (WAL,
// then checkpoint), so where the disk is slower than the broker this is
// what caps ingest, at about half of it.
//
// Cases: logreg:784-10 (7,850 parameters, ~31 KB signed Update) and
// mlp:784-128-10 (101,770 parameters, ~407 KB). Each iteration uses devices
// that have not sent yet, so every update is accepted (accepted_share = 1);
// subject and bound alternate which runs first.
//
// Everything the benchmark starts (mosquitto, the fleet's temporary
// directory) is removed when a case ends, when it fails, and on SIGINT,
// SIGTERM or SIGHUP.

#include <benchmark/benchmark.h>
#include <capnp/message.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "edgefl/server/coordinator.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/fleet.hpp"
#include "random_data.hpp"
#include "support/fleet.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Longest a batch may take to be delivered or ingested before the case fails.
constexpr auto kBatchTimeout = 120s;

// ---------------------------------------------------------------------------
// Interrupted runs: a signal handler may only write to a pipe, so a thread
// waits on that pipe, stops the registered brokers, removes the registered
// directories and exits. The handler needs process-wide state; it is kept
// to this one pipe and list.

struct InterruptCleanup {
  std::mutex mu;
  std::vector<std::pair<pid_t, fs::path>> fleets;  // broker pid, directory to remove
  int pipe[2] = {-1, -1};
};

InterruptCleanup& interruptCleanup() {
  static InterruptCleanup cleanup;
  return cleanup;
}

void onInterrupt(int sig) {
  const auto byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] auto n = ::write(interruptCleanup().pipe[1], &byte, 1);
}

void installInterruptCleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    InterruptCleanup& c = interruptCleanup();
    if (::pipe2(c.pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::thread([&c] {
      unsigned char sig = 0;
      while (::read(c.pipe[0], &sig, 1) != 1) {
      }
      std::lock_guard lock(c.mu);
      for (const auto& [pid, dir] : c.fleets) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        std::error_code ec;
        fs::remove_all(dir, ec);
      }
      ::_exit(128 + sig);
    }).detach();
    struct sigaction sa {};
    sa.sa_handler = onInterrupt;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  });
}

// Registers a fleet (broker process and directory) for cleanup on a signal
// for as long as it lives.
class InterruptGuard {
 public:
  InterruptGuard(pid_t broker, fs::path dir) : entry_(broker, std::move(dir)) {
    installInterruptCleanup();
    std::lock_guard lock(interruptCleanup().mu);
    interruptCleanup().fleets.push_back(entry_);
  }
  ~InterruptGuard() {
    InterruptCleanup& c = interruptCleanup();
    std::lock_guard lock(c.mu);
    c.fleets.erase(std::find(c.fleets.begin(), c.fleets.end(), entry_));
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  std::pair<pid_t, fs::path> entry_;
};

// ---------------------------------------------------------------------------
// A libmosquitto connection set up as the coordinator's BrokerClient sets up
// its own (MQTT 3.1.1, persistent session, QoS 1, 1000 messages in flight
// both ways), counting the messages it receives and the PUBACKs it gets.

class RawClient {
 public:
  // Connects as `user`; throws when the broker does not accept within 5 s.
  RawClient(const std::string& user, const std::string& password, int port) {
    static std::once_flag libInit;
    std::call_once(libInit, [] { mosquitto_lib_init(); });
    mosq_ = mosquitto_new(user.c_str(), /*clean_session=*/false, this);
    if (mosq_ == nullptr) throw std::runtime_error("mosquitto_new failed");
    mosquitto_username_pw_set(mosq_, user.c_str(), password.c_str());
    mosquitto_int_option(mosq_, MOSQ_OPT_RECEIVE_MAXIMUM, 1000);
    mosquitto_max_inflight_messages_set(mosq_, 1000);
    mosquitto_connect_callback_set(mosq_, &RawClient::onConnect);
    mosquitto_subscribe_callback_set(mosq_, &RawClient::onSubscribe);
    mosquitto_publish_callback_set(mosq_, &RawClient::onPublish);
    mosquitto_message_callback_set(mosq_, &RawClient::onMessage);
    int rc = mosquitto_connect(mosq_, "127.0.0.1", port, 30);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_loop_start(mosq_);
    if (rc != MOSQ_ERR_SUCCESS) {
      mosquitto_destroy(mosq_);
      throw std::runtime_error(user + ": cannot connect: " + mosquitto_strerror(rc));
    }
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 5s, [&] { return connack_ >= 0; }) || connack_ != 0) {
      const int connack = connack_;
      lock.unlock();
      close();
      throw std::runtime_error(user + ": CONNACK " + std::to_string(connack));
    }
  }
  ~RawClient() { close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // QoS 1 subscription; throws unless the broker grants it within 5 s.
  void subscribe(const std::string& filter) {
    if (mosquitto_subscribe(mosq_, nullptr, filter.c_str(), 1) != MOSQ_ERR_SUCCESS) {
      throw std::runtime_error("cannot subscribe to " + filter);
    }
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 5s, [&] { return granted_ >= 0; }) || granted_ != 1) {
      throw std::runtime_error("subscription to " + filter + " not granted at QoS 1");
    }
  }

  // QoS 1 publish (libmosquitto copies the payload and sends it from its
  // network thread).
  void publish(const std::string& topic, const Bytes& payload) {
    const int rc = mosquitto_publish(mosq_, nullptr, topic.c_str(),
                                     static_cast<int>(payload.size()), payload.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
      throw std::runtime_error("publish to " + topic + ": " + mosquitto_strerror(rc));
    }
    std::lock_guard lock(mu_);
    ++published_;
  }

  std::uint64_t received() const {
    std::lock_guard lock(mu_);
    return received_;
  }
  bool waitReceived(std::uint64_t n, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return received_ >= n; });
  }
  // Waits until every publish so far has its PUBACK; false at the deadline.
  bool waitAllAcknowledged(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return acknowledged_ >= published_; });
  }

 private:
  void close() {
    if (mosq_ == nullptr) return;
    // After DISCONNECT the network thread leaves its loop by itself: join it
    // rather than cancel it, which could leave a libmosquitto mutex locked.
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, false);
    mosquitto_destroy(mosq_);
    mosq_ = nullptr;
  }
  static RawClient& self(void* obj) { return *static_cast<RawClient*>(obj); }
  static void onConnect(mosquitto*, void* obj, int rc) {
    std::lock_guard lock(self(obj).mu_);
    self(obj).connack_ = rc;
    self(obj).cv_.notify_all();
  }
  static void onSubscribe(mosquitto*, void* obj, int, int count, const int* granted) {
    std::lock_guard lock(self(obj).mu_);
    self(obj).granted_ = count > 0 ? granted[0] : 0x80;
    self(obj).cv_.notify_all();
  }
  static void onPublish(mosquitto*, void* obj, int) {
    std::lock_guard lock(self(obj).mu_);
    ++self(obj).acknowledged_;
    self(obj).cv_.notify_all();
  }
  static void onMessage(mosquitto*, void* obj, const mosquitto_message*) {
    std::lock_guard lock(self(obj).mu_);
    ++self(obj).received_;
    self(obj).cv_.notify_all();
  }

  mosquitto* mosq_ = nullptr;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int connack_ = -1;
  int granted_ = -1;
  std::uint64_t received_ = 0;
  std::uint64_t published_ = 0;
  std::uint64_t acknowledged_ = 0;
};

// Connects, retrying while the broker re-reads its password file after a
// SIGHUP.
std::unique_ptr<RawClient> connectRetrying(const std::string& user, const std::string& password,
                                           int port) {
  for (int attempt = 0;; ++attempt) {
    try {
      return std::make_unique<RawClient>(user, password, port);
    } catch (const std::exception&) {
      if (attempt >= 100) throw;
      std::this_thread::sleep_for(50ms);
    }
  }
}

// ---------------------------------------------------------------------------
// The fleet, broker, coordinator and clients of one case.

// An in-process coordinator with its control loop on a thread, as
// edgefl-coordinator runs it; stopped on destruction.
class RunningCoordinator {
 public:
  explicit RunningCoordinator(const server::CoordinatorConfig& config) {
    auto c = server::Coordinator::open(config, stderrSink(LogLevel::Warn));
    if (!c.ok()) throw std::runtime_error("coordinator: " + c.error().toString());
    coordinator_ = std::move(c.value());
    Status started = coordinator_->start();
    if (!started.ok()) throw std::runtime_error("coordinator start: " + started.error().toString());
    control_ = std::thread([this] { coordinator_->run(stop_); });
  }
  ~RunningCoordinator() {
    stop_ = true;
    control_.join();
    coordinator_->stop();
  }
  RunningCoordinator(const RunningCoordinator&) = delete;
  RunningCoordinator& operator=(const RunningCoordinator&) = delete;

  server::Coordinator& get() const { return *coordinator_; }

 private:
  std::unique_ptr<server::Coordinator> coordinator_;
  std::atomic<bool> stop_{false};
  std::thread control_;
};

struct BenchDevice {
  std::string id;
  KeyPair key;
};

struct Batch {
  std::vector<std::string> ingestTopics;  // edgefl/<fleet>/device/<id>/update
  std::vector<std::string> rawTopics;     // bench/<fleet>/device/<id>/update
  std::vector<Bytes> updates;             // signed Update envelopes
  std::uint64_t bytes = 0;
};

class IngestRig {
 public:
  // `devices` enrolled devices, each sending one update over the whole case.
  IngestRig(const std::string& arch, std::size_t devices)
      : fleet_(test::TestFleetOptions{"bench", arch, "fashion-mnist:test:1000"}),
        guard_(fleet_.broker().pid(), fleet_.dir().parent_path()) {
    // One long round that nothing closes while the case runs.
    server::CoordinatorConfig config = fleet_.config();
    config.rounds.fraction = 1.0;
    config.rounds.targetUpdates = 0;
    config.rounds.maxUpdates = 10'000'000;
    config.rounds.deadlineSeconds = 86400;
    config.triggers = {};

    std::vector<tools::DeviceToEnroll> enroll;
    for (std::size_t i = 0; i < devices; ++i) {
      BenchDevice& d = devices_.emplace_back(
          BenchDevice{std::string("d").append(std::to_string(i)), KeyPair::generate()});
      enroll.push_back({d.id, d.key.publicKey()});
    }
    auto enrolled = tools::enrollDevices(fleet_.dir(), enroll);
    if (!enrolled.ok()) throw std::runtime_error("enroll: " + enrolled.error().toString());
    addBenchUsers();

    auto model = loadModel(fleet_.dir() / "models/initial.model");
    if (!model.ok()) throw std::runtime_error("initial model: " + model.error().toString());
    tensorSizes_.assign(model->tensorSizes().begin(), model->tensorSizes().end());
    baseDigest_ = parameterDigest(*model);
    delta_ = bench::normalFloats(model->parameterCount(), 1e-3f, 7);

    coordinator_ = std::make_unique<RunningCoordinator>(config);
    auto round = coordinator_->get().startRound("bench");
    if (!round.ok()) throw std::runtime_error("round: " + round.error().toString());
    round_ = *round;
    baseVersion_ = coordinator_->get().stableVersion();

    subscriber_ = connectRetrying("bench-sub", subscriberPassword_, fleet_.port());
    subscriber_->subscribe(rawTopic("+"));
    publisher_ = connectRetrying("bench-pub", publisherPassword_, fleet_.port());
  }

  // Signed updates of devices [first, first + count), built before timing.
  Batch batch(std::size_t first, std::size_t count) const {
    if (first + count > devices_.size()) {
      throw std::logic_error("batch [" + std::to_string(first) + ", " +
                             std::to_string(first + count) + ") exceeds the " +
                             std::to_string(devices_.size()) + " enrolled devices");
    }
    Batch b;
    for (std::size_t i = first; i < first + count; ++i) {
      const BenchDevice& d = devices_[i];
      b.ingestTopics.push_back(deviceTopic(fleet_.name(), d.id, "update"));
      b.rawTopics.push_back(rawTopic(d.id));
      b.updates.push_back(signedUpdate(d, i));
      b.bytes += b.updates.back().size();
    }
    return b;
  }

  // Seconds from the first publish until the coordinator has recorded a
  // verdict for every update of `b`; adds the accepted ones to `accepted`.
  double ingest(const Batch& b, std::uint64_t& accepted) {
    const server::CoordinatorStats before = coordinator_->get().stats();
    const std::uint64_t want = before.accepted + before.rejected + b.updates.size();
    const auto start = Clock::now();
    for (std::size_t i = 0; i < b.updates.size(); ++i) {
      publisher_->publish(b.ingestTopics[i], b.updates[i]);
    }
    server::CoordinatorStats now = coordinator_->get().stats();
    while (now.accepted + now.rejected < want) {
      if (Clock::now() - start > kBatchTimeout) {
        throw std::runtime_error(
            "coordinator recorded " +
            std::to_string(now.accepted + now.rejected - before.accepted - before.rejected) +
            " of " + std::to_string(b.updates.size()) + " updates");
      }
      std::this_thread::sleep_for(200us);
      now = coordinator_->get().stats();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    accepted += now.accepted - before.accepted;
    drainPublisher();
    return seconds;
  }

  // Seconds from the first publish until the raw subscriber has received
  // every payload of `b`.
  double raw(const Batch& b) {
    const std::uint64_t want = subscriber_->received() + b.updates.size();
    const auto start = Clock::now();
    for (std::size_t i = 0; i < b.updates.size(); ++i) {
      publisher_->publish(b.rawTopics[i], b.updates[i]);
    }
    if (!subscriber_->waitReceived(want, start + kBatchTimeout)) {
      throw std::runtime_error("raw subscriber received " +
                               std::to_string(subscriber_->received()) + " of " +
                               std::to_string(want));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    drainPublisher();
    return seconds;
  }

  // Seconds to write every payload of `b` durably to a file beside the
  // registry, in groups of 64 (the coordinator's largest commit) with an
  // fdatasync after each: the disk's bound for storing one copy of each
  // update as the coordinator must before it answers.
  double disk(const Batch& b) {
    const fs::path file = fleet_.dir() / "disk-bound.bin";
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + file.string());
    const auto start = Clock::now();
    bool ok = true;
    for (std::size_t i = 0; i < b.updates.size() && ok; ++i) {
      const Bytes& u = b.updates[i];
      for (std::size_t done = 0; done < u.size() && ok;) {
        const ssize_t n = ::write(fd, u.data() + done, u.size() - done);
        ok = n > 0;
        if (ok) done += static_cast<std::size_t>(n);
      }
      if (ok && ((i + 1) % 64 == 0 || i + 1 == b.updates.size())) ok = ::fdatasync(fd) == 0;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    ::close(fd);
    fs::remove(file);
    if (!ok) throw std::runtime_error("writing " + file.string() + " failed");
    return seconds;
  }

  server::CoordinatorStats stats() const { return coordinator_->get().stats(); }
  const server::CoordinatorConfig& config() const { return coordinator_->get().config(); }

 private:
  std::string rawTopic(const std::string& deviceId) const {
    return "bench/" + fleet_.name() + "/device/" + deviceId + "/update";
  }

  // bench-pub may write every device's update topic and the raw tree;
  // bench-sub reads the raw tree.
  void addBenchUsers() {
    const fs::path broker = fleet_.dir() / "broker";
    const std::vector<std::pair<std::string, std::string>> users = {
        {"bench-pub", publisherPassword_}, {"bench-sub", subscriberPassword_}};
    Status st = tools::setBrokerUsers(broker / "passwd", users);
    if (!st.ok()) throw std::runtime_error("bench users: " + st.error().toString());
    std::ofstream acl(broker / "acl", std::ios::app);
    acl << "\nuser bench-pub\ntopic write " << deviceTopic(fleet_.name(), "+", "update")
        << "\ntopic write " << rawTopic("+") << "\n\nuser bench-sub\ntopic read " << rawTopic("+")
        << "\n";
    acl.close();
    if (!acl) throw std::runtime_error("cannot append to " + (broker / "acl").string());
    tools::reloadBroker(fleet_.dir());
  }

  // What a device sends: an Update against the round's base, a float32
  // delta (distinct per device), signed with the device's own key.
  Bytes signedUpdate(const BenchDevice& d, std::size_t index) const {
    std::vector<float> delta = delta_;
    delta[index % delta.size()] += 1e-3f;
    const std::size_t words = delta.size() * sizeof(float) / sizeof(capnp::word) + 1024;
    capnp::MallocMessageBuilder message(static_cast<unsigned>(words));
    auto u = message.initRoot<wire::Update>();
    u.setFleet(fleet_.name());
    u.setDeviceId(d.id);
    u.setRound(round_);
    u.setBaseVersion(baseVersion_);
    u.setBaseDigest(kj::arrayPtr(baseDigest_.data(), baseDigest_.size()));
    u.setSampleCount(64);
    std::mt19937_64 rng(index);
    auto encoded = encodeDelta(delta, tensorSizes_, DeltaOptions{}, {}, rng, u.initDelta());
    if (!encoded.ok()) throw std::runtime_error("delta: " + encoded.error().toString());
    u.setLossBefore(0.9f);
    u.setLossAfter(0.6f);
    u.setCreatedAt(static_cast<std::int64_t>(std::time(nullptr)));
    u.setRuntimeVersion("bench");
    return seal(Kind::UPDATE, toBytes(message), d.key);
  }

  // Waits until the broker has acknowledged everything published so far, so
  // nothing of one phase is still in flight when the next starts.
  void drainPublisher() {
    if (!publisher_->waitAllAcknowledged(Clock::now() + kBatchTimeout)) {
      throw std::runtime_error("publisher: PUBACKs missing");
    }
  }

  test::TestFleet fleet_;
  InterruptGuard guard_;
  std::string publisherPassword_ = "bench-pub-password";
  std::string subscriberPassword_ = "bench-sub-password";
  std::vector<BenchDevice> devices_;
  std::vector<std::uint32_t> tensorSizes_;
  Digest baseDigest_{};
  std::vector<float> delta_;
  std::unique_ptr<RunningCoordinator> coordinator_;
  std::uint64_t round_ = 0;
  std::uint64_t baseVersion_ = 0;
  std::unique_ptr<RawClient> subscriber_;
  std::unique_ptr<RawClient> publisher_;
};

// range(0): updates per iteration. Every iteration times the coordinator and
// the raw loop on the same batch, alternating which goes first.
void BM_Ingest(benchmark::State& state, const std::string& arch) {
  const auto perBatch = static_cast<std::size_t>(state.range(0));
  const std::size_t warmup = std::min<std::size_t>(perBatch, 50);
  const auto iterations = static_cast<std::size_t>(state.max_iterations);
  try {
    IngestRig rig(arch, warmup + perBatch * iterations);
    std::uint64_t accepted = 0, updates = 0, bytes = 0;
    {
      // Untimed: connections, SQLite pages and broker buffers warm up.
      std::uint64_t ignored = 0;
      const Batch b = rig.batch(0, warmup);
      rig.ingest(b, ignored);
      rig.raw(b);
    }
    double ingestSeconds = 0.0, rawSeconds = 0.0, diskSeconds = 0.0;
    std::size_t next = warmup;
    for (auto _ : state) {
      const Batch b = rig.batch(next, perBatch);
      next += perBatch;
      double s = 0.0;
      if (state.iterations() % 2 == 0) {
        s = rig.ingest(b, accepted);
        rawSeconds += rig.raw(b);
      } else {
        rawSeconds += rig.raw(b);
        s = rig.ingest(b, accepted);
      }
      diskSeconds += rig.disk(b);
      state.SetIterationTime(s);
      ingestSeconds += s;
      updates += b.updates.size();
      bytes += b.bytes;
    }
    const double n = static_cast<double>(updates), mb = static_cast<double>(bytes) / 1e6;
    const server::CoordinatorStats stats = rig.stats();
    state.counters["update_KB"] = static_cast<double>(bytes) / n / 1e3;
    state.counters["ingest_updates_per_s"] = n / ingestSeconds;
    state.counters["ingest_MB_per_s"] = mb / ingestSeconds;
    state.counters["raw_updates_per_s"] = n / rawSeconds;
    state.counters["raw_MB_per_s"] = mb / rawSeconds;
    state.counters["raw_ratio"] = rawSeconds / ingestSeconds;
    state.counters["disk_updates_per_s"] = n / diskSeconds;
    state.counters["disk_ratio"] = diskSeconds / ingestSeconds;
    state.counters["accepted_share"] = static_cast<double>(accepted) / n;
    state.counters["queue_high_water"] = static_cast<double>(stats.queueHighWater);
    state.counters["verify_threads"] = static_cast<double>(rig.config().ingest.verifyThreads);
    if (accepted != updates) {
      state.SkipWithError(("only " + std::to_string(accepted) + " of " + std::to_string(updates) +
                           " updates were accepted: the case would measure rejections")
                              .c_str());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// About 1-2 s of ingest per iteration on a 2-core VM; every iteration
// enrolls its own devices, and enrollment (password hashing, one registry
// transaction per device at coordinator start) grows the set-up with them.
void ingestCase(benchmark::internal::Benchmark* b) {
  b->ArgName("updates")->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK_CAPTURE(BM_Ingest, logreg_784_10, std::string("logreg:784-10"))
    ->Apply(ingestCase)
    ->Arg(500);
BENCHMARK_CAPTURE(BM_Ingest, mlp_784_128_10, std::string("mlp:784-128-10"))
    ->Apply(ingestCase)
    ->Arg(150);

}  // namespace
}  // namespace edgefl

BENCHMARK_MAIN();
