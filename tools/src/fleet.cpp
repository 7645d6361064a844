#include "edgefl/tools/fleet.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/model_setup.hpp"

namespace edgefl::tools {
namespace fs = std::filesystem;
namespace {

Status writeFile(const fs::path& path, std::string_view text, mode_t mode) {
  fs::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return makeError(Code::IoError, "cannot create " + tmp.string() + ": " + std::strerror(errno));
  ::fchmod(fd, mode);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return makeError(Code::IoError, "cannot write " + tmp.string() + ": " + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return makeError(Code::IoError, "cannot sync " + tmp.string());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return makeError(Code::IoError, "cannot rename " + tmp.string() + ": " + std::strerror(errno));
  }
  return {};
}

std::string randomSecret() {
  std::uint8_t raw[24];
  randombytes_buf(raw, sizeof raw);
  std::string out = toHex(ByteView(raw, sizeof raw));
  sodium_memzero(raw, sizeof raw);
  return out;
}

std::string base64(ByteView bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

// PBKDF2-HMAC-SHA512 with a 64-byte output (one block).
void pbkdf2Sha512(const std::string& password, ByteView salt, int iterations,
                  std::uint8_t out[64]) {
  auto hmac = [&](ByteView a, ByteView b, std::uint8_t mac[64]) {
    crypto_auth_hmacsha512_state st;
    crypto_auth_hmacsha512_init(&st, reinterpret_cast<const std::uint8_t*>(password.data()),
                                password.size());
    crypto_auth_hmacsha512_update(&st, a.data(), a.size());
    crypto_auth_hmacsha512_update(&st, b.data(), b.size());
    crypto_auth_hmacsha512_final(&st, mac);
  };
  const std::uint8_t blockIndex[4] = {0, 0, 0, 1};
  std::uint8_t u[64];
  hmac(salt, ByteView(blockIndex, 4), u);
  std::memcpy(out, u, 64);
  for (int i = 1; i < iterations; ++i) {
    hmac(ByteView(u, 64), {}, u);
    for (int j = 0; j < 64; ++j) out[j] ^= u[j];
  }
}

Result<std::vector<std::string>> readLines(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  if (!in) {
    if (!fs::exists(path)) return lines;
    return makeError(Code::IoError, "cannot read " + path.string());
  }
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string currentUser() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr && pw->pw_name != nullptr ? pw->pw_name : "mosquitto";
}

}  // namespace

std::string mosquittoPasswordLine(const std::string& user, const std::string& password,
                                  int iterations) {
  if (sodium_init() < 0) std::abort();
  std::uint8_t salt[12];
  randombytes_buf(salt, sizeof salt);
  std::uint8_t hash[64];
  pbkdf2Sha512(password, ByteView(salt, sizeof salt), iterations, hash);
  return user + ":$7$" + std::to_string(iterations) + "$" + base64(ByteView(salt, sizeof salt)) +
         "$" + base64(ByteView(hash, sizeof hash));
}

Status setBrokerUser(const fs::path& passwdFile, const std::string& user,
                     const std::string& password) {
  const std::pair<std::string, std::string> one{user, password};
  return setBrokerUsers(passwdFile, std::span(&one, 1));
}

Status setBrokerUsers(const fs::path& passwdFile,
                      std::span<const std::pair<std::string, std::string>> users) {
  auto lines = readLines(passwdFile);
  if (!lines.ok()) return lines.error();
  std::set<std::string> replaced;
  for (const auto& [user, password] : users) replaced.insert(user);
  std::string text;
  for (const auto& line : *lines) {
    const auto colon = line.find(':');
    if (line.empty() || (colon != std::string::npos && replaced.count(line.substr(0, colon)) > 0)) {
      continue;
    }
    text += line + "\n";
  }
  for (const auto& [user, password] : users) text += mosquittoPasswordLine(user, password) + "\n";
  return writeFile(passwdFile, text, 0600);
}

Status removeBrokerUser(const fs::path& passwdFile, const std::string& user) {
  auto lines = readLines(passwdFile);
  if (!lines.ok()) return lines.error();
  std::string text;
  bool found = false;
  const std::string prefix = user + ":";
  for (const auto& line : *lines) {
    if (line.rfind(prefix, 0) == 0) {
      found = true;
    } else if (!line.empty()) {
      text += line + "\n";
    }
  }
  if (!found) return makeError(Code::NotFound, "no broker user '" + user + "'");
  return writeFile(passwdFile, text, 0600);
}

bool reloadBroker(const fs::path& fleetDir) {
  std::ifstream in(fleetDir / "broker" / "mosquitto.pid");
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return false;
  return ::kill(static_cast<pid_t>(pid), SIGHUP) == 0;
}

std::string renderMosquittoConf(const fs::path& fleetDir, int port) {
  const fs::path broker = fs::absolute(fleetDir) / "broker";
  std::ostringstream out;
  out << "# mosquitto configuration generated by `edgefl fleet init`.\n"
         "# Loopback only, no anonymous clients, per-device ACLs. Paths are absolute:\n"
         "# regenerate it if the fleet directory moves.\n"
         "# Run as the user who owns the fleet directory (mosquitto started as root\n"
         "# would otherwise switch to 'mosquitto', which cannot read these files).\n"
         "user "
      << currentUser()
      << "\n"
         "per_listener_settings false\n"
         "listener "
      << port
      << " 127.0.0.1\n"
         "allow_anonymous false\n"
         "password_file "
      << (broker / "passwd").string() << "\nacl_file " << (broker / "acl").string()
      << "\n"
         "# A client id is its user name, so ACL patterns by user (%u) bind ids too.\n"
         "use_username_as_clientid true\n"
         "# Same limit as the coordinator's broker.max_message_bytes.\n"
         "max_packet_size 16777216\n"
         "# Updates arrive in bursts: let the coordinator's session queue hold a round.\n"
         "max_inflight_messages 100\n"
         "max_queued_messages 10000\n"
         "persistence true\n"
         "persistence_location "
      << (broker / "data").string()
      << "/\n"
         "autosave_interval 30\n"
         "pid_file "
      << (broker / "mosquitto.pid").string()
      << "\n"
         "log_dest file "
      << (broker / "mosquitto.log").string()
      << "\n"
         "log_type error\nlog_type warning\nlog_type notice\n"
         "connection_messages true\n";
  return out.str();
}

std::string renderAcl(const std::string& fleet) {
  const std::string base = "edgefl/" + fleet;
  std::ostringstream out;
  out << "# mosquitto ACL generated by `edgefl fleet init` for fleet '" << fleet
      << "'.\n"
         "# The coordinator reads and writes everything of its fleet.\n"
         "user "
      << kCoordinatorUser << "\ntopic readwrite " << base
      << "/#\n\n"
         "# The observer (operators' dashboards, `mosquitto_sub`) only reads.\n"
         "user "
      << kObserverUser << "\ntopic read " << base
      << "/#\n\n"
         "# Every device (user name = client id = device id) may publish only to its own\n"
         "# topics and read only the deploy and round topics and its own acks.\n"
         "pattern write "
      << base << "/device/%u/update\npattern write " << base
      << "/device/%u/telemetry\npattern write " << base << "/device/%u/state\npattern read " << base
      << "/device/%u/ack\npattern read " << base << "/deploy/+\npattern read " << base
      << "/round\n";
  return out.str();
}

Status initFleet(const FleetInitOptions& options) {
  EDGEFL_TRY(validateName("fleet name", options.name));
  if (options.brokerPort < 1 || options.brokerPort > 65535) {
    return makeError(Code::InvalidArgument,
                     "broker port " + std::to_string(options.brokerPort) + " is not in 1-65535");
  }
  if (options.delegationDays < 1) {
    return makeError(Code::InvalidArgument, "delegation validity must be at least one day");
  }
  // The model first: a bad --arch must not leave a half-made fleet behind.
  // Reference statistics come from training data, never the holdout.
  std::optional<Dataset> train;
  if (options.holdout.rfind("fashion-mnist", 0) == 0) {
    IdxOptions io;
    io.firstN = 10000;
    auto loaded = loadFashionMnist("train", io);
    if (!loaded.ok()) return loaded.error();
    train = std::move(loaded.value());
  }
  auto model =
      createModelFor(options.arch, options.holdout, options.seed, train ? &*train : nullptr);
  if (!model.ok()) return model.error();
  model->meta().fleet = options.name;
  model->meta().description =
      "initial " + options.arch + " model (seed " + std::to_string(options.seed) + ")";

  std::error_code ec;
  const fs::path dir = fs::absolute(options.directory);
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    return makeError(Code::AlreadyExists, dir.string() + " exists and is not empty");
  }
  for (const char* sub : {"keys", "broker/data", "devices/revoked", "models"}) {
    fs::create_directories(dir / sub, ec);
    if (ec)
      return makeError(Code::IoError,
                       "cannot create " + (dir / sub).string() + ": " + ec.message());
  }
  fs::permissions(dir / "keys", fs::perms::owner_all, ec);

