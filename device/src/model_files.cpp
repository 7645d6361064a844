#include "edgefl/device/model_files.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include "edgefl/shared/envelope.hpp"

namespace edgefl::device {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kTempSuffix = ".tmp";

Error ioError(const std::string& what, const fs::path& path, int err) {
  return makeError(Code::IoError, what + " " + path.string() + ": " + std::strerror(err));
}

Status syncDirectory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ioError("cannot open directory", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ioError("cannot fsync directory", dir, err);
  return {};
}

}  // namespace

ModelFiles::ModelFiles(fs::path dir, bool durable, bool recycle)
    : dir_(std::move(dir)), durable_(durable), recycle_(recycle) {}

Status ModelFiles::prepare() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return makeError(Code::IoError, "cannot create " + dir_.string() + ": " + ec.message());
  std::uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::error_code sizeError;
    auto size = entry.file_size(sizeError);
    if (!sizeError) total += size;
  }
  bytes_.store(total, std::memory_order_relaxed);
  return {};
}

Status ModelFiles::write(const std::string& name, ByteView bytes) const {
  const fs::path target = dir_ / name;
  const fs::path temp = dir_ / (name + std::string(kTempSuffix));
  // The spare, if there is one, becomes the temporary and is overwritten in
  // place: truncating it first would free its blocks only to allocate them
  // again. Its size is read before the rename (a spare is never replaced,
  // only taken), so its bytes, already counted, are known on every path.
  // Only a regular file is taken, and it is opened without following a
  // link: nothing put there under that name is written through.
  std::uint64_t counted = 0;
  bool reuse = false;
  if (recycle_) {
    const fs::path spare = dir_ / kSpareName;
    struct stat st {};
    if (::lstat(spare.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::rename(spare.c_str(), temp.c_str()) == 0) {
      reuse = true;
      counted = static_cast<std::uint64_t>(st.st_size);
    }
  }
  // Every failure removes the temporary (the spare with it) and its count.
  auto discard = [&](const char* what, const fs::path& path, int err) {
    ::unlink(temp.c_str());
    uncount(counted);
    return ioError(what, path, err);
  };
  int fd = ::open(
      temp.c_str(),
      reuse ? O_WRONLY | O_CLOEXEC | O_NOFOLLOW : O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return discard("cannot create", temp, errno);
  auto fail = [&](const char* what, int err) {
    ::close(fd);
    return discard(what, temp, err);
  };
  std::size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write", errno);
    }
    written += static_cast<std::size_t>(n);
  }
  // What is left of a longer spare goes.
  if (reuse && ::ftruncate(fd, static_cast<off_t>(bytes.size())) != 0) {
    return fail("cannot truncate", errno);
  }
  if (durable_ && ::fsync(fd) != 0) return fail("cannot fsync", errno);
  if (::close(fd) != 0) return discard("cannot close", temp, errno);
  std::error_code ec;
  const auto replaced = fs::file_size(target, ec);
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    return discard("cannot rename into", target, errno);
  }
  bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
  uncount(counted);
  if (!ec) uncount(replaced);
  // The rename is durable only once the directory entry is.
  if (durable_) EDGEFL_TRY(syncDirectory(dir_));
  return {};
}

Result<Bytes> ModelFiles::read(const std::string& name, std::size_t maxBytes) const {
  return readFileBytes((dir_ / name).string(), maxBytes);
}

void ModelFiles::removeUnless(const std::function<bool(const std::string& name)>& keep,
                              bool temporaries) const {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    names.push_back(entry.path().filename().string());
  }
  for (const std::string& name : names) {
    const bool temp = name.size() > kTempSuffix.size() && name.ends_with(kTempSuffix);
    if (temp ? temporaries : !keep(name)) remove(name);
  }
}

bool ModelFiles::remove(const std::string& name) const {
  const fs::path path = dir_ / name;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return !fs::exists(path, ec);
  // Kept as the spare (its bytes stay counted) unless there already is one;
  // temporaries, the spare among them, are removed.
  if (recycle_ && !name.ends_with(kTempSuffix) &&
      ::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, (dir_ / kSpareName).c_str(),
                  RENAME_NOREPLACE) == 0) {
    return true;
  }
  if (!fs::remove(path, ec) || ec) return false;
  uncount(size);
  return true;
}

void ModelFiles::uncount(std::uint64_t size) const {
  // Never below zero: a temporary of a write cut short was never counted.
  std::uint64_t was = bytes_.load(std::memory_order_relaxed);
  while (!bytes_.compare_exchange_weak(was, was - std::min(was, size), std::memory_order_relaxed)) {
  }
}

}  // namespace edgefl::device
