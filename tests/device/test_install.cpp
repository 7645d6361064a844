// The installed package, as a consumer sees it: `cmake --install` of this
// build into a fresh prefix, then a C++ program built with
// find_package(edgefl) and a C program built with pkg-config, both against
// the installed files only, both run on a device storage prepared here.

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "device/device_fixture.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

// The build tree this test binary lives in (it holds CMakeCache.txt).
fs::path buildDirectory() {
  fs::path dir = fs::read_symlink("/proc/self/exe").parent_path();
  while (!dir.empty() && dir != dir.root_path()) {
    if (fs::exists(dir / "CMakeCache.txt")) return dir;
    dir = dir.parent_path();
  }
  return {};
}

int run(const std::string& command, std::string* output) {
  std::string cmd = command + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  std::string out;
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = ::pclose(pipe);
  if (output != nullptr) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void writeFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

constexpr const char* kConsumerCMake = R"(cmake_minimum_required(VERSION 3.20)
project(consumer LANGUAGES CXX)
find_package(edgefl 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE edgefl::device)
)";

// Opens the prepared storage offline and scores one sample.
constexpr const char* kConsumerCpp = R"(#include <edgefl/device/device.hpp>
#include <cstdio>
int main(int argc, char** argv) {
  if (argc != 5) return 2;
  edgefl::DeviceConfig config;
  config.deviceId = "dev-1";
  config.fleet = "demo";
  config.storageDir = argv[1];
  config.deviceKeyFile = argv[2];
  config.rootPublicKeyFile = argv[3];
  config.transport.enabled = false;
  auto device = edgefl::Device::open(config);
  if (!device.ok()) {
    std::fprintf(stderr, "open: %s\n", device.error().toString().c_str());
    return 3;
  }
  std::vector<float> x(device.value()->inputCount(), 0.5f), y(device.value()->outputCount());
  edgefl::DeviceError e = device.value()->score(x, y);
  if (!e.ok()) {
    std::fprintf(stderr, "score: %s\n", e.toString().c_str());
    return 4;
  }
  const edgefl::DeviceStatus s = device.value()->status();
  std::printf("version %llu digest %s outputs %zu runtime %u\n",
              static_cast<unsigned long long>(s.activeVersion), s.activeDigest.c_str(), y.size(),
              edgefl::kRuntimeVersion);
  return s.activeDigest == argv[4] ? 0 : 5;
}
)";

constexpr const char* kConsumerC = R"(#include <edgefl/device.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char** argv) {
  if (argc != 4) return 2;
  edgefl_device_config config;
  edgefl_device_config_init(&config);
  config.device_id = "dev-1";
  config.fleet = "demo";
  config.storage_dir = argv[1];
  config.device_key_file = argv[2];
  config.root_public_key_file = argv[3];
  config.mqtt_enabled = 0;
  edgefl_device* device = NULL;
  edgefl_status st = edgefl_device_open(&config, &device);
  if (st != EDGEFL_STATUS_OK) {
    fprintf(stderr, "open: %s: %s\n", edgefl_status_str(st), edgefl_last_error());
    return 3;
  }
  edgefl_device_status status;
  memset(&status, 0, sizeof status);
  status.struct_size = sizeof status;
  if (edgefl_device_get_status(device, &status) != EDGEFL_STATUS_OK) return 4;
  float x[64] = {0}, y[16] = {0};
  st = edgefl_device_score(device, x, status.input_count, y, status.output_count);
  printf("%s version %llu model_loaded %d\n", edgefl_status_str(st),
         (unsigned long long)status.active_version, status.model_loaded);
  edgefl_device_close(device);
  return st == EDGEFL_STATUS_OK ? 0 : 5;
}
)";

TEST(Install, ConsumersBuildAgainstTheInstalledPackage) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer build of the library needs its consumers linked against the
  // same runtime; the package that ships is built without one.
  GTEST_SKIP() << "installed package test runs in non-sanitizer builds";
