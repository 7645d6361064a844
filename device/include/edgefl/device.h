#ifndef EDGEFL_DEVICE_H
#define EDGEFL_DEVICE_H
/* edgefl device runtime, C API.
 *
 * One opaque handle per device. Every function checks its arguments first
 * and returns an edgefl_status; nothing here throws, aborts or writes to
 * stdout. On failure, edgefl_last_error() holds a detail for the calling
 * thread (the offending values), valid until that thread's next call.
 *
 * Threads: every function may be called from any thread. Scoring and
 * observing are serialized per device; the network and training run on the
 * runtime's own threads and never call back into the application except
 * through the log and publish callbacks of the configuration.
 *
 * Status codes mirror edgefl's error codes one to one (the same numbers and
 * names as Acks, telemetry and logs use), plus two that only exist at this
 * boundary (out of memory, internal error). */

#include <stddef.h>
#include <stdint.h>

#include "edgefl/device/export.h"
#include "edgefl/device/version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum edgefl_status {
  EDGEFL_STATUS_OK = 0,
  /* decoding untrusted bytes */
  EDGEFL_STATUS_EMPTY = 1,
  EDGEFL_STATUS_TRUNCATED = 2,
  EDGEFL_STATUS_TOO_LARGE = 3,
  EDGEFL_STATUS_NOT_CAPNP = 4,
  EDGEFL_STATUS_TOO_DEEP = 5,
  EDGEFL_STATUS_TRAVERSAL_LIMIT = 6,
  EDGEFL_STATUS_MISSING_FIELD = 7,
  EDGEFL_STATUS_BAD_FIELD = 8,
  EDGEFL_STATUS_WRONG_KIND = 9,
  /* keys and signatures */
  EDGEFL_STATUS_UNKNOWN_KEY = 10,
  EDGEFL_STATUS_KEY_ID_MISMATCH = 11,
  EDGEFL_STATUS_BAD_SIGNATURE = 12,
  EDGEFL_STATUS_ROLE_NOT_ALLOWED = 13,
  EDGEFL_STATUS_DELEGATION_INVALID = 14,
  EDGEFL_STATUS_EXPIRED = 15,
  EDGEFL_STATUS_NOT_YET_VALID = 16,
  EDGEFL_STATUS_WRONG_FLEET = 17,
  /* files and configuration */
  EDGEFL_STATUS_IO_ERROR = 18,
  EDGEFL_STATUS_BAD_KEY_FILE = 19,
  EDGEFL_STATUS_BAD_CONFIG = 20,
  EDGEFL_STATUS_INVALID_ARGUMENT = 21,
  EDGEFL_STATUS_ALREADY_EXISTS = 22,
  EDGEFL_STATUS_NOT_FOUND = 23,
  /* models, data and updates */
  EDGEFL_STATUS_BAD_MODEL = 24,
  EDGEFL_STATUS_BAD_ARCH = 25,
  EDGEFL_STATUS_BAD_DATASET = 26,
  EDGEFL_STATUS_SHAPE_MISMATCH = 27,
  EDGEFL_STATUS_NON_FINITE = 28,
  EDGEFL_STATUS_OUT_OF_RANGE = 29,
  EDGEFL_STATUS_NORM_TOO_LARGE = 30,
  EDGEFL_STATUS_UNSUPPORTED = 31,
  /* federated rounds */
  EDGEFL_STATUS_BAD_TOPIC = 32,
  EDGEFL_STATUS_REVOKED = 33,
  EDGEFL_STATUS_IMPERSONATION = 34,
  EDGEFL_STATUS_ROUND_CLOSED = 35,
  EDGEFL_STATUS_BASE_MISMATCH = 36,
  EDGEFL_STATUS_NOT_SELECTED = 37,
  EDGEFL_STATUS_DUPLICATE = 38,
  EDGEFL_STATUS_OVERLOADED = 39,
  EDGEFL_STATUS_RATE_LIMITED = 40,
  /* only at the C boundary */
  EDGEFL_STATUS_OUT_OF_MEMORY = 1000,
  EDGEFL_STATUS_INTERNAL = 1001
} edgefl_status;

