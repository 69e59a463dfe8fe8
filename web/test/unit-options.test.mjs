// Option defaults and checks (dist/options.js): the engine's defaults, every bad value named.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import init, { defaultOptions } from "../dist/wasm/webtune.js";
import {
  DEFAULT_GENERATE_OPTIONS,
  DEFAULT_OPTIONS,
  LORA_TARGETS,
  OptionError,
  parseTargets,
  resolveGenerateOptions,
  resolveOptions,
} from "../dist/options.js";

await init({ module_or_path: readFileSync(new URL("../dist/wasm/webtune_bg.wasm", import.meta.url)) });

test("defaults are the engine's own (Rust's RunSpec and SampleConfig, from the wasm build)", () => {
  const rust = defaultOptions();
  const o = resolveOptions();
  assert.deepEqual({ ...o }, rust.train);
  assert.deepEqual({ ...resolveGenerateOptions() }, rust.generate);
  assert.ok(Object.isFrozen(DEFAULT_OPTIONS));
  o.targets.push("c_fc");
  assert.equal(DEFAULT_OPTIONS.targets.length, rust.train.targets.length, "the defaults are not shared with a result");
});

test("given values win, undefined keeps the default", () => {
  const o = resolveOptions({ lr: 0.01, batch: 2, seq: 16, shuffle: false, seed: undefined });
  assert.equal(o.lr, 0.01);
  assert.equal(o.batch, 2);
  assert.equal(o.shuffle, false);
  assert.equal(o.seed, 0);
});

const bad = [
  [{ lr: 0 }, "lr", "lr 0 is invalid: it must be > 0"],
  [{ lr: -1 }, "lr", "lr -1 is invalid: it must be > 0"],
  [{ lr: Number.NaN }, "lr", "must be a finite number"],
  [{ weightDecay: -0.1 }, "weightDecay", ">= 0"],
  [{ beta1: 1 }, "beta1", "in [0, 1)"],
  [{ beta2: -0.5 }, "beta2", "in [0, 1)"],
  [{ eps: 0 }, "eps", "> 0"],
  [{ gradClip: -1 }, "gradClip", "0 turns clipping off"],
  [{ alpha: 0 }, "alpha", "> 0"],
  [{ rank: 0 }, "rank", "integer >= 1"],
  [{ rank: 2.5 }, "rank", "integer >= 1"],
  [{ steps: 0 }, "steps", "integer >= 1"],
  [{ batch: Number.NaN }, "batch", "integer >= 1"],
  [{ seq: "16" }, "seq", "integer >= 1"],
  [{ seed: -1 }, "seed", "integer >= 0"],
  [{ readbackEvery: 0 }, "readbackEvery", "integer >= 1"],
  [{ shuffle: "yes" }, "shuffle", "true or false"],
  [{ targets: [] }, "targets", "at least one LoRA target"],
  [{ targets: ["c_attn", "qkv_proj"] }, "targets", "'qkv_proj' matches no linear layer"],
  [{ lrr: 1 }, "unknown", "unknown option 'lrr'"],
  [{ mode: "qlora" }, "mode", '"lora" or "full"'],
  [{ schedule: "step" }, "schedule", "constant, linear or cosine"],
  [{ warmup: -1 }, "warmup", "integer >= 0"],
  [{ minLr: 0.001 }, "minLr", "in [0, lr]"],
  [{ minLr: -1e-5 }, "minLr", "in [0, lr]"],
  [{ gradAccum: 0 }, "gradAccum", "integer >= 1"],
  [{ evalSplit: 1 }, "evalSplit", "in [0, 1)"],
  [{ evalSplit: -0.1 }, "evalSplit", "in [0, 1)"],
  [{ evalEvery: 1.5 }, "evalEvery", "integer >= 0"],
  [{ checkpointEvery: -2 }, "checkpointEvery", "integer >= 0"],
];
for (const [given, field, text] of bad) {
  test(`rejects ${JSON.stringify(given)}`, () => {
    assert.throws(
      () => resolveOptions(given),
      (e) => e instanceof OptionError && e.field === field && e.message.includes(text),
    );
  });
}

test("seq is checked against the model's n_positions", () => {
  assert.equal(resolveOptions({ seq: 64 }, { nPositions: 64 }).seq, 64);
  assert.throws(() => resolveOptions({ seq: 65 }, { nPositions: 64 }), /seq 65 is longer than the model's n_positions 64/);
});

test("every PEFT target is accepted, a loaded model's own list decides; form text is split on commas", () => {
  assert.deepEqual(resolveOptions({ targets: [...LORA_TARGETS] }).targets, LORA_TARGETS);
  const gpt2 = { loraTargets: ["c_attn", "c_proj", "c_fc", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "all-linear"], modelType: "gpt2" };
  assert.deepEqual(resolveOptions({ targets: ["c_fc", "all-linear"] }, gpt2).targets, ["c_fc", "all-linear"]);
  assert.throws(() => resolveOptions({ targets: ["q_proj"] }, gpt2), /LoRA target 'q_proj' matches no gpt2 linear layer; valid targets are c_attn, /);
  assert.deepEqual(parseTargets(" c_attn, ,c_fc ,"), ["c_attn", "c_fc"]);
});

test("full fine-tuning needs no LoRA targets; a schedule with warmup and a floor", () => {
  assert.equal(resolveOptions({ mode: "full", targets: [] }).mode, "full");
  const o = resolveOptions({ schedule: "cosine", warmup: 10, lr: 1e-3, minLr: 1e-4, gradAccum: 4, evalSplit: 0.1 });
  assert.deepEqual([o.schedule, o.warmup, o.minLr, o.gradAccum, o.evalSplit], ["cosine", 10, 1e-4, 4, 0.1]);
});

test("generation options: webtune generate's defaults and checks", () => {
  assert.deepEqual(resolveGenerateOptions(), defaultOptions().generate);
  assert.ok(Object.isFrozen(DEFAULT_GENERATE_OPTIONS));
  assert.equal(resolveGenerateOptions({ temperature: 0 }).temperature, 0, "0 is greedy");
  for (const [given, field, text] of [
    [{ maxNewTokens: 0 }, "maxNewTokens", "integer >= 1"],
    [{ temperature: -0.5 }, "temperature", ">= 0 (0 = greedy)"],
    [{ topP: 0 }, "topP", "in (0, 1]"],
    [{ topP: 1.5 }, "topP", "in (0, 1]"],
    [{ topK: -1 }, "topK", "integer >= 0"],
    [{ adapted: "no" }, "adapted", "true or false"],
    [{ topk: 5 }, "unknown", "unknown option 'topk'"],
  ]) {
    assert.throws(
      () => resolveGenerateOptions(given),
      (e) => e instanceof OptionError && e.field === field && e.message.includes(text),
      JSON.stringify(given),
    );
  }
});
