#include "edgefl/tools/fleet.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

// Runs `argv` (looked up in PATH, no shell) with its output appended to
// `log`; returns the exit status, or -1 when it cannot start.
int runLogged(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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

Result<BrokerTls> generateBrokerTls(const fs::path& fleetDir, const std::string& fleet, int days) {
  if (days < 1) {
    return makeError(Code::InvalidArgument, "TLS validity of " + std::to_string(days) + " days");
  }
  const fs::path dir = fs::absolute(fleetDir) / "broker" / "tls";
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    return makeError(Code::AlreadyExists, dir.string() + " exists and is not empty");
  }
  fs::create_directories(dir, ec);
  if (ec) return makeError(Code::IoError, "cannot create " + dir.string() + ": " + ec.message());
  BrokerTls tls{dir / "ca.crt", dir / "ca.key", dir / "server.crt", dir / "server.key"};
  const fs::path csr = dir / "server.csr";
  const fs::path extensions = dir / "server.ext";
  const fs::path log = dir / "openssl.log";
  // The name clients check: they connect to the loopback address or
  // localhost, whichever they were given.
  EDGEFL_TRY(writeFile(extensions,
                       "basicConstraints = critical, CA:FALSE\n"
                       "keyUsage = critical, digitalSignature\n"
                       "extendedKeyUsage = serverAuth\n"
                       "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n",
                       0644));
  const std::string validity = std::to_string(days);
  const std::vector<std::string> ec256 = {"-newkey", "ec", "-pkeyopt",
                                          "ec_paramgen_curve:prime256v1", "-nodes"};
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> steps = {
      {"CA certificate",
       with(with({"openssl", "req", "-x509"}, ec256),
            {"-keyout", tls.caKey.string(), "-out", tls.caCert.string(), "-days", validity, "-subj",
             "/CN=edgefl " + fleet + " broker CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"})},
      {"server key and request",
       with(with({"openssl", "req"}, ec256),
            {"-keyout", tls.serverKey.string(), "-out", csr.string(), "-subj", "/CN=localhost"})},
      {"server certificate",
       {"openssl", "x509", "-req", "-in", csr.string(), "-CA", tls.caCert.string(), "-CAkey",
        tls.caKey.string(), "-set_serial", "0x" + randomSecret().substr(0, 30), "-days", validity,
        "-extfile", extensions.string(), "-out", tls.serverCert.string()}},
  };
  for (const auto& [what, argv] : steps) {
    const int status = runLogged(argv, log);
    if (status != 0) {
      return makeError(Code::IoError, "openssl failed on the " + what + " (" +
                                          (status < 0 ? std::string("cannot run openssl")
                                                      : "exit status " + std::to_string(status)) +
                                          "); see " + log.string());
    }
  }
  for (const fs::path& key : {tls.caKey, tls.serverKey}) {
    fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write, ec);
    if (ec)
      return makeError(Code::IoError, "cannot restrict " + key.string() + ": " + ec.message());
  }
  for (const fs::path& scratch : {csr, extensions, log}) fs::remove(scratch, ec);
  return tls;
}

std::string renderMosquittoConf(const fs::path& fleetDir, int port, int tlsPort) {
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
  if (tlsPort > 0) {
    const fs::path tls = broker / "tls";
    out << "\n# TLS listener (fleet init --tls). Users, passwords and ACLs are the same\n"
           "# as on the plain listener (per_listener_settings false). Clients verify\n"
           "# the server against tls/ca.crt (libmosquitto: mosquitto_tls_set with that\n"
           "# cafile; mosquitto_pub --cafile) and connect to localhost or 127.0.0.1,\n"
           "# the names in server.crt. No client certificates: devices authenticate\n"
           "# with their password, inside TLS. Loopback only, like the plain listener:\n"
           "# to serve devices on the network, bind an outside address here and add\n"
           "# it to the server certificate. Keep tls/ca.key offline.\n"
           "listener "
        << tlsPort
        << " 127.0.0.1\n"
           "cafile "
        << (tls / "ca.crt").string() << "\ncertfile " << (tls / "server.crt").string()
        << "\nkeyfile " << (tls / "server.key").string()
        << "\n"
           "require_certificate false\n"
           "tls_version tlsv1.2\n";
  }
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

  const int tlsPort =
      !options.tls ? 0 : (options.tlsPort != 0 ? options.tlsPort : options.brokerPort + 1);
  if (options.tls && (tlsPort == options.brokerPort || tlsPort < 1 || tlsPort > 65535)) {
    return makeError(Code::InvalidArgument, "TLS port " + std::to_string(tlsPort) +
                                                " with broker port " +
                                                std::to_string(options.brokerPort));
  }

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
  if (options.tls) EDGEFL_TRY(generateBrokerTls(dir, options.name, options.tlsDays));

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
                       renderMosquittoConf(dir, options.brokerPort, tlsPort), 0644));

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