/* The stable name of a status ("BadSignature", "ShapeMismatch", ...);
 * "Unknown" for a value outside the enum. Never NULL; static storage. */
EDGEFL_DEVICE_API const char* edgefl_status_str(edgefl_status status);

/* Detail of the last failed call on this thread ("" when none). Valid until
 * the thread's next call into this API. */
EDGEFL_DEVICE_API const char* edgefl_last_error(void);

/* The runtime's version, e.g. "0.1.0". */
EDGEFL_DEVICE_API const char* edgefl_version(void);

typedef struct edgefl_device edgefl_device;

typedef enum edgefl_log_level {
  EDGEFL_LOG_DEBUG = 0,
  EDGEFL_LOG_INFO = 1,
  EDGEFL_LOG_WARN = 2,
  EDGEFL_LOG_ERROR = 3
} edgefl_log_level;

/* Receives every log line of one device, on any runtime thread. `message`
 * is valid only during the call. Must not call back into the device. */
typedef void (*edgefl_log_fn)(void* user, edgefl_log_level level, const char* message);

/* Outgoing MQTT message when the built-in transport is off (firmware with
 * its own MQTT stack): publish `payload` on `topic` with QoS 1. Return 0
 * when the message was queued, non-zero otherwise (the runtime keeps
 * updates and retries). Called from runtime threads; must not call back
 * into the device. */
typedef int (*edgefl_publish_fn)(void* user, const char* topic, const uint8_t* payload, size_t size,
                                 int retain);

typedef enum edgefl_store_kind {
  EDGEFL_STORE_SQLITE = 0, /* durable, in <storage_dir>/device.db */
  EDGEFL_STORE_MEMORY = 1  /* lost on close; for small targets and simulations */
} edgefl_store_kind;

/* Call edgefl_device_config_init() first: it sets struct_size and every
 * default, so a program built against an older header keeps working. The
 * strings are copied by edgefl_device_open() and need not outlive it. */
typedef struct edgefl_device_config {
  size_t struct_size;
  /* identity and files (all required) */
  const char* device_id; /* broker user name and client id too */
  const char* fleet;
  const char* storage_dir;          /* created when missing */
  const char* device_key_file;      /* Ed25519 secret key, mode 0600 */
  const char* root_public_key_file; /* the fleet root's public key */
  /* transport */
  int mqtt_enabled;                 /* 1 (default): built-in MQTT; 0: `publish` */
  const char* broker_host;          /* default "127.0.0.1" */
  int broker_port;                  /* default 1883 */
  const char* broker_password_file; /* required when mqtt_enabled */
  int keepalive_seconds;            /* default 30 */
  int telemetry_interval_seconds;   /* default 60; 0 disables periodic telemetry */
  int resend_interval_seconds;      /* default 30 */
  edgefl_publish_fn publish;        /* used when mqtt_enabled == 0; may be NULL */
  void* publish_user;
  /* limits (0 keeps the default; see edgefl::DeviceLimits for the reasons) */
  uint64_t max_model_parameters;
  uint64_t max_model_bytes;
  uint32_t max_stored_samples;
  uint32_t max_pending_updates;
  uint32_t max_batch;
  edgefl_store_kind sample_store;
  int durable_writes; /* 1 (default): fsync model files and state */
  /* logging: NULL sends warnings and errors to stderr */
  edgefl_log_fn log;
  void* log_user;
  edgefl_log_level log_level; /* lowest level delivered; default INFO */
} edgefl_device_config;

/* Fills `config` with defaults and sets struct_size. */
EDGEFL_DEVICE_API void edgefl_device_config_init(edgefl_device_config* config);

