// Dataset readers: the installed Fashion-MNIST files against values computed
// independently from them (Python's gzip module), and a crafted file for
// every rejection the readers document.

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "edgefl/shared/datasets.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {

using Bytes8 = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

const fs::path kFashionDir = "/usr/share/datasets/fashion-mnist";

// Sum of all pixel values, exact (floats hold integers 0..255 exactly).
std::uint64_t pixelSum(const Dataset& d, std::size_t first, std::size_t count) {
  std::uint64_t sum = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    for (float v : d.sample(i)) sum += static_cast<std::uint64_t>(v);
  }
  return sum;
}

std::vector<std::size_t> classCounts(const Dataset& d) {
  std::vector<std::size_t> counts(d.classCount);
  for (std::int32_t l : d.labels) ++counts.at(static_cast<std::size_t>(l));
  return counts;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// --- the real Fashion-MNIST files -------------------------------------------

TEST(FashionMnist, TrainSplitMatchesTheFiles) {
  // Its speed is measured in bench/bench_datasets.cpp, against zlib.
  auto data = loadFashionMnist("train");
  ASSERT_TRUE(data.ok()) << data.error().toString();

  EXPECT_EQ(data->name, "fashion-mnist:train");
  EXPECT_EQ(data->size(), 60000u);
  EXPECT_EQ(data->featureCount, 784u);
  EXPECT_EQ(data->features.size(), 60000u * 784u);
  EXPECT_EQ(data->labels.size(), 60000u);
  EXPECT_TRUE(data->targets.empty());
  EXPECT_EQ(data->classCount, 10u);
  ASSERT_EQ(data->classNames.size(), 10u);
  EXPECT_EQ(data->classNames.front(), "T-shirt/top");
  EXPECT_EQ(data->classNames.back(), "Ankle boot");
  EXPECT_EQ(data->labels.front(), 9);
  EXPECT_EQ(data->labels.back(), 5);
  EXPECT_EQ(pixelSum(*data, 0, 1), 76247u);
  EXPECT_EQ(pixelSum(*data, 59999, 1), 16684u);
  EXPECT_EQ(pixelSum(*data, 0, 60000), 3431114169u);
  EXPECT_EQ(classCounts(*data), std::vector<std::size_t>(10, 6000));
  // Raw values, unscaled: integers within 0..255, and 255 does occur.
  float maxValue = 0;
  for (float v : data->features) {
    ASSERT_TRUE(v >= 0 && v <= 255 && v == static_cast<float>(static_cast<int>(v))) << v;
    maxValue = std::max(maxValue, v);
  }
  EXPECT_EQ(maxValue, 255.0f);
}

TEST(FashionMnist, TestSplitMatchesTheFiles) {
  auto data = loadFashionMnist("test");
  ASSERT_TRUE(data.ok()) << data.error().toString();
  EXPECT_EQ(data->name, "fashion-mnist:test");
  EXPECT_EQ(data->size(), 10000u);
  EXPECT_EQ(data->labels.front(), 9);
  EXPECT_EQ(data->labels.back(), 5);
  EXPECT_EQ(pixelSum(*data, 0, 1), 33456u);
  EXPECT_EQ(pixelSum(*data, 9999, 1), 24390u);
  EXPECT_EQ(pixelSum(*data, 0, 10000), 573469082u);
  EXPECT_EQ(classCounts(*data), std::vector<std::size_t>(10, 1000));
}

TEST(FashionMnist, FirstNLoadsAPrefix) {
  auto data = loadFashionMnist("test", IdxOptions{.firstN = 1000});
  ASSERT_TRUE(data.ok()) << data.error().toString();
  EXPECT_EQ(data->size(), 1000u);
  EXPECT_EQ(pixelSum(*data, 0, 1000), 58034149u);
  EXPECT_EQ(std::accumulate(data->labels.begin(), data->labels.end(), 0), 4363);

  auto all = loadFashionMnist("test", IdxOptions{.firstN = 50000});
  ASSERT_TRUE(all.ok()) << all.error().toString();
  EXPECT_EQ(all->size(), 10000u);
}

TEST(FashionMnist, SpecStrings) {
  auto prefix = loadDataset("fashion-mnist:test:100");
  ASSERT_TRUE(prefix.ok()) << prefix.error().toString();
  EXPECT_EQ(prefix->size(), 100u);
  EXPECT_EQ(prefix->name, "fashion-mnist:test");
  EXPECT_EQ(prefix->labels.front(), 9);

  for (const char* bad :
       {"fashion-mnist:val", "fashion-mnist:test:0", "fashion-mnist:test:x",
        "fashion-mnist:test:-5", "fashion-mnist:", "mnist:train", "", "csv:", ".csv", "data.txt"}) {
    auto r = loadDataset(bad);
    EXPECT_EQ(r.code(), Code::InvalidArgument) << bad;
  }
}

TEST(FashionMnist, UnknownSplitAndMissingDirectory) {
  EXPECT_EQ(loadFashionMnist("validation").code(), Code::InvalidArgument);
  auto missing = loadFashionMnist("train", {}, "/nonexistent/fashion");
  EXPECT_EQ(missing.code(), Code::IoError);
  EXPECT_TRUE(contains(missing.error().detail, "/nonexistent/fashion/train-images-idx3-ubyte.gz"))
      << missing.error().detail;
}

// --- crafted IDX files -------------------------------------------------------

void put32(Bytes8& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

Bytes8 imageFile(std::uint32_t count, std::uint32_t rows, std::uint32_t cols,
                 std::uint32_t magic = 0x00000803) {
  Bytes8 out;
  put32(out, magic);
  put32(out, count);
  put32(out, rows);
  put32(out, cols);
  const std::size_t pixels = std::size_t{count} * rows * cols;
  for (std::size_t i = 0; i < pixels; ++i) out.push_back(static_cast<std::uint8_t>(i * 7 % 256));
  return out;
}

Bytes8 labelFile(const std::vector<std::uint8_t>& labels, std::uint32_t magic = 0x00000801) {
  Bytes8 out;
  put32(out, magic);
  put32(out, static_cast<std::uint32_t>(labels.size()));
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

void writeRaw(const fs::path& path, const Bytes8& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void writeGzip(const fs::path& path, const Bytes8& bytes) {
  gzFile f = gzopen(path.c_str(), "wb9");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

Bytes8 readAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes8(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Bytes8 gzipBytes(const fs::path& scratch, const Bytes8& bytes) {
  writeGzip(scratch, bytes);
  return readAll(scratch);
}

class IdxFiles : public ::testing::Test {
 protected:
  fs::path images() const { return dir_.path() / "images.idx"; }
  fs::path labels() const { return dir_.path() / "labels.idx"; }
  fs::path scratch() const { return dir_.path() / "scratch.gz"; }

  // Writes a valid 3-sample 2x3 pair (gzip unless `raw`).
  void writeValid(bool raw = false) {
    if (raw) {
      writeRaw(images(), imageFile(3, 2, 3));
      writeRaw(labels(), labelFile({4, 0, 9}));
    } else {
      writeGzip(images(), imageFile(3, 2, 3));
      writeGzip(labels(), labelFile({4, 0, 9}));
    }
  }

  // Loads the pair expecting BadDataset; returns the detail.
  std::string rejected(const IdxOptions& options = {}, std::uint32_t classCount = 10) {
    auto r = loadIdx(images(), labels(), classCount, options);
    EXPECT_EQ(r.code(), Code::BadDataset) << (r.ok() ? "loaded" : r.error().toString());
    return r.ok() ? std::string() : r.error().detail;
  }

  test::TempDir dir_{"edgefl-datasets"};
};

TEST_F(IdxFiles, GzipAndRawGiveTheSameDataset) {
  for (bool raw : {false, true}) {
    writeValid(raw);
    auto d = loadIdx(images(), labels(), 10);
    ASSERT_TRUE(d.ok()) << d.error().toString();
    EXPECT_EQ(d->size(), 3u);
    EXPECT_EQ(d->featureCount, 6u);
    EXPECT_EQ(d->classCount, 10u);
    EXPECT_EQ(d->labels, (std::vector<std::int32_t>{4, 0, 9}));
    ASSERT_EQ(d->features.size(), 18u);
    for (std::size_t i = 0; i < 18; ++i) EXPECT_EQ(d->features[i], static_cast<float>(i * 7 % 256));
  }
}

TEST_F(IdxFiles, MultiMemberGzipIsOneStream) {
  const Bytes8 whole = imageFile(3, 2, 3);
  Bytes8 joined = gzipBytes(scratch(), Bytes8(whole.begin(), whole.begin() + 10));
  const Bytes8 second = gzipBytes(scratch(), Bytes8(whole.begin() + 10, whole.end()));
  joined.insert(joined.end(), second.begin(), second.end());
  writeRaw(images(), joined);
  writeGzip(labels(), labelFile({1, 2, 3}));
  auto d = loadIdx(images(), labels(), 10);
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->features[17], static_cast<float>(17 * 7 % 256));
}

TEST_F(IdxFiles, MissingFileIsIoError) {
  writeValid();
  auto r = loadIdx(dir_.path() / "nope.gz", labels(), 10);
  EXPECT_EQ(r.code(), Code::IoError);
  EXPECT_TRUE(contains(r.error().detail, "nope.gz")) << r.error().detail;
}

TEST_F(IdxFiles, EmptyFile) {
  writeValid();
  writeRaw(images(), {});
  EXPECT_TRUE(contains(rejected(), "too short for the 4-byte magic"));
}

TEST_F(IdxFiles, BadMagic) {
  writeValid();
  writeGzip(images(), imageFile(3, 2, 3, 0x00000804));
  const std::string detail = rejected();
  EXPECT_TRUE(contains(detail, "bad magic 0x00000804")) << detail;
  EXPECT_TRUE(contains(detail, "expected 0x00000803")) << detail;
  EXPECT_TRUE(contains(detail, images().string())) << detail;

  // A float IDX file (type 0x0D) is not unsigned bytes.
  writeGzip(images(), imageFile(3, 2, 3, 0x00000D03));
  EXPECT_TRUE(contains(rejected(), "bad magic 0x00000d03"));
}

TEST_F(IdxFiles, SwappedImageAndLabelFiles) {
  writeValid();
  auto r = loadIdx(labels(), images(), 10);
  ASSERT_EQ(r.code(), Code::BadDataset);
  EXPECT_TRUE(contains(r.error().detail, "that is a label file")) << r.error().detail;
}

TEST_F(IdxFiles, BadLabelMagic) {
  writeValid();
  writeGzip(labels(), labelFile({1, 2, 3}, 0x00000802));
  EXPECT_TRUE(contains(rejected(), "bad magic 0x00000802"));
}

TEST_F(IdxFiles, TruncatedHeader) {
  writeValid();
  Bytes8 header = imageFile(3, 2, 3);
  header.resize(10);
  writeGzip(images(), header);
  EXPECT_TRUE(contains(rejected(), "header truncated: 10 of 16 bytes"));
}

TEST_F(IdxFiles, WrongDimensions) {
  writeValid();
  writeGzip(images(), imageFile(3, 0, 3));
  EXPECT_TRUE(contains(rejected(), "image size 0x3"));

  writeGzip(images(), imageFile(3, 2, 3));
  EXPECT_TRUE(contains(rejected(IdxOptions{.maxSide = 2}), "image size 2x3 is outside 1..2"));

  writeGzip(images(), imageFile(3, 2, 3));
  EXPECT_TRUE(contains(rejected(IdxOptions{.maxItems = 2}), "3 items, over maxItems = 2"));

  writeGzip(images(), imageFile(0, 2, 3));
  writeGzip(labels(), labelFile({}));
  EXPECT_TRUE(contains(rejected(), "declares 0 items"));
}

TEST_F(IdxFiles, HostileHeaderIsRejectedBeforeAllocating) {
  // 4M items of 1024x1024 would be 4 TiB; the byte limit refuses it from
  // the header alone.
  writeValid();
  Bytes8 header;
  put32(header, 0x00000803);
  put32(header, 4'000'000);
  put32(header, 1024);
  put32(header, 1024);
  writeGzip(images(), header);
  EXPECT_TRUE(contains(rejected(), "over maxDecompressedBytes"));
}

TEST_F(IdxFiles, DecompressionBombStopsAtTheLimit) {
  // A valid 1-item file followed by 8 MiB of zeros (compressing to ~8 KiB).
  writeGzip(labels(), labelFile({1}));
  Bytes8 bomb = imageFile(1, 2, 3);
  bomb.resize(bomb.size() + (8u << 20), 0);
  writeGzip(images(), bomb);
  EXPECT_LT(fs::file_size(images()), 64u << 10);
  EXPECT_TRUE(contains(rejected(IdxOptions{.maxDecompressedBytes = 1u << 20}),
                       "more than maxDecompressedBytes = 1048576"));
}

TEST_F(IdxFiles, TruncatedData) {
  writeValid();
  Bytes8 bytes = imageFile(3, 2, 3);
  bytes.resize(bytes.size() - 4);
  writeGzip(images(), bytes);
  const std::string detail = rejected();
  EXPECT_TRUE(contains(detail, "truncated: header declares 3 items of 6 bytes")) << detail;
  EXPECT_TRUE(contains(detail, "ends after 14 of 18 bytes")) << detail;

  writeRaw(images(), bytes);
  EXPECT_TRUE(contains(rejected(), "ends after 14 of 18 bytes"));
}

TEST_F(IdxFiles, TrailingBytes) {
  writeValid();
  Bytes8 bytes = labelFile({1, 2, 3});
  bytes.insert(bytes.end(), {0, 0, 0, 0, 0});
  writeGzip(labels(), bytes);
  EXPECT_TRUE(contains(rejected(), "5 bytes of trailing data after the last of 3 items"));
  // firstN stops reading early, so the documented limit of its checks holds.
  auto prefix = loadIdx(images(), labels(), 10, IdxOptions{.firstN = 2});
  ASSERT_TRUE(prefix.ok()) << prefix.error().toString();
  EXPECT_EQ(prefix->labels, (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(prefix->features.size(), 12u);
}

TEST_F(IdxFiles, CountMismatch) {
  writeValid();
  writeGzip(labels(), labelFile({1, 2, 3, 4}));
  const std::string detail = rejected();
  EXPECT_TRUE(contains(detail, "has 3 images but")) << detail;
  EXPECT_TRUE(contains(detail, "has 4 labels")) << detail;
}

TEST_F(IdxFiles, LabelOutOfRange) {
  writeValid();
  writeGzip(labels(), labelFile({1, 10, 3}));
  const std::string detail = rejected();
  EXPECT_TRUE(contains(detail, "label 10 of item 1 is not below classCount 10")) << detail;
  // The same file is fine for 11 classes.
  EXPECT_TRUE(loadIdx(images(), labels(), 11).ok());
  EXPECT_EQ(loadIdx(images(), labels(), 0).code(), Code::InvalidArgument);
}

TEST_F(IdxFiles, CorruptGzip) {
  writeValid();
  Bytes8 gz = gzipBytes(scratch(), imageFile(50, 4, 4));
  gz[gz.size() / 2] ^= 0x55;
  writeRaw(images(), gz);
  writeGzip(labels(), labelFile(std::vector<std::uint8_t>(50, 1)));
  const std::string detail = rejected();
  EXPECT_TRUE(contains(detail, "corrupt gzip data near compressed offset")) << detail;
}

TEST_F(IdxFiles, CorruptGzipChecksum) {
  // The deflate data is intact but the CRC-32 in the trailer is not.
  writeValid();
  Bytes8 gz = gzipBytes(scratch(), imageFile(3, 2, 3));
  gz[gz.size() - 6] ^= 0x01;
  writeRaw(images(), gz);
  EXPECT_TRUE(contains(rejected(), "incorrect data check"));
}

TEST_F(IdxFiles, TruncatedGzip) {
  writeValid();
  Bytes8 gz = gzipBytes(scratch(), imageFile(3, 2, 3));
  gz.resize(gz.size() - 6);  // cut into the trailer
  writeRaw(images(), gz);
  EXPECT_TRUE(contains(rejected(), "gzip stream truncated after"));
}

TEST_F(IdxFiles, GarbageAfterGzipStream) {
  writeValid();
  Bytes8 gz = gzipBytes(scratch(), imageFile(3, 2, 3));
  gz.insert(gz.end(), {'j', 'u', 'n', 'k'});
  writeRaw(images(), gz);
  EXPECT_TRUE(contains(rejected(), "bytes after the end of the gzip stream"));
}

// --- CSV ---------------------------------------------------------------------

class CsvFiles : public ::testing::Test {
 protected:
  fs::path write(const std::string& text) {
    const fs::path path = dir_.path() / "data.csv";
    std::ofstream out(path, std::ios::binary);
    out << text;
    return path;
  }

  std::string rejected(const std::string& text, const CsvOptions& options = {}) {
    auto r = loadCsv(write(text), options);
    EXPECT_EQ(r.code(), Code::BadDataset) << (r.ok() ? "loaded" : r.error().toString());
    return r.ok() ? std::string() : r.error().detail;
  }

  test::TempDir dir_{"edgefl-csv"};
};

TEST_F(CsvFiles, ClassificationWithSortedClasses) {
  const fs::path path = write("x1,label,x2\n1.5,cat,-2\n0,dog,3e2\n+4,cat,.5\n");
  auto d = loadCsv(path);
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->name, "csv:" + path.string());
  EXPECT_EQ(d->featureCount, 2u);
  EXPECT_EQ(d->featureNames, (std::vector<std::string>{"x1", "x2"}));
  EXPECT_EQ(d->features, (std::vector<float>{1.5f, -2, 0, 300, 4, 0.5f}));
  EXPECT_EQ(d->classCount, 2u);
  EXPECT_EQ(d->classNames, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{0, 1, 0}));
  EXPECT_TRUE(d->targets.empty());
}

TEST_F(CsvFiles, IntegerLabelsSortNumerically) {
  auto d = loadCsv(write("a,label\n1,10\n2,2\n3,1\n4,2\n"));
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->classNames, (std::vector<std::string>{"1", "2", "10"}));
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{2, 1, 0, 1}));
}

TEST_F(CsvFiles, FirstSeenClassOrder) {
  auto d = loadCsv(write("a,label\n1,zebra\n2,ant\n3,zebra\n"),
                   CsvOptions{.classOrder = CsvOptions::ClassOrder::FirstSeen});
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->classNames, (std::vector<std::string>{"zebra", "ant"}));
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{0, 1, 0}));
}

