// The C API over edgefl::Device: argument checks first, then the C++ call;
// no exception crosses the boundary.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>

#include "edgefl/device.h"
#include "edgefl/device/device.hpp"
#include "edgefl/shared/error.hpp"

namespace {

using edgefl::Code;

// The C status values are edgefl::Code's, so names and numbers agree with
// Acks, telemetry and logs.
static_assert(EDGEFL_STATUS_OK == static_cast<int>(Code::Ok));
static_assert(EDGEFL_STATUS_EMPTY == static_cast<int>(Code::Empty));
static_assert(EDGEFL_STATUS_TRUNCATED == static_cast<int>(Code::Truncated));
static_assert(EDGEFL_STATUS_TOO_LARGE == static_cast<int>(Code::TooLarge));
static_assert(EDGEFL_STATUS_NOT_CAPNP == static_cast<int>(Code::NotCapnp));
static_assert(EDGEFL_STATUS_TOO_DEEP == static_cast<int>(Code::TooDeep));
static_assert(EDGEFL_STATUS_TRAVERSAL_LIMIT == static_cast<int>(Code::TraversalLimit));
static_assert(EDGEFL_STATUS_MISSING_FIELD == static_cast<int>(Code::MissingField));
static_assert(EDGEFL_STATUS_BAD_FIELD == static_cast<int>(Code::BadField));
static_assert(EDGEFL_STATUS_WRONG_KIND == static_cast<int>(Code::WrongKind));
static_assert(EDGEFL_STATUS_UNKNOWN_KEY == static_cast<int>(Code::UnknownKey));
static_assert(EDGEFL_STATUS_KEY_ID_MISMATCH == static_cast<int>(Code::KeyIdMismatch));
static_assert(EDGEFL_STATUS_BAD_SIGNATURE == static_cast<int>(Code::BadSignature));
static_assert(EDGEFL_STATUS_ROLE_NOT_ALLOWED == static_cast<int>(Code::RoleNotAllowed));
static_assert(EDGEFL_STATUS_DELEGATION_INVALID == static_cast<int>(Code::DelegationInvalid));
static_assert(EDGEFL_STATUS_EXPIRED == static_cast<int>(Code::Expired));
static_assert(EDGEFL_STATUS_NOT_YET_VALID == static_cast<int>(Code::NotYetValid));
static_assert(EDGEFL_STATUS_WRONG_FLEET == static_cast<int>(Code::WrongFleet));
static_assert(EDGEFL_STATUS_IO_ERROR == static_cast<int>(Code::IoError));
static_assert(EDGEFL_STATUS_BAD_KEY_FILE == static_cast<int>(Code::BadKeyFile));
static_assert(EDGEFL_STATUS_BAD_CONFIG == static_cast<int>(Code::BadConfig));
static_assert(EDGEFL_STATUS_INVALID_ARGUMENT == static_cast<int>(Code::InvalidArgument));
static_assert(EDGEFL_STATUS_ALREADY_EXISTS == static_cast<int>(Code::AlreadyExists));
static_assert(EDGEFL_STATUS_NOT_FOUND == static_cast<int>(Code::NotFound));
static_assert(EDGEFL_STATUS_BAD_MODEL == static_cast<int>(Code::BadModel));
static_assert(EDGEFL_STATUS_BAD_ARCH == static_cast<int>(Code::BadArch));
static_assert(EDGEFL_STATUS_BAD_DATASET == static_cast<int>(Code::BadDataset));
static_assert(EDGEFL_STATUS_SHAPE_MISMATCH == static_cast<int>(Code::ShapeMismatch));
static_assert(EDGEFL_STATUS_NON_FINITE == static_cast<int>(Code::NonFinite));
static_assert(EDGEFL_STATUS_OUT_OF_RANGE == static_cast<int>(Code::OutOfRange));
static_assert(EDGEFL_STATUS_NORM_TOO_LARGE == static_cast<int>(Code::NormTooLarge));
static_assert(EDGEFL_STATUS_UNSUPPORTED == static_cast<int>(Code::Unsupported));
static_assert(EDGEFL_STATUS_BAD_TOPIC == static_cast<int>(Code::BadTopic));
static_assert(EDGEFL_STATUS_REVOKED == static_cast<int>(Code::Revoked));
static_assert(EDGEFL_STATUS_IMPERSONATION == static_cast<int>(Code::Impersonation));
static_assert(EDGEFL_STATUS_ROUND_CLOSED == static_cast<int>(Code::RoundClosed));
static_assert(EDGEFL_STATUS_BASE_MISMATCH == static_cast<int>(Code::BaseMismatch));
static_assert(EDGEFL_STATUS_NOT_SELECTED == static_cast<int>(Code::NotSelected));
static_assert(EDGEFL_STATUS_DUPLICATE == static_cast<int>(Code::Duplicate));
static_assert(EDGEFL_STATUS_OVERLOADED == static_cast<int>(Code::Overloaded));
static_assert(EDGEFL_STATUS_RATE_LIMITED == static_cast<int>(Code::RateLimited));

thread_local std::string lastError;

edgefl_status fail(edgefl_status status, std::string detail) {
  lastError = std::move(detail);
  return status;
}

edgefl_status report(const edgefl::DeviceError& error) {
  if (error.ok()) return EDGEFL_STATUS_OK;
  lastError = error.detail;
  return error.status;
}

// Runs `body`, turning any exception into a status.
template <typename Body>
edgefl_status guarded(Body&& body) noexcept {
  try {
    lastError.clear();
    return body();
  } catch (const std::bad_alloc&) {
    return fail(EDGEFL_STATUS_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(EDGEFL_STATUS_INTERNAL, e.what());
  } catch (...) {
    return fail(EDGEFL_STATUS_INTERNAL, "unknown exception");
  }
}

void copyText(char* out, std::size_t size, const std::string& text) {
  const std::size_t n = std::min(size - 1, text.size());
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}

// The int stored in a C enum field, read without an enum-typed load.
template <typename E>
int rawEnum(const E& field) {
  static_assert(sizeof(E) == sizeof(int));
  int v = 0;
  std::memcpy(&v, &field, sizeof v);
  return v;
}

edgefl::LogLevel toLogLevel(int level) {
  switch (level) {
    case EDGEFL_LOG_DEBUG: return edgefl::LogLevel::Debug;
    case EDGEFL_LOG_INFO: return edgefl::LogLevel::Info;
    case EDGEFL_LOG_WARN: return edgefl::LogLevel::Warn;
    case EDGEFL_LOG_ERROR: return edgefl::LogLevel::Error;
  }
  return edgefl::LogLevel::Info;
}

edgefl_log_level fromLogLevel(edgefl::LogLevel level) {
  switch (level) {
    case edgefl::LogLevel::Debug: return EDGEFL_LOG_DEBUG;
    case edgefl::LogLevel::Info: return EDGEFL_LOG_INFO;
    case edgefl::LogLevel::Warn: return EDGEFL_LOG_WARN;
    case edgefl::LogLevel::Error: return EDGEFL_LOG_ERROR;
  }
  return EDGEFL_LOG_INFO;
}

// The identity fields every configuration must carry (the first version of
// the struct ends after them at the latest).
constexpr std::size_t kMinConfigSize =
    offsetof(edgefl_device_config, root_public_key_file) + sizeof(const char*);
constexpr std::size_t kMinStatusSize = offsetof(edgefl_device_status, last_error) + 256;

}  // namespace

struct edgefl_device {
  std::unique_ptr<edgefl::Device> device;
};

extern "C" {

const char* edgefl_status_str(edgefl_status status) {
  if (status == EDGEFL_STATUS_OUT_OF_MEMORY) return "OutOfMemory";
  if (status == EDGEFL_STATUS_INTERNAL) return "Internal";
  if (status < EDGEFL_STATUS_OK || status > EDGEFL_STATUS_RATE_LIMITED) return "Unknown";
  // codeName returns views of string literals: NUL-terminated, static.
  return edgefl::codeName(static_cast<Code>(status)).data();
}

const char* edgefl_last_error(void) {
  return lastError.c_str();
}

const char* edgefl_version(void) {
  return EDGEFL_DEVICE_VERSION_STRING;
}

void edgefl_device_config_init(edgefl_device_config* config) {
  if (config == nullptr) return;
  std::memset(config, 0, sizeof *config);
  const edgefl::DeviceConfig defaults;
  config->struct_size = sizeof *config;
  config->mqtt_enabled = 1;
  config->broker_host = "127.0.0.1";
  config->broker_port = defaults.transport.port;
  config->keepalive_seconds = defaults.transport.keepaliveSeconds;
  config->telemetry_interval_seconds = static_cast<int>(defaults.limits.telemetryInterval.count());
  config->resend_interval_seconds = static_cast<int>(defaults.limits.resendInterval.count());
  config->sample_store = EDGEFL_STORE_SQLITE;
  config->durable_writes = 1;
  config->log_level = EDGEFL_LOG_INFO;
}

edgefl_status edgefl_device_open(const edgefl_device_config* config, edgefl_device** out) {
  return guarded([&]() -> edgefl_status {
    if (config == nullptr || out == nullptr) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "config and out must not be NULL");
    }
    *out = nullptr;
    if (config->struct_size < kMinConfigSize) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "struct_size " +
                                                      std::to_string(config->struct_size) +
                                                      ": call edgefl_device_config_init first");
    }
    // Fields a caller built against an older, shorter struct did not pass
    // keep their defaults.
    edgefl_device_config c;
    edgefl_device_config_init(&c);
    std::memcpy(&c, config, std::min(config->struct_size, sizeof c));
    const std::pair<const char*, const char*> required[] = {
        {"device_id", c.device_id},
        {"fleet", c.fleet},
        {"storage_dir", c.storage_dir},
        {"device_key_file", c.device_key_file},
        {"root_public_key_file", c.root_public_key_file},
    };
    for (const auto& [name, value] : required) {
      if (value == nullptr || *value == '\0') {
        return fail(EDGEFL_STATUS_BAD_CONFIG, std::string(name) + " is required");
      }
    }
    edgefl::DeviceConfig cfg;
    cfg.deviceId = c.device_id;
    cfg.fleet = c.fleet;
    cfg.storageDir = c.storage_dir;
    cfg.deviceKeyFile = c.device_key_file;
    cfg.rootPublicKeyFile = c.root_public_key_file;
    cfg.transport.enabled = c.mqtt_enabled != 0;
    if (c.broker_host != nullptr) cfg.transport.host = c.broker_host;
    cfg.transport.port = c.broker_port;
    if (c.broker_password_file != nullptr) cfg.transport.passwordFile = c.broker_password_file;
    cfg.transport.keepaliveSeconds = c.keepalive_seconds;
    if (c.telemetry_interval_seconds < 0 || c.resend_interval_seconds < 1) {
      return fail(EDGEFL_STATUS_BAD_CONFIG,
                  "telemetry_interval_seconds must be >= 0 and resend_interval_seconds >= 1");
    }
    cfg.limits.telemetryInterval = std::chrono::seconds(c.telemetry_interval_seconds);
    cfg.limits.resendInterval = std::chrono::seconds(c.resend_interval_seconds);
    if (!cfg.transport.enabled && c.publish != nullptr) {
      edgefl_publish_fn publish = c.publish;
      void* user = c.publish_user;
      cfg.transport.publish = [publish, user](std::string_view topic,
                                              std::span<const std::uint8_t> payload, bool retain) {
        const std::string t(topic);
        return publish(user, t.c_str(), payload.data(), payload.size(), retain ? 1 : 0) == 0;
      };
    }
    if (c.max_model_parameters != 0) cfg.limits.maxModelParameters = c.max_model_parameters;
    if (c.max_model_bytes != 0) cfg.limits.maxModelBytes = c.max_model_bytes;
    if (c.max_stored_samples != 0) cfg.limits.maxStoredSamples = c.max_stored_samples;
    if (c.max_pending_updates != 0) cfg.limits.maxPendingUpdates = c.max_pending_updates;
    if (c.max_batch != 0) cfg.limits.maxBatch = c.max_batch;
    // C callers may store any int in an enum field; in C++ loading a value
    // outside the enumerators is undefined, so read the raw int.
    const int storeKind = rawEnum(c.sample_store);
    if (storeKind != EDGEFL_STORE_SQLITE && storeKind != EDGEFL_STORE_MEMORY) {
      return fail(EDGEFL_STATUS_BAD_CONFIG, "sample_store " + std::to_string(storeKind));
    }
    cfg.sampleStore = storeKind == EDGEFL_STORE_MEMORY ? edgefl::SampleStoreKind::Memory
                                                       : edgefl::SampleStoreKind::Sqlite;
    cfg.durableWrites = c.durable_writes != 0;
    cfg.logLevel = toLogLevel(rawEnum(c.log_level));
    if (c.log != nullptr) {
      edgefl_log_fn log = c.log;
      void* user = c.log_user;
      cfg.log = [log, user](edgefl::LogLevel level, std::string_view message) {
        const std::string text(message);
        log(user, fromLogLevel(level), text.c_str());
      };
    }
    auto device = edgefl::Device::open(std::move(cfg));
    if (!device.ok()) return report(device.error());
    *out = new edgefl_device{std::move(device.value())};
    return EDGEFL_STATUS_OK;
  });
}

