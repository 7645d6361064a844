/* edgefl device runtime: a minimal application in C.
 *
 * Opens a device against a fleet's broker, waits for a signed deployment,
 * then scores and observes synthetic samples while the runtime takes part
 * in the fleet's rounds on its own. Run it with a fleet made by
 * `edgefl fleet init` and a device enrolled with `edgefl device enroll`:
 *
 *   edgefl_device_example <fleet-dir> <fleet-name> <device-id> <device-key>
 *                         <storage-dir> [port] [seconds]
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgefl/device.h"

static void logLine(void* user, edgefl_log_level level, const char* message) {
  (void)user;
  fprintf(stderr, "[%d] %s\n", (int)level, message);
}

static void sleepMillis(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr,
            "usage: %s <fleet-dir> <fleet-name> <device-id> <device-key> <storage-dir> "
            "[port] [seconds]\n",
            argv[0]);
    return 2;
  }
  char rootKey[1024], password[1024];
  snprintf(rootKey, sizeof rootKey, "%s/keys/root.pub", argv[1]);
  snprintf(password, sizeof password, "%s/devices/%s.mqtt-password", argv[1], argv[3]);

  edgefl_device_config config;
  edgefl_device_config_init(&config);
  config.fleet = argv[2];
  config.device_id = argv[3];
  config.device_key_file = argv[4];
  config.storage_dir = argv[5];
  config.root_public_key_file = rootKey;
  config.broker_password_file = password;
  config.broker_port = argc > 6 ? atoi(argv[6]) : 1883;
  config.log = logLine;
  const int seconds = argc > 7 ? atoi(argv[7]) : 30;

  edgefl_device* device = NULL;
  edgefl_status st = edgefl_device_open(&config, &device);
  if (st != EDGEFL_STATUS_OK) {
    fprintf(stderr, "open: %s: %s\n", edgefl_status_str(st), edgefl_last_error());
    return 1;
  }

  edgefl_device_status status;
  memset(&status, 0, sizeof status);
  status.struct_size = sizeof status;
  for (int waited = 0; waited < seconds * 10; ++waited) {
    if (edgefl_device_get_status(device, &status) == EDGEFL_STATUS_OK && status.model_loaded) break;
    sleepMillis(100);
  }
  if (!status.model_loaded) {
    fprintf(stderr, "no deployment arrived within %d s\n", seconds);
    edgefl_device_close(device);
    return 1;
  }
  printf("model version %llu (%s), %u inputs, %u outputs\n",
         (unsigned long long)status.active_version, status.active_channel, status.input_count,
         status.output_count);

  float* x = calloc(status.input_count, sizeof *x);
  float* y = calloc(status.output_count, sizeof *y);
  if (x == NULL || y == NULL) return 1;
  unsigned seed = 1;
  for (int i = 0; i < 200; ++i) {
    for (uint32_t f = 0; f < status.input_count; ++f) x[f] = (float)(rand_r(&seed) % 100) / 100.0f;
    st = edgefl_device_score(device, x, status.input_count, y, status.output_count);
    if (st != EDGEFL_STATUS_OK) {
      fprintf(stderr, "score: %s: %s\n", edgefl_status_str(st), edgefl_last_error());
      continue;
    }
    /* Pretend the application learned the true class later. */
    st = edgefl_device_observe(device, x, status.input_count,
                               (int32_t)(rand_r(&seed) % status.output_count));
    if (st != EDGEFL_STATUS_OK) {
      fprintf(stderr, "observe: %s: %s\n", edgefl_status_str(st), edgefl_last_error());
    }
  }
  edgefl_device_get_status(device, &status);
  printf("scored %llu, observed %llu, stored %llu, pending updates %u\n",
         (unsigned long long)status.scored, (unsigned long long)status.observed,
         (unsigned long long)status.samples_stored, status.pending_updates);
  free(x);
  free(y);
  edgefl_device_close(device);
  return 0;
}
