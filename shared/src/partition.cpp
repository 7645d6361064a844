// Partitioners: IID, Dirichlet label skew, K labels per client, and shards.

#include "edgefl/shared/partition.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

namespace edgefl {
namespace {

using Rng = std::mt19937_64;

// NIID-Bench's minimum client size for Dirichlet partitions.
constexpr std::size_t kDirichletMinSize = 10;
// Redraws for the Dirichlet minimum size. NIID-Bench retries without bound;
// in practice a feasible configuration succeeds within a few dozen draws,
// and one that fails 1000 needs a larger alpha or fewer clients.
constexpr int kDirichletMaxDraws = 1000;

struct SpecArg {
  double alpha = 0;
  std::uint32_t count = 0;
};

struct Input {
  std::size_t samples = 0;
  std::uint32_t classCount = 0;
  std::uint32_t clients = 0;
  std::span<const std::int32_t> labels;
  std::vector<std::vector<std::uint32_t>> byClass;  // ascending indices per class
  std::string spec;
};

// Uniform in [0, n), n >= 1, without modulo bias: rejects the lowest
// 2^64 mod n values so the rest divide evenly. Our own code rather than
// std::uniform_int_distribution so shuffles do not depend on the library.
std::uint64_t uniformBelow(Rng& rng, std::uint64_t n) {
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const std::uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

// Fisher-Yates.
void shuffle(std::span<std::uint32_t> v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[static_cast<std::size_t>(uniformBelow(rng, i))]);
  }
}

// Start of part `i` when `n` items are cut into `parts` parts whose sizes
// differ by at most one, larger parts first (numpy.array_split).
std::size_t splitPoint(std::size_t n, std::size_t parts, std::size_t i) {
  return i * (n / parts) + std::min(i, n % parts);
}

// log of a Gamma(alpha, 1) draw. For alpha < 1 the draw itself underflows
// to 0 often enough (alpha = 0.01 gives values like 1e-300 and below) that
// every client of a class could get weight 0; in log space it stays
// finite: Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia and Tsang).
double logGammaDraw(double alpha, Rng& rng) {
  if (alpha >= 1) return std::log(std::gamma_distribution<double>(alpha, 1.0)(rng));
  const double g = std::gamma_distribution<double>(alpha + 1, 1.0)(rng);
  const double u = static_cast<double>((rng() >> 11) + 1) * 0x1p-53;  // (0, 1]
  return std::log(g) + std::log(u) / alpha;
}

Result<Partition> splitIid(const Input& in, SpecArg, Rng& rng) {
  std::vector<std::uint32_t> order(in.samples);
  std::iota(order.begin(), order.end(), 0u);
  shuffle(order, rng);
  Partition out(in.clients);
  for (std::size_t c = 0; c < in.clients; ++c) {
    out[c].assign(
        order.begin() + static_cast<std::ptrdiff_t>(splitPoint(in.samples, in.clients, c)),
        order.begin() + static_cast<std::ptrdiff_t>(splitPoint(in.samples, in.clients, c + 1)));
  }
  return out;
}

Result<Partition> splitDirichlet(const Input& in, SpecArg arg, Rng& rng) {
  const std::size_t clients = in.clients;
  const std::size_t minSize = std::min(kDirichletMinSize, in.samples / clients);
  // NIID-Bench stops giving samples to a client that holds N/clients.
  const double cap = static_cast<double>(in.samples) / static_cast<double>(clients);
  std::vector<std::vector<std::size_t>> counts(in.classCount, std::vector<std::size_t>(clients));
  std::vector<std::size_t> sizes(clients);
  std::vector<double> weight(clients);
  bool met = false;
  std::size_t bestMin = 0;
  for (int draw = 0; draw < kDirichletMaxDraws && !met; ++draw) {
    std::fill(sizes.begin(), sizes.end(), 0);
    for (std::size_t k = 0; k < in.classCount; ++k) {
      const std::size_t nk = in.byClass[k].size();
      double top = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < clients; ++j) {
        weight[j] = logGammaDraw(arg.alpha, rng);
        if (static_cast<double>(sizes[j]) < cap) top = std::max(top, weight[j]);
      }
      // While samples of this class remain, some client is below the cap
      // (the sizes sum to less than N), so `top` is finite unless a draw
      // was -inf; then the eligible clients share the class evenly.
      double total = 0;
      for (std::size_t j = 0; j < clients; ++j) {
        const bool eligible = static_cast<double>(sizes[j]) < cap;
        weight[j] = !eligible ? 0.0 : std::isfinite(top) ? std::exp(weight[j] - top) : 1.0;
        total += weight[j];
      }
      // Cut points at floor(cumulative share * nk); the last client takes
      // the rest. Once only zero weights remain, acc == total exactly (same
      // additions in the same order), so they get nothing.
      double acc = 0;
      std::size_t prev = 0;
      for (std::size_t j = 0; j + 1 < clients; ++j) {
        acc += weight[j];
        const auto cut = total > 0 ? std::min(nk, static_cast<std::size_t>(std::floor(
                                                      acc / total * static_cast<double>(nk))))
                                   : nk;
        counts[k][j] = cut - prev;
        prev = cut;
      }
      counts[k][clients - 1] = nk - prev;
      for (std::size_t j = 0; j < clients; ++j) sizes[j] += counts[k][j];
    }
    const std::size_t smallest = *std::min_element(sizes.begin(), sizes.end());
    bestMin = std::max(bestMin, smallest);
    met = smallest >= minSize;
  }
  if (!met) {
    return makeError(Code::InvalidArgument,
                     "partition '" + in.spec + "': no Dirichlet draw in " +
                         std::to_string(kDirichletMaxDraws) + " gave each of " +
                         std::to_string(clients) + " clients at least " + std::to_string(minSize) +
                         " samples (best smallest client: " + std::to_string(bestMin) +
                         "); use a larger alpha or fewer clients");
  }
  Partition out(clients);
  for (std::size_t k = 0; k < in.classCount; ++k) {
    std::vector<std::uint32_t> samples = in.byClass[k];
    shuffle(samples, rng);
    std::size_t begin = 0;
    for (std::size_t j = 0; j < clients; ++j) {
      out[j].insert(out[j].end(), samples.begin() + static_cast<std::ptrdiff_t>(begin),
                    samples.begin() + static_cast<std::ptrdiff_t>(begin + counts[k][j]));
      begin += counts[k][j];
    }
  }
  return out;
}

