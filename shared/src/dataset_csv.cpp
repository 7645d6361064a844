// CSV reader: RFC 4180 fields over a file held in memory, a header row of
// column names, numeric features and one label column.

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "edgefl/shared/datasets.hpp"

namespace edgefl {
namespace {

bool isBlank(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && isBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && isBlank(s.back())) s.remove_suffix(1);
  return s;
}

// Offending values are quoted in error details; a huge field would bury
// the message.
std::string excerpt(std::string_view s) {
  constexpr std::size_t kMax = 40;
  if (s.size() <= kMax) return std::string(s);
  return std::string(s.substr(0, kMax)) + "...";
}

// Splits records into fields. Unquoted and plain quoted fields are views
// into the file text; only fields with "" escapes are copied.
class CsvScanner {
 public:
  CsvScanner(std::string_view text, std::string_view file, std::size_t maxRecordBytes)
      : text_(text), file_(file), maxRecordBytes_(maxRecordBytes) {
    if (text_.starts_with("\xEF\xBB\xBF")) pos_ = 3;  // UTF-8 byte order mark
  }

  // Reads the next non-empty record into `fields` (valid until the next
  // call); false at the end of the text.
  Result<bool> next(std::vector<std::string_view>& fields) {
    for (;;) {
      if (pos_ >= text_.size()) return false;
      recordLine_ = line_;
      EDGEFL_TRY(scanRecord());
      // A line with nothing on it is one empty unquoted field: skip it.
      if (refs_.size() == 1 && refs_[0].size == 0 && !refs_[0].quoted) continue;
      fields.clear();
      for (const Ref& r : refs_) {
        const std::string_view base = r.inScratch ? std::string_view(scratch_) : text_;
        fields.push_back(base.substr(r.offset, r.size));
      }
      return true;
    }
  }

  std::size_t recordLine() const { return recordLine_; }
  std::string where() const { return std::string(file_) + ":" + std::to_string(recordLine_); }

 private:
  struct Ref {
    std::size_t offset;
    std::size_t size;
    bool inScratch;
    bool quoted;
  };

  Error recordTooLong() const {
    return makeError(Code::BadDataset, where() + ": record longer than maxRecordBytes = " +
                                           std::to_string(maxRecordBytes_));
  }

  bool atLineEnd(std::size_t p) const {
    return p >= text_.size() || text_[p] == '\n' ||
           (text_[p] == '\r' && (p + 1 == text_.size() || text_[p + 1] == '\n'));
  }

  // Consumes one record, leaving pos_ after its line break.
  Status scanRecord() {
    refs_.clear();
    scratch_.clear();
    const std::size_t start = pos_;
    for (;;) {
      while (pos_ < text_.size() && isBlank(text_[pos_])) ++pos_;
      if (pos_ < text_.size() && text_[pos_] == '"') {
        EDGEFL_TRY(scanQuoted());
        while (pos_ < text_.size() && isBlank(text_[pos_])) ++pos_;
        if (pos_ < text_.size() && text_[pos_] != ',' && !atLineEnd(pos_)) {
          return makeError(Code::BadDataset, where() + ": field " + std::to_string(refs_.size()) +
                                                 ": text after the closing quote");
        }
      } else {
        const std::size_t begin = pos_;
        while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '\n') {
          if (text_[pos_] == '"') {
            return makeError(Code::BadDataset, where() + ": field " +
                                                   std::to_string(refs_.size() + 1) +
                                                   ": quote inside an unquoted field");
          }
          ++pos_;
        }
        std::size_t end = pos_;
        if (end > begin && text_[end - 1] == '\r' && atLineEnd(end - 1)) --end;
        while (end > begin && isBlank(text_[end - 1])) --end;
        refs_.push_back({begin, end - begin, false, false});
      }
      if (pos_ - start > maxRecordBytes_) return recordTooLong();
      if (pos_ >= text_.size()) return {};
      if (text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (text_[pos_] == '\r') ++pos_;  // atLineEnd: CR before LF or at the end
      if (pos_ < text_.size()) {
        ++pos_;  // the LF
        ++line_;
      }
      return {};
    }
  }

