#include "support/broker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "edgefl/shared/process.hpp"
#include "support/process.hpp"

namespace edgefl::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string readTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int runCli(const std::string& args, std::string* output) {
  std::string cmd = std::string(EDGEFL_CLI) + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  if (output != nullptr) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool portAccepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

Broker::Broker(fs::path fleetDir, int port) : fleetDir_(std::move(fleetDir)), port_(port) {
  start();
}

Broker::~Broker() {
  stop();
}

void Broker::start() {
  if (pid_ > 0) return;
  const fs::path conf = fleetDir_ / "broker" / "mosquitto.conf";
  // The broker runs as `edgefl fleet init` tells operators to run it: with
  // glibc keeping freed buffers (unless this process's environment already
  // sets GLIBC_TUNABLES, which it inherits).
  ChildEnvironment env({std::string("GLIBC_TUNABLES=") + kBrokerMallocTunables});
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    dieWithParent(parent);
    // Child: quiet stdio, then exec the real broker.
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execle(EDGEFL_MOSQUITTO, EDGEFL_MOSQUITTO, "-c", conf.c_str(), static_cast<char*>(nullptr),
             env.envp());
    ::_exit(127);
  }
  for (int i = 0; i < 500; ++i) {
    if (portAccepts(port_)) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("mosquitto exited at start; see " +
                               (fleetDir_ / "broker" / "mosquitto.log").string());
    }
    std::this_thread::sleep_for(10ms);
  }
  throw std::runtime_error("mosquitto did not listen on port " + std::to_string(port_));
}

void Broker::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 300; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void Broker::reload() {
  if (pid_ > 0) ::kill(pid_, SIGHUP);
  std::this_thread::sleep_for(200ms);
}

struct MqttClient::State {
  std::mutex mu;
  std::condition_variable cv;
  int connack = -2;
  std::map<int, int> subacks;  // mid -> granted qos
  std::map<int, int> pubacks;  // mid -> reason code
  PubackCount pubackCount;
  std::deque<Message> messages;
};

namespace {
std::once_flag libInit;
}

MqttClient::MqttClient(const std::string& clientId, const std::string& user,
                       const std::string& password)
    : state_(std::make_shared<State>()) {
  std::call_once(libInit, [] { mosquitto_lib_init(); });
  mosq_ = mosquitto_new(clientId.c_str(), true, state_.get());
  if (mosq_ == nullptr) throw std::runtime_error("mosquitto_new failed");
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_username_pw_set(mosq_, user.c_str(), password.empty() ? nullptr : password.c_str());
  mosquitto_connect_v5_callback_set(
      mosq_, [](mosquitto*, void* obj, int rc, int, const mosquitto_property*) {
        auto* s = static_cast<State*>(obj);
        std::lock_guard lock(s->mu);
        s->connack = rc;
        s->cv.notify_all();
      });
  mosquitto_subscribe_v5_callback_set(mosq_, [](mosquitto*, void* obj, int mid, int count,
                                                const int* granted, const mosquitto_property*) {
    auto* s = static_cast<State*>(obj);
    std::lock_guard lock(s->mu);
    s->subacks[mid] = count > 0 ? granted[0] : -1;
    s->cv.notify_all();
  });
  mosquitto_publish_v5_callback_set(
      mosq_, [](mosquitto*, void* obj, int mid, int reason, const mosquitto_property*) {
        auto* s = static_cast<State*>(obj);
        std::lock_guard lock(s->mu);
        s->pubacks[mid] = reason;
        ++(reason < 0x80 ? s->pubackCount.accepted : s->pubackCount.refused);
        s->cv.notify_all();
      });
  mosquitto_message_v5_callback_set(
      mosq_, [](mosquitto*, void* obj, const mosquitto_message* m, const mosquitto_property*) {
        auto* s = static_cast<State*>(obj);
        Message msg;
        msg.topic = m->topic;
        auto* p = static_cast<const std::uint8_t*>(m->payload);
        msg.payload.assign(p, p + m->payloadlen);
        msg.retained = m->retain;
        std::lock_guard lock(s->mu);
        s->messages.push_back(std::move(msg));
        s->cv.notify_all();
      });
}

MqttClient::~MqttClient() {
  disconnect();
  mosquitto_destroy(mosq_);
}

int MqttClient::connect(int port, std::chrono::milliseconds timeout) {
  if (mosquitto_connect(mosq_, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) return -1;
  mosquitto_loop_start(mosq_);
  std::unique_lock lock(state_->mu);
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->connack != -2; })) return -1;
  return state_->connack;
}

int MqttClient::subscribe(const std::string& topic, int qos, std::chrono::milliseconds timeout) {
  int mid = 0;
  if (mosquitto_subscribe(mosq_, &mid, topic.c_str(), qos) != MOSQ_ERR_SUCCESS) return -1;
  std::unique_lock lock(state_->mu);
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->subacks.count(mid) > 0; }))
    return -1;
  return state_->subacks[mid];
}

int MqttClient::publish(const std::string& topic, const std::vector<std::uint8_t>& payload, int qos,
                        bool retain, std::chrono::milliseconds timeout) {
  int mid = 0;
  int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), qos, retain);
  if (rc != MOSQ_ERR_SUCCESS) return -1;
  if (qos == 0) return 0;
  std::unique_lock lock(state_->mu);
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->pubacks.count(mid) > 0; }))
    return -1;
  return state_->pubacks[mid];
}

int MqttClient::publishNoWait(const std::string& topic, const std::vector<std::uint8_t>& payload) {
  int mid = 0;
  const int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                   payload.data(), 1, false);
  return rc == MOSQ_ERR_SUCCESS ? mid : -1;
}

MqttClient::PubackCount MqttClient::pubacks() const {
  std::lock_guard lock(state_->mu);
  return state_->pubackCount;
}

void MqttClient::discardMessages() {
  std::lock_guard lock(state_->mu);
  state_->messages.clear();
}

std::optional<Message> MqttClient::waitMessage(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  if (!state_->cv.wait_for(lock, timeout, [&] { return !state_->messages.empty(); })) {
    return std::nullopt;
  }
  Message m = std::move(state_->messages.front());
  state_->messages.pop_front();
  return m;
}

void MqttClient::disconnect() {
  if (mosq_ == nullptr) return;
  // Joined, not cancelled: a cancel can land while the network thread holds
  // a libmosquitto mutex. The thread leaves its loop once the DISCONNECT is
  // written, or after at most the default 1 s reconnect delay.
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, false);
}

std::string readPassword(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace edgefl::test
