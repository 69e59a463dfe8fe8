// Llama-family models through the npm package in headless Chromium (WebGPU on SwiftShader), against
// the native CLI on the same files and options (the CLI itself is checked against PyTorch + PEFT by
// tests/llama_cli.rs):
// - a Qwen3 folder (grouped-query attention: 3 heads, 1 kv head; head_dim 24 != 48 / 3) given as
//   files with tokenizer.json + tokenizer_config.json: 4 LoRA steps (every linear) give
//   `webtune train`'s losses and adapter; greedy generation (base and adapted) gives `webtune
//   generate`'s text, and stops at any id of a list eos_token_id as the CLI does;
// - the sharded Llama (model.safetensors.index.json + 3 shards) from its URL: 3 full fine-tuning
//   steps give `webtune train --full`'s losses and model files; a pause saves the run (OPFS) and
//   resumeSaved continues it to the same losses and weights;
// - wrong uploads get messages naming the file: a shard missing, two models mixed, a config.json
//   claiming a model too large for the page's wasm memory (refused before reading the weights), a
//   tokenizer_config.json naming a token the tokenizer lacks; the demo page describes a dropped
//   Qwen3 folder (family, kv heads, head_dim).
//
// Needs the built package (tools/build-web.sh), Chromium and the native CLI (cargo build).

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TRAIN_TIMEOUT, foreignRequests, openDemo, runWebtune, tiny } from "./browser-helpers.mjs";
import { readSafetensors } from "./safetensors.mjs";

const llama = join(tiny, "..", "llama");
const TOKENIZER_CONFIG = JSON.stringify({ bos_token: null, eos_token: "<|endoftext|>", model_max_length: 64 });

let s;
let page;
let tmp;
before(async () => {
  s = await openDemo();
  page = s.page;
  tmp = mkdtempSync(join(tmpdir(), "webtune-llama-"));
});
after(async () => {
  await s?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Largest |a - b| over two tensor maps with the same names and shapes. */
function worstDifference(got, want) {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  let worst = 0;
  for (const [name, t] of got) {
    const w = want.get(name);
    assert.deepEqual(t.shape, w.shape, name);
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - w.data[i]));
  }
  return worst;
}

/** Losses equal to `rel` relative (SwiftShader and lavapipe sum in other orders). */
function checkLosses(got, want, rel, what) {
  assert.equal(got.length, want.length, `${what}: ${got.length} losses vs ${want.length}`);
  got.forEach((l, i) => assert.ok(Math.abs(l - want[i]) <= rel * Math.abs(want[i]), `${what} loss ${i + 1}: ${l} vs webtune train ${want[i]}`));
}

const nativeLosses = (log) => readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l).loss);
const relDiff = (a, b) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));

