// IDX reader (the MNIST file format) over raw or gzip files.
//
// Both files' headers are read and checked first, so a count mismatch or a
// hostile dimension is rejected before the feature buffer is allocated.
// Data is then inflated in 1 MiB chunks and converted to floats in a plain
// loop; neither file is ever held whole in memory as bytes.

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "edgefl/shared/datasets.hpp"

namespace edgefl {
namespace {

constexpr std::uint32_t kImageMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr std::uint32_t kLabelMagic = 0x00000801;  // unsigned byte, 1 dimension
// Large enough that fread and inflate calls are few, small enough to stay in
// cache while the bytes are converted to floats.
constexpr std::size_t kChunkBytes = 1u << 20;

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Bytes of a file, inflated when it starts with the gzip magic. Not movable:
// zlib's state points back at the z_stream it was initialized in.
class ByteSource {
 public:
  ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;
  ~ByteSource() {
    if (gzip_) inflateEnd(&z_);
  }

  Status open(const std::filesystem::path& path, std::uint64_t maxBytes) {
    path_ = path.string();
    maxBytes_ = maxBytes;
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) return makeError(Code::IoError, path_ + ": cannot open: " + std::strerror(errno));
    input_.resize(kChunkBytes);
    EDGEFL_TRY(refill());
    if (inLen_ >= 2 && input_[0] == 0x1f && input_[1] == 0x8b) {
      // 16 + MAX_WBITS: expect a gzip wrapper and check its CRC and length.
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) {
        return makeError(Code::BadDataset, path_ + ": zlib cannot be initialized");
      }
      gzip_ = true;
      z_.next_in = input_.data();
      z_.avail_in = static_cast<uInt>(inLen_);
    }
    return {};
  }

  // Fills `out` completely unless the data ends first; returns the count.
  Result<std::size_t> read(std::span<std::uint8_t> out) {
    std::size_t got = 0;
    if (gzip_) {
      EDGEFL_TRY(inflateInto(out, got));
    } else {
      while (got < out.size()) {
        if (inPos_ == inLen_) {
          if (inputEnded_) break;
          EDGEFL_TRY(refill());
          continue;
        }
        const std::size_t n = std::min(out.size() - got, inLen_ - inPos_);
        std::memcpy(out.data() + got, input_.data() + inPos_, n);
        inPos_ += n;
        got += n;
      }
    }
    produced_ += got;
    if (produced_ > maxBytes_) {
      return makeError(Code::BadDataset, path_ + ": more than maxDecompressedBytes = " +
                                             std::to_string(maxBytes_) + " bytes of data");
    }
    return got;
  }

  const std::string& path() const { return path_; }

 private:
  Status refill() {
    inLen_ = std::fread(input_.data(), 1, input_.size(), file_.get());
    inPos_ = 0;
    consumed_ += inLen_;
    if (inLen_ == 0) {
      if (std::ferror(file_.get()) != 0) {
        return makeError(Code::IoError, path_ + ": read error: " + std::strerror(errno));
      }
      inputEnded_ = true;
    }
    return {};
  }

  std::uint64_t compressedOffset() const { return consumed_ - z_.avail_in; }

  Status inflateInto(std::span<std::uint8_t> out, std::size_t& got) {
    while (got < out.size() && !streamEnded_) {
      if (z_.avail_in == 0 && !inputEnded_) {
        EDGEFL_TRY(refill());
        z_.next_in = input_.data();
        z_.avail_in = static_cast<uInt>(inLen_);
      }
      // A chunk-sized request keeps avail_out within uInt.
      const std::size_t want = std::min<std::size_t>(out.size() - got, kChunkBytes);
      z_.next_out = out.data() + got;
      z_.avail_out = static_cast<uInt>(want);
      const int rc = inflate(&z_, Z_NO_FLUSH);
      const std::size_t made = want - z_.avail_out;
      got += made;
      if (made > 0) memberProducedOutput_ = true;
      switch (rc) {
        case Z_OK: break;
        case Z_STREAM_END:
          ++membersEnded_;
          if (z_.avail_in == 0 && !inputEnded_) {
            EDGEFL_TRY(refill());
            z_.next_in = input_.data();
            z_.avail_in = static_cast<uInt>(inLen_);
          }
          if (z_.avail_in == 0) {
            streamEnded_ = true;
          } else {
            // gzip allows concatenated members; anything else after the
            // first member fails its header check on the next call.
            inflateReset(&z_);
            memberProducedOutput_ = false;
          }
          break;
        case Z_BUF_ERROR:
          // No progress was possible. With input left that cannot happen
          // (avail_out > 0), so it is reported instead of retried forever.
          if (z_.avail_in == 0 && inputEnded_) {
            return makeError(Code::BadDataset, path_ + ": gzip stream truncated after " +
                                                   std::to_string(compressedOffset()) +
                                                   " compressed bytes");
          }
          if (z_.avail_in > 0) {
            return makeError(Code::BadDataset, path_ +
                                                   ": zlib made no progress at compressed offset " +
                                                   std::to_string(compressedOffset()));
          }
          break;
        default: {
          std::string what = z_.msg != nullptr ? z_.msg : "zlib error " + std::to_string(rc);
          if (membersEnded_ > 0 && !memberProducedOutput_) {
            return makeError(Code::BadDataset,
                             path_ +
                                 ": bytes after the end of the gzip stream (compressed offset " +
                                 std::to_string(compressedOffset()) + ") are not gzip: " + what);
          }
          return makeError(Code::BadDataset, path_ + ": corrupt gzip data near compressed offset " +
                                                 std::to_string(compressedOffset()) + ": " + what);
        }
      }
    }
    return {};
  }

