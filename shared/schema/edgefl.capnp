# edgefl wire schema: the single source of truth for every message that
# crosses a process boundary (MQTT payloads, model files, key delegations).
#
# Evolution rules (Cap'n Proto): never renumber or retype a field, never
# reuse an ordinal; add new fields with the next ordinal; enums only grow at
# the end; a field that is no longer used keeps its ordinal and gets a
# "deprecated" name. Readers treat unknown enum values as the "unknown"/zero
# case and reject what they cannot handle.
#
# Conventions:
# - Times are Unix seconds (Int64), UTC.
# - Digests are BLAKE2b-256 (32 bytes); key ids are the first 8 bytes of
#   BLAKE2b-256 of the Ed25519 public key.
# - Tensor data is little-endian IEEE-754 float32 packed into `Data`
#   (one bulk copy to build and zero-copy to read; `capnp decode` shows it
#   as bytes).
# - Versions, rounds and sequences start at 1; 0 means "none".

@0x9793d26523d6f177;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("edgefl::wire");

# ---------------------------------------------------------------------------
# Envelope

enum Kind {
  unknown @0;
  model @1;
  update @2;
  deployment @3;
  roundTask @4;
  telemetry @5;
  ack @6;
  keyDelegation @7;
}

struct Signed {
  # Every message on the wire and every model file is one of these. The
  # signature is Ed25519 over BLAKE2b-256(context(kind) || payload), where
  # context is a fixed per-kind string ("edgefl/v1/update\0", ...), so a
  # payload signed as one kind never verifies as another.
  kind @0 :Kind;
  payload @1 :Data;        # a Cap'n Proto message (flat array) of type `kind`
  signerKeyId @2 :Data;    # 8 bytes
  signature @3 :Data;      # 64 bytes
  delegation @4 :Data;     # optional: a Signed(keyDelegation) by the fleet
                           # root that authorizes the signer; lets a device
                           # that knows only the root key verify the chain
}

# ---------------------------------------------------------------------------
# Keys

enum Role {
  unknown @0;
  root @1;          # fleet root: signs key delegations only
  coordinator @2;   # signs deployments, round tasks, acks and models
  deployer @3;      # signs deployments and models only
  device @4;        # signs updates and telemetry for its own device id
}

struct KeyDelegation {
  fleet @0 :Text;
  subjectKey @1 :Data;     # 32-byte Ed25519 public key being authorized
  role @2 :Role;
  notBefore @3 :Int64;
  notAfter @4 :Int64;
  issuedAt @5 :Int64;
  serial @6 :UInt64;       # increases with every delegation the root issues
  comment @7 :Text;
}

# ---------------------------------------------------------------------------
# Models

enum Task {
  classification @0;   # softmax + cross-entropy head
  regression @1;       # linear head + mean squared error
}

struct Tensor {
  shape @0 :List(UInt32);
  data @1 :Data;           # float32 LE, product(shape) elements
}

struct Dense {
  inputs @0 :UInt32;
  outputs @1 :UInt32;
  weight @2 :Tensor;       # [outputs, inputs], row-major
  bias @3 :Tensor;         # [outputs]
}

struct Conv2D {
  inChannels @0 :UInt32;
  outChannels @1 :UInt32;
  kernel @2 :UInt32;       # square kernel side
  stride @3 :UInt32;
  padding @4 :UInt32;
  inHeight @5 :UInt32;
  inWidth @6 :UInt32;
  weight @7 :Tensor;       # [outChannels, inChannels, kernel, kernel]
  bias @8 :Tensor;         # [outChannels]
}

struct MaxPool2D {
  channels @0 :UInt32;
  size @1 :UInt32;
  stride @2 :UInt32;
  inHeight @3 :UInt32;
  inWidth @4 :UInt32;
}

struct Layer {
  union {
    dense @0 :Dense;
    relu @1 :UInt32;       # element count
    conv2d @2 :Conv2D;
    maxPool2d @3 :MaxPool2D;
    flatten @4 :UInt32;    # element count
  }
}

struct InputSchema {
  featureCount @0 :UInt32;
  shape @1 :List(UInt32);  # e.g. [1, 28, 28] for images; [n] for tabular
  names @2 :List(Text);    # optional, featureCount entries when present
  minValue @3 :List(Float32);  # valid range per feature (inclusive)
  maxValue @4 :List(Float32);
}