Result<Partition> splitLabels(const Input& in, SpecArg arg, Rng& rng) {
  const std::uint32_t classes = in.classCount;
  const std::uint32_t k = arg.count;  // >= 1, checked by parseArg
  if (k > classes) {
    return makeError(Code::InvalidArgument, "partition '" + in.spec + "': K must be 1.." +
                                                std::to_string(classes) + " (the class count)");
  }
  if (std::uint64_t{in.clients} * k < classes) {
    return makeError(Code::InvalidArgument,
                     "partition '" + in.spec + "': " + std::to_string(in.clients) +
                         " clients with " + std::to_string(k) + " classes each cannot hold all " +
                         std::to_string(classes) + " classes; samples would be dropped");
  }
  std::vector<std::vector<std::uint32_t>> held(in.clients);
  std::vector<bool> covered(classes, false);
  for (std::uint32_t c = 0; c < in.clients; ++c) {
    held[c].push_back(c % classes);
    covered[c % classes] = true;
  }
  std::vector<std::uint32_t> candidates;
  for (std::uint32_t c = 0; c < in.clients; ++c) {
    while (held[c].size() < k) {
      // Uncovered classes first (they are never among this client's), so
      // that every class gets a holder; otherwise any class not held yet.
      candidates.clear();
      for (std::uint32_t x = 0; x < classes; ++x) {
        if (!covered[x]) candidates.push_back(x);
      }
      if (candidates.empty()) {
        for (std::uint32_t x = 0; x < classes; ++x) {
          if (std::find(held[c].begin(), held[c].end(), x) == held[c].end()) {
            candidates.push_back(x);
          }
        }
      }
      const std::uint32_t pick = candidates[uniformBelow(rng, candidates.size())];
      held[c].push_back(pick);
      covered[pick] = true;
    }
  }
  std::vector<std::vector<std::uint32_t>> holders(classes);
  for (std::uint32_t c = 0; c < in.clients; ++c) {
    for (std::uint32_t x : held[c]) holders[x].push_back(c);
  }
  Partition out(in.clients);
  for (std::uint32_t x = 0; x < classes; ++x) {
    std::vector<std::uint32_t> samples = in.byClass[x];
    shuffle(samples, rng);
    const std::size_t parts = holders[x].size();
    for (std::size_t i = 0; i < parts; ++i) {
      auto& dst = out[holders[x][i]];
      dst.insert(
          dst.end(),
          samples.begin() + static_cast<std::ptrdiff_t>(splitPoint(samples.size(), parts, i)),
          samples.begin() + static_cast<std::ptrdiff_t>(splitPoint(samples.size(), parts, i + 1)));
    }
  }
  return out;
}