TEST_F(CsvFiles, RegressionTargets) {
  auto d = loadCsv(write("a,b,price\n1,2,10.5\n3,4,-1\n"),
                   CsvOptions{.labelColumn = "price", .task = CsvOptions::Task::Regression});
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->targets, (std::vector<float>{10.5f, -1}));
  EXPECT_TRUE(d->labels.empty());
  EXPECT_EQ(d->classCount, 0u);
  EXPECT_EQ(d->features, (std::vector<float>{1, 2, 3, 4}));

  const std::string detail = rejected(
      "a,price\n1,abc\n", CsvOptions{.labelColumn = "price", .task = CsvOptions::Task::Regression});
  EXPECT_TRUE(contains(detail, ":2: column 'price': 'abc' is not a number")) << detail;
}

TEST_F(CsvFiles, QuotingCrlfBomAndBlankLines) {
  const std::string text =
      "\xEF\xBB\xBF"
      "\"x, first\",\"label\"\r\n"
      "\r\n"
      " 1 ,\"big, \"\"red\"\" dog\"\r\n"
      "\"2\",\"two\r\nlines\"\r\n"
      "\n"
      "3 , plain \r\n"
      "4,\"big, \"\"red\"\" dog\"";  // no final line break
  auto d = loadCsv(write(text));
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->featureNames, (std::vector<std::string>{"x, first"}));
  EXPECT_EQ(d->features, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(d->classNames, (std::vector<std::string>{"big, \"red\" dog", "plain", "two\r\nlines"}));
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{0, 2, 1, 0}));
}