  const std::int64_t now =
      options.now != 0 ? options.now : static_cast<std::int64_t>(std::time(nullptr));
  KeyPair root = KeyPair::generate();
  EDGEFL_TRY(root.save(dir / "keys" / "root"));
  KeyPair coordinator = KeyPair::generate();
  EDGEFL_TRY(coordinator.save(dir / "keys" / "coordinator"));

  DelegationSpec spec;
  spec.fleet = options.name;
  spec.subjectKey = coordinator.publicKey();
  spec.role = Role::COORDINATOR;
  spec.notBefore = now - 300;  // tolerate clocks a few minutes behind
  spec.notAfter = now + static_cast<std::int64_t>(options.delegationDays) * 86400;
  spec.issuedAt = now;
  spec.serial = 1;
  spec.comment = "coordinator key of fleet " + options.name;
  Bytes delegation = issueDelegation(root, spec);
  EDGEFL_TRY(writeFile(
      dir / "keys" / "coordinator.delegation",
      std::string_view(reinterpret_cast<const char*>(delegation.data()), delegation.size()), 0644));

  const std::string password = randomSecret();
  EDGEFL_TRY(writeFile(dir / "keys" / "coordinator.mqtt-password", password + "\n", 0600));
  EDGEFL_TRY(setBrokerUser(dir / "broker" / "passwd", std::string(kCoordinatorUser), password));
  const std::string observerPassword = randomSecret();
  EDGEFL_TRY(writeFile(dir / "keys" / "observer.mqtt-password", observerPassword + "\n", 0600));
  EDGEFL_TRY(
      setBrokerUser(dir / "broker" / "passwd", std::string(kObserverUser), observerPassword));
  EDGEFL_TRY(writeFile(dir / "broker" / "acl", renderAcl(options.name), 0644));
  EDGEFL_TRY(writeFile(dir / "broker" / "mosquitto.conf",
                       renderMosquittoConf(dir, options.brokerPort), 0644));