  // pos_ is at the opening quote; leaves pos_ after the closing one.
  Status scanQuoted() {
    ++pos_;
    std::size_t segment = pos_;
    bool escaped = false;
    const std::size_t scratchBegin = scratch_.size();
    for (;;) {
      const std::size_t quote = text_.find('"', pos_);
      if (quote == std::string_view::npos) {
        return makeError(Code::BadDataset, where() + ": field " + std::to_string(refs_.size() + 1) +
                                               ": quoted field is never closed");
      }
      line_ += static_cast<std::size_t>(
          std::count(text_.begin() + static_cast<std::ptrdiff_t>(pos_),
                     text_.begin() + static_cast<std::ptrdiff_t>(quote), '\n'));
      if (quote + 1 < text_.size() && text_[quote + 1] == '"') {
        // "" is one literal quote: from here the field needs its own copy.
        scratch_.append(text_.substr(segment, quote + 1 - segment));
        escaped = true;
        pos_ = quote + 2;
        segment = pos_;
        continue;
      }
      if (escaped) {
        scratch_.append(text_.substr(segment, quote - segment));
        refs_.push_back({scratchBegin, scratch_.size() - scratchBegin, true, true});
      } else {
        refs_.push_back({segment, quote - segment, false, true});
      }
      pos_ = quote + 1;
      return {};
    }
  }

  std::string_view text_;
  std::string_view file_;
  std::size_t maxRecordBytes_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::size_t recordLine_ = 1;
  std::vector<Ref> refs_;
  std::string scratch_;
};

enum class NumberFault { None, NotNumber, NotFinite };

NumberFault parseNumber(std::string_view s, float& out) {
  s = trim(s);
  if (s.starts_with('+')) {
    s.remove_prefix(1);
    if (s.starts_with('-')) return NumberFault::NotNumber;
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec == std::errc::invalid_argument || end != s.data() + s.size()) {
    return NumberFault::NotNumber;
  }
  // Out of range for double, NaN, inf, or too large for a float.
  if (ec == std::errc::result_out_of_range || !std::isfinite(value) ||
      std::fabs(value) > std::numeric_limits<float>::max()) {
    return NumberFault::NotFinite;
  }
  out = static_cast<float>(value);
  return NumberFault::None;
}

Result<std::string> readWholeFile(const std::filesystem::path& path, std::uint64_t maxBytes) {
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, Closer> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    return makeError(Code::IoError, path.string() + ": cannot open: " + std::strerror(errno));
  }
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > maxBytes) {
    return makeError(Code::BadDataset,
                     path.string() + ": " + std::to_string(size) +
                         " bytes, over maxFileBytes = " + std::to_string(maxBytes));
  }
  std::string text;
  // Read by chunks up to one byte past the limit: the size above is only a
  // hint (pipes, files still being written).
  constexpr std::size_t kChunk = 1u << 20;
  for (;;) {
    const std::size_t old = text.size();
    text.resize(old + kChunk);
    const std::size_t got = std::fread(text.data() + old, 1, kChunk, file.get());
    text.resize(old + got);
    if (text.size() > maxBytes) {
      return makeError(Code::BadDataset, path.string() + ": over maxFileBytes = " +
                                             std::to_string(maxBytes) + " bytes");
    }
    if (got < kChunk) break;
  }
  if (std::ferror(file.get()) != 0) {
    return makeError(Code::IoError, path.string() + ": read error: " + std::strerror(errno));
  }
  return text;
}

// Class names in ClassOrder::Sorted order: numeric if all are integers.
std::vector<std::string> sortedClassNames(std::vector<std::string> names) {
  std::vector<long long> values(names.size());
  bool allIntegers = true;
  for (std::size_t i = 0; i < names.size() && allIntegers; ++i) {
    const std::string& s = names[i];
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), values[i]);
    allIntegers = ec == std::errc() && end == s.data() + s.size();
  }
  if (!allIntegers) {
    std::sort(names.begin(), names.end());
    return names;
  }
  std::vector<std::size_t> order(names.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<std::string> out;
  out.reserve(names.size());
  for (std::size_t i : order) out.push_back(std::move(names[i]));
  return out;
}

}  // namespace