TEST_F(CsvFiles, LineNumbersCountLinesInsideQuotes) {
  const std::string detail = rejected("a,label\n1,\"x\ny\nz\"\n\n2,x,extra\n");
  EXPECT_TRUE(contains(detail, "data.csv:6: row has 3 fields, expected 2 (as in the header)"))
      << detail;
}

TEST_F(CsvFiles, FirstN) {
  auto d = loadCsv(write("a,label\n1,x\n2,y\nnot a number,z\n"), CsvOptions{.firstN = 2});
  ASSERT_TRUE(d.ok()) << d.error().toString();
  EXPECT_EQ(d->size(), 2u);
}

TEST_F(CsvFiles, SpecLoadsCsv) {
  const fs::path path = write("a,label\n1,x\n");
  auto bare = loadDataset(path.string());
  ASSERT_TRUE(bare.ok()) << bare.error().toString();
  EXPECT_EQ(bare->size(), 1u);
  auto prefixed = loadDataset("csv:" + path.string());
  ASSERT_TRUE(prefixed.ok()) << prefixed.error().toString();
  EXPECT_EQ(prefixed->features, (std::vector<float>{1}));
}

TEST_F(CsvFiles, MissingFileIsIoError) {
  auto r = loadCsv(dir_.path() / "absent.csv");
  EXPECT_EQ(r.code(), Code::IoError);
  EXPECT_TRUE(contains(r.error().detail, "absent.csv"));
}

