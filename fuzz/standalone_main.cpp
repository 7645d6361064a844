// A driver for fuzz targets without libFuzzer (any compiler): runs every
// file of the given corpus directories (or files), then a bounded number of
// deterministic mutations of them, so the normal build and `make test`
// exercise each target briefly. Takes the libFuzzer flags that matter
// here, so one command line serves both builds:
//
//   <target> [-runs=N] [-seed=S] [-max_len=L] <corpus dir or file>...
//
// -runs: mutated inputs after the corpus (default 2000); -seed: the
// mutation stream (default 1); -max_len: largest mutated input (default
// 64 KiB). When a target crashes or aborts, the input that did it is
// written to ./crash-standalone (run the target on that file to reproduce).

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

using Input = std::vector<std::uint8_t>;

// std::mt19937_64 is specified exactly, so a seed gives the same mutations
// on every platform; the modulo keeps `below` free of the unspecified
// distributions.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}
  std::uint64_t next() { return engine_(); }
  // Uniform enough in [0, n) for n > 0.
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::mt19937_64 engine_;
};

struct Options {
  std::uint64_t runs = 2000;
  std::uint64_t seed = 1;
  std::size_t maxLen = 64 * 1024;
  std::vector<std::filesystem::path> paths;
};

bool flagValue(std::string_view arg, std::string_view name, std::uint64_t& out) {
  if (arg.substr(0, name.size()) != name) return false;
  out = std::strtoull(std::string(arg.substr(name.size())).c_str(), nullptr, 10);
  return true;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    std::uint64_t maxLen = 0;
    if (flagValue(arg, "-runs=", o.runs) || flagValue(arg, "-seed=", o.seed)) continue;
    if (flagValue(arg, "-max_len=", maxLen)) {
      o.maxLen = static_cast<std::size_t>(std::max<std::uint64_t>(maxLen, 1));
      continue;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "ignoring flag %s\n", argv[i]);
      continue;
    }
    o.paths.emplace_back(arg);
  }
  return o;
}

Input readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Input(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Sorted by name, so runs are the same whatever order the file system
// lists a directory in.
std::vector<std::filesystem::path> corpusFiles(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::filesystem::path> files;
  for (const auto& p : paths) {
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Values that sit on the boundaries decoders check: zero, one, sign and
// width limits.
constexpr std::uint32_t kInteresting[] = {
    0,      1,       0x7f,       0x80,        0xff,        0x7fff,      0x8000,
    0xffff, 0x10000, 0x7fffffff, 0x80000000u, 0xffffffffu, 0x7f800000u, 0x7fc00000u};

void mutateOnce(Input& x, const std::vector<Input>& corpus, Rng& rng, std::size_t maxLen) {
  switch (rng.below(8)) {
    case 0:  // flip a bit
      if (!x.empty()) x[rng.below(x.size())] ^= static_cast<std::uint8_t>(1u << rng.below(8));
      break;
    case 1:  // a random byte
      if (!x.empty()) x[rng.below(x.size())] = static_cast<std::uint8_t>(rng.next());
      break;
    case 2: {  // an interesting 8/16/32-bit little-endian value
      const std::uint32_t v = kInteresting[rng.below(std::size(kInteresting))];
      const std::size_t width = std::size_t{1} << rng.below(3);
      if (x.size() < width) break;
      const std::size_t at = rng.below(x.size() - width + 1);
      for (std::size_t i = 0; i < width; ++i) x[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
      break;
    }
    case 3: {  // insert random bytes
      const std::size_t n = 1 + rng.below(8);
      const std::size_t at = rng.below(x.size() + 1);
      Input bytes(n);
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.next());
      x.insert(x.begin() + static_cast<std::ptrdiff_t>(at), bytes.begin(), bytes.end());
      break;
    }
    case 4: {  // erase a range
      if (x.empty()) break;
      const std::size_t at = rng.below(x.size());
      const std::size_t n = 1 + rng.below(std::min<std::size_t>(16, x.size() - at));
      x.erase(x.begin() + static_cast<std::ptrdiff_t>(at),
              x.begin() + static_cast<std::ptrdiff_t>(at + n));
      break;
    }
    case 5: {  // copy a range over another place
      if (x.size() < 2) break;
      const std::size_t n = 1 + rng.below(std::min<std::size_t>(32, x.size() / 2));
      const std::size_t from = rng.below(x.size() - n + 1);
      const std::size_t to = rng.below(x.size() - n + 1);
      const Input chunk(x.begin() + static_cast<std::ptrdiff_t>(from),
                        x.begin() + static_cast<std::ptrdiff_t>(from + n));
      std::copy(chunk.begin(), chunk.end(), x.begin() + static_cast<std::ptrdiff_t>(to));
      break;
    }
    case 6:  // truncate
      if (!x.empty()) x.resize(rng.below(x.size()));
      break;
    default: {  // splice: this input's head, another's tail
      const Input& other = corpus[rng.below(corpus.size())];
      const std::size_t head = rng.below(x.size() + 1);
      const std::size_t tail = rng.below(other.size() + 1);
      x.resize(head);
      x.insert(x.end(), other.begin() + static_cast<std::ptrdiff_t>(tail), other.end());
      break;
    }
  }
  if (x.size() > maxLen) x.resize(maxLen);
}

// The input being run, for the crash handler.
const Input* gCurrent = nullptr;

extern "C" void writeCrashInput(int signal) {
  if (gCurrent != nullptr) {
    const int fd = ::open("crash-standalone", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, gCurrent->data(), gCurrent->size());
      ::close(fd);
    }
  }
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

void run(const Input& x) {
  gCurrent = &x;
  LLVMFuzzerTestOneInput(x.data(), x.size());
  gCurrent = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parseArgs(argc, argv);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, writeCrashInput);
  const auto files = corpusFiles(options.paths);
  std::vector<Input> corpus;
  for (const auto& f : files) {
    corpus.push_back(readFile(f));
    std::fprintf(stderr, "running %s\n", f.string().c_str());
    run(corpus.back());
  }
  if (corpus.empty()) corpus.emplace_back();

  Rng rng(options.seed);
  for (std::uint64_t i = 0; i < options.runs; ++i) {
    Input x = corpus[rng.below(corpus.size())];
    const std::size_t steps = 1 + rng.below(4);
    for (std::size_t s = 0; s < steps; ++s) mutateOnce(x, corpus, rng, options.maxLen);
    run(x);
  }
  std::printf("%zu corpus inputs and %llu mutations (seed %llu): no finding\n", files.size(),
              static_cast<unsigned long long>(options.runs),
              static_cast<unsigned long long>(options.seed));
  return 0;
}