#endif
  const fs::path build = buildDirectory();
  ASSERT_FALSE(build.empty());
  test::TempDir tmp("edgefl-install");
  const fs::path prefix = tmp.path() / "prefix";
  std::string out;
  ASSERT_EQ(run("cmake --install " + build.string() + " --prefix " + prefix.string() +
                    " --component device",
                &out),
            0)
      << out;

  // Only the device runtime: no edgefl_shared, Cap'n Proto or sodium headers.
  EXPECT_TRUE(fs::exists(prefix / "include/edgefl/device.h"));
  EXPECT_TRUE(fs::exists(prefix / "include/edgefl/device/device.hpp"));
  EXPECT_TRUE(fs::exists(prefix / "include/edgefl/device/version.h"));
  EXPECT_FALSE(fs::exists(prefix / "include/edgefl/shared"));
  EXPECT_FALSE(fs::exists(prefix / "include/edgefl/device/device_core.hpp"));
  fs::path lib;
  for (const auto& entry : fs::recursive_directory_iterator(prefix)) {
    if (entry.path().filename() == "libedgefl_device.so") lib = entry.path().parent_path();
  }
  ASSERT_FALSE(lib.empty());
  EXPECT_TRUE(fs::exists(lib / "cmake/edgefl/edgefl-config.cmake"));
  EXPECT_TRUE(fs::exists(lib / "pkgconfig/edgefl-device.pc"));

  // A device storage with an installed model, made by this (in-tree) build.
  test::TestFleet fleet;
  KeyPair key = KeyPair::generate();
  const fs::path keyFile = test::saveDeviceKey(key, tmp.path(), "dev-1");
  const fs::path rootPub = tmp.path() / "root.pub";
  fleet.writeRootPublicKey(rootPub);
  const Model model = test::smallModel("mlp:8-16-3", 1, 7);
  DeviceConfig config = test::offlineConfig(tmp.path(), "dev-1", keyFile, rootPub);
  {
    auto device = Device::open(config);
    ASSERT_TRUE(device.ok()) << device.error().toString();
    ASSERT_TRUE(
        device.value()->handleMessage(deployTopic("demo", "stable"), fleet.deployment(model)).ok());
  }
  const std::string args =
      config.storageDir.string() + " " + keyFile.string() + " " + rootPub.string();

  // find_package(edgefl) -> edgefl::device.
  const fs::path consumer = tmp.path() / "consumer";
  writeFile(consumer / "CMakeLists.txt", kConsumerCMake);
  writeFile(consumer / "main.cpp", kConsumerCpp);
  ASSERT_EQ(run("cmake -S " + consumer.string() + " -B " + (consumer / "build").string() +
                    " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" + prefix.string(),
                &out),
            0)
      << out;
  ASSERT_EQ(run("cmake --build " + (consumer / "build").string(), &out), 0) << out;
  ASSERT_EQ(
      run((consumer / "build/consumer").string() + " " + args + " " + toHex(parameterDigest(model)),
          &out),
      0)
      << out;
  EXPECT_NE(out.find("version 7"), std::string::npos) << out;

  // pkg-config edgefl-device, from C.
  writeFile(tmp.path() / "c/main.c", kConsumerC);
  const std::string pkg = "PKG_CONFIG_PATH=" + (lib / "pkgconfig").string() + " pkg-config ";
  ASSERT_EQ(run(pkg + "--modversion edgefl-device", &out), 0) << out;
  EXPECT_EQ(out, std::string(EDGEFL_DEVICE_VERSION_STRING) + "\n");
  ASSERT_EQ(run("cc -std=c11 -Wall -Werror -o " + (tmp.path() / "c/consumer").string() + " " +
                    (tmp.path() / "c/main.c").string() + " $(" + pkg +
                    "--cflags --libs edgefl-device) -Wl,-rpath," + lib.string(),
                &out),
            0)
      << out;
  ASSERT_EQ(run((tmp.path() / "c/consumer").string() + " " + args, &out), 0) << out;
  EXPECT_NE(out.find("Ok version 7 model_loaded 1"), std::string::npos) << out;
}

}  // namespace
}  // namespace edgefl