TEST_F(CsvFiles, EmptyFileAndNoRows) {
  EXPECT_TRUE(contains(rejected(""), "empty file"));
  EXPECT_TRUE(contains(rejected("\n\r\n\n"), "empty file"));
  EXPECT_TRUE(contains(rejected("a,label\n"), "header but no data rows"));
}

TEST_F(CsvFiles, RaggedRows) {
  const std::string detail = rejected("a,b,label\n1,2,x\n3,y\n");
  EXPECT_TRUE(contains(detail, "data.csv:3: row has 2 fields, expected 3")) << detail;
}

TEST_F(CsvFiles, NonNumericValues) {
  std::string detail = rejected("a,b,label\n1,2,x\n3,four,y\n");
  EXPECT_TRUE(contains(detail, "data.csv:3: column 'b': 'four' is not a number")) << detail;
  detail = rejected("a,b,label\n1,,x\n");
  EXPECT_TRUE(contains(detail, ":2: column 'b': '' is not a number")) << detail;
  detail = rejected("a,b,label\n1,2.5.1,x\n");
  EXPECT_TRUE(contains(detail, "'2.5.1' is not a number")) << detail;
  detail = rejected("a,b,label\n1,+-2,x\n");
  EXPECT_TRUE(contains(detail, "'+-2' is not a number")) << detail;
}