void edgefl_device_close(edgefl_device* device) {
  if (device == nullptr) return;
  (void)guarded([&] {
    device->device->close();
    return EDGEFL_STATUS_OK;
  });
  delete device;
}

edgefl_status edgefl_device_score(edgefl_device* device, const float* x, std::size_t x_count,
                                  float* out, std::size_t out_count) {
  if (device == nullptr || x == nullptr || out == nullptr) {
    return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device, x and out must not be NULL");
  }
  // Not through guarded(): it would clear the thread's error string on every
  // call; score neither throws nor allocates on success.
  return report(
      device->device->score(std::span<const float>(x, x_count), std::span<float>(out, out_count)));
}

edgefl_status edgefl_device_score_batch(edgefl_device* device, const float* xs, std::size_t samples,
                                        std::size_t features, float* out, std::size_t out_count) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr || xs == nullptr || out == nullptr) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device, xs and out must not be NULL");
    }
    const std::uint32_t inputs = device->device->inputCount();
    if (inputs != 0 && features != inputs) {
      return fail(EDGEFL_STATUS_SHAPE_MISMATCH, "rows of " + std::to_string(features) +
                                                    " features; the model takes " +
                                                    std::to_string(inputs));
    }
    return report(device->device->scoreBatch(std::span<const float>(xs, samples * features),
                                             std::span<float>(out, out_count)));
  });
}