  EDGEFL_TRY(saveModel(*model, dir / "models" / "initial.model"));

  server::CoordinatorConfig config;
  config.model.arch = options.arch;
  config.model.initial = "models/initial.model";
  config.validation.holdout = options.holdout;
  config.fleet.name = options.name;
  config.fleet.directory = dir.string();
  config.broker.port = options.brokerPort;
  EDGEFL_TRY(writeFile(dir / "coordinator.toml", server::renderCoordinatorConfig(config), 0644));
  return {};
}

Result<EnrolledDevice> enrollDevice(const fs::path& fleetDir, const std::string& id,
                                    const PublicKey& key) {
  const DeviceToEnroll one{id, key};
  auto enrolled = enrollDevices(fleetDir, std::span(&one, 1));
  if (!enrolled.ok()) return enrolled.error();
  return std::move(enrolled->front());
}

Result<std::vector<EnrolledDevice>> enrollDevices(const fs::path& fleetDir,
                                                  std::span<const DeviceToEnroll> devices) {
  const fs::path dir = fleetDir / "devices";
  if (!fs::is_directory(dir) || !fs::exists(fleetDir / "broker" / "passwd")) {
    return makeError(Code::NotFound, fleetDir.string() + " is not a fleet directory");
  }
  // Check everything before writing anything, so a bad entry leaves the
  // fleet as it was.
  std::set<std::string> ids;
  for (const auto& [id, key] : devices) {
    EDGEFL_TRY(validateName("device id", id));
    if (id == kCoordinatorUser || id == kObserverUser) {
      return makeError(Code::InvalidArgument, "device id '" + id + "' is reserved");
    }
    if (!ids.insert(id).second) {
      return makeError(Code::InvalidArgument, "device id '" + id + "' is listed twice");
    }
    const fs::path pub = dir / (id + ".pub");
    if (fs::exists(pub)) {
      auto existing = loadPublicKey(pub);
      if (!existing.ok()) return existing.error();
      if (*existing != key) {
        return makeError(Code::AlreadyExists, "device '" + id + "' is enrolled with another key (" +
                                                  toHex(keyIdOf(*existing)) + ")");
      }
    }
  }
  std::vector<EnrolledDevice> out;
  std::vector<std::pair<std::string, std::string>> users;
  for (const auto& [id, key] : devices) {
    EnrolledDevice& e = out.emplace_back();
    e.id = id;
    e.keyId = keyIdOf(key);
    e.passwordFile = dir / (id + ".mqtt-password");
    const fs::path pub = dir / (id + ".pub");
    if (fs::exists(pub) && fs::exists(e.passwordFile)) continue;  // already enrolled
    if (!fs::exists(pub)) EDGEFL_TRY(savePublicKey(pub, key));
    const std::string password = randomSecret();
    EDGEFL_TRY(writeFile(e.passwordFile, password + "\n", 0600));
    users.emplace_back(id, password);
  }
  if (!users.empty()) {
    EDGEFL_TRY(setBrokerUsers(fleetDir / "broker" / "passwd", users));
    reloadBroker(fleetDir);
  }
  return out;
}

Status revokeDevice(const fs::path& fleetDir, const std::string& id) {
  EDGEFL_TRY(validateName("device id", id));
  const fs::path pub = fleetDir / "devices" / (id + ".pub");
  if (!fs::exists(pub)) return makeError(Code::NotFound, "device '" + id + "' is not enrolled");
  std::error_code ec;
  fs::create_directories(fleetDir / "devices" / "revoked", ec);
  fs::rename(pub, fleetDir / "devices" / "revoked" / (id + ".pub"), ec);
  if (ec) return makeError(Code::IoError, "cannot move " + pub.string() + ": " + ec.message());
  fs::remove(fleetDir / "devices" / (id + ".mqtt-password"), ec);
  Status removed = removeBrokerUser(fleetDir / "broker" / "passwd", id);
  if (!removed.ok() && removed.code() != Code::NotFound) return removed;
  reloadBroker(fleetDir);
  return {};
}

}  // namespace edgefl::tools
