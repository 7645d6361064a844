#include "edgefl/sim/simulator.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <numbers>
#include <queue>
#include <random>
#include <set>
#include <thread>

#include "edgefl/device/device.hpp"
#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/server/registry.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/partition.hpp"
#include "edgefl/sim/attacks.hpp"
#include "edgefl/tools/fleet.hpp"

namespace edgefl::sim {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using server::Registry;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::uint64_t residentBytes() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t peakResidentBytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Training jobs of every virtual device run here: a fixed number of
// threads, jobs ordered by the time they become due (a straggler's job is
// due after its delay). Jobs left at destruction run at once: a Device's
// job must run exactly once, and a closed Device's job returns immediately.
class WorkerPool {
 public:
  explicit WorkerPool(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void submit(std::function<void()> job, double delaySeconds) {
    const auto due = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(delaySeconds));
    {
      std::lock_guard lock(mu_);
      queue_.push(Item{due, seq_++, std::move(job)});
    }
    cv_.notify_one();
  }

 private:
  struct Item {
    Clock::time_point due;
    std::uint64_t seq;
    std::function<void()> job;
    bool operator>(const Item& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };

  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (queue_.empty()) {
        if (stopping_) return;
        cv_.wait(lock);
        continue;
      }
      if (!stopping_ && queue_.top().due > Clock::now()) {
        // A copy: wait_until reads its deadline again after waking, and a
        // submit while the lock is released may reallocate the queue.
        const Clock::time_point due = queue_.top().due;
        cv_.wait_until(lock, due);
        continue;
      }
      auto job = std::move(const_cast<Item&>(queue_.top()).job);
      queue_.pop();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> queue_;
  std::uint64_t seq_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// One virtual device: the real Device while it is online, and what the
// simulation keeps about it while it is not.
struct Virtual {
  std::string id;
  std::optional<Attack> attack;
  bool straggler = false;
  std::vector<std::uint32_t> samples;  // indices into the training set
  std::size_t stored = 0;              // first `stored` go in at open
  std::size_t streamPos = 0;
  double streamCredit = 0;
  std::unique_ptr<Device> device;
  Clock::time_point offlineUntil{};  // a dropout comes back at this time
  bool dropThisRound = false;
  bool droppedThisRound = false;
  std::uint64_t bytesUpClosed = 0;  // counters of earlier, closed instances
  std::uint64_t bytesDownClosed = 0;
  std::mt19937_64 rng;
};

class Simulation {
 public:
  Simulation(SimConfig config, RunHooks hooks)
      : config_(std::move(config)), hooks_(std::move(hooks)) {}
  // Devices close before the pool and the loops they use go away, also
  // when setup failed half-way.
  ~Simulation() { closeAll(); }
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  Result<SimSummary> run() {
    const auto t0 = Clock::now();
    EDGEFL_TRY(loadFleet());
    EDGEFL_TRY(loadData());
    EDGEFL_TRY(createDevices());
    EDGEFL_TRY(enroll());
    EDGEFL_TRY(openAll());
    summary_.setupSeconds = secondsSince(t0);
    info("setup done in " + fixed1(summary_.setupSeconds) +
         " s: " + std::to_string(devices_.size()) + " devices online, " +
         fixed1(summary_.idleBytesPerDevice / 1024.0) + " KB per idle device");

    const auto tRun = Clock::now();
    double roundSeconds = 0;
    std::uint64_t accepted = 0;
    for (std::uint32_t i = 0; i < config_.rounds; ++i) {
      if (hooks_.beforeRound) hooks_.beforeRound(i);
      if (stopRequested()) {
        summary_.stopReason = "interrupted";
        break;
      }
      auto row = runRound(i + 1 == config_.rounds);
      if (!row.ok()) {
        summary_.stopReason = row.error().toString();
        warn(summary_.stopReason);
        break;
      }
      // The coordinator's collect phase (open until the last accepted
      // update was recorded, in milliseconds); this side's view of the
      // round, which also holds the close and up to a 200 ms poll, where a
      // round has none.
      const auto collect = row->phaseMillis.find("collect");
      roundSeconds += collect != row->phaseMillis.end() && collect->second > 0
                          ? collect->second / 1000.0
                          : row->seconds;
      accepted += row->accepted;
      if (hooks_.row) hooks_.row(*row);
      summary_.rounds.push_back(std::move(row.value()));
    }
    summary_.runSeconds = secondsSince(tRun);
    summary_.clientRoundsPerSecond =
        roundSeconds > 0 ? static_cast<double>(accepted) / roundSeconds : 0;
    summary_.cores = std::max(1u, std::thread::hardware_concurrency());
    summary_.clientRoundsPerSecondPerCore = summary_.clientRoundsPerSecond / summary_.cores;
    closeAll();
    finish();
    return summary_;
  }

