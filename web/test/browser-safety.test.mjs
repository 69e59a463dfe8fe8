// A hostile user in the browser (issue 9), on the demo page in headless Chromium: a corrupted
// upload (a model holding NaN), a model over the device's limits (a device that reports 4 MiB per
// storage binding and buffer to the engine's worker), a dataset that encodes to nothing, and a
// crash of the engine's worker in the middle of a run. Each shows its message on
// the page, and a run saved before each (or during it) still resumes afterwards, to the losses of
// an uninterrupted run.
//
// Needs the built package (tools/build-web.sh), Chromium and the native CLI, as browser.test.mjs.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { file, openDemo, textFile, tiny } from "./browser-helpers.mjs";

/** What the worker's WebGPU adapter reports as its largest storage binding and buffer. */
const SMALL_LIMIT = 4 << 20;

let s;
let page;
before(async () => {
  s = await openDemo();
  page = s.page;
});
after(async () => {
  await s?.close();
});

const OPTIONS = { rank: 4, alpha: 8, lr: 0.01, steps: 4, batch: 2, seq: 16, shuffle: true, seed: 3, schedule: "constant", warmup: 0, minLr: 0, gradAccum: 1, evalSplit: 0, evalEvery: 0, checkpointEvery: 1 };

/** Trains the bundled tiny model with `options` to the end; returns the losses by step. */
async function uninterrupted(options) {
  await page.click("#use-tiny");
  await s.waitText("dataset-status", /^data\.jsonl: token ids/);
  await s.setOptions(options);
  await page.click("#train");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  return s.losses();
}

/** After a reload: the saved run is offered from `step` or later and, with the tiny bundle loaded, resumes to `losses`. */
async function resumesTo(losses, step) {
  await s.reload();
  const offered = await s.waitText("resume-saved", /from step/);
  assert.ok(Number(offered.match(/from step (\d+)/)[1]) >= step, offered);
  await page.click("#use-tiny");
  await s.waitText("dataset-status", /^data\.jsonl: token ids/);
  await page.click("#resume-saved");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  assert.deepEqual(await s.steps(), losses.map((_, i) => i + 1));
  const got = await s.losses();
  got.forEach((l, i) => assert.ok(Math.abs(l - losses[i]) <= 1e-6, `step ${i + 1}: ${l} resumed vs ${losses[i]} uninterrupted`));
  assert.equal(await page.isHidden("#resume-section"), true, "the finished run's checkpoint is gone");
}

/** The tiny model's weights with `value` at element `index` of tensor `name` (f32). */
function poked(name, index, value) {
  const bytes = Buffer.from(readFileSync(join(tiny, "model", "model.safetensors")));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString());
  bytes.writeFloatLE(value, 8 + n + header[name].data_offsets[0] + 4 * index);
  return { name: "model.safetensors", mimeType: "application/octet-stream", buffer: bytes };
}

/** tokenizer.json of byte-level BPE with `vocab` and no merges. */
function tokenizerWith(vocab) {
  const json = {
    version: "1.0", added_tokens: [], normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null, decoder: { type: "ByteLevel" }, model: { type: "BPE", vocab, merges: [] },
  };
  return textFile("tokenizer.json", JSON.stringify(json));
}

test("a NaN upload, a tokenizer that encodes nothing: the page says which file and what; a saved run still resumes", async () => {
  const losses = await uninterrupted(OPTIONS);
  await page.evaluate(() => globalThis.webtuneDemo.pauseAfter(2));
  await page.click("#train");
  assert.equal(await s.waitState(["paused", "done", "failed"]), "paused", await s.report());

  // a model file holding a NaN
  await page.setInputFiles("#model-files", [file(join(tiny, "model", "config.json")), poked("transformer.h.1.mlp.c_fc.weight", 17, NaN)]);
  assert.equal(
    await s.waitText("model-status", /holds NaN/),
    "model/model.safetensors: tensor 'transformer.h.1.mlp.c_fc.weight' holds NaN (element 17; 1 of its 9216 values are NaN " +
      "or infinite): webtune refuses weights that are not finite (a corrupt file, or one saved from a run that diverged)",
  );
  assert.match(await s.cls("#model-status"), /error/);
  assert.equal(await page.isDisabled("#train"), true);

  // a tokenizer with no vocabulary, then one without the text's bytes
  const modelFiles = [file(join(tiny, "model", "config.json")), file(join(tiny, "model", "model.safetensors"))];
  await page.setInputFiles("#model-files", [...modelFiles, tokenizerWith({})]);
  assert.match(
    await s.waitText("model-status", /vocabulary is empty/),
    /^\S*tokenizer\.json: the vocabulary is empty: this tokenizer has no tokens to encode text with$/,
  );
  await page.setInputFiles("#model-files", [...modelFiles, tokenizerWith({ a: 0, b: 1 })]);
  await s.waitText("model-status", /tokenizer: 2 tokens/);
  await page.setInputFiles("#dataset-file", textFile("notes.jsonl", '{"text": ""}\n{"text": "xyz"}\n'));
  assert.match(
    // wait for this upload's own message: the earlier dataset's status also starts with notes.jsonl
    await s.waitText("dataset-status", /no tokens/),
    /^notes\.jsonl:2: "text" is 3 bytes of text but the tokenizer \S+ encodes it to no tokens \(does its vocabulary cover this text\?\)$/,
  );
  assert.match(await s.cls("#dataset-status"), /error/);
  assert.equal(await page.isDisabled("#train"), true);

  await resumesTo(losses, 2);
});

