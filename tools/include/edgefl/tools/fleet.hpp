#pragma once
// Fleet directories: creation (`edgefl fleet init`), device enrollment and
// revocation, and the generated mosquitto configuration.
//
// Layout of a fleet directory:
//   coordinator.toml            every coordinator setting, commented
//   keys/root.{key,pub}         fleet root (move root.key offline after init)
//   keys/coordinator.{key,pub}  coordinator signing key
//   keys/coordinator.delegation root-signed KeyDelegation for it
//   keys/coordinator.mqtt-password, keys/observer.mqtt-password (read-only user)
//   broker/mosquitto.conf, passwd, acl, data/
//   broker/tls/ca.{crt,key}, server.{crt,key} (with --tls only)
//   devices/<id>.pub, devices/<id>.mqtt-password, devices/revoked/
//   models/initial.model        the fleet's version 1

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl::tools {

struct FleetInitOptions {
  std::filesystem::path directory;
  std::string name = "fleet";
  int brokerPort = 1883;
  int delegationDays = 365;
  // The fleet's initial model (models/initial.model) and the data the
  // coordinator validates candidates on. An image-sized input (784) is
  // treated as 28x28 Fashion-MNIST pixels.
  std::string arch = "mlp:784-128-10";
  std::string holdout = "fashion-mnist:test";
  std::uint64_t seed = 1;
  std::int64_t now = 0;  // Unix seconds; 0 = current time
  // A second, TLS listener on the broker (see generateBrokerTls), with the
  // same users, passwords and ACLs as the plain one. Off by default: the
  // plain listener is loopback only.
  bool tls = false;
  int tlsPort = 0;  // 0 = brokerPort + 1
  // Validity of the generated CA and server certificates. 825 days is the
  // longest server certificate lifetime that common TLS clients accept.
  int tlsDays = 825;
};

// Creates a ready fleet directory. Refuses a directory that exists and is
// not empty (AlreadyExists), so keys are never overwritten.
Status initFleet(const FleetInitOptions& options);

struct EnrolledDevice {
  std::string id;
  KeyId keyId{};
  std::filesystem::path passwordFile;  // the device's broker password
};

// Enrolls a device: its public key into devices/<id>.pub, a fresh broker
// password into broker/passwd (hashed) and devices/<id>.mqtt-password, then
// asks a running broker to reload (SIGHUP to broker/mosquitto.pid). Enrolling
// the same id with the same key again is a no-op; with another key it is
// AlreadyExists.
Result<EnrolledDevice> enrollDevice(const std::filesystem::path& fleetDir, const std::string& id,
                                    const PublicKey& key);

// Enrolls many devices with one rewrite of the password file and one broker
// reload (a simulated fleet enrolls thousands). Every entry is checked
// before anything is written; the result is in the order given.
struct DeviceToEnroll {
  std::string id;
  PublicKey key{};
};
Result<std::vector<EnrolledDevice>> enrollDevices(const std::filesystem::path& fleetDir,
                                                  std::span<const DeviceToEnroll> devices);

// Revokes a device: moves its key to devices/revoked/ and removes its broker
// user. NotFound if it is not enrolled.
Status revokeDevice(const std::filesystem::path& fleetDir, const std::string& id);

// One line of a mosquitto password file: "user:$7$<iterations>$<salt>$<hash>"
// (PBKDF2-HMAC-SHA512, the format mosquitto 2 reads).
std::string mosquittoPasswordLine(const std::string& user, const std::string& password,
                                  int iterations = 1000);

// Sets (adds or replaces) a user in a mosquitto password file, atomically.
Status setBrokerUser(const std::filesystem::path& passwdFile, const std::string& user,
                     const std::string& password);
// Sets many users with one rewrite (user -> password).
Status setBrokerUsers(const std::filesystem::path& passwdFile,
                      std::span<const std::pair<std::string, std::string>> users);
Status removeBrokerUser(const std::filesystem::path& passwdFile, const std::string& user);

// SIGHUP to the broker whose pid is in broker/mosquitto.pid, if it runs.
// Returns true when a signal was sent.
bool reloadBroker(const std::filesystem::path& fleetDir);

// TLS material of the broker's TLS listener, in <fleetDir>/broker/tls/.
struct BrokerTls {
  std::filesystem::path caCert;      // ca.crt: what clients trust (give it to devices)
  std::filesystem::path caKey;       // ca.key (0600): signs server certificates; keep offline
  std::filesystem::path serverCert;  // server.crt: CN and SAN localhost, 127.0.0.1, ::1
  std::filesystem::path serverKey;   // server.key (0600), read by mosquitto
};

// Generates a CA and a server certificate signed by it (ECDSA P-256, valid
// `days`) with the `openssl` command-line tool; `fleet` names the CA.
// Errors: InvalidArgument (days < 1), AlreadyExists (broker/tls/ has
// files), IoError (a directory or file cannot be written, openssl is
// missing or fails: the detail names the step and the log with its output,
// broker/tls/openssl.log).
Result<BrokerTls> generateBrokerTls(const std::filesystem::path& fleetDir, const std::string& fleet,
                                    int days);

// The broker configuration; `tlsPort` > 0 adds the TLS listener on that
// port, using the files of generateBrokerTls.
std::string renderMosquittoConf(const std::filesystem::path& fleetDir, int port, int tlsPort = 0);
std::string renderAcl(const std::string& fleet);

}  // namespace edgefl::tools
