// Signing and verification of envelopes by payload size, through the
// project's own path (seal; parseEnvelope + verifyEnvelope; verifyPayload),
// beside raw libsodium in the same binary: Ed25519 sign and verify of a
// 32-byte message and BLAKE2b throughput over the same sizes.
//
//   bench_crypto --benchmark_min_time=0.2
//
// The bound for signing or verifying n bytes is the Ed25519 operation on a
// 32-byte digest plus hashing n bytes. The project benchmarks time that bound
// inside their own iterations, between the measured calls, so the counter
// bound_ratio = time(project path) / time(raw Ed25519 on 32 bytes + raw
// BLAKE2b of the payload) compares runs made under the same machine
// conditions. Budget: verifying a 400 KB update <= 1.1 x its bound.

#include <benchmark/benchmark.h>
#include <sodium.h>

#include <cstdint>
#include <random>
#include <vector>

#include "bound.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/signing.hpp"
#include "random_data.hpp"

namespace edgefl {
namespace {

// 1 KB (telemetry, acks), 30 KB (an int8 mlp update), 400 KB (a float32 mlp
// update), 4 MB (a ~1M-parameter model).
void payloadSizes(benchmark::internal::Benchmark* b) {
  b->ArgName("bytes");
  for (std::int64_t size : {1 << 10, 30 << 10, 400 << 10, 4 << 20}) b->Arg(size);
}

Bytes randomBytes(std::size_t n) {
  return bench::randomBytes(n, 3);
}

const KeyPair& deviceKey() {
  static const KeyPair key = [] {
    std::array<std::uint8_t, kSeedBytes> seed{};
    seed.fill(7);
    return KeyPair::fromSeed(seed);
  }();
  return key;
}

void setBytes(benchmark::State& state, std::size_t n) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n));
}

// Raw libsodium: the pieces of the bound, measured alone.

void BM_RawSign32(benchmark::State& state) {
  std::array<std::uint8_t, crypto_sign_SECRETKEYBYTES> secret{};
  std::array<std::uint8_t, crypto_sign_PUBLICKEYBYTES> pub{};
  crypto_sign_keypair(pub.data(), secret.data());
  const Bytes message = randomBytes(32);
  Signature sig{};
  for (auto _ : state) {
    crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret.data());
    benchmark::DoNotOptimize(sig.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RawSign32);

void BM_RawVerify32(benchmark::State& state) {
  const Bytes message = randomBytes(32);
  const Signature sig = deviceKey().sign(message);
  const PublicKey& key = deviceKey().publicKey();
  for (auto _ : state) {
    int rc = crypto_sign_verify_detached(sig.data(), message.data(), message.size(), key.data());
    benchmark::DoNotOptimize(rc);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RawVerify32);

void BM_RawBlake2b(benchmark::State& state) {
  const Bytes payload = randomBytes(static_cast<std::size_t>(state.range(0)));
  Digest digest{};
  for (auto _ : state) {
    crypto_generichash(digest.data(), digest.size(), payload.data(), payload.size(), nullptr, 0);
    benchmark::DoNotOptimize(digest.data());
  }
  setBytes(state, payload.size());
}
BENCHMARK(BM_RawBlake2b)->Apply(payloadSizes);

// The project's path.

// A device sealing an update: digest, sign, and the envelope built as bytes.
void BM_Seal(benchmark::State& state) {
  const Bytes payload = randomBytes(static_cast<std::size_t>(state.range(0)));
  const Bytes message = randomBytes(32);
  std::array<std::uint8_t, crypto_sign_SECRETKEYBYTES> secret{};
  std::array<std::uint8_t, crypto_sign_PUBLICKEYBYTES> pub{};
  crypto_sign_keypair(pub.data(), secret.data());
  Signature sig{};
  Digest digest{};
  bench::againstBound(
      state, "bound_ratio",
      [&] {
        Bytes envelope = seal(Kind::UPDATE, payload, deviceKey());
        benchmark::DoNotOptimize(envelope.data());
      },
      [&] {
        crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret.data());
        crypto_generichash(digest.data(), digest.size(), payload.data(), payload.size(), nullptr,
                           0);
        benchmark::DoNotOptimize(sig.data());
        benchmark::DoNotOptimize(digest.data());
      });
  setBytes(state, payload.size());
}
BENCHMARK(BM_Seal)->Apply(payloadSizes)->UseManualTime();

// The raw verification bound for a payload: Ed25519 on 32 bytes + BLAKE2b.
struct VerifyBound {
  const Bytes& payload;
  Bytes message = randomBytes(32);
  Signature sig = deviceKey().sign(message);
  Digest digest{};

  void operator()() {
    int rc = crypto_sign_verify_detached(sig.data(), message.data(), message.size(),
                                         deviceKey().publicKey().data());
    crypto_generichash(digest.data(), digest.size(), payload.data(), payload.size(), nullptr, 0);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(digest.data());
  }
};

// What a receiver does with envelope bytes: framing checks and the walk
// (parseEnvelope), then the keyring lookup, role check and signature
// (verifyEnvelope).
void BM_VerifyEnvelope(benchmark::State& state) {
  const Bytes payload = randomBytes(static_cast<std::size_t>(state.range(0)));
  const Bytes envelope = seal(Kind::UPDATE, payload, deviceKey());
  Keyring keyring;
  keyring.add(deviceKey().publicKey(), Role::DEVICE, "device-1");
  const VerifyOptions options;
  VerifyBound bound{payload};
  bool failed = false;
  bench::againstBound(
      state, "bound_ratio",
      [&] {
        auto parsed = parseEnvelope(envelope, options.limits);
        auto signer = parsed.ok() ? verifyEnvelope(parsed->root(), Kind::UPDATE, keyring, options)
                                  : Result<Signer>(parsed.error());
        failed = failed || !signer.ok();
        benchmark::DoNotOptimize(signer);
      },
      bound);
  if (failed) state.SkipWithError("envelope does not verify");
  setBytes(state, payload.size());
}
BENCHMARK(BM_VerifyEnvelope)->Apply(payloadSizes)->UseManualTime();

// The signature check alone: digest of context and payload, then Ed25519.
void BM_VerifyPayload(benchmark::State& state) {
  const Bytes payload = randomBytes(static_cast<std::size_t>(state.range(0)));
  const Signature sig = signPayload(deviceKey(), Kind::UPDATE, payload);
  VerifyBound bound{payload};
  bool failed = false;
  bench::againstBound(
      state, "bound_ratio",
      [&] {
        bool ok = verifyPayload(deviceKey().publicKey(), Kind::UPDATE, payload, sig);
        failed = failed || !ok;
      },
      bound);
  if (failed) state.SkipWithError("payload does not verify");
  setBytes(state, payload.size());
}
BENCHMARK(BM_VerifyPayload)->Apply(payloadSizes)->UseManualTime();

}  // namespace
}  // namespace edgefl

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