test("a crash of the engine's worker mid-run: the page says so, and the run saved before it resumes", async () => {
  await s.reload();
  const options = { ...OPTIONS, steps: 12 };
  const losses = await uninterrupted(options);
  await page.click("#train");
  await s.waitText("progress-text", / · saved at step ([2-9]|1[01])$/);
  assert.equal(await page.evaluate(() => globalThis.webtuneDemo.crashWorker("simulated crash")), true);
  assert.equal(await s.waitState(["failed", "done"]), "failed", await s.report());
  assert.equal(await s.text("#options-status"), "the webtune worker failed: simulated crash; it was restarted");
  await resumesTo(losses, 2);
});

test("a model over the device's limits: refused when the run starts, naming the tensor, its size and the limit; a saved run still resumes", async () => {
  // the worker's WebGPU adapter reports small limits (a small device), and the engine asks for them
  await page.route("**/worker.js", async (route) => {
    const res = await route.fetch();
    // (WebGPU never gives a device less than its default limits, so the device's reported limits
    // are lowered too: the engine plans with what the device reports)
    const patch = `for (const proto of [GPUAdapter.prototype, GPUDevice.prototype]) {
      const limits = Object.getOwnPropertyDescriptor(proto, "limits").get;
      Object.defineProperty(proto, "limits", { get() {
        const l = limits.call(this);
        const small = (k) => k === "maxStorageBufferBindingSize" || k === "maxBufferSize";
        return new Proxy(l, { get: (t, k) => (small(k) ? ${SMALL_LIMIT} : Reflect.get(t, k)) });
      } });
    }\n`;
    await route.fulfill({ response: res, body: patch + (await res.text()) });
  });
  await s.reload();
  assert.match(await s.text("#gpu"), /max storage binding 4\.2 MB/);
  const losses = await uninterrupted(OPTIONS); // the tiny model fits
  await page.evaluate(() => globalThis.webtuneDemo.pauseAfter(2));
  await page.click("#train");
  assert.equal(await s.waitState(["paused", "done", "failed"]), "paused", await s.report());

  // a GPT-2 16 wide with 70000 positions: its position table (4,480,000 bytes of f32) is over 4 MiB
  // (a vocabulary table that large would be split into row chunks; no other tensor is)
  const [c, p, v] = [16, 70000, 97];
  const config = { ...JSON.parse(readFileSync(join(tiny, "model", "config.json"), "utf8")), n_embd: c, n_head: 2, n_layer: 1, n_positions: p, vocab_size: v, eos_token_id: v - 1, bos_token_id: v - 1 };
  const shapes = { "transformer.wte.weight": [v, c], "transformer.wpe.weight": [p, c], "transformer.ln_f.weight": [c], "transformer.ln_f.bias": [c] };
  for (const [name, fin, fout] of [["attn.c_attn", c, 3 * c], ["attn.c_proj", c, c], ["mlp.c_fc", c, 4 * c], ["mlp.c_proj", 4 * c, c]]) {
    shapes[`transformer.h.0.${name}.weight`] = [fin, fout];
    shapes[`transformer.h.0.${name}.bias`] = [fout];
  }
  for (const n of ["ln_1", "ln_2"]) Object.assign(shapes, { [`transformer.h.0.${n}.weight`]: [c], [`transformer.h.0.${n}.bias`]: [c] });
  let at = 0;
  const header = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: "F32", shape, data_offsets: [at, at + bytes] };
    at += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const weights = Buffer.concat([len, json, Buffer.alloc(at)]);
  await page.setInputFiles("#model-files", [
    textFile("config.json", JSON.stringify(config)),
    { name: "model.safetensors", mimeType: "application/octet-stream", buffer: weights },
  ]);
  await s.waitText("model-status", /1 layers?, 16 wide/);
  await page.setInputFiles("#dataset-file", file(join(tiny, "data.jsonl")));
  await s.waitText("dataset-status", /^data\.jsonl: token ids/);
  await s.setOptions(OPTIONS);
  await page.click("#train");
  assert.equal(await s.waitState(["failed", "done"]), "failed", await s.report());
  // refused by the run's memory plan, before anything is allocated
  assert.equal(
    await s.text("#options-status"),
    "this run does not fit the GPU: the tensor 'wpe.weight' (frozen weights, [70000, 16]) needs 4480000 bytes (4.3 MiB) " +
      "but this GPU allows at most 4194304 bytes (4.0 MiB) per storage binding; no batch or seq changes that: " +
      "the model itself is too large for this GPU",
  );

  await resumesTo(losses, 2);
  await page.unroute("**/worker.js");
});
