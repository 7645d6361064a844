#pragma once
// Splitting a labelled dataset among federated clients, IID or with the
// label skew used in the non-IID benchmarks (Li et al., "Federated Learning
// on Non-IID Data Silos", NIID-Bench; McMahan et al., FedAvg).
//
// Partitions are deterministic for a given seed: all randomness comes from
// one std::mt19937_64 seeded with it, shuffles and integer draws are our own
// code, and Dirichlet draws use std::gamma_distribution, whose output for a
// given engine is fixed by the standard library in use (libstdc++ here), so
// the same seed gives the same partition on every build with that library.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "edgefl/shared/result.hpp"

namespace edgefl {

// Sample indices per client: result[c] holds client c's indices into the
// label array, ascending.
using Partition = std::vector<std::vector<std::uint32_t>>;

// Splits samples 0..labels.size()-1 among `clients`; every sample goes to
// exactly one client. `spec` is one of:
//   iid          uniform random split; sizes differ by at most 1.
//   dirichlet:A  for each class, proportions over clients drawn from
//                Dirichlet(A) (A > 0; smaller = more skew), as in
//                NIID-Bench: a client already holding N/clients samples
//                gets no more, and the whole draw is repeated until every
//                client has at least min(10, N/clients) samples, up to 1000
//                draws.
//   labels:K     each client holds K distinct classes (1 <= K <= classCount);
//                each class's samples are split evenly among the clients
//                holding it (NIID-Bench "#C=K"). Client c's first class is
//                c mod classCount; the others are drawn at random, preferring
//                classes no client holds yet, so every class has a holder.
//                A client holds samples of all K classes when each class has
//                at least as many samples as holders.
//   shards:S     samples sorted by label (shuffled within a label), cut into
//                clients*S contiguous shards of equal size (+-1), S random
//                shards per client (McMahan et al.). A client sees at most S
//                classes when class sizes are multiples of the shard size,
//                else a shard may straddle two classes; sizes differ by at
//                most S.
// InvalidArgument for: an unknown or malformed spec, A not a finite number
// > 0, K outside 1..classCount, S == 0, clients == 0, classCount == 0, a
// label outside 0..classCount-1, fewer samples than clients (shards: than
// clients*S), labels:K with clients*K < classCount (some class would have
// no holder), more than 2^32-1 samples, and a dirichlet spec whose minimum
// size no draw met (the detail suggests a larger A or fewer clients).
Result<Partition> partition(std::span<const std::int32_t> labels, std::uint32_t classCount,
                            std::uint32_t clients, std::string_view spec, std::uint64_t seed);

// Per-client label counts for reporting: result[c][k] = number of client
// c's samples with label k. InvalidArgument for an index outside `labels`
// or a label outside 0..classCount-1.
Result<std::vector<std::vector<std::uint32_t>>> labelHistogram(std::span<const std::int32_t> labels,
                                                               std::uint32_t classCount,
                                                               const Partition& partition);

}  // namespace edgefl
