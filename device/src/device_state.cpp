#include "edgefl/device/device_state.hpp"

#include <cstring>
#include <filesystem>
#include <set>

namespace edgefl::device {
namespace {

std::optional<Digest> digestFromBlob(ByteView blob) {
  return arrayFromBytes<kDigestBytes>(blob);
}

// "" is stored as NULL: no file.
void bindOptionalText(Statement& st, int index, const std::string& text) {
  if (text.empty()) {
    st.bindNull(index);
  } else {
    st.bind(index, std::string_view(text));
  }
}

}  // namespace

std::string_view channelName(Channel channel) {
  switch (channel) {
    case Channel::STABLE: return "stable";
    case Channel::CANARY: return "canary";
  }
  return "unknown";
}

const StoredDeployment* DeploymentState::find(const std::string& file) const {
  auto it = files.find(file);
  return it == files.end() ? nullptr : &it->second;
}

StoredDeployment* DeploymentState::find(const std::string& file) {
  auto it = files.find(file);
  return it == files.end() ? nullptr : &it->second;
}

bool DeploymentState::references(const std::string& file) const {
  if (file.empty()) return false;
  if (file == activeFile || file == previousFile || file == shadowFile) return true;
  for (const ChannelState& c : channels) {
    if (file == c.activateFile || file == c.shadowFile) return true;
  }
  return false;
}

void DeploymentState::prune() {
  for (auto it = files.begin(); it != files.end();) {
    it = references(it->first) ? std::next(it) : files.erase(it);
  }
}

Result<DeploymentState> DeviceState::loadDeployments() const {
  auto held = db_.lock();
  DeploymentState state;
  {
    Statement st(db_,
                 "SELECT file, channel, sequence, mode, model_version, digest, accepted_at, "
                 "failed FROM deployments");
    for (;;) {
      auto row = st.step();
      if (!row.ok()) return row.error();
      if (!*row) break;
      StoredDeployment d;
      d.file = st.text(0);
      const auto channel = st.integer(1);
      const auto mode = st.integer(3);
      auto digest = digestFromBlob(st.blob(5));
      if (channel < 0 || channel >= static_cast<std::int64_t>(kChannelCount) || mode < 0 ||
          mode > 1 || !digest) {
        return makeError(Code::IoError, "corrupt deployments row for " + d.file);
      }
      d.channel = static_cast<Channel>(channel);
      d.sequence = static_cast<std::uint64_t>(st.integer(2));
      d.mode = static_cast<DeployMode>(mode);
      d.modelVersion = static_cast<std::uint64_t>(st.integer(4));
      d.digest = *digest;
      d.acceptedAt = st.integer(6);
      d.failed = st.integer(7) != 0;
      state.files.emplace(d.file, d);
    }
  }
  {
    Statement st(db_,
                 "SELECT channel, last_sequence, present, percent, salt, activate_file, "
                 "shadow_file FROM channels");
    for (;;) {
      auto row = st.step();
      if (!row.ok()) return row.error();
      if (!*row) break;
      const auto channel = st.integer(0);
      if (channel < 0 || channel >= static_cast<std::int64_t>(kChannelCount)) {
        return makeError(Code::IoError, "corrupt channels row " + std::to_string(channel));
      }
      ChannelState& c = state.channels[static_cast<std::size_t>(channel)];
      c.lastSequence = static_cast<std::uint64_t>(st.integer(1));
      c.present = st.integer(2) != 0;
      c.percent = static_cast<float>(st.real(3));
      c.salt = static_cast<std::uint64_t>(st.integer(4));
      c.activateFile = st.isNull(5) ? "" : st.text(5);
      c.shadowFile = st.isNull(6) ? "" : st.text(6);
    }
  }
  {
    Statement st(db_, "SELECT slot, file FROM slots");
    for (;;) {
      auto row = st.step();
      if (!row.ok()) return row.error();
      if (!*row) break;
      const std::string slot = st.text(0);
      const std::string file = st.text(1);
      if (slot == "active") state.activeFile = file;
      if (slot == "previous") state.previousFile = file;
      if (slot == "shadow") state.shadowFile = file;
    }
  }
  return state;
}

Status DeviceState::saveDeployments(const DeploymentState& state) {
  // The tables hold a handful of rows: rewriting them whole keeps every
  // change a single, obviously atomic step.
  return db_.transaction(Durability::Full, [&]() -> Status {
    EDGEFL_TRY(db_.exec("DELETE FROM deployments; DELETE FROM channels; DELETE FROM slots;"));
    for (const auto& [file, d] : state.files) {
      if (!state.references(file)) continue;
      Statement st(db_,
                   "INSERT INTO deployments(file, channel, sequence, mode, model_version, "
                   "digest, accepted_at, failed) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      st.bind(1, std::string_view(d.file))
          .bind(2, static_cast<std::int64_t>(d.channel))
          .bind(3, static_cast<std::int64_t>(d.sequence))
          .bind(4, static_cast<std::int64_t>(d.mode))
          .bind(5, static_cast<std::int64_t>(d.modelVersion))
          .bind(6, ByteView(d.digest))
          .bind(7, d.acceptedAt)
          .bind(8, static_cast<std::int64_t>(d.failed ? 1 : 0));
      EDGEFL_TRY(st.run());
    }
    for (std::size_t i = 0; i < kChannelCount; ++i) {
      const ChannelState& c = state.channels[i];
      Statement st(db_,
                   "INSERT INTO channels(channel, last_sequence, present, percent, salt, "
                   "activate_file, shadow_file) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
      st.bind(1, static_cast<std::int64_t>(i))
          .bind(2, static_cast<std::int64_t>(c.lastSequence))
          .bind(3, static_cast<std::int64_t>(c.present ? 1 : 0))
          .bind(4, static_cast<double>(c.percent))
          .bind(5, static_cast<std::int64_t>(c.salt));
      bindOptionalText(st, 6, c.activateFile);
      bindOptionalText(st, 7, c.shadowFile);
      EDGEFL_TRY(st.run());
    }
    const std::pair<const char*, const std::string*> slots[] = {
        {"active", &state.activeFile},
        {"previous", &state.previousFile},
        {"shadow", &state.shadowFile},
    };
    for (const auto& [slot, file] : slots) {
      if (file->empty()) continue;
      Statement st(db_, "INSERT INTO slots(slot, file) VALUES(?1, ?2)");
      st.bind(1, std::string_view(slot)).bind(2, std::string_view(*file));
      EDGEFL_TRY(st.run());
    }
    return {};
  });
}

Result<std::uint64_t> DeviceState::counter(const char* name) const {
  auto held = db_.lock();
  Statement st(db_, "SELECT value FROM counters WHERE name = ?1");
  st.bind(1, std::string_view(name));
  auto row = st.step();
  if (!row.ok()) return row.error();
  return *row ? static_cast<std::uint64_t>(st.integer(0)) : 0;
}

Status DeviceState::setCounter(const char* name, std::uint64_t value) {
  return db_.transaction(Durability::Full, [&]() -> Status {
    Statement st(db_, "INSERT OR REPLACE INTO counters(name, value) VALUES(?1, ?2)");
    st.bind(1, std::string_view(name)).bind(2, static_cast<std::int64_t>(value));
    return st.run();
  });
}

Status DeviceState::addCounter(const char* name, std::uint64_t delta) {
  return db_.transaction(Durability::Full, [&]() -> Status {
    Statement st(db_,
                 "INSERT INTO counters(name, value) VALUES(?1, ?2) "
                 "ON CONFLICT(name) DO UPDATE SET value = value + ?2");
    st.bind(1, std::string_view(name)).bind(2, static_cast<std::int64_t>(delta));
    return st.run();
  });
}

Result<bool> DeviceState::roundSent(std::uint64_t round) const {
  auto held = db_.lock();
  Statement st(db_, "SELECT 1 FROM rounds WHERE round = ?1");
  st.bind(1, static_cast<std::int64_t>(round));
  return st.step();
}

std::string DeviceState::pendingFileName(std::uint64_t round) {
  return "round-" + std::to_string(round) + ".update";
}

Result<std::vector<PendingUpdate>> DeviceState::pendingUpdates(
    std::vector<LostPending>* lost) const {
  auto held = db_.lock();
  std::vector<PendingUpdate> out;
  Statement st(db_,
               "SELECT round, envelope, payload_digest, deadline, created_at, file, "
               "envelope_bytes FROM pending ORDER BY round");
  for (;;) {
    auto row = st.step();
    if (!row.ok()) return row.error();
    if (!*row) break;
    PendingUpdate p;
    p.round = static_cast<std::uint64_t>(st.integer(0));
    auto digest = digestFromBlob(st.blob(2));
    if (!digest) return makeError(Code::IoError, "corrupt pending row " + std::to_string(p.round));
    p.payloadDigest = *digest;
    p.deadline = st.integer(3);
    p.createdAt = st.integer(4);
    if (st.isNull(5)) {
      ByteView envelope = st.blob(1);
      p.envelope.assign(envelope.begin(), envelope.end());
    } else {
      const std::string file = st.text(5);
      const std::int64_t size = st.integer(6);
      std::string reason;
      if (pendingFiles_ == nullptr) {
        reason = "stored in " + file + " but no pending directory is open";
      } else if (file != pendingFileName(p.round)) {
        // Only the round's own name is read: a row naming anything else
        // (another directory, another round's file) is corrupt.
        reason = "corrupt pending row: names file '" + file + "'";
      } else if (size <= 0) {
        reason = "corrupt pending row: envelope of " + std::to_string(size) + " bytes";
      } else {
        auto bytes = pendingFiles_->read(file, static_cast<std::size_t>(size));
        if (!bytes.ok()) {
          reason = bytes.error().toString();
        } else if (bytes->size() != static_cast<std::size_t>(size)) {
          reason = file + " holds " + std::to_string(bytes->size()) + " bytes, not the " +
                   std::to_string(size) + " recorded";
        } else {
          p.envelope = std::move(bytes.value());
        }
      }
      if (!reason.empty()) {
        if (lost != nullptr) lost->push_back({p.round, reason});
        continue;
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

void DeviceState::removeUnreferencedPendingFiles() const {
  if (pendingFiles_ == nullptr) return;
  std::set<std::string> named;
  {
    auto held = db_.lock();
    Statement st(db_, "SELECT file FROM pending WHERE file IS NOT NULL");
    for (;;) {
      auto row = st.step();
      // Unsure which files are named: remove none.
      if (!row.ok()) return;
      if (!*row) break;
      named.insert(st.text(0));
    }
  }
  pendingFiles_->removeUnless([&](const std::string& name) { return named.count(name) != 0; });
}

Result<std::string> DeviceState::deletePendingRow(std::uint64_t round) {
  std::string file;
  {
    Statement s(db_, "SELECT file FROM pending WHERE round = ?1");
    s.bind(1, static_cast<std::int64_t>(round));
    auto row = s.step();
    if (!row.ok()) return row.error();
    // The round's own name, whatever the row says: a corrupt row must not
    // make the device remove any other file.
    if (*row && !s.isNull(0)) file = pendingFileName(round);
  }
  Statement s(db_, "DELETE FROM pending WHERE round = ?1");
  s.bind(1, static_cast<std::int64_t>(round));
  EDGEFL_TRY(s.run());
  return file;
}

void DeviceState::removePendingFile(const std::string& file) const {
  if (file.empty() || pendingFiles_ == nullptr) return;
  // A failure leaves a file no row names, which the next open removes.
  (void)pendingFiles_->remove(file);
}

Status DeviceState::recordBuiltUpdate(const PendingUpdate& update, const Residual* residual,
                                      std::uint32_t maxPending, std::uint32_t* dropped) {
  // The file first, whole: a row is never committed naming a file that is
  // not there.
  std::string file;
  if (pendingFiles_ != nullptr) {
    file = pendingFileName(update.round);
    EDGEFL_TRY(pendingFiles_->write(file, update.envelope));
  }
  std::uint32_t droppedCount = 0;
  std::vector<std::string> droppedFiles;
  Status st = db_.transaction(Durability::Full, [&]() -> Status {
    droppedFiles.clear();
    {
      Statement s(db_, "INSERT OR REPLACE INTO rounds(round, sent_at) VALUES(?1, ?2)");
      s.bind(1, static_cast<std::int64_t>(update.round)).bind(2, update.createdAt);
      EDGEFL_TRY(s.run());
    }
    {
      Statement s(db_,
                  "INSERT OR REPLACE INTO pending(round, envelope, payload_digest, deadline, "
                  "created_at, file, envelope_bytes) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
      s.bind(1, static_cast<std::int64_t>(update.round))
          .bind(2, file.empty() ? ByteView(update.envelope) : ByteView())
          .bind(3, ByteView(update.payloadDigest))
          .bind(4, update.deadline)
          .bind(5, update.createdAt)
          .bind(7, static_cast<std::int64_t>(update.envelope.size()));
      bindOptionalText(s, 6, file);
      EDGEFL_TRY(s.run());
    }
    {
      Statement count(db_, "SELECT count(*) FROM pending");
      auto row = count.step();
      if (!row.ok()) return row.error();
      const auto n = static_cast<std::uint64_t>(count.integer(0));
      if (n > maxPending) {
        std::vector<std::uint64_t> oldest;
        {
          Statement q(db_, "SELECT round FROM pending ORDER BY round LIMIT ?1");
          q.bind(1, static_cast<std::int64_t>(n - maxPending));
          for (;;) {
            auto r = q.step();
            if (!r.ok()) return r.error();
            if (!*r) break;
            oldest.push_back(static_cast<std::uint64_t>(q.integer(0)));
          }
        }
        for (std::uint64_t round : oldest) {
          auto removed = deletePendingRow(round);
          if (!removed.ok()) return removed.error();
          if (!removed->empty()) droppedFiles.push_back(*removed);
        }
        droppedCount = static_cast<std::uint32_t>(oldest.size());
      }
    }
    if (residual != nullptr) {
      Statement s(db_,
                  "INSERT OR REPLACE INTO residuals(arch, parameter_count, base_digest, data) "
                  "VALUES(?1, ?2, ?3, ?4)");
      s.bind(1, std::string_view(residual->arch))
          .bind(2, static_cast<std::int64_t>(residual->values.size()))
          .bind(3, ByteView(residual->baseDigest))
          .bind(4, ByteView(reinterpret_cast<const std::uint8_t*>(residual->values.data()),
                            residual->values.size() * sizeof(float)));
      EDGEFL_TRY(s.run());
    }
    {
      Statement s(db_, "INSERT OR REPLACE INTO counters(name, value) VALUES(?1, 0)");
      s.bind(1, std::string_view(kNewSamples));
      EDGEFL_TRY(s.run());
    }
    {
      Statement s(db_,
                  "INSERT INTO counters(name, value) VALUES(?1, 1) "
                  "ON CONFLICT(name) DO UPDATE SET value = value + 1");
      s.bind(1, std::string_view(kUpdatesSent));
      EDGEFL_TRY(s.run());
    }
    Statement s(db_,
                "INSERT INTO counters(name, value) VALUES(?1, ?2) "
                "ON CONFLICT(name) DO UPDATE SET value = max(value, ?2)");
    s.bind(1, std::string_view(kLastRound)).bind(2, static_cast<std::int64_t>(update.round));
    return s.run();
  });
  if (dropped != nullptr) *dropped = st.ok() ? droppedCount : 0;
  if (!st.ok()) {
    // Not recorded: the file is no row's unless an earlier row of the same
    // round names it.
    if (!file.empty()) {
      auto held = db_.lock();
      Statement s(db_, "SELECT 1 FROM pending WHERE file = ?1");
      s.bind(1, std::string_view(file));
      auto row = s.step();
      if (row.ok() && !*row) removePendingFile(file);
    }
    return st;
  }
  for (const std::string& f : droppedFiles) removePendingFile(f);
  return st;
}

Status DeviceState::recordAck(std::uint64_t round, std::string_view verdict,
                              std::string_view reason, bool keepPending) {
  auto recordVerdict = [&]() -> Status {
    Statement s(db_,
                "INSERT INTO rounds(round, sent_at, verdict, reason) VALUES(?1, 0, ?2, ?3) "
                "ON CONFLICT(round) DO UPDATE SET verdict = ?2, reason = ?3");
    s.bind(1, static_cast<std::int64_t>(round)).bind(2, verdict).bind(3, reason);
    return s.run();
  };
  if (keepPending) return db_.transaction(Durability::Full, recordVerdict);
  return dropPendingWith(round, recordVerdict);
}

Status DeviceState::dropPending(std::uint64_t round) {
  return dropPendingWith(round, [] { return Status{}; });
}

Status DeviceState::dropPendingWith(std::uint64_t round, const std::function<Status()>& also) {
  std::string file;
  Status st = db_.transaction(Durability::Full, [&]() -> Status {
    EDGEFL_TRY(also());
    auto removed = deletePendingRow(round);
    if (!removed.ok()) return removed.error();
    file = removed.value();
    return {};
  });
  if (st.ok()) removePendingFile(file);
  return st;
}

Result<std::optional<Residual>> DeviceState::residual(const std::string& arch) const {
  auto held = db_.lock();
  Statement st(db_, "SELECT parameter_count, base_digest, data FROM residuals WHERE arch = ?1");
  st.bind(1, std::string_view(arch));
  auto row = st.step();
  if (!row.ok()) return row.error();
  if (!*row) return std::optional<Residual>();
  Residual r;
  r.arch = arch;
  const auto count = static_cast<std::size_t>(st.integer(0));
  auto digest = digestFromBlob(st.blob(1));
  ByteView data = st.blob(2);
  if (!digest || data.size() != count * sizeof(float)) {
    return makeError(Code::IoError, "corrupt residual for " + arch);
  }
  r.baseDigest = *digest;
  r.values.resize(count);
  if (count > 0) std::memcpy(r.values.data(), data.data(), data.size());
  return std::optional<Residual>(std::move(r));
}

}  // namespace edgefl::device
