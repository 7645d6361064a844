#pragma once
// Deployment files in <storageDir>/models/. A file appears only whole: it
// is written to a temporary name, fsynced, renamed into place and the
// directory fsynced, so a crash at any point leaves either no file or the
// complete one (and a stray temporary that the next open removes).
//
// With `recycle` (the pending updates' directory and the models', whose
// files come and go every round), a removed file is kept as the directory's one spare and the
// next write overwrites it instead of creating a file: no inode is freed
// and allocated per update. On ext4 without a journal every allocation
// skips the inodes freed in the last minutes, one lookup each, and that
// scan grew with the churn of a simulated fleet to most of a file write.
// The spare is a temporary: the sweep of temporaries (removeUnless, at a
// device's open) removes it, though the same sweep may leave a new one
// when it removes a file no row names. It counts in bytesUsed, and holds
// the bytes of the last update removed (acknowledged or dropped) until the
// next write takes it.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl::device {

class ModelFiles {
 public:
  // `durable` false skips the fsyncs (simulations on scratch storage).
  ModelFiles(std::filesystem::path dir, bool durable, bool recycle = false);

  // Creates the directory and counts the bytes of what is already in it.
  // IoError on failure.
  Status prepare() const;
  // Writes `bytes` as `name` atomically (see above). IoError on failure;
  // an existing file of that name is replaced only by a complete new one.
  Status write(const std::string& name, ByteView bytes) const;
  // IoError, TooLarge (over maxBytes).
  Result<Bytes> read(const std::string& name, std::size_t maxBytes) const;
  // Removes every file for which `keep` is false (when recycling, one of
  // them may become the new spare), and with `temporaries` every temporary
  // (the spare among them): the sweep at a device's open. Without, the
  // spare and any write in progress stay.
  void removeUnless(const std::function<bool(const std::string& name)>& keep,
                    bool temporaries = true) const;
  // Removes `name` if it is there (as the spare when recycling and there is
  // none yet); false if it is there and stays.
  bool remove(const std::string& name) const;
  // The spare's name (a temporary).
  static constexpr std::string_view kSpareName = "spare.tmp";
  // Bytes of the files in the directory, kept up to date by this object's
  // writes and removals (DeviceStatus::storageBytes is read often: a
  // directory walk each time cost more than the rest of a status).
  std::uint64_t bytesUsed() const { return bytes_.load(std::memory_order_relaxed); }
  std::filesystem::path pathOf(const std::string& name) const { return dir_ / name; }

 private:
  std::filesystem::path dir_;
  bool durable_;
  bool recycle_;
  mutable std::atomic<std::uint64_t> bytes_{0};

  void uncount(std::uint64_t size) const;
};

}  // namespace edgefl::device