struct Preprocessing {
  # x' = (x - shift) * scale, per feature; applied identically in training
  # and scoring. Empty lists mean identity.
  shift @0 :List(Float32);
  scale @1 :List(Float32);
}

struct ReferenceStats {
  # Computed from the training data (raw features, before preprocessing);
  # the device compares its running statistics against these for drift.
  sampleCount @0 :UInt64;
  mean @1 :List(Float32);
  std @2 :List(Float32);
  histogramBins @3 :UInt16;        # bins per feature over [minValue, maxValue]
  histogram @4 :List(Float32);     # featureCount * histogramBins proportions
  labelCounts @5 :List(UInt64);
}

struct Metrics {
  sampleCount @0 :UInt64;
  accuracy @1 :Float32;
  loss @2 :Float32;
  perClassAccuracy @3 :List(Float32);
  perClassCount @4 :List(UInt64);
  dataset @5 :Text;                # what the metrics were measured on
}

struct ModelMeta {
  version @0 :UInt64;
  parentVersion @1 :UInt64;
  digest @2 :Data;         # BLAKE2b-256 of arch + parameters (see model.hpp)
  createdAt @3 :Int64;
  fleet @4 :Text;
  round @5 :UInt64;        # the round that produced it; 0 for an initial model
  metrics @6 :Metrics;
  description @7 :Text;
  seed @8 :UInt64;
}

struct Model {
  formatVersion @0 :UInt16;   # 1
  arch @1 :Text;              # spec string, e.g. "mlp:784-128-10"
  task @2 :Task;
  inputSchema @3 :InputSchema;
  preprocessing @4 :Preprocessing;
  layers @5 :List(Layer);
  referenceStats @6 :ReferenceStats;
  meta @7 :ModelMeta;
  classNames @8 :List(Text);
  outputCount @9 :UInt32;
}

# ---------------------------------------------------------------------------
# Federated rounds

enum Optimizer {
  sgd @0;
  adam @1;
}

enum Trainable {
  all @0;
  head @1;       # last dense layer only
  bias @2;       # biases only
}

struct TrainingConfig {
  epochs @0 :UInt32 = 1;
  batchSize @1 :UInt32 = 32;
  learningRate @2 :Float32 = 0.01;
  optimizer @3 :Optimizer;
  momentum @4 :Float32;
  weightDecay @5 :Float32;
  proximalMu @6 :Float32;     # FedProx; 0 disables
  trainable @7 :Trainable;
  maxSamples @8 :UInt32;      # 0 = all local samples
  seed @9 :UInt64;
}

enum DeltaEncoding {
  float32 @0;
  int8 @1;
  topK @2;
}

enum Rounding {
  nearest @0;
  stochastic @1;
}

struct DeltaPolicy {
  encoding @0 :DeltaEncoding;
  clipNorm @1 :Float32;       # L2 clip before encoding; 0 disables
  noiseStd @2 :Float32;       # local Gaussian noise std; 0 disables
  topKFraction @3 :Float32;   # for topK: fraction of entries kept
  rounding @4 :Rounding;      # for int8
}

enum RoundMode {
  synchronous @0;
  asynchronous @1;
}

enum RoundState {
  open @0;
  closed @1;
  cancelled @2;
}

struct RoundTask {
  fleet @0 :Text;
  round @1 :UInt64;
  state @2 :RoundState;
  mode @3 :RoundMode;
  baseVersion @4 :UInt64;
  baseDigest @5 :Data;
  openedAt @6 :Int64;
  deadline @7 :Int64;
  # Selection: a device takes part when it is listed in `devices`, or,
  # when the list is empty, when hash(salt, round, deviceId) < fraction.
  fraction @8 :Float32;
  selectionSalt @9 :UInt64;
  devices @10 :List(Text);
  minSamples @11 :UInt32;
  training @12 :TrainingConfig;
  delta @13 :DeltaPolicy;
  trigger @14 :Text;          # schedule | data | drift | degradation | manual
}

struct DeltaTensor {
  elementCount @0 :UInt32;
  union {
    dense @1 :Data;           # elementCount float32 LE
    int8 :group {
      scale @2 :Float32;      # value = q * scale
      values @3 :Data;        # elementCount int8
    }
    sparse :group {
      indices @4 :Data;       # uint32 LE, strictly increasing, < elementCount
      values @5 :Data;        # float32 LE, same count as indices
    }
  }
}