 private:
  // --- setup ---------------------------------------------------------------

  Status loadFleet() {
    auto cc = server::loadCoordinatorConfig(config_.fleet / "coordinator.toml");
    if (!cc.ok()) return cc.error();
    coordinator_ = std::move(cc.value());
    auto reg = Registry::open(coordinator_.resolve(coordinator_.registry.path));
    if (!reg.ok()) return reg.error();
    registry_.emplace(std::move(reg.value()));
    summary_.config = config_;
    summary_.fleetName = coordinator_.fleet.name;
    summary_.arch = coordinator_.model.arch;
    summary_.strategy = coordinator_.aggregation.strategy;
    simDir_ = config_.fleet / "sim" / "devices";
    std::error_code ec;
    fs::create_directories(simDir_, ec);
    if (ec)
      return makeError(Code::IoError, "cannot create " + simDir_.string() + ": " + ec.message());
    return {};
  }

  Status loadData() {
    Result<Dataset> data = makeError(Code::NotFound, "no dataset");
    if (config_.dataset == "fashion-mnist") {
      IdxOptions o;
      o.firstN = config_.trainSamples;
      data = loadFashionMnist("train", o);
    } else {
      data = loadCsv(config_.dataset.substr(4));
      if (data.ok() && config_.trainSamples > 0 && data->size() > config_.trainSamples) {
        data->features.resize(std::size_t{config_.trainSamples} * data->featureCount);
        data->labels.resize(config_.trainSamples);
      }
    }
    if (!data.ok()) return data.error();
    data_ = std::move(data.value());
    auto parts =
        partition(data_.labels, data_.classCount, config_.devices, config_.partition, config_.seed);
    if (!parts.ok()) return parts.error();
    parts_ = std::move(parts.value());
    info("data: " + data_.name + " " + std::to_string(data_.size()) + " samples, partition " +
         config_.partition + " over " + std::to_string(config_.devices) + " devices");
    return {};
  }

  Status createDevices() {
    std::mt19937_64 rng(config_.seed ^ 0x5157ull);
    std::vector<std::size_t> order(config_.devices);
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    const auto attackers =
        static_cast<std::size_t>(std::llround(config_.attackers.fraction * config_.devices));
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::size_t> slow = order;
    std::shuffle(slow.begin(), slow.end(), rng);
    const auto stragglers =
        static_cast<std::size_t>(std::llround(config_.stragglers.fraction * config_.devices));

    devices_.resize(config_.devices);
    const std::uint32_t cap = config_.samplesPerDevice > 0 ? config_.samplesPerDevice : 2000;
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      auto& v = devices_[i];
      v = std::make_unique<Virtual>();
      v->id = config_.devicePrefix + "-" + std::to_string(i);
      v->samples = parts_[i];
      v->stored = std::min<std::size_t>(v->samples.size(), cap);
      v->streamPos = v->stored % std::max<std::size_t>(1, v->samples.size());
      v->rng.seed(config_.seed * 1000003ull + i);
    }
    for (std::size_t k = 0; k < attackers && !config_.attackers.kinds.empty(); ++k) {
      devices_[order[k]]->attack = config_.attackers.kinds[k % config_.attackers.kinds.size()];
      auto& outcome = summary_.attacks[std::string(attackName(*devices_[order[k]]->attack))];
      ++outcome.devices;
    }
    for (std::size_t k = 0; k < stragglers; ++k) devices_[slow[k]]->straggler = true;
    summary_.devices = devices_.size();
    summary_.attackers = attackers;
    summary_.stragglers = stragglers;
    return {};
  }

