#pragma once
// Builders of small, fixed messages for tests (deterministic bytes).

#include <string>

#include "edgefl/shared/signing.hpp"

namespace edgefl::test {

Bytes sampleRoundTask(const std::string& fleet, std::uint64_t round);
Bytes sampleUpdate(const std::string& fleet, const std::string& device, std::uint64_t round);
Bytes sampleAck(const std::string& fleet, const std::string& device, std::uint64_t round);
Bytes sampleTelemetry(const std::string& fleet, const std::string& device);
Bytes sampleDeployment(const std::string& fleet, std::uint64_t sequence);

}  // namespace edgefl::test