  std::string path_;
  std::uint64_t maxBytes_ = 0;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::vector<std::uint8_t> input_;
  std::size_t inLen_ = 0;
  std::size_t inPos_ = 0;       // raw mode: next unread byte of input_
  std::uint64_t consumed_ = 0;  // bytes read from the file so far
  std::uint64_t produced_ = 0;  // bytes handed to callers so far
  bool inputEnded_ = false;
  bool gzip_ = false;
  z_stream z_{};
  bool streamEnded_ = false;
  int membersEnded_ = 0;
  bool memberProducedOutput_ = false;
};

struct IdxHeader {
  std::uint32_t count = 0;
  std::uint32_t rows = 1;
  std::uint32_t cols = 1;
  std::uint64_t itemBytes() const { return std::uint64_t{rows} * cols; }
};

std::uint32_t bigEndian32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

Result<IdxHeader> readHeader(ByteSource& src, std::uint32_t expectedMagic,
                             const IdxOptions& options) {
  const bool images = expectedMagic == kImageMagic;
  const std::string what = src.path() + (images ? ": IDX images: " : ": IDX labels: ");
  std::array<std::uint8_t, 16> raw{};
  const std::size_t headerBytes = images ? 16 : 8;
  auto got = src.read(std::span(raw).first(headerBytes));
  if (!got.ok()) return got.error();
  if (*got < 4) {
    return makeError(Code::BadDataset, what + "file too short for the 4-byte magic (" +
                                           std::to_string(*got) + " bytes)");
  }
  const std::uint32_t magic = bigEndian32(raw.data());
  if (magic != expectedMagic) {
    std::string hint;
    if (magic == kImageMagic) hint = " (that is an image file)";
    if (magic == kLabelMagic) hint = " (that is a label file)";
    return makeError(Code::BadDataset, what + "bad magic " + hex32(magic) + hint + ", expected " +
                                           hex32(expectedMagic) + " (unsigned bytes, " +
                                           (images ? "3 dimensions)" : "1 dimension)"));
  }
  if (*got < headerBytes) {
    return makeError(Code::BadDataset, what + "header truncated: " + std::to_string(*got) + " of " +
                                           std::to_string(headerBytes) + " bytes");
  }
  IdxHeader h;
  h.count = bigEndian32(raw.data() + 4);
  if (images) {
    h.rows = bigEndian32(raw.data() + 8);
    h.cols = bigEndian32(raw.data() + 12);
  }
  if (h.count == 0) return makeError(Code::BadDataset, what + "header declares 0 items");
  if (h.count > options.maxItems) {
    return makeError(Code::BadDataset,
                     what + "header declares " + std::to_string(h.count) +
                         " items, over maxItems = " + std::to_string(options.maxItems));
  }
  if (h.rows == 0 || h.cols == 0 || h.rows > options.maxSide || h.cols > options.maxSide) {
    return makeError(Code::BadDataset, what + "image size " + std::to_string(h.rows) + "x" +
                                           std::to_string(h.cols) + " is outside 1.." +
                                           std::to_string(options.maxSide) + " (maxSide)");
  }
  // Both factors are bounded above, so the product cannot overflow.
  const std::uint64_t total = headerBytes + std::uint64_t{h.count} * h.itemBytes();
  if (total > options.maxDecompressedBytes) {
    return makeError(Code::BadDataset, what + "header declares " + std::to_string(total) +
                                           " bytes, over maxDecompressedBytes = " +
                                           std::to_string(options.maxDecompressedBytes));
  }
  return h;
}