  Status enroll() {
    std::vector<tools::DeviceToEnroll> batch;
    for (const auto& v : devices_) {
      const fs::path dir = simDir_ / v->id;
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (!fs::exists(dir / "device.key")) {
        KeyPair key = KeyPair::generate();
        EDGEFL_TRY(key.save(dir / "device"));
      }
      auto key = KeyPair::load(dir / "device.key");
      if (!key.ok()) return key.error();
      batch.push_back({v->id, key->publicKey()});
    }
    auto enrolled = tools::enrollDevices(config_.fleet, batch);
    if (!enrolled.ok()) return enrolled.error();
    // The broker reloads its password file on SIGHUP and the coordinator
    // its key directory on its next tick: wait until the registry lists
    // every device, so that no first update meets an unknown key.
    const auto deadline = Clock::now() + seconds(config_.setupTimeoutSeconds);
    std::set<std::string> want;
    for (const auto& v : devices_) want.insert(v->id);
    while (Clock::now() < deadline) {
      std::size_t known = 0;
      for (const auto& d : registry_->devices())
        known += (want.count(d.id) > 0 && d.revokedAt == 0);
      if (known == want.size()) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return makeError(Code::IoError, "the coordinator did not register the " +
                                        std::to_string(want.size()) + " enrolled devices within " +
                                        fixed1(config_.setupTimeoutSeconds) +
                                        " s: is edgefl-coordinator running for this fleet?");
  }

  unsigned workerCount() const {
    return config_.workers > 0 ? config_.workers
                               : std::max(1u, std::thread::hardware_concurrency());
  }

  Status openAll() {
    summary_.workers = workerCount();
    pool_ = std::make_unique<WorkerPool>(summary_.workers);
    cache_ = std::make_shared<ModelCache>();
    const std::size_t loops = config_.mqttLoops > 0
                                  ? config_.mqttLoops
                                  : std::max<std::size_t>(1, (devices_.size() + 499) / 500);
    for (std::size_t i = 0; i < loops; ++i) {
      loops_.push_back(std::make_shared<MqttLoop>());
      loops_.back()->start();
    }
    const std::uint64_t before = residentBytes();
    for (std::size_t i = 0; i < devices_.size(); ++i) EDGEFL_TRY(open(*devices_[i], i, false));
    EDGEFL_TRY(waitForModels());
    const std::uint64_t idle = residentBytes();
    for (auto& v : devices_) feed(*v);
    const std::uint64_t loaded = residentBytes();
    const double n = static_cast<double>(devices_.size());
    summary_.idleBytesPerDevice = static_cast<double>(idle > before ? idle - before : 0) / n;
    summary_.loadedBytesPerDevice = static_cast<double>(loaded > before ? loaded - before : 0) / n;
    return {};
  }

  DeviceConfig deviceConfig(Virtual& v, std::size_t index) {
    DeviceConfig c;
    c.deviceId = v.id;
    c.fleet = coordinator_.fleet.name;
    c.storageDir = simDir_ / v.id;
    c.deviceKeyFile = simDir_ / v.id / "device.key";
    c.rootPublicKeyFile = coordinator_.resolve(coordinator_.keys.rootPublic);
    c.transport.host = coordinator_.broker.host;
    c.transport.port = static_cast<int>(coordinator_.broker.port);
    c.transport.passwordFile = config_.fleet / "devices" / (v.id + ".mqtt-password");
    c.transport.loop = loops_[index % loops_.size()];
    c.limits.telemetryInterval = std::chrono::seconds(config_.telemetrySeconds);
    c.limits.resendInterval = std::chrono::seconds(10);
    c.limits.maxStoredSamples =
        std::max<std::uint32_t>(c.limits.maxStoredSamples, static_cast<std::uint32_t>(v.stored));
    c.sampleStore =
        config_.sampleStore == "sqlite" ? SampleStoreKind::Sqlite : SampleStoreKind::Memory;
    c.durableWrites = false;  // scratch storage: a crash may lose the last state change
    c.modelCache = cache_;
    c.logLevel = LogLevel::Warn;
    c.log = [this, id = v.id](LogLevel level, std::string_view line) {
      deviceLog(id, level, line);
    };
    WorkerPool* pool = pool_.get();
    if (v.straggler) {
      auto rng = std::make_shared<std::mt19937_64>(v.rng());
      auto lock = std::make_shared<std::mutex>();
      c.executor = [pool, rng, lock, delay = config_.stragglers.delay](std::function<void()> job) {
        double d;
        {
          std::lock_guard l(*lock);
          d = delay.sample(*rng);
        }
        pool->submit(std::move(job), d);
      };
    } else {
      c.executor = [pool](std::function<void()> job) { pool->submit(std::move(job), 0); };
    }
    if (v.attack) {
      const std::string victim = devices_[(index + 1) % devices_.size()]->id;
      c.hooks = attackHooks(*v.attack, config_.attackers, victim, v.rng());
    }
    return c;
  }

  Status open(Virtual& v, std::size_t index, bool feedNow) {
    auto device = Device::open(deviceConfig(v, index));
    if (!device.ok()) {
      return makeError(Code::IoError, "device " + v.id + ": " + device.error().toString());
    }
    v.device = std::move(device.value());
    if (feedNow) feed(v);
    return {};
  }

  void close(Virtual& v) {
    if (!v.device) return;
    const DeviceStatus s = v.device->status();
    v.device->close();
    v.bytesUpClosed += s.bytesSent;
    v.bytesDownClosed += s.bytesReceived;
    v.device.reset();
  }

  Status waitForModels() {
    const auto deadline = Clock::now() + seconds(config_.setupTimeoutSeconds);
    for (;;) {
      std::size_t ready = 0;
      for (auto& v : devices_) ready += v->device && v->device->status().modelLoaded;
      if (ready == devices_.size()) return {};
      if (Clock::now() >= deadline) {
        return makeError(Code::IoError,
                         std::to_string(devices_.size() - ready) + " of " +
                             std::to_string(devices_.size()) + " devices got no model within " +
                             fixed1(config_.setupTimeoutSeconds) +
                             " s: is the broker running and the stable model deployed?");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // Stores the device's initial samples (a memory store starts empty after
  // every open; a SQLite store keeps them, and is refilled only when empty).
  void feed(Virtual& v) {
    if (!v.device) return;
    const DeviceStatus s = v.device->status();
    if (!s.modelLoaded || s.samplesStored >= v.stored) return;
    for (std::size_t i = 0; i < v.stored; ++i) observe(v, v.samples[i]);
  }

  void observe(Virtual& v, std::uint32_t index) {
    const std::int32_t label = v.attack
                                   ? poisonedLabel(*v.attack, data_.labels[index], data_.classCount)
                                   : data_.labels[index];
    DeviceError e = v.device->observe(data_.sample(index), label);
    if (!e.ok()) ++observeErrors_[e.name()];
  }

  // Fresh labelled samples for every online device, at stream_per_second.
  void stream(double dt) {
    if (config_.streamPerSecond <= 0) return;
    for (auto& v : devices_) {
      if (!v->device || v->samples.empty() || v->device->inputCount() == 0) continue;
      v->streamCredit += dt * config_.streamPerSecond;
      while (v->streamCredit >= 1.0) {
        v->streamCredit -= 1.0;
        observe(*v, v->samples[v->streamPos]);
        v->streamPos = (v->streamPos + 1) % v->samples.size();
      }
    }
  }

  // --- rounds --------------------------------------------------------------

  // Online probability at this moment of the simulated day.
  double availability() const {
    const auto& a = config_.availability;
    const double t = secondsSince(start_);
    const double p =
        a.probability *
        (1.0 + a.dayNightAmplitude * std::sin(2.0 * std::numbers::pi * t / a.daySeconds));
    return std::clamp(p, 0.0, 1.0);
  }

  // Opens and closes devices for the next round: each is online with the
  // availability probability; a dropout stays off until its time is up.
  void applyAvailability() {
    const double p = availability();
    std::bernoulli_distribution online(p);
    std::bernoulli_distribution drop(config_.dropouts.fraction);
    const auto now = Clock::now();
    std::size_t opened = 0, closed = 0;
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      auto& v = *devices_[i];
      v.dropThisRound = drop(v.rng);
      v.droppedThisRound = false;
      const bool want = now >= v.offlineUntil && (p >= 1.0 || online(v.rng));
      if (want && !v.device) {
        if (open(v, i, true).ok()) ++opened;
      } else if (!want && v.device) {
        close(v);
        ++closed;
      }
    }
    if (opened + closed > 0) {
      debug("availability " + fixed2(p) + ": " + std::to_string(opened) + " devices back online, " +
            std::to_string(closed) + " went offline");
    }
  }

  std::uint64_t onlineCount() const {
    std::uint64_t n = 0;
    for (const auto& v : devices_) n += v->device != nullptr;
    return n;
  }

  std::pair<std::uint64_t, std::uint64_t> bytes() const {
    std::uint64_t up = 0, down = 0;
    for (const auto& v : devices_) {
      up += v->bytesUpClosed;
      down += v->bytesDownClosed;
      if (v->device) {
        const DeviceStatus s = v->device->status();
        up += s.bytesSent;
        down += s.bytesReceived;
      }
    }
    return {up, down};
  }

  // Waits until no round is open, no canary is deciding and every online
  // device has settled on the stable deployment (a round opened while a
  // deployment is still spreading finds devices on the old base, or queues
  // behind it), feeding the devices meanwhile.
  Status waitIdle(double timeoutSeconds) {
    const auto deadline = Clock::now() + seconds(timeoutSeconds);
    auto last = Clock::now();
    auto busy = [&] {
      if (registry_->openRoundRecord() || registry_->activeDeployment("canary")) return true;
      auto stable = registry_->activeDeployment("stable");
      if (!stable) return false;
      for (const auto& v : devices_) {
        if (v->device && !settledOnStable(v->device->status(), stable->version, stable->sequence)) {
          return true;
        }
      }
      return false;
    };
    while (busy()) {
      if (Clock::now() >= deadline) {
        return makeError(Code::IoError, "the coordinator stayed busy (a round or a canary) for " +
                                            fixed1(timeoutSeconds) + " s");
      }
      if (stopRequested()) return makeError(Code::IoError, "interrupted");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      stream(secondsSince(last));
      last = Clock::now();
      reopenDropouts();
    }
    return {};
  }

  void reopenDropouts() {
    const auto now = Clock::now();
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      auto& v = *devices_[i];
      if (!v.device && v.droppedThisRound && now >= v.offlineUntil) {
        (void)open(v, i, true);
        v.droppedThisRound = false;
      }
    }
  }

  Result<std::uint64_t> startRound() {
    auto id = registry_->submitCommand("round-start", "sim");
    if (!id.ok()) return id.error();
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      auto c = registry_->command(*id);
      if (c && c->doneAt != 0) {
        if (auto open = registry_->openRoundRecord()) return open->round;
        return makeError(Code::IoError, "round start: " + c->result);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return makeError(Code::IoError,
                     "the coordinator did not take the round-start command within 60 s");
  }

  // What became of a round's model: promoted, rolled back, rejected by
  // the validation gate, or its stage while a canary is still deciding.
  static std::string rolloutLabel(const server::ModelRecord& m) {
    if (m.stage == server::ModelStage::Stable || m.stage == server::ModelStage::Archived) {
      return "promoted";
    }
    if (m.stage == server::ModelStage::Rejected) {
      return m.reason.rfind("rolled back", 0) == 0 ? "rolled back" : "rejected by gate";
    }
    return std::string(server::stageName(m.stage));
  }

  bool asynchronous() const { return coordinator_.rounds.mode == "asynchronous"; }

  // The round to follow next. Synchronous: once the coordinator is idle,
  // start one. Asynchronous (buffered): the coordinator opens the next
  // buffer as soon as one closes; start the first, then follow them.
  Result<std::uint64_t> nextRound(std::uint64_t previous) {
    if (!asynchronous()) {
      EDGEFL_TRY(waitIdle(config_.roundTimeoutSeconds));
      applyAvailability();
      return startRound();
    }
    applyAvailability();
    const auto deadline = Clock::now() + seconds(config_.roundTimeoutSeconds);
    while (Clock::now() < deadline && !stopRequested()) {
      if (auto open = registry_->openRoundRecord(); open && open->round > previous) {
        return open->round;
      }
      if (previous == 0) return startRound();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return makeError(Code::IoError,
                     "no asynchronous buffer opened after round " + std::to_string(previous));
  }

  Result<RoundRow> runRound(bool last) {
    RoundRow row;
    row.online = onlineCount();
    const auto [up0, down0] = bytes();
    auto number = nextRound(summary_.rounds.empty() ? 0 : summary_.rounds.back().round);
    if (!number.ok()) return number.error();
    row.online = onlineCount();
    row.round = *number;
    const auto opened = Clock::now();
    auto last_ = opened;
    auto nextProgress = opened;
    std::set<std::string> selected;
    for (;;) {
      auto rec = registry_->round(row.round);
      if (!rec.ok()) return rec.error();
      const auto state = rec->state;
      if (state == server::RoundState::Closed || state == server::RoundState::Failed ||
          state == server::RoundState::Cancelled) {
        break;
      }
      if (secondsSince(opened) > config_.roundTimeoutSeconds) {
        row.state = "timeout";
        break;
      }
      if (stopRequested()) break;
      std::size_t training = 0, sent = 0;
      for (auto& v : devices_) {
        if (!v->device) continue;
        const DeviceStatus s = v->device->status();
        const bool inRound = s.roundState == "training" || s.roundState == "sent" ||
                             s.roundState.rfind("failed", 0) == 0 ||
                             s.roundState.rfind("not enough samples", 0) == 0;
        if (inRound && s.lastRound <= row.round) selected.insert(v->id);
        training += s.roundState == "training";
        sent += s.roundState == "sent";
        if (v->dropThisRound && s.roundState == "training") {
          // Goes offline in the middle of the round: its queued training
          // is dropped; training already running finishes and its update
          // waits in the device's store until it is back.
          close(*v);
          v->droppedThisRound = true;
          v->offlineUntil = Clock::now() + seconds(config_.dropouts.offlineSeconds);
          ++row.dropouts;
        }
      }
      if (hooks_.progress && Clock::now() >= nextProgress) {
        std::uint64_t accepted = 0, judged = 0;
        for (const auto& [k, n] : rec->verdicts) {
          judged += n;
          if (k == "accepted") accepted += n;
        }
        hooks_.progress("round " + std::to_string(row.round) + ": " + fixed1(secondsSince(opened)) +
                        " s, " + std::to_string(row.online) + " online, " +
                        std::to_string(training) + " training, " + std::to_string(sent) +
                        " sent, " + std::to_string(judged) + " judged, " +
                        std::to_string(accepted) + " accepted");
        nextProgress = Clock::now() + std::chrono::milliseconds(500);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      stream(secondsSince(last_));
      last_ = Clock::now();
      reopenDropouts();
    }
    row.seconds = secondsSince(opened);
    const auto [up1, down1] = bytes();
    row.bytesUp = up1 - up0;

    auto rec = registry_->round(row.round);
    if (!rec.ok()) return rec.error();
    if (row.state.empty()) row.state = std::string(server::roundStateName(rec->state));
    row.outcome = rec->outcome;
    row.phaseMillis = rec->phaseMillis;
    row.selected = rec->selected > 0 ? rec->selected : selected.size();
    for (const auto& [reason, n] : rec->verdicts) {
      row.received += n;
      if (reason == "accepted") {
        row.accepted += n;
      } else {
        row.rejectedByReason[reason] += n;
      }
    }
    for (const auto& e : registry_->events(5000)) {
      if (e.kind != "exclusion" || e.subject != std::to_string(row.round)) continue;
      const auto colon = e.detail.rfind(": ");
      const std::string reason =
          colon == std::string::npos ? "excluded" : e.detail.substr(colon + 2);
      ++row.rejectedByReason[reason];
      ++row.excluded;
      excludedIds_.insert(e.detail.substr(0, e.detail.find(' ')) + "@" + std::to_string(row.round));
    }
    row.version = rec->resultVersion;
    if (row.version != 0) {
      auto m = registry_->model(row.version, false);
      if (m.ok()) row.accuracy = m->accuracy;
    }

    // The canary decision (the next round waits for it anyway).
    const auto decided = Clock::now();
    if (row.version != 0 && !asynchronous() && (!last || config_.waitForRollout)) {
      Status idle = waitIdle(config_.roundTimeoutSeconds);
      if (!idle.ok()) row.rollout = "undecided: " + idle.error().detail;
    }
    row.rolloutSeconds = secondsSince(decided);
    if (row.version != 0) {
      auto m = registry_->model(row.version, false);
      if (m.ok() && row.rollout.empty()) row.rollout = rolloutLabel(*m);
    } else {
      row.rollout = "-";
    }
    if (auto stable = registry_->latestInStage(server::ModelStage::Stable, false)) {
      row.stableVersion = stable->version;
      row.stableAccuracy = stable->accuracy;
    }
    const auto [up2, down2] = bytes();
    (void)up2;
    row.bytesDown = down2 - down0;
    if (hooks_.progress) hooks_.progress("");
    return row;
  }

  void closeAll() {
    for (auto& v : devices_) {
      if (v) close(*v);
    }
    for (auto& l : loops_) l->stop();
  }

  void finish() {
    if (auto stable = registry_->latestInStage(server::ModelStage::Stable, false)) {
      summary_.stableVersion = stable->version;
      summary_.stableAccuracy = stable->accuracy;
      summary_.lineage.clear();
      for (std::uint64_t v = stable->version; v != 0;) {
        auto m = registry_->model(v, false);
        if (!m.ok()) break;
        std::string entry = "v" + std::to_string(m->version);
        if (m->round != 0) {
          entry += " (round " + std::to_string(m->round) + ", " + fixedPercent(m->accuracy) + ")";
        } else {
          entry += " (initial, " + fixedPercent(m->accuracy) + ")";
          summary_.initialAccuracy = m->accuracy;
        }
        summary_.lineage.push_back(entry);
        v = m->parent;
        if (summary_.lineage.size() > 1000) break;
      }
    }
    // Rollout outcomes from the registry: in asynchronous mode a canary is
    // often still deciding when its round's row is written.
    summary_.promotions = summary_.rollbacks = summary_.gateRejections = 0;
    for (auto& row : summary_.rounds) {
      if (row.version == 0) continue;
      auto m = registry_->model(row.version, false);
      if (!m.ok()) continue;
      row.rollout = rolloutLabel(*m);
      summary_.promotions += row.rollout == "promoted";
      summary_.rollbacks += row.rollout == "rolled back";
      summary_.gateRejections += row.rollout == "rejected by gate";
    }
    // What the coordinator did with each attacker's updates.
    std::map<std::string, const Virtual*> byId;
    for (const auto& v : devices_) {
      if (v->attack) byId[v->id] = v.get();
    }
    std::set<std::uint64_t> ran;
    for (const auto& r : summary_.rounds) ran.insert(r.round);
    for (const auto& u : registry_->updates()) {
      auto it = byId.find(u.deviceId);
      if (it == byId.end() || ran.count(u.round) == 0) continue;
      auto& outcome = summary_.attacks[std::string(attackName(*it->second->attack))];
      ++outcome.updates;
      if (u.accepted) {
        ++outcome.accepted;
        if (excludedIds_.count(u.deviceId + "@" + std::to_string(u.round)) > 0) {
          ++outcome.excluded;
          ++outcome.rejectedByReason["excluded by aggregation"];
        }
      } else {
        ++outcome.rejectedByReason[u.reason];
      }
    }
    summary_.peakRssBytes = peakResidentBytes();
    for (const auto& [name, n] : observeErrors_) {
      warn("samples refused by devices: " + name + " x" + std::to_string(n));
    }
  }

  // --- helpers ---------------------------------------------------------------

  bool stopRequested() const { return hooks_.stop != nullptr && hooks_.stop->load(); }

  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  static std::string fixed1(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", v);
    return b;
  }
  static std::string fixed2(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
  }
  static std::string fixedPercent(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f%%", v * 100.0);
    return b;
  }

  void log(LogLevel level, const std::string& line) {
    if (hooks_.log) hooks_.log(level, line);
  }
  void debug(const std::string& line) { log(LogLevel::Debug, line); }
  void info(const std::string& line) { log(LogLevel::Info, line); }
  void warn(const std::string& line) { log(LogLevel::Warn, line); }

  // Devices' warnings, at most kDeviceLogLines of them: a thousand devices
  // losing the broker at once would otherwise bury everything else.
  static constexpr std::size_t kDeviceLogLines = 40;
  void deviceLog(const std::string& id, LogLevel level, std::string_view line) {
    std::lock_guard lock(logMu_);
    if (++deviceLogLines_ > kDeviceLogLines) {
      if (deviceLogLines_ == kDeviceLogLines + 1)
        log(LogLevel::Warn, "further device log lines suppressed");
      return;
    }
    (void)id;  // the runtime prefixes its lines with the device id
    log(level, std::string(line));
  }

  SimConfig config_;
  RunHooks hooks_;
  SimSummary summary_;
  server::CoordinatorConfig coordinator_;
  std::optional<Registry> registry_;
  fs::path simDir_;
  Dataset data_;
  Partition parts_;
  std::vector<std::unique_ptr<Virtual>> devices_;
  std::unique_ptr<WorkerPool> pool_;
  std::shared_ptr<ModelCache> cache_;
  std::vector<std::shared_ptr<MqttLoop>> loops_;
  std::map<std::string, std::uint64_t> observeErrors_;
  std::set<std::string> excludedIds_;  // "<device>@<round>"
  Clock::time_point start_ = Clock::now();
  std::mutex logMu_;
  std::size_t deviceLogLines_ = 0;
};

}  // namespace

bool settledOnStable(const DeviceStatus& status, std::uint64_t version, std::uint64_t sequence) {
  return status.activeVersion == version && status.stableSequence >= sequence;
}

Result<SimSummary> runSimulation(const SimConfig& config, const RunHooks& hooks) {
  EDGEFL_TRY(validateSimConfig(config));
  if (!fs::exists(config.fleet / "coordinator.toml")) {
    return makeError(Code::NotFound, (config.fleet / "coordinator.toml").string() +
                                         " not found: make the fleet with `edgefl fleet init`");
  }
  Simulation sim(config, hooks);
  return sim.run();
}

}  // namespace edgefl::sim