edgefl_status edgefl_device_observe(edgefl_device* device, const float* x, std::size_t x_count,
                                    int32_t label) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr || x == nullptr) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device and x must not be NULL");
    }
    return report(device->device->observe(std::span<const float>(x, x_count), label));
  });
}

edgefl_status edgefl_device_observe_target(edgefl_device* device, const float* x,
                                           std::size_t x_count, float target) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr || x == nullptr) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device and x must not be NULL");
    }
    return report(device->device->observeTarget(std::span<const float>(x, x_count), target));
  });
}

edgefl_status edgefl_device_get_status(const edgefl_device* device, edgefl_device_status* out) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr || out == nullptr) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device and out must not be NULL");
    }
    if (out->struct_size < kMinStatusSize) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "struct_size " +
                                                      std::to_string(out->struct_size) +
                                                      ": set it to sizeof(edgefl_device_status)");
    }
    const edgefl::DeviceStatus s = device->device->status();
    edgefl_device_status r;
    std::memset(&r, 0, sizeof r);
    r.struct_size = std::min(out->struct_size, sizeof r);
    r.connected = s.connected ? 1 : 0;
    r.model_loaded = s.modelLoaded ? 1 : 0;
    r.active_version = s.activeVersion;
    copyText(r.active_digest, sizeof r.active_digest, s.activeDigest);
    copyText(r.active_channel, sizeof r.active_channel, s.activeChannel);
    r.active_sequence = s.activeSequence;
    r.stable_sequence = s.stableSequence;
    r.canary_sequence = s.canarySequence;
    r.input_count = s.inputCount;
    r.output_count = s.outputCount;
    r.scored = s.scored;
    r.observed = s.observed;
    r.rejected = s.rejected;
    r.samples_stored = s.samplesStored;
    r.pending_updates = s.pendingUpdates;
    r.last_round = s.lastRound;
    r.fallbacks = s.fallbacks;
    r.health_check_failures = s.healthCheckFailures;
    r.refused_messages = s.refused;
    copyText(r.last_error, sizeof r.last_error, s.lastError);
    std::memcpy(out, &r, r.struct_size);
    return EDGEFL_STATUS_OK;
  });
}

edgefl_status edgefl_device_send_telemetry(edgefl_device* device) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr) return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device is NULL");
    return report(device->device->sendTelemetry());
  });
}

edgefl_status edgefl_device_handle_message(edgefl_device* device, const char* topic,
                                           const uint8_t* payload, std::size_t size) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr || topic == nullptr || (payload == nullptr && size > 0)) {
      return fail(EDGEFL_STATUS_INVALID_ARGUMENT,
                  "device and topic must not be NULL, nor payload when size > 0");
    }
    return report(device->device->handleMessage(
        topic, std::span<const std::uint8_t>(payload, payload == nullptr ? 0 : size)));
  });
}

edgefl_status edgefl_device_set_connected(edgefl_device* device, int connected) {
  return guarded([&]() -> edgefl_status {
    if (device == nullptr) return fail(EDGEFL_STATUS_INVALID_ARGUMENT, "device is NULL");
    device->device->setConnected(connected != 0);
    return EDGEFL_STATUS_OK;
  });
}

}  // extern "C"