Result<Partition> splitShards(const Input& in, SpecArg arg, Rng& rng) {
  const std::uint64_t shards = std::uint64_t{in.clients} * arg.count;  // count >= 1 (parseArg)
  if (shards > in.samples) {
    return makeError(Code::InvalidArgument,
                     "partition '" + in.spec + "': " + std::to_string(shards) +
                         " shards need at least " + "as many samples, have " +
                         std::to_string(in.samples));
  }
  // Shuffling before the stable sort randomizes which samples of a class
  // fall into which shard.
  std::vector<std::uint32_t> order(in.samples);
  std::iota(order.begin(), order.end(), 0u);
  shuffle(order, rng);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return in.labels[a] < in.labels[b]; });
  std::vector<std::uint32_t> shardOrder(static_cast<std::size_t>(shards));
  std::iota(shardOrder.begin(), shardOrder.end(), 0u);
  shuffle(shardOrder, rng);
  Partition out(in.clients);
  for (std::size_t c = 0; c < in.clients; ++c) {
    for (std::size_t s = 0; s < arg.count; ++s) {
      const std::size_t shard = shardOrder[c * arg.count + s];
      out[c].insert(
          out[c].end(),
          order.begin() + static_cast<std::ptrdiff_t>(splitPoint(in.samples, shards, shard)),
          order.begin() + static_cast<std::ptrdiff_t>(splitPoint(in.samples, shards, shard + 1)));
    }
  }
  return out;
}

enum class ParamKind { None, PositiveReal, Count };

struct Strategy {
  std::string_view name;
  ParamKind param;
  std::string_view form;
  Result<Partition> (*run)(const Input&, SpecArg, Rng&);
};

constexpr Strategy kStrategies[] = {
    {"iid", ParamKind::None, "iid", splitIid},
    {"dirichlet", ParamKind::PositiveReal, "dirichlet:ALPHA", splitDirichlet},
    {"labels", ParamKind::Count, "labels:K", splitLabels},
    {"shards", ParamKind::Count, "shards:S", splitShards},
};

std::string knownForms() {
  std::string out;
  for (const Strategy& s : kStrategies) out += (out.empty() ? "" : ", ") + std::string(s.form);
  return out;
}

Result<SpecArg> parseArg(const Strategy& strategy, std::string_view spec, bool hasArg,
                         std::string_view text) {
  const std::string prefix = "partition '" + std::string(spec) + "': ";
  SpecArg arg;
  if (strategy.param == ParamKind::None) {
    if (hasArg) {
      return makeError(Code::InvalidArgument,
                       prefix + std::string(strategy.name) + " takes no parameter");
    }
    return arg;
  }
  if (!hasArg || text.empty()) {
    return makeError(Code::InvalidArgument, prefix + "expected " + std::string(strategy.form));
  }
  const char* end = text.data() + text.size();
  if (strategy.param == ParamKind::PositiveReal) {
    const auto [ptr, ec] = std::from_chars(text.data(), end, arg.alpha);
    if (ec != std::errc() || ptr != end || !std::isfinite(arg.alpha) || arg.alpha <= 0) {
      return makeError(Code::InvalidArgument,
                       prefix + "ALPHA '" + std::string(text) + "' must be a finite number > 0");
    }
    return arg;
  }
  const auto [ptr, ec] = std::from_chars(text.data(), end, arg.count);
  if (ec != std::errc() || ptr != end || arg.count == 0) {
    return makeError(Code::InvalidArgument, prefix + "'" + std::string(text) +
                                                "' must be an integer >= 1 (" +
                                                std::string(strategy.form) + ")");
  }
  return arg;
}

}  // namespace

