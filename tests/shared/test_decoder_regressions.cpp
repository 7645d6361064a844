// Inputs the fuzz targets (fuzz/) found mishandled by a decoder, each
// pinned with the error it must now get. The same inputs are in the fuzz
// corpora as regress_* files.

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl {
namespace {

// A small valid model whose wire form the test then edits.
Model smallModel() {
  ModelOptions options;
  options.classNames = {"no", "yes"};
  return createModel("mlp:4-3-2", options).value();
}

// The model's wire bytes after `edit`, without meta.digest (so that the
// digest is not what rejects it).
Bytes editedModel(const Model& model, const std::function<void(wire::Model::Builder)>& edit) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<wire::Model>();
  modelToWire(model, root);
  root.getMeta().disownDigest();
  edit(root);
  return toBytes(builder);
}

// Text with a NUL byte decoded, but modelToWire stops at the NUL, so the
// model did not survive its own round trip (its digest changed).
TEST(DecoderRegressions, ModelTextWithNulIsRefused) {
  const Model model = smallModel();
  const char arch[] = "mlp:4-3-2\0trailer";
  auto bad = modelFromBytes(editedModel(model, [&](wire::Model::Builder m) {
    m.setArch(capnp::Text::Reader(arch, sizeof arch - 1));
  }));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.code(), Code::BadModel);
  EXPECT_NE(bad.error().detail.find("arch has a NUL byte at offset 9"), std::string::npos)
      << bad.error().toString();

  const char name[] = "y\0es";
  auto badName = modelFromBytes(editedModel(model, [&](wire::Model::Builder m) {
    m.getClassNames().set(1, capnp::Text::Reader(name, sizeof name - 1));
  }));
  ASSERT_FALSE(badName.ok());
  EXPECT_EQ(badName.code(), Code::BadModel);

  auto good = modelFromBytes(editedModel(model, [](wire::Model::Builder) {}));
  EXPECT_TRUE(good.ok()) << good.error().toString();
}

// A Delta whose tensors are 512 structs with no data and no pointers: 136
// bytes that cost 512 words per read. The walk passed, and reading the list
// again, within the revisits a parsed message allows, threw.
TEST(DecoderRegressions, ListOfEmptyStructsIsRefused) {
  const std::string hex =
      "00000000100000000000000002000100000000005d8a933f0000000000000000"
      "0100000047000000000800000000000000000001000000000000000000000000"
      "15000000820000000000000000000000420081000000fb000000000000000000"
      "0d0000004200000000000000000000000000003f000080be0000003e0000803f"
      "0ad7233c0ad7a3bc";
  Bytes bytes(hex.size() / 2);
  ASSERT_TRUE(fromHex(hex, bytes));
  // The walk's budget, the message's own size, now stops it before the
  // explicit check for a list of empty structs does.
  auto parsed = parseMessage<wire::Delta>(bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.code(), Code::TraversalLimit) << parsed.error().toString();
}

// A RoundTask whose device-id list has six pointers to the same 64 KB
// text: a 64 KB message that reads as 384 KB. Within the decoder's full
// traversal budget (8x the size) the walk passed, leaving the readers of
// the result too little; the walk's own budget is now the message's size.
TEST(DecoderRegressions, AliasedPointersAreRefused) {
  constexpr unsigned kIds = 6;
  capnp::MallocMessageBuilder builder(16 * 1024);  // one segment holds it all
  auto task = builder.initRoot<wire::RoundTask>();
  task.setFleet("demo");
  task.setRound(1);
  auto ids = task.initDevices(kIds);
  ids.set(0, std::string(64 * 1024, 'd'));
  for (unsigned i = 1; i < kIds; ++i) ids.set(i, "x");
  Bytes honest = toBytes(builder);
  ASSERT_TRUE(parseMessage<wire::RoundTask>(honest).ok());

  // Point every element at element 0's text. A list pointer's bits 2..31
  // are the signed offset in words from the end of the pointer itself.
  Bytes aliased = honest;
  auto word = [&](std::size_t index) {
    std::uint64_t v;
    std::memcpy(&v, aliased.data() + index * 8, 8);
    return v;
  };
  const std::size_t table = 1;  // one segment: an 8-byte segment table
  // Find the element pointers: kIds consecutive list pointers whose first
  // one names the 64 KB text (element count 65537 bytes incl. the NUL).
  std::size_t first = 0;
  for (std::size_t w = table; w + kIds <= aliased.size() / 8; ++w) {
    const std::uint64_t p = word(w);
    if ((p & 3) == 1 && (p >> 35) == 64 * 1024 + 1 && ((p >> 32) & 7) == 2) {
      first = w;
      break;
    }
  }
  ASSERT_NE(first, 0u) << "the text's pointer was not found";
  const std::uint64_t p0 = word(first);
  const auto offset0 = static_cast<std::int32_t>(static_cast<std::uint32_t>(p0) & ~3u) >> 2;
  for (unsigned i = 1; i < kIds; ++i) {
    const std::int32_t offset = offset0 - static_cast<std::int32_t>(i);
    std::uint64_t p = (p0 & ~std::uint64_t{0xffffffff}) |
                      (static_cast<std::uint32_t>(offset) << 2) | std::uint64_t{1};
    std::memcpy(aliased.data() + (first + i) * 8, &p, 8);
  }
  auto parsed = parseMessage<wire::RoundTask>(aliased);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.code(), Code::TraversalLimit) << parsed.error().toString();
}

}  // namespace
}  // namespace edgefl
