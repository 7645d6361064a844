#include "edgefl/tools/inspect.hpp"

#include <capnp/dynamic.h>
#include <capnp/schema.h>

#include <cmath>
#include <sstream>

#include "edgefl/shared/model.hpp"

namespace edgefl::tools {
namespace {

// Data fields longer than this are summarized (size and digest).
constexpr std::size_t kInlineDataBytes = 64;

Node dataNode(capnp::Data::Reader data) {
  if (data.size() <= kInlineDataBytes) return Node(toHex(ByteView(data.begin(), data.size())));
  Node::Object o;
  o.emplace_back("bytes", Node(static_cast<std::uint64_t>(data.size())));
  o.emplace_back("blake2b", Node(toHex(blake2b256(ByteView(data.begin(), data.size())))));
  return Node(std::move(o));
}

Node valueNode(capnp::DynamicValue::Reader v);

Node structNode(capnp::DynamicStruct::Reader s) {
  Node::Object o;
  auto addField = [&](capnp::StructSchema::Field f) {
    auto type = f.getType();
    if (type.isStruct() && f.getProto().isGroup()) {
      o.emplace_back(f.getProto().getName().cStr(),
                     structNode(s.get(f).as<capnp::DynamicStruct>()));
      return;
    }
    if ((type.isData() || type.isText() || type.isList() || type.isStruct()) && !s.has(f)) return;
    o.emplace_back(f.getProto().getName().cStr(), valueNode(s.get(f)));
  };
  for (auto f : s.getSchema().getNonUnionFields()) addField(f);
  KJ_IF_MAYBE (active, s.which()) {
    addField(*active);
  }
  return Node(std::move(o));
}

Node valueNode(capnp::DynamicValue::Reader v) {
  switch (v.getType()) {
    case capnp::DynamicValue::VOID: return Node();
    case capnp::DynamicValue::BOOL: return Node(v.as<bool>());
    case capnp::DynamicValue::INT: return Node(v.as<std::int64_t>());
    case capnp::DynamicValue::UINT: return Node(v.as<std::uint64_t>());
    case capnp::DynamicValue::FLOAT: return Node(v.as<double>());
    case capnp::DynamicValue::TEXT: return Node(std::string(v.as<capnp::Text>().cStr()));
    case capnp::DynamicValue::DATA: return dataNode(v.as<capnp::Data>());
    case capnp::DynamicValue::LIST: {
      Node::Array a;
      for (auto e : v.as<capnp::DynamicList>()) a.push_back(valueNode(e));
      return Node(std::move(a));
    }
    case capnp::DynamicValue::ENUM: {
      auto e = v.as<capnp::DynamicEnum>();
      KJ_IF_MAYBE (en, e.getEnumerant()) {
        return Node(std::string(en->getProto().getName().cStr()));
      }
      return Node(static_cast<std::uint64_t>(e.getRaw()));
    }
    case capnp::DynamicValue::STRUCT: return structNode(v.as<capnp::DynamicStruct>());
    default: return Node("<unsupported>");
  }
}

template <typename T>
Result<Node> decodePayload(ByteView bytes, const DecodeLimits& limits) {
  auto parsed = parseMessage<T>(bytes, limits);
  if (!parsed.ok()) return parsed.error();
  Node node;
  Status walked = detail::guardedWalk([&] {
    node = structNode(capnp::toDynamic(parsed->root()).template as<capnp::DynamicStruct>());
  });
  if (!walked.ok()) return walked.error();
  return node;
}

Result<Node> decodeKind(Kind kind, ByteView bytes, const DecodeLimits& limits) {
  switch (kind) {
    case Kind::MODEL: return decodePayload<wire::Model>(bytes, limits);
    case Kind::UPDATE: return decodePayload<wire::Update>(bytes, limits);
    case Kind::DEPLOYMENT: return decodePayload<wire::Deployment>(bytes, limits);
    case Kind::ROUND_TASK: return decodePayload<wire::RoundTask>(bytes, limits);
    case Kind::TELEMETRY: return decodePayload<wire::Telemetry>(bytes, limits);
    case Kind::ACK: return decodePayload<wire::Ack>(bytes, limits);
    case Kind::KEY_DELEGATION: return decodePayload<wire::KeyDelegation>(bytes, limits);
    default: break;
  }
  return makeError(Code::BadField, "unknown kind");
}

// A readable summary of a model: what it is, its layers, its metrics.
Node modelSummary(ByteView bytes, const DecodeLimits& limits) {
  auto m = modelFromBytes(bytes, limits);
  if (!m.ok()) return Node("invalid model: " + m.error().toString());
  Node::Object o{{"arch", Node(m->arch())},
                 {"task", Node(std::string(taskName(m->task())))},
                 {"features", Node(static_cast<std::uint64_t>(m->featureCount()))},
                 {"outputs", Node(static_cast<std::uint64_t>(m->outputCount()))},
                 {"parameters", Node(static_cast<std::uint64_t>(m->parameterCount()))},
                 {"digest", Node(toHex(parameterDigest(*m)))},
                 {"version", Node(m->meta().version)},
                 {"parent", Node(m->meta().parentVersion)},
                 {"round", Node(m->meta().round)}};
  Node::Array layers;
  for (const auto& layer : m->layers()) {
    std::string text(layerKindName(layer.kind));
    if (layer.kind == LayerKind::Dense) {
      text += " " + std::to_string(layer.inputs) + " -> " + std::to_string(layer.outputs);
    } else if (layer.kind == LayerKind::Conv2D) {
      text += " " + std::to_string(layer.channels) + "x" + std::to_string(layer.inHeight) + "x" +
              std::to_string(layer.inWidth) + " -> " + std::to_string(layer.outChannels) +
              " channels, kernel " + std::to_string(layer.kernel);
    }
    layers.emplace_back(Node(text));
  }
  o.emplace_back("layers", Node(std::move(layers)));
  if (m->meta().metrics.sampleCount > 0) {
    const auto& mt = m->meta().metrics;
    o.emplace_back("metrics",
                   Node(Node::Object{{"dataset", Node(mt.dataset)},
                                     {"accuracy", Node(static_cast<double>(mt.accuracy))},
                                     {"loss", Node(static_cast<double>(mt.loss))}}));
  }
  if (!m->classNames().empty()) {
    Node::Array names;
    for (const auto& n : m->classNames()) names.emplace_back(Node(n));
    o.emplace_back("classes", Node(std::move(names)));
  }
  return Node(std::move(o));
}

Node* findField(Node& node, const std::string& name) {
  auto* o = std::get_if<Node::Object>(&node.value);
  if (o == nullptr) return nullptr;
  for (auto& [k, v] : *o) {
    if (k == name) return &v;
  }
  return nullptr;
}

void escapeJson(std::ostringstream& out, const std::string& s) {
  out << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out << "\\\""; break;
      case '\\': out << "\\\\"; break;
      case '\n': out << "\\n"; break;
      case '\t': out << "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out << buf;
        } else {
          out << c;
        }
    }
  }
  out << '"';
}