Result<Dataset> loadCsv(const std::filesystem::path& path, const CsvOptions& options) {
  auto text = readWholeFile(path, options.maxFileBytes);
  if (!text.ok()) return text.error();
  const std::string file = path.string();
  CsvScanner scanner(*text, file, options.maxRecordBytes);
  std::vector<std::string_view> fields;

  auto header = scanner.next(fields);
  if (!header.ok()) return header.error();
  if (!*header) return makeError(Code::BadDataset, file + ": empty file (no header row)");
  const std::size_t columns = fields.size();
  if (columns > options.maxColumns) {
    return makeError(Code::BadDataset,
                     scanner.where() + ": " + std::to_string(columns) +
                         " columns, over maxColumns = " + std::to_string(options.maxColumns));
  }
  std::vector<std::string> names(fields.begin(), fields.end());
  std::unordered_map<std::string_view, std::size_t> seen;
  std::size_t labelIndex = columns;
  for (std::size_t i = 0; i < columns; ++i) {
    if (names[i].empty()) {
      return makeError(Code::BadDataset, scanner.where() + ": column " + std::to_string(i + 1) +
                                             " has an empty name");
    }
    const auto [it, inserted] = seen.emplace(names[i], i);
    if (!inserted) {
      return makeError(Code::BadDataset, scanner.where() + ": duplicate column name '" +
                                             excerpt(names[i]) + "' (columns " +
                                             std::to_string(it->second + 1) + " and " +
                                             std::to_string(i + 1) + ")");
    }
    if (names[i] == options.labelColumn) labelIndex = i;
  }
  if (labelIndex == columns) {
    std::string list;
    for (std::size_t i = 0; i < columns && i < 8; ++i) list += (i ? ", " : "") + excerpt(names[i]);
    if (columns > 8) list += ", ...";
    return makeError(Code::BadDataset, scanner.where() + ": no label column '" +
                                           options.labelColumn +
                                           "' in the header (columns: " + list + ")");
  }
  if (columns < 2) {
    return makeError(Code::BadDataset, scanner.where() + ": no feature columns besides '" +
                                           options.labelColumn + "'");
  }

  const bool classify = options.task == CsvOptions::Task::Classification;
  Dataset out;
  out.featureCount = columns - 1;
  out.name = "csv:" + file;
  for (std::size_t i = 0; i < columns; ++i) {
    if (i != labelIndex) out.featureNames.push_back(names[i]);
  }
  std::map<std::string, std::uint32_t, std::less<>> classIds;  // label text -> first-seen index
  std::vector<std::string> firstSeen;
  std::size_t rows = 0;

  for (;;) {
    if (options.firstN != 0 && rows == options.firstN) break;
    auto more = scanner.next(fields);
    if (!more.ok()) return more.error();
    if (!*more) break;
    if (fields.size() != columns) {
      return makeError(Code::BadDataset, scanner.where() + ": row has " +
                                             std::to_string(fields.size()) + " fields, expected " +
                                             std::to_string(columns) + " (as in the header)");
    }
    if (++rows > options.maxRows) {
      return makeError(Code::BadDataset, scanner.where() + ": more than maxRows = " +
                                             std::to_string(options.maxRows) + " data rows");
    }
    for (std::size_t i = 0; i < columns; ++i) {
      if (i == labelIndex && classify) continue;
      float value = 0;
      switch (parseNumber(fields[i], value)) {
        case NumberFault::None: break;
        case NumberFault::NotNumber:
          return makeError(Code::BadDataset, scanner.where() + ": column '" + excerpt(names[i]) +
                                                 "': '" + excerpt(fields[i]) + "' is not a number");
        case NumberFault::NotFinite:
          return makeError(Code::BadDataset, scanner.where() + ": column '" + excerpt(names[i]) +
                                                 "': '" + excerpt(fields[i]) +
                                                 "' is not a finite float");
      }
      if (i == labelIndex) {
        out.targets.push_back(value);
      } else {
        out.features.push_back(value);
      }
    }
    if (!classify) continue;
    const std::string_view label = fields[labelIndex];  // unquoted fields come trimmed
    if (label.empty()) {
      return makeError(Code::BadDataset, scanner.where() + ": column '" +
                                             excerpt(options.labelColumn) + "' is empty");
    }
    auto it = classIds.find(label);
    if (it == classIds.end()) {
      if (classIds.size() == options.maxClasses) {
        return makeError(Code::BadDataset,
                         scanner.where() + ": label '" + excerpt(label) + "' would be class " +
                             std::to_string(classIds.size() + 1) +
                             ", over maxClasses = " + std::to_string(options.maxClasses));
      }
      it = classIds.emplace(std::string(label), static_cast<std::uint32_t>(classIds.size())).first;
      firstSeen.emplace_back(label);
    }
    out.labels.push_back(static_cast<std::int32_t>(it->second));
  }
  if (rows == 0) return makeError(Code::BadDataset, file + ": header but no data rows");

  if (classify) {
    out.classCount = static_cast<std::uint32_t>(firstSeen.size());
    if (options.classOrder == CsvOptions::ClassOrder::FirstSeen) {
      out.classNames = std::move(firstSeen);
    } else {
      out.classNames = sortedClassNames(std::move(firstSeen));
      std::vector<std::int32_t> remap(out.classNames.size());
      for (std::size_t i = 0; i < out.classNames.size(); ++i) {
        remap[classIds.find(out.classNames[i])->second] = static_cast<std::int32_t>(i);
      }
      for (std::int32_t& label : out.labels) label = remap[static_cast<std::size_t>(label)];
    }
  }
  return out;
}

}  // namespace edgefl
