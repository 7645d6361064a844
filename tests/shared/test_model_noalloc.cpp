// After prepare, scoring and training steps never allocate.
//
// Two independent checks:
// - Eigen's runtime flag (EIGEN_RUNTIME_NO_MALLOC, defined publicly by
//   edgefl_shared so every file sees the same Eigen configuration):
//   set_is_malloc_allowed(false) around the hot calls makes any Eigen heap
//   allocation assert. eigen_assert is compiled out under NDEBUG, so this
//   check bites in Debug builds only, and only for the generic kernels (the
//   ISA-specific builds have their own renamed Eigen and its own flag).
// - This binary replaces malloc (and friends) and operator new to count
//   every heap allocation, whatever the build type or kernel: Eigen's
//   aligned_malloc calls std::malloc, the standard library calls operator
//   new, which calls malloc. The counts must stay zero.

#ifndef EIGEN_RUNTIME_NO_MALLOC
#define EIGEN_RUNTIME_NO_MALLOC 1
#endif

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/train.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__GLIBC__)
#define EDGEFL_COUNT_ALLOCATIONS 0
#else
#define EDGEFL_COUNT_ALLOCATIONS 1
#endif

namespace {

std::atomic<bool> gCounting{false};
std::atomic<long> gMallocCalls{0};
std::atomic<long> gNewCalls{0};

[[maybe_unused]] void countMalloc() {
  if (gCounting.load(std::memory_order_relaxed)) gMallocCalls.fetch_add(1);
}
[[maybe_unused]] void countNew() {
  if (gCounting.load(std::memory_order_relaxed)) gNewCalls.fetch_add(1);
}

}  // namespace

#if EDGEFL_COUNT_ALLOCATIONS
// glibc lets a program replace malloc; its own implementation stays
// reachable as __libc_*.
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void __libc_free(void* p);

void* malloc(std::size_t size) noexcept {
  countMalloc();
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) noexcept {
  countMalloc();
  return __libc_calloc(count, size);
}
void* realloc(void* p, std::size_t size) noexcept {
  countMalloc();
  return __libc_realloc(p, size);
}
void* memalign(std::size_t alignment, std::size_t size) noexcept {
  countMalloc();
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  countMalloc();
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  countMalloc();
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) noexcept {
  __libc_free(p);
}
}