struct Delta {
  encoding @0 :DeltaEncoding;
  tensors @1 :List(DeltaTensor);   # one per parameter tensor, model order
  l2Norm @2 :Float32;              # as sent, after clipping (informational)
  clipNorm @3 :Float32;
  noiseStd @4 :Float32;
}

struct Update {
  fleet @0 :Text;
  deviceId @1 :Text;
  round @2 :UInt64;
  baseVersion @3 :UInt64;
  baseDigest @4 :Data;
  sampleCount @5 :UInt32;
  delta @6 :Delta;
  lossBefore @7 :Float32;
  lossAfter @8 :Float32;
  accuracyBefore @9 :Float32;
  accuracyAfter @10 :Float32;
  trainMillis @11 :UInt32;
  createdAt @12 :Int64;
  runtimeVersion @13 :Text;
}

enum Verdict {
  accepted @0;
  rejected @1;
  duplicate @2;     # already received for this (round, device); original verdict in `reason`
}

struct Ack {
  fleet @0 :Text;
  deviceId @1 :Text;
  round @2 :UInt64;
  verdict @3 :Verdict;
  reason @4 :Text;          # machine-readable reason code, e.g. "BadSignature"
  detail @5 :Text;          # human-readable detail
  updateDigest @6 :Data;    # BLAKE2b-256 of the Update payload acknowledged
  receivedAt @7 :Int64;
}

# ---------------------------------------------------------------------------
# Deployments

enum Channel {
  stable @0;
  canary @1;
}

enum DeployMode {
  activate @0;     # serve the model
  shadow @1;       # score beside the active model, report, do not serve
}

struct Deployment {
  fleet @0 :Text;
  sequence @1 :UInt64;        # monotonic per fleet; devices refuse <= last seen
  channel @2 :Channel;
  percent @3 :Float32;        # share of devices (0..100) in this channel
  mode @4 :DeployMode;
  modelVersion @5 :UInt64;
  modelDigest @6 :Data;
  model @7 :Data;             # a Model message (flat array)
  parameterCount @8 :UInt64;
  modelBytes @9 :UInt64;
  minRuntimeVersion @10 :UInt32;
  createdAt @11 :Int64;
  expiresAt @12 :Int64;       # 0 = no expiry
  isRollback @13 :Bool;
  reason @14 :Text;
  rolloutSalt @15 :UInt64;    # canary membership = hash(salt, deviceId) < percent
}

# ---------------------------------------------------------------------------
# Telemetry

struct ReasonCount {
  reason @0 :Text;
  count @1 :UInt64;
}

struct Telemetry {
  fleet @0 :Text;
  deviceId @1 :Text;
  sequence @2 :UInt64;          # per-device counter
  timestamp @3 :Int64;
  runtimeVersion @4 :Text;
  activeVersion @5 :UInt64;
  activeDigest @6 :Data;
  deploymentSequence @7 :UInt64;
  channel @8 :Channel;
  health :group {
    modelLoaded @9 :Bool;
    healthCheckFailures @10 :UInt32;
    fallbacks @11 :UInt32;
    lastError @12 :Text;
  }
  scored @13 :UInt64;
  observed @14 :UInt64;
  rejected @15 :List(ReasonCount);     # input samples rejected by reason
  latencyBoundsMicros @16 :List(Float32);  # histogram upper bounds
  latencyCounts @17 :List(UInt64);     # bounds.size() + 1 buckets
  drift :group {
    samples @18 :UInt64;
    psiMax @19 :Float32;
    psiMean @20 :Float32;
    worstFeature @21 :UInt32;
  }
  local :group {
    labelled @22 :UInt64;
    accuracy @23 :Float32;
    loss @24 :Float32;
  }
  shadow :group {
    candidateVersion @25 :UInt64;
    samples @26 :UInt64;
    agreement @27 :Float32;
    labelled @28 :UInt64;
    activeAccuracy @29 :Float32;
    candidateAccuracy @30 :Float32;
  }
  storage :group {
    samplesStored @31 :UInt64;
    bytesUsed @32 :UInt64;
    newSamples @33 :UInt64;         # labelled samples since the last update sent
  }
  pendingUpdates @34 :UInt32;
  lastRound @35 :UInt64;
}