/* Opens a device: checks the configuration, loads the keys, opens storage,
 * restores the last active model (falling back to the previous one when it
 * no longer loads) and starts the transport, which connects in the
 * background (an unreachable broker is not an error). Errors:
 * INVALID_ARGUMENT (NULL pointers, struct_size), BAD_CONFIG (a missing or
 * malformed field), BAD_KEY_FILE, IO_ERROR (storage), OUT_OF_MEMORY. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_open(const edgefl_device_config* config,
                                                   edgefl_device** out);

/* Publishes "offline", disconnects, waits for a training job in progress,
 * and frees the device. NULL is ignored. */
EDGEFL_DEVICE_API void edgefl_device_close(edgefl_device* device);

/* Scores one sample of `x_count` raw features into `out` (class
 * probabilities or regression outputs; `out_count` >= output count). Does
 * not allocate. Errors: INVALID_ARGUMENT (NULL, out_count too small),
 * NOT_FOUND (no active model), SHAPE_MISMATCH, NON_FINITE, OUT_OF_RANGE
 * (the sample fails the model's input schema; counted as rejected). */
EDGEFL_DEVICE_API edgefl_status edgefl_device_score(edgefl_device* device, const float* x,
                                                    size_t x_count, float* out, size_t out_count);

/* Scores `samples` rows of `features` values each (row-major) into `out`
 * (`samples` * output count values). All rows are validated before any is
 * scored; errors as edgefl_device_score. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_score_batch(edgefl_device* device, const float* xs,
                                                          size_t samples, size_t features,
                                                          float* out, size_t out_count);

/* Keeps a labelled sample for local training, after validating it against
 * the active model's input schema. Errors: those of score, OUT_OF_RANGE for
 * a label outside the model's classes, IO_ERROR (store). */
EDGEFL_DEVICE_API edgefl_status edgefl_device_observe(edgefl_device* device, const float* x,
                                                      size_t x_count, int32_t label);

/* The same for regression models, with a target value. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_observe_target(edgefl_device* device, const float* x,
                                                             size_t x_count, float target);

typedef struct edgefl_device_status {
  size_t struct_size; /* set by the caller: sizeof(edgefl_device_status) */
  int connected;
  int model_loaded;
  uint64_t active_version;
  char active_digest[65]; /* hex, "" without a model */
  char active_channel[8]; /* "stable", "canary" or "" */
  uint64_t active_sequence;
  uint64_t stable_sequence; /* last deployment sequence seen per channel */
  uint64_t canary_sequence;
  uint32_t input_count;
  uint32_t output_count;
  uint64_t scored;
  uint64_t observed;
  uint64_t rejected;
  uint64_t samples_stored;
  uint32_t pending_updates;
  uint64_t last_round; /* last round an update was sent for */
  uint32_t fallbacks;
  uint32_t health_check_failures;
  uint64_t refused_messages;
  char last_error[256];
} edgefl_device_status;

/* Errors: INVALID_ARGUMENT (NULL, struct_size smaller than this version's
 * first fields). */
EDGEFL_DEVICE_API edgefl_status edgefl_device_get_status(const edgefl_device* device,
                                                         edgefl_device_status* out);

/* Builds, signs and publishes a telemetry message now. Errors: NOT_FOUND
 * (not connected), IO_ERROR. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_send_telemetry(edgefl_device* device);

/* For firmware with its own MQTT stack (mqtt_enabled == 0): hands a message
 * received on `topic` (deploy/stable, deploy/canary, round, or the device's
 * ack topic) to the runtime. The payload is verified like any other;
 * returns the reason it was refused (BAD_SIGNATURE, OUT_OF_RANGE for a
 * stale sequence, ...), or OK. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_handle_message(edgefl_device* device,
                                                             const char* topic,
                                                             const uint8_t* payload, size_t size);

/* For firmware with its own MQTT stack: reports the connection state (a
 * device with a `publish` callback starts connected); on connect the
 * runtime resends pending updates through `publish`. */
EDGEFL_DEVICE_API edgefl_status edgefl_device_set_connected(edgefl_device* device, int connected);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_DEVICE_H */