// Reads `count` items after the header, calling `sink(bytes, offset)` for
// each chunk (offset counts data bytes), and when the whole file is meant
// to be read, checks that nothing follows the last item.
template <typename Sink>
Status readItems(ByteSource& src, const IdxHeader& h, std::uint32_t count, bool wholeFile,
                 std::vector<std::uint8_t>& buffer, Sink&& sink) {
  const std::uint64_t wanted = std::uint64_t{count} * h.itemBytes();
  std::uint64_t done = 0;
  while (done < wanted) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), wanted - done));
    auto got = src.read(std::span(buffer).first(n));
    if (!got.ok()) return got.error();
    EDGEFL_TRY(sink(std::span<const std::uint8_t>(buffer.data(), *got), done));
    done += *got;
    if (*got < n) {
      return makeError(Code::BadDataset,
                       src.path() + ": truncated: header declares " + std::to_string(h.count) +
                           " items of " + std::to_string(h.itemBytes()) +
                           " bytes but the data ends after " + std::to_string(done) + " of " +
                           std::to_string(std::uint64_t{h.count} * h.itemBytes()) + " bytes");
    }
  }
  if (!wholeFile) return {};
  std::uint64_t extra = 0;
  for (;;) {
    auto got = src.read(buffer);
    if (!got.ok()) return got.error();
    if (*got == 0) break;
    extra += *got;
  }
  if (extra > 0) {
    return makeError(Code::BadDataset, src.path() + ": " + std::to_string(extra) +
                                           " bytes of trailing data after the last of " +
                                           std::to_string(h.count) + " items");
  }
  return {};
}

}  // namespace

Result<Dataset> loadIdx(const std::filesystem::path& images, const std::filesystem::path& labels,
                        std::uint32_t classCount, const IdxOptions& options) {
  if (classCount == 0) return makeError(Code::InvalidArgument, "loadIdx: classCount must be >= 1");
  ByteSource imageSrc;
  ByteSource labelSrc;
  EDGEFL_TRY(imageSrc.open(images, options.maxDecompressedBytes));
  EDGEFL_TRY(labelSrc.open(labels, options.maxDecompressedBytes));
  auto imageHeader = readHeader(imageSrc, kImageMagic, options);
  if (!imageHeader.ok()) return imageHeader.error();
  auto labelHeader = readHeader(labelSrc, kLabelMagic, options);
  if (!labelHeader.ok()) return labelHeader.error();
  if (imageHeader->count != labelHeader->count) {
    return makeError(Code::BadDataset, images.string() + " has " +
                                           std::to_string(imageHeader->count) + " images but " +
                                           labels.string() + " has " +
                                           std::to_string(labelHeader->count) + " labels");
  }

  const bool wholeFile = options.firstN == 0 || options.firstN >= imageHeader->count;
  const auto count = static_cast<std::uint32_t>(
      wholeFile ? imageHeader->count : options.firstN);  // firstN < count here, so it fits
  Dataset out;
  out.featureCount = static_cast<std::size_t>(imageHeader->itemBytes());
  out.classCount = classCount;
  out.labels.resize(count);
  out.features.resize(std::size_t{count} * out.featureCount);

  std::vector<std::uint8_t> buffer(kChunkBytes);
  EDGEFL_TRY(readItems(labelSrc, *labelHeader, count, wholeFile, buffer,
                       [&](std::span<const std::uint8_t> bytes, std::uint64_t offset) -> Status {
                         std::int32_t* dst = out.labels.data() + offset;
                         for (std::size_t i = 0; i < bytes.size(); ++i) {
                           if (bytes[i] >= classCount) {
                             return makeError(
                                 Code::BadDataset,
                                 labels.string() + ": label " + std::to_string(bytes[i]) +
                                     " of item " + std::to_string(offset + i) +
                                     " is not below classCount " + std::to_string(classCount));
                           }
                           dst[i] = bytes[i];
                         }
                         return {};
                       }));
  EDGEFL_TRY(readItems(imageSrc, *imageHeader, count, wholeFile, buffer,
                       [&](std::span<const std::uint8_t> bytes, std::uint64_t offset) -> Status {
                         // Kept branch-free so the compiler vectorizes it.
                         float* dst = out.features.data() + offset;
                         const std::uint8_t* src = bytes.data();
                         const std::size_t n = bytes.size();
                         for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
                         return {};
                       }));
  return out;
}

}  // namespace edgefl
