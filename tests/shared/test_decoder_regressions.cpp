// Inputs the fuzz targets (fuzz/) found mishandled by a decoder, each
// pinned with the error it must now get. The same inputs are in the fuzz
// corpora as regress_* files.

#include <capnp/message.h>
#include <gtest/gtest.h>

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
  auto parsed = parseMessage<wire::Delta>(bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.code(), Code::NotCapnp);
  EXPECT_NE(parsed.error().detail.find("empty structs"), std::string::npos)
      << parsed.error().toString();
}

}  // namespace
}  // namespace edgefl