void* operator new(std::size_t size) {
  countNew();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  return operator new(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  countNew();
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept {
  return operator new(size, tag);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  countNew();
  if (void* p = __libc_memalign(static_cast<std::size_t>(alignment), size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return operator new(size, alignment);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
#endif

namespace edgefl {
namespace {

struct Counts {
  long mallocs = 0;
  long news = 0;
};

// Counts allocations in its lifetime; with `eigenFlag`, also forbids them
// through Eigen's runtime check.
class AllocationWatch {
 public:
  explicit AllocationWatch(bool eigenFlag = true) : eigenFlag_(eigenFlag) {
    gMallocCalls = 0;
    gNewCalls = 0;
    if (eigenFlag_) Eigen::internal::set_is_malloc_allowed(false);
    gCounting = true;
  }
  ~AllocationWatch() { stop(); }
  Counts stop() {
    if (gCounting.exchange(false) && eigenFlag_) Eigen::internal::set_is_malloc_allowed(true);
    return Counts{gMallocCalls.load(), gNewCalls.load()};
  }

 private:
  bool eigenFlag_;
};

// A macro, not a function: GTEST_SKIP() returns from the function it is in,
// and the test body must end there.
#define REQUIRE_COUNTING() \
  if (!EDGEFL_COUNT_ALLOCATIONS) GTEST_SKIP() << "allocation counting needs glibc, no sanitizer"

std::vector<float> pixels(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.0f, 255.0f);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

std::vector<std::int32_t> labels(std::size_t n, std::uint32_t classes) {
  std::vector<std::int32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int32_t>(i % classes);
  return out;
}

std::vector<Model> models() {
  std::vector<Model> out;
  out.push_back(createModel("mlp:784-128-10", {.inputShape = {1, 28, 28}}).value());
  out.push_back(createModel("lenet").value());
  out.push_back(createModel("logreg:784-10").value());
  InputSchema schema{.featureCount = 3 * 9 * 9, .shape = {3, 9, 9}};
  out.push_back(
      Model::fromLayers("test-conv", Task::Classification,
                        {Layer::conv2d(3, 4, 3, 2, 1, 9, 9), Layer::relu(100),
                         Layer::maxPool2d(4, 2, 1, 5, 5), Layer::flatten(64), Layer::dense(64, 5)},
                        schema)
          .value());
  return out;
}

TEST(ModelNoAlloc, TheCounterSeesAllocations) {
  REQUIRE_COUNTING();
  AllocationWatch watch(false);
  // Through a volatile pointer: the compiler may elide a new/delete pair.
  static int* volatile boxed = nullptr;
  boxed = new int(7);
  delete boxed;
  Eigen::VectorXf heap(1000);
  heap.setZero();
  const Counts counts = watch.stop();
  EXPECT_GE(counts.news, 1);
  EXPECT_GE(counts.mallocs, 2);  // operator new's and Eigen's
}

std::string isaTestName(const ::testing::TestParamInfo<KernelIsa>& param) {
  return std::string(kernelIsaName(param.param));
}

class ModelNoAllocIsa : public ::testing::TestWithParam<KernelIsa> {
 protected:
  void SetUp() override {
    REQUIRE_COUNTING();
    if (IsSkipped()) return;
    if (!kernelIsaAvailable(GetParam())) GTEST_SKIP() << "not available on this CPU";
  }
};

TEST_P(ModelNoAllocIsa, ScoringDoesNotAllocate) {
  for (const Model& model : models()) {
    SCOPED_TRACE(model.arch());
    constexpr std::size_t kBatch = 64;
    auto scorer = Scorer::prepare(model, {.maxBatch = kBatch, .isa = GetParam()});
    ASSERT_TRUE(scorer.ok()) << scorer.error().toString();
    const std::size_t f = model.featureCount();
    const std::size_t k = model.outputCount();
    const auto x = pixels(kBatch * f, 3);
    std::vector<float> out(kBatch * k, 0.0f);
    std::vector<float> one(k, 0.0f);
    Counts counts;
    {
      AllocationWatch watch;
      scorer->score(std::span<const float>(x).first(f), one);
      scorer->scoreBatch(x, out);
      scorer->scoreBatch(std::span<const float>(x).first(17 * f),
                         std::span<float>(out).first(17 * k));
      counts = watch.stop();
    }
    EXPECT_EQ(counts.mallocs, 0);
    EXPECT_EQ(counts.news, 0);
    float sum = 0;
    for (float p : one) sum += p;
    EXPECT_NEAR(sum, 1.0f, 1e-5f);  // the calls did their work
  }
}

TEST_P(ModelNoAllocIsa, TrainingStepsDoNotAllocate) {
  struct Variant {
    OptimizerKind optimizer;
    float momentum, decay, mu;
    TrainableSet trainable;
  };
  const Variant variants[] = {
      {OptimizerKind::Sgd, 0.0f, 0.0f, 0.0f, TrainableSet::All},
      {OptimizerKind::Sgd, 0.9f, 1e-4f, 0.01f, TrainableSet::All},
      {OptimizerKind::Adam, 0.0f, 1e-4f, 0.01f, TrainableSet::All},
      {OptimizerKind::Sgd, 0.9f, 0.0f, 0.0f, TrainableSet::Head},
      {OptimizerKind::Adam, 0.0f, 0.0f, 0.0f, TrainableSet::Bias},
  };
  for (Model& model : models()) {
    for (const Variant& v : variants) {
      SCOPED_TRACE(model.arch() + " " + std::string(optimizerName(v.optimizer)) + " " +
                   std::string(trainableName(v.trainable)));
      constexpr std::uint32_t kBatch = 32;
      auto trainer = Trainer::prepare(model, {.batchSize = kBatch,
                                              .learningRate = 0.01f,
                                              .optimizer = v.optimizer,
                                              .momentum = v.momentum,
                                              .weightDecay = v.decay,
                                              .proximalMu = v.mu,
                                              .trainable = v.trainable,
                                              .isa = GetParam()});
      ASSERT_TRUE(trainer.ok()) << trainer.error().toString();
      const std::size_t f = model.featureCount();
      const auto x = pixels(kBatch * f, 4);
      const auto y = labels(kBatch, model.outputCount());
      const std::vector<float> before(model.parameters().begin(), model.parameters().end());
      bool ok = true;
      Counts counts;
      {
        AllocationWatch watch;
        ok = ok && trainer->step(x, y).ok();
        ok = ok && trainer
                       ->step(std::span<const float>(x).first(5 * f),
                              std::span<const std::int32_t>(y).first(5))
                       .ok();
        ok = ok && trainer->computeGradients(x, y).ok();
        counts = watch.stop();
      }
      EXPECT_TRUE(ok);
      EXPECT_EQ(counts.mallocs, 0);
      EXPECT_EQ(counts.news, 0);
      EXPECT_FALSE(std::equal(before.begin(), before.end(), model.parameters().begin()));
    }
  }
}

TEST_P(ModelNoAllocIsa, RegressionStepDoesNotAllocate) {
  auto model = createModel("mlp:16-32-2", {.task = Task::Regression});
  ASSERT_TRUE(model.ok());
  auto trainer = Trainer::prepare(*model, {.batchSize = 8, .isa = GetParam()});
  ASSERT_TRUE(trainer.ok());
  const auto x = pixels(8 * 16, 5);
  const std::vector<float> t(16, 1.0f);
  Counts counts;
  bool ok = false;
  {
    AllocationWatch watch;
    ok = trainer->stepRegression(x, t).ok();
    counts = watch.stop();
  }
  EXPECT_TRUE(ok);
  EXPECT_EQ(counts.mallocs, 0);
  EXPECT_EQ(counts.news, 0);
}

INSTANTIATE_TEST_SUITE_P(Isa, ModelNoAllocIsa,
                         ::testing::Values(KernelIsa::Generic, KernelIsa::Avx2, KernelIsa::Avx512),
                         isaTestName);

}  // namespace
}  // namespace edgefl