TEST_F(CsvFiles, NonFiniteValues) {
  for (const char* value : {"nan", "inf", "-infinity", "1e60", "1e999"}) {
    const std::string detail = rejected(std::string("a,label\n") + value + ",x\n");
    EXPECT_TRUE(contains(detail, ":2: column 'a': '" + std::string(value) + "' is not a finite"))
        << detail;
  }
}

TEST_F(CsvFiles, HeaderProblems) {
  std::string detail = rejected("a,b\n1,2\n");
  EXPECT_TRUE(contains(detail, "no label column 'label' in the header (columns: a, b)")) << detail;
  detail = rejected("a,label,a\n1,x,2\n");
  EXPECT_TRUE(contains(detail, "duplicate column name 'a' (columns 1 and 3)")) << detail;
  detail = rejected("a,,label\n1,2,x\n");
  EXPECT_TRUE(contains(detail, "column 2 has an empty name")) << detail;
  detail = rejected("label\nx\n");
  EXPECT_TRUE(contains(detail, "no feature columns besides 'label'")) << detail;
  detail = rejected("a,label\n1,\n");
  EXPECT_TRUE(contains(detail, ":2: column 'label' is empty")) << detail;
}

TEST_F(CsvFiles, MalformedQuoting) {
  std::string detail = rejected("a,label\n1,\"never closed\n2,x\n");
  EXPECT_TRUE(contains(detail, ":2: field 2: quoted field is never closed")) << detail;
  detail = rejected("a,label\n1,\"x\"y\n");
  EXPECT_TRUE(contains(detail, ":2: field 2: text after the closing quote")) << detail;
  detail = rejected("a,label\n1,x\"y\n");
  EXPECT_TRUE(contains(detail, ":2: field 2: quote inside an unquoted field")) << detail;
}

TEST_F(CsvFiles, Limits) {
  std::string detail = rejected("a,label\n1,x\n2,y\n3,z\n", CsvOptions{.maxRows = 2});
  EXPECT_TRUE(contains(detail, ":4: more than maxRows = 2 data rows")) << detail;
  detail = rejected("a,b,c,label\n1,2,3,x\n", CsvOptions{.maxColumns = 3});
  EXPECT_TRUE(contains(detail, ":1: 4 columns, over maxColumns = 3")) << detail;
  detail =
      rejected("a,label\n1,x\n" + std::string(100, '1') + ",y\n", CsvOptions{.maxRecordBytes = 64});
  EXPECT_TRUE(contains(detail, ":3: record longer than maxRecordBytes = 64")) << detail;
  detail = rejected("a,label\n1,x\n2,y\n", CsvOptions{.maxFileBytes = 10});
  EXPECT_TRUE(contains(detail, "over maxFileBytes = 10")) << detail;
  detail = rejected("a,label\n1,x\n2,y\n3,z\n", CsvOptions{.maxClasses = 2});
  EXPECT_TRUE(contains(detail, ":4: label 'z' would be class 3, over maxClasses = 2")) << detail;
}

}  // namespace
}  // namespace edgefl