void writeDouble(std::ostringstream& out, double d, bool json) {
  if (!std::isfinite(d)) {
    if (json) {
      out << "null";
    } else {
      out << d;
    }
    return;
  }
  out << d;
}

void writeJson(std::ostringstream& out, const Node& node) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          out << "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          out << (v ? "true" : "false");
        } else if constexpr (std::is_same_v<T, double>) {
          writeDouble(out, v, true);
        } else if constexpr (std::is_same_v<T, std::string>) {
          escapeJson(out, v);
        } else if constexpr (std::is_same_v<T, Node::Object>) {
          out << '{';
          bool first = true;
          for (const auto& [k, child] : v) {
            if (!first) out << ',';
            first = false;
            escapeJson(out, k);
            out << ':';
            writeJson(out, child);
          }
          out << '}';
        } else if constexpr (std::is_same_v<T, Node::Array>) {
          out << '[';
          for (std::size_t i = 0; i < v.size(); ++i) {
            if (i) out << ',';
            writeJson(out, v[i]);
          }
          out << ']';
        } else {
          out << v;
        }
      },
      node.value);
}

bool isScalar(const Node& n) {
  return !std::holds_alternative<Node::Object>(n.value) &&
         !std::holds_alternative<Node::Array>(n.value);
}

void writeText(std::ostringstream& out, const Node& node, int indent) {
  const std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
  if (const auto* o = std::get_if<Node::Object>(&node.value)) {
    for (const auto& [k, child] : *o) {
      out << pad << k << ":";
      if (isScalar(child)) {
        out << ' ';
        writeText(out, child, 0);
      } else {
        out << '\n';
        writeText(out, child, indent + 1);
      }
    }
    return;
  }
  if (const auto* a = std::get_if<Node::Array>(&node.value)) {
    bool scalars = true;
    for (const auto& e : *a) scalars = scalars && isScalar(e);
    if (scalars) {
      // Short scalar lists on one line; long ones summarized.
      out << pad << '[';
      const std::size_t shown = std::min<std::size_t>(a->size(), 16);
      for (std::size_t i = 0; i < shown; ++i) {
        if (i) out << ", ";
        std::ostringstream item;
        writeText(item, (*a)[i], 0);
        std::string s = item.str();
        if (!s.empty() && s.back() == '\n') s.pop_back();
        out << s;
      }
      if (a->size() > shown) out << ", ... (" << a->size() << " items)";
      out << "]\n";
      return;
    }
    for (std::size_t i = 0; i < a->size(); ++i) {
      out << pad << "- [" << i << "]\n";
      writeText(out, (*a)[i], indent + 1);
    }
    return;
  }
  if (const auto* s = std::get_if<std::string>(&node.value)) {
    out << *s << '\n';
    return;
  }
  std::ostringstream tmp;
  writeJson(tmp, node);
  out << tmp.str() << '\n';
}

}  // namespace