Result<Partition> partition(std::span<const std::int32_t> labels, std::uint32_t classCount,
                            std::uint32_t clients, std::string_view spec, std::uint64_t seed) {
  const std::string prefix = "partition '" + std::string(spec) + "': ";
  const auto colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  const Strategy* strategy = nullptr;
  for (const Strategy& s : kStrategies) {
    if (s.name == name) strategy = &s;
  }
  if (strategy == nullptr) {
    return makeError(Code::InvalidArgument, prefix + "unknown strategy; expected " + knownForms());
  }
  const bool hasArg = colon != std::string_view::npos;
  auto arg = parseArg(*strategy, spec, hasArg, hasArg ? spec.substr(colon + 1) : "");
  if (!arg.ok()) return arg.error();

  if (clients == 0) return makeError(Code::InvalidArgument, prefix + "clients must be >= 1");
  if (classCount == 0) return makeError(Code::InvalidArgument, prefix + "classCount must be >= 1");
  // Indices are stored as uint32 to halve the memory of large partitions.
  if (labels.size() > std::numeric_limits<std::uint32_t>::max()) {
    return makeError(Code::InvalidArgument,
                     prefix + std::to_string(labels.size()) + " samples, more than 2^32-1");
  }
  if (labels.size() < clients) {
    return makeError(Code::InvalidArgument, prefix + std::to_string(labels.size()) +
                                                " samples cannot give each of " +
                                                std::to_string(clients) + " clients one");
  }
  Input in;
  in.samples = labels.size();
  in.classCount = classCount;
  in.clients = clients;
  in.labels = labels;
  in.spec = std::string(spec);
  in.byClass.resize(classCount);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::int32_t label = labels[i];
    if (label < 0 || static_cast<std::uint32_t>(label) >= classCount) {
      return makeError(Code::InvalidArgument,
                       prefix + "label " + std::to_string(label) + " of sample " +
                           std::to_string(i) + " is outside 0.." + std::to_string(classCount - 1));
    }
    in.byClass[static_cast<std::size_t>(label)].push_back(static_cast<std::uint32_t>(i));
  }

  Rng rng(seed);
  auto out = strategy->run(in, *arg, rng);
  if (!out.ok()) return out;
  for (auto& client : *out) std::sort(client.begin(), client.end());
  return out;
}

Result<std::vector<std::vector<std::uint32_t>>> labelHistogram(std::span<const std::int32_t> labels,
                                                               std::uint32_t classCount,
                                                               const Partition& partition) {
  if (classCount == 0) return makeError(Code::InvalidArgument, "labelHistogram: classCount is 0");
  std::vector<std::vector<std::uint32_t>> out(partition.size(),
                                              std::vector<std::uint32_t>(classCount));
  for (std::size_t c = 0; c < partition.size(); ++c) {
    for (std::uint32_t i : partition[c]) {
      if (i >= labels.size()) {
        return makeError(Code::InvalidArgument, "labelHistogram: client " + std::to_string(c) +
                                                    " has sample " + std::to_string(i) +
                                                    " of only " + std::to_string(labels.size()));
      }
      const std::int32_t label = labels[i];
      if (label < 0 || static_cast<std::uint32_t>(label) >= classCount) {
        return makeError(Code::InvalidArgument, "labelHistogram: label " + std::to_string(label) +
                                                    " of sample " + std::to_string(i) +
                                                    " is outside 0.." +
                                                    std::to_string(classCount - 1));
      }
      ++out[c][static_cast<std::size_t>(label)];
    }
  }
  return out;
}

}  // namespace edgefl
