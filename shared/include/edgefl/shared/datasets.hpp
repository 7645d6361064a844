#pragma once
// Dataset readers: IDX image/label pairs (raw or gzip, e.g. Fashion-MNIST)
// and CSV tables. Every file is untrusted input: headers are checked against
// explicit limits before anything is allocated, and every fault comes back
// as an Error naming the file and the offending values. Nothing here throws
// to the caller or writes to stdout.
//
// Error codes, for every function below:
//   IoError          the file cannot be opened or read
//   BadDataset       the content is malformed or over a limit in the options
//                    (the detail names the file, line or offset, and values)
//   InvalidArgument  the arguments themselves are unusable (unknown spec,
//                    unknown split, classCount 0)
// std::bad_alloc can still escape when memory runs out within the limits;
// the limits exist so that a hostile header cannot ask for more.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl {

struct IdxOptions {
  // Largest decompressed IDX file (header + data). Fashion-MNIST train images
  // are 47,040,016 bytes. Each byte becomes a 4-byte float, so 256 MiB of
  // pixels is already 1 GiB of features: more than an edge box should spend
  // on a dataset, and a cap on what a gzip bomb can make us inflate.
  std::uint64_t maxDecompressedBytes = 256u << 20;
  // Largest item count a header may declare. The largest MNIST-family set
  // (EMNIST ByClass) has 814,255 samples; a label file's 1 byte per item
  // would otherwise let the byte cap admit 256M items.
  std::uint32_t maxItems = 4'000'000;
  // Largest image side (rows or cols). MNIST-family images are 28x28; this
  // admits larger images without letting a header claim 2^32 x 2^32.
  std::uint32_t maxSide = 1024;
  // Load only the first `firstN` samples; 0 loads all. With a limit, reading
  // stops after the first N items: the headers (and so the image/label
  // count match) are still checked, but truncation or trailing bytes past
  // item N are not seen.
  std::size_t firstN = 0;
};

// Loads an IDX image file (magic 0x00000803: unsigned bytes, N x rows x
// cols) and its IDX label file (magic 0x00000801: unsigned bytes, N). Either
// file may be gzip-compressed (detected by the 1f 8b magic, multi-member
// streams accepted) or raw. Features are the raw pixel values 0..255 as
// float, row-major, featureCount = rows * cols; every label must be below
// `classCount`. The result's name, featureNames and classNames are empty.
// BadDataset for: bad magic, zero or over-limit dimensions, image and label
// counts that differ, truncated data, bytes after the last item, a label >=
// classCount, corrupt or truncated gzip, output over maxDecompressedBytes.
Result<Dataset> loadIdx(const std::filesystem::path& images, const std::filesystem::path& labels,
                        std::uint32_t classCount, const IdxOptions& options = {});

// Fashion-MNIST as installed by the Debian package dataset-fashion-mnist:
// <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz. `split` is "train"
// (60,000 samples) or "test" (10,000). Adds to loadIdx: images must be 28x28
// (784 features), classCount 10 with the ten class names, name
// "fashion-mnist:<split>". InvalidArgument for another split.
Result<Dataset> loadFashionMnist(std::string_view split, const IdxOptions& options = {},
                                 std::filesystem::path dir = "/usr/share/datasets/fashion-mnist");

struct CsvOptions {
  enum class Task {
    Classification,  // label text -> class index, into Dataset::labels
    Regression,      // label parsed as a finite float, into Dataset::targets
  };
  enum class ClassOrder {
    // Class names sorted: numerically when every label is an integer
    // ("2" < "10"), by bytes otherwise. The same label set gives the same
    // indices whatever the row order, so split files agree.
    Sorted,
    // Class index = order of first appearance in the file.
    FirstSeen,
  };

  std::string labelColumn = "label";
  Task task = Task::Classification;
  ClassOrder classOrder = ClassOrder::Sorted;
  // The whole file is held in memory while it is parsed.
  std::uint64_t maxFileBytes = 256u << 20;
  // A record, including newlines inside quoted fields. Bounds the damage of
  // an unclosed quote; 1 MiB holds tens of thousands of numeric columns.
  std::size_t maxRecordBytes = 1u << 20;
  // MNIST as CSV has 785 columns; far more usually means a wrong delimiter.
  std::size_t maxColumns = 10'000;
  std::size_t maxRows = 10'000'000;
  // More distinct labels than this is almost always a regression target or
  // an id column chosen as the label by mistake.
  std::uint32_t maxClasses = 1'000;
  // Load only the first `firstN` data rows; 0 loads all. Rows after the
  // N-th are not checked.
  std::size_t firstN = 0;
};

// Loads a comma-separated table with a header row. Every column except
// `labelColumn` is a feature: a finite number (surrounding spaces and a
// leading '+' are accepted). Fields may be quoted (RFC 4180: commas, line
// breaks and "" inside quotes); lines end in LF or CRLF; a UTF-8 byte order
// mark and empty lines are skipped. featureNames are the header names in
// column order without the label column; name is "csv:<path>".
// BadDataset (with the line number and column name) for: empty file, no
// data rows, empty or duplicate column names, missing label column, no
// feature column, a row with a different field count than the header, a
// value that is not a number or is not finite, an unclosed quote or text
// after a closing quote, any limit in `options` exceeded.
Result<Dataset> loadCsv(const std::filesystem::path& path, const CsvOptions& options = {});

// Loads a dataset named by a spec string (command lines, configs):
//   fashion-mnist:train | fashion-mnist:test   the installed Fashion-MNIST
//   fashion-mnist:<split>:<N>                  its first N samples (N >= 1)
//   csv:<path> | <path ending in .csv>          loadCsv with default options
// InvalidArgument for any other form.
Result<Dataset> loadDataset(std::string_view spec);

}  // namespace edgefl