std::string toJson(const Node& node) {
  std::ostringstream out;
  out.precision(9);
  writeJson(out, node);
  return out.str();
}

std::string toText(const Node& node) {
  std::ostringstream out;
  out.precision(6);
  writeText(out, node, 0);
  return out.str();
}

Result<InspectResult> inspectBytes(ByteView bytes, const Keyring& keyring,
                                   const VerifyOptions& options) {
  InspectResult result;
  auto envelope = parseEnvelope(bytes, options.limits);
  if (!envelope.ok()) {
    // Not an envelope: maybe a bare model file.
    auto model = decodeKind(Kind::MODEL, bytes, options.limits);
    if (model.ok() && findField(*model, "formatVersion") != nullptr) {
      Node::Object top{{"kind", Node("model")},
                       {"signed", Node(false)},
                       {"summary", modelSummary(bytes, options.limits)},
                       {"model", std::move(model.value())}};
      result.tree = Node(std::move(top));
      result.reason = "a bare model file carries no signature";
      return result;
    }
    return makeError(envelope.error().code,
                     "neither a signed message nor a model file: " + envelope.error().detail);
  }
  auto env = envelope->root();
  Node::Object top;
  top.emplace_back("kind", Node(std::string(kindName(env.getKind()))));
  top.emplace_back("signed", Node(true));
  top.emplace_back("signerKeyId", Node(toHex(ByteView(env.getSignerKeyId().begin(), 8))));
  top.emplace_back("bytes", Node(static_cast<std::uint64_t>(bytes.size())));

  if (keyring.size() > 0) {
    auto signer = verifyEnvelope(env, env.getKind(), keyring, options);
    result.verified = signer.ok();
    if (signer.ok()) {
      Node::Object s;
      s.emplace_back("role", Node(std::string(roleName(signer->role))));
      s.emplace_back("subject", Node(signer->subject));
      s.emplace_back("delegated", Node(signer->delegated));
      top.emplace_back("verified", Node(true));
      top.emplace_back("signer", Node(std::move(s)));
    } else {
      result.reason = signer.error().toString();
      top.emplace_back("verified", Node(false));
      top.emplace_back("reason", Node(result.reason));
    }
  } else {
    result.reason = "no keys given; signature not checked";
    top.emplace_back("verified", Node(false));
    top.emplace_back("reason", Node(result.reason));
  }

  if (env.hasDelegation() && env.getDelegation().size() > 0) {
    auto inner = inspectBytes(ByteView(env.getDelegation().begin(), env.getDelegation().size()),
                              keyring, options);
    if (inner.ok()) {
      top.emplace_back("delegation", std::move(inner->tree));
    } else {
      top.emplace_back("delegation", Node("undecodable: " + inner.error().toString()));
    }
  }

  auto payload = decodeKind(
      env.getKind(), ByteView(env.getPayload().begin(), env.getPayload().size()), options.limits);
  if (!payload.ok()) {
    top.emplace_back("payloadError", Node(payload.error().toString()));
  } else {
    // A deployment embeds a model: decode it too.
    if (env.getKind() == Kind::DEPLOYMENT) {
      auto parsed = parseMessage<wire::Deployment>(
          ByteView(env.getPayload().begin(), env.getPayload().size()), options.limits);
      if (parsed.ok() && parsed->root().hasModel()) {
        auto m = parsed->root().getModel();
        auto model = decodeKind(Kind::MODEL, ByteView(m.begin(), m.size()), options.limits);
        top.emplace_back("modelSummary",
                         modelSummary(ByteView(m.begin(), m.size()), options.limits));
        if (Node* field = findField(*payload, "model"); field != nullptr) {
          *field = model.ok() ? std::move(model.value())
                              : Node("undecodable: " + model.error().toString());
        }
      }
    }
    top.emplace_back("payload", std::move(payload.value()));
  }
  result.tree = Node(std::move(top));
  return result;
}

}  // namespace edgefl::tools