test("a Qwen3 folder (GQA) trains LoRA as webtune train does; greedy generation as webtune generate", { timeout: TRAIN_TIMEOUT }, async (t) => {
  const started = Date.now();
  const lora = { rank: 4, alpha: 8, targets: ["all-linear"], seed: 3, lr: 0.01, steps: 4, batch: 2, seq: 16 };
  const r = await page.evaluate(
    async ([lora, tokenizerConfig]) => {
      const { Trainer } = await import("/dist/index.js");
      const t = await Trainer.create({ storage: { backend: "none" } });
      const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
      // a folder pick: files with their folder-relative paths
      const asFile = async (url, path) => {
        const blob = await fetch(url).then((x) => x.blob());
        return { name: path.split("/").pop(), webkitRelativePath: path, size: blob.size, arrayBuffer: () => blob.arrayBuffer(), text: () => blob.text() };
      };
      const textFile = (path, text) => {
        const blob = new Blob([text]);
        return { name: path.split("/").pop(), webkitRelativePath: path, size: blob.size, arrayBuffer: () => blob.arrayBuffer(), text: () => blob.text() };
      };
      const folder = [
        await asFile("/fixtures/llama/qwen3/model/config.json", "qwen3/config.json"),
        await asFile("/fixtures/llama/qwen3/model/model.safetensors", "qwen3/model.safetensors"),
        await asFile("/fixtures/llama/qwen3/model/generation_config.json", "qwen3/generation_config.json"),
        await asFile("/fixtures/tiny/tokenizer/tokenizer.json", "qwen3/tokenizer.json"),
        textFile("qwen3/tokenizer_config.json", tokenizerConfig),
      ];
      const out = {};
      // tokenizer_config.json is read with the tokenizer: a token it names must exist
      const badConfig = folder.map((f) => (f.name === "tokenizer_config.json" ? textFile("qwen3/tokenizer_config.json", '{"eos_token": "<|im_end|>"}') : f));
      out.badTokenizerConfig = await fail(t.loadModel(badConfig));
      out.info = await t.loadModel(folder);
      const data = await fetch("/fixtures/llama/qwen3/data.jsonl").then((x) => x.arrayBuffer());
      out.windows = (await t.loadDataset(data, "data.jsonl", { seq: lora.seq })).windows;
      // PEFT's adapter for this model loads (and is ignored below: useInitAdapter false)
      out.adapterInfo = await t.loadAdapter({ url: "/fixtures/llama/qwen3/adapter_init/" });
      const gen = { maxNewTokens: 12, temperature: 0 };
      out.baseText = await t.generate("the ", { ...gen, adapted: false });
      const losses = [];
      const opts = { ...lora, mode: "lora", shuffle: false, readbackEvery: 1, useInitAdapter: false };
      out.status = (await t.train(opts, { onProgress: (p) => losses.push(...p.logs.map((l) => l.loss)) })).status;
      out.losses = losses;
      const files = (await t.exportAdapter()).files;
      out.adapterConfig = files["adapter_config.json"];
      out.adapter = Array.from(files["adapter_model.safetensors"]);
      out.adapted = await t.generateWithInfo("the ", gen);
      out.base = await t.generateWithInfo("the ", { ...gen, adapted: false });
      out.exportModel = await fail(t.exportModel());
      // eos_token_id as a list (Llama 3 style): generation stops at any of its ids; here at the
      // first greedy token that is not the first one
      const config = JSON.parse(await folder[0].text());
      out.stopAt = out.base.ids.findIndex((id) => id !== out.base.ids[0]);
      config.eos_token_id = [96, out.base.ids[out.stopAt]];
      const eosFolder = [textFile("qwen3/config.json", JSON.stringify(config)), ...folder.slice(1)];
      const eosInfo = await t.loadModel(eosFolder);
      out.eosIds = eosInfo.eosTokenIds;
      out.stopped = await t.generateWithInfo("the ", { ...gen, adapted: false });
      t.terminate();
      return out;
    },
    [lora, TOKENIZER_CONFIG],
  );
  assert.match(r.badTokenizerConfig, /^EngineError: qwen3\/tokenizer_config\.json: .*eos_token "<\|im_end\|>" is not a token of the tokenizer/);
  const weights = readSafetensors(readFileSync(join(llama, "qwen3", "model", "model.safetensors")));
  const parameters = [...weights.values()].reduce((n, w) => n + w.data.length, 0);
  const i = r.info;
  assert.deepEqual(
    [i.name, i.modelType, i.family, i.nLayer, i.nHead, i.nKvHead, i.headDim, i.nEmbd, i.intermediate, i.vocabSize, i.nPositions],
    ["qwen3", "qwen3", "llama", 2, 3, 1, 24, 48, 56, 97, 64],
  );
  assert.deepEqual([i.eosTokenIds, i.tiedEmbeddings, i.parameters, i.files, i.tokenizer?.vocabSize], [[96], false, parameters, 1, 97]);
  assert.ok(i.loraTargets.includes("all-linear") && i.loraTargets.includes("gate_proj"), i.loraTargets.join(","));
  const a = r.adapterInfo;
  assert.deepEqual([a.name, a.r, a.alpha, [...a.targets].sort(), a.modules],
    ["adapter_init", 4, 8, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], 14]);
  assert.equal(r.status, "done");
  assert.equal(r.exportModel, "EngineError: this run trains a LoRA adapter: use exportAdapter");

  // the same folder, natively
  const dir = join(tmp, "qwen3");
  mkdirSync(dir);
  for (const f of ["config.json", "model.safetensors"]) copyFileSync(join(llama, "qwen3", "model", f), join(dir, f));
  copyFileSync(join(tiny, "tokenizer", "tokenizer.json"), join(dir, "tokenizer.json"));
  writeFileSync(join(dir, "tokenizer_config.json"), TOKENIZER_CONFIG);
  const log = join(tmp, "qwen3-lora.jsonl");
  const out = join(tmp, "qwen3-lora");
  runWebtune([
    "train", "--model", dir, "--data", join(llama, "qwen3", "data.jsonl"), "--out", out, "--log-json", log,
    "--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", "all-linear", "--seed", "3", "--lr", "1e-2", "--steps", "4",
    "--batch", "2", "--seq", "16", "--no-shuffle",
  ]);
  const want = nativeLosses(log);
  t.diagnostic(`LoRA losses ${r.losses.map((l) => l.toFixed(6)).join(", ")}; largest relative difference from webtune train ${relDiff(r.losses, want).toExponential(2)}`);
  checkLosses(r.losses, want, 1e-5, "LoRA");
  const cfg = JSON.parse(r.adapterConfig);
  const nativeCfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.target_modules, cfg.fan_in_fan_out], [nativeCfg.r, nativeCfg.lora_alpha, nativeCfg.target_modules, false]);
  assert.deepEqual([...cfg.target_modules].sort(), ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
  const adapter = readSafetensors(Uint8Array.from(r.adapter));
  assert.equal(adapter.size, 2 * 7 * 2, "2 layers x 7 linears x (A, B)");
  assert.ok([...adapter.keys()].every((k) => k.startsWith("base_model.model.model.layers.")), [...adapter.keys()][0]);
  const worst = worstDifference(adapter, readSafetensors(readFileSync(join(out, "adapter_model.safetensors"))));
  t.diagnostic(`largest difference from webtune train's adapter: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-5, `largest difference from webtune train's adapter: ${worst}`);

  // greedy generation = webtune generate's, with and without the adapter
  const gen = (...extra) => runWebtune(["generate", "--model", dir, "--prompt", "the ", "--greedy", "--max-new-tokens", "12", ...extra]).replace(/\n$/, "");
  assert.equal(r.baseText, gen(), "base model before training");
  assert.equal(r.base.text, r.baseText, "the base model is not changed by a LoRA run");
  assert.equal(r.adapted.text, gen("--adapter", out), "with the trained adapter");
  assert.equal(r.adapted.ids.length, 12);
  assert.notEqual(r.adapted.text, r.base.text, "the adapter changes the greedy text");
  // a list eos_token_id: a later greedy token is one of them, so generation stops there (the
  // end-of-text token itself is not returned)
  assert.ok(r.stopAt > 0, `the base model's greedy ids ${r.base.ids} are all one token`);
  assert.deepEqual(r.eosIds, [96, r.base.ids[r.stopAt]]);
  assert.deepEqual([r.stopped.ids, r.stopped.endOfText], [r.base.ids.slice(0, r.stopAt), true]);
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, eos_token_id: r.eosIds }));
  assert.equal(r.stopped.text, gen(), "webtune generate stops at the same token (its text omits it, as the page's)");
  t.diagnostic(`${Date.now() - started} ms`);
});

