#ifndef EDGEFL_DEVICE_EXPORT_H
#define EDGEFL_DEVICE_EXPORT_H
/* Symbol visibility of the device runtime. The shared library is built with
 * -fvisibility=hidden, so only declarations marked EDGEFL_DEVICE_API (the C
 * API, edgefl::Device, edgefl::MqttLoop, edgefl::ModelCache) are exported;
 * everything it links statically (edgefl_shared, the core) stays private. */

#if defined(EDGEFL_DEVICE_BUILD) && (defined(__GNUC__) || defined(__clang__))
#define EDGEFL_DEVICE_API __attribute__((visibility("default")))
#else
#define EDGEFL_DEVICE_API
#endif

/* For the private parts of exported classes (their Impl): nested classes
 * inherit the visibility of the class around them. */
#if defined(__GNUC__) || defined(__clang__)
#define EDGEFL_DEVICE_HIDDEN __attribute__((visibility("hidden")))
#else
#define EDGEFL_DEVICE_HIDDEN
#endif

#endif /* EDGEFL_DEVICE_EXPORT_H */