test("the sharded Llama from its URL: full fine-tuning as webtune train --full; a paused run resumes from OPFS to the same weights", { timeout: TRAIN_TIMEOUT }, async (t) => {
  const started = Date.now();
  const opts = { mode: "full", steps: 3, batch: 2, seq: 16, lr: 0.01, shuffle: false, readbackEvery: 1, seed: 0 };
  const r = await page.evaluate(async (opts) => {
    const { Trainer } = await import("/dist/index.js");
    const t = await Trainer.create({ storage: { name: "llama-full", backend: "opfs" } });
    await t.discardSaved();
    const out = {};
    out.info = await t.loadModel({ url: "/fixtures/llama/llama/model_sharded/" });
    const data = await fetch("/fixtures/llama/llama/data.jsonl").then((x) => x.arrayBuffer());
    await t.loadDataset(data.slice(0), "data.jsonl", { seq: opts.seq });
    const run = async (o, h = {}) => {
      const losses = [];
      const res = await t.train(o, { ...h, onProgress: (p) => losses.push(...p.logs.map((l) => l.loss)) });
      return { res, losses };
    };
    const whole = await run(opts);
    out.losses = whole.losses;
    const files = (await t.exportModel()).files;
    out.config = files["config.json"];
    out.weights = Array.from(files["model.safetensors"]);
    // pause after step 1 (a checkpoint in OPFS), then continue from it as after a reload
    const first = await run(opts, { pauseAfter: 1 });
    out.paused = [first.res.status, first.res.step, first.res.saved];
    const saved = await t.savedRun();
    out.saved = [saved.step, saved.mode];
    await t.loadModel({ url: "/fixtures/llama/llama/model_sharded/" });
    await t.loadDataset(data.slice(0), "data.jsonl", { seq: opts.seq });
    const rest = [];
    out.resumed = (await t.resumeSaved({ onProgress: (p) => rest.push(...p.logs.map((l) => l.loss)) })).status;
    out.interrupted = [...first.losses, ...rest];
    out.resumedWeights = Array.from((await t.exportModel()).files["model.safetensors"]);
    t.terminate();
    return out;
  }, opts);
  assert.deepEqual([r.info.modelType, r.info.files, r.info.nKvHead, r.info.headDim, r.info.tiedEmbeddings, r.info.tokenizer], ["llama", 3, 1, 16, false, undefined]);

  const log = join(tmp, "llama-full.jsonl");
  const out = join(tmp, "llama-full");
  runWebtune([
    "train", "--model", join(llama, "llama", "model_sharded"), "--data", join(llama, "llama", "data.jsonl"), "--out", out,
    "--log-json", log, "--full", "--lr", "1e-2", "--steps", "3", "--batch", "2", "--seq", "16", "--no-shuffle", "--seed", "0",
  ]);
  const want = nativeLosses(log);
  t.diagnostic(`full losses ${r.losses.map((l) => l.toFixed(6)).join(", ")}; largest relative difference from webtune train --full ${relDiff(r.losses, want).toExponential(2)}`);
  checkLosses(r.losses, want, 1e-5, "full");
  assert.deepEqual(JSON.parse(r.config), JSON.parse(readFileSync(join(out, "config.json"), "utf8")), "config.json as webtune train --full writes it");
  const got = readSafetensors(Uint8Array.from(r.weights));
  assert.ok(got.has("model.embed_tokens.weight") && got.has("lm_head.weight") && got.has("model.layers.1.mlp.down_proj.weight"));
  const worst = worstDifference(got, readSafetensors(readFileSync(join(out, "model.safetensors"))));
  t.diagnostic(`largest difference from webtune train --full's model: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `largest difference from webtune train --full's model: ${worst}`);

  assert.deepEqual(r.paused, ["paused", 1, 1]);
  assert.deepEqual(r.saved, [1, "full"]);
  assert.equal(r.resumed, "done");
  assert.deepEqual(r.interrupted, r.losses, "pause + resume from OPFS: the same losses, bit for bit");
  assert.deepEqual(r.resumedWeights, r.weights, "and the same weights, byte for byte");
  t.diagnostic(`${Date.now() - started} ms`);
});

test("wrong uploads are refused with the file at fault named", async () => {
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const t = await Trainer.create({ storage: { backend: "none" } });
    const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
    const asFile = async (url, path) => {
      const blob = await fetch(url).then((x) => x.blob());
      return { name: path.split("/").pop(), webkitRelativePath: path, size: blob.size, arrayBuffer: () => blob.arrayBuffer(), text: () => blob.text() };
    };
    const sharded = "/fixtures/llama/llama/model_sharded";
    const shards = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];
    const folder = await Promise.all(
      ["config.json", "model.safetensors.index.json", ...shards].map((f) => asFile(`${sharded}/${f}`, `llama/${f}`)),
    );
    const out = {};
    out.missingShard = await fail(t.loadModel(folder.filter((f) => f.name !== shards[1])));
    out.mixed = await fail(t.loadModel([folder[0], await asFile("/fixtures/llama/qwen3/model/model.safetensors", "qwen3/model.safetensors")]));
    // shards given as contents: one left out is a missing tensor, named by the engine
    const bytes = (f) => fetch(`${sharded}/${f}`).then((x) => x.arrayBuffer());
    out.contentsMissing = await fail(
      t.loadModel({ config: await bytes("config.json"), weights: [{ name: shards[0], bytes: await bytes(shards[0]) }], name: "llama" }),
    );
    const all = await Promise.all(shards.map(async (name) => ({ name, bytes: await bytes(name) })));
    out.contents = (await t.loadModel({ config: await bytes("config.json"), weights: all, name: "llama" })).files;
    // config.json files claiming models too large for a page, with a small file: refused before
    // anything is read. The engine holds one tensor at a time as f32: a Qwen2-72B-wide embedding
    // (152064 x 8192) is 4.6 GiB.
    const small = await bytes(shards[0]);
    const qwen = {
      model_type: "qwen2", hidden_size: 8192, intermediate_size: 8192, num_hidden_layers: 2, num_attention_heads: 64,
      num_key_value_heads: 8, vocab_size: 152064, max_position_embeddings: 32768, rms_norm_eps: 1e-6, tie_word_embeddings: true,
    };
    out.big = await fail(t.loadModel({ config: JSON.stringify(qwen), weights: small.slice(0), name: "qwen-wide" }));
    // a 70B model's sizes do not even fit wasm32's 32-bit sizes
    const huge = {
      model_type: "llama", hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64,
      num_key_value_heads: 8, vocab_size: 128256, max_position_embeddings: 8192, rms_norm_eps: 1e-5, tie_word_embeddings: false,
    };
    out.huge = await fail(t.loadModel({ config: JSON.stringify(huge), weights: small.slice(0), name: "llama-70b" }));
    // the bf16 Qwen3 loads (converted to f32)
    const bf16 = (f) => fetch(`/fixtures/llama/qwen3/model_bf16/${f}`).then((x) => x.arrayBuffer());
    out.bf16 = (await t.loadModel({ config: await bf16("config.json"), weights: await bf16("model.safetensors"), name: "qwen3-bf16" })).modelType;
    out.url404 = await fail(t.loadModel({ url: "/fixtures/llama/llama/" }));
    t.terminate();
    return out;
  });
  assert.equal(
    r.missingShard,
    "EngineError: llama/model.safetensors.index.json lists 3 weight files; 1 of them was not given: model-00002-of-00003.safetensors (give the model's whole folder)",
  );
  assert.match(r.mixed, /^EngineError: qwen3\/model\.safetensors is not in the folder of llama\/config\.json: are two models mixed\?/);
  assert.equal(r.contentsMissing, "EngineError: llama/model-00001-of-00003.safetensors: missing tensor 'model.layers.0.input_layernorm.weight'");
  assert.equal(r.contents, 3);
  assert.match(
    r.big,
    /^EngineError: qwen-wide\/config\.json: a qwen2 model of 2 layers, width 8192, vocab 152064 \(\d+ parameters\) has a tensor of 4\.6 GiB as f32 \(the engine reads one tensor at a time\), more than the 4 GiB a browser page's WebAssembly memory holds$/,
  );
  assert.equal(
    r.huge,
    "EngineError: llama-70b/config.json: the sizes it gives overflow this build's 32-bit sizes: a model this large cannot be loaded here (a browser page's WebAssembly memory holds at most 4 GiB)",
  );
  assert.equal(r.bf16, "qwen3");
  // (two fetches fail; whichever answers first is reported)
  assert.match(r.url404, /\/fixtures\/llama\/llama\/(config\.json: HTTP 404 Not Found|: neither model\.safetensors nor model\.safetensors\.index\.json is there \(HTTP 404\))$/);
});

test("the demo page describes a dropped Qwen3 folder", async () => {
  await page.evaluate(async () => {
    const dt = new DataTransfer();
    for (const f of ["model/config.json", "model/generation_config.json", "model/model.safetensors", "data.jsonl"]) {
      const blob = await fetch(`/fixtures/llama/qwen3/${f}`).then((r) => r.blob());
      dt.items.add(new File([blob], f.split("/").pop()));
    }
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  const status = await s.waitText("model-status", /^model: |error/);
  assert.match(status, /^model: 2 layers, 48 wide, 3 heads, 1 kv head, head_dim 24, vocab 97, 64 positions, [\d.]+k parameters \(qwen3, Llama family\); no tokenizer/);
  assert.match(await s.waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: token ids, 10 records/);
  assert.equal(await page.inputValue("#options [name=targets]"), "all-linear");
});

test("no request leaves the page's origin", () => {
  assert.deepEqual(foreignRequests(s), []);
});
