// The demo page in headless Chromium (Debian's package; WebGPU on SwiftShader): start the engine,
// show readable errors for a corrupted model and a bad dataset line and train afterwards, train
// the tiny fixture model from the PEFT init adapter for 3 steps and compare the downloaded
// adapter with PyTorch + PEFT's (tests/fixtures/tiny/expected.safetensors), train the bundled
// tiny model with pause / resume / stop, drive the package API directly (errors, transfers,
// evaluate against the native CLI, a run saved in IndexedDB and resumed), export a Llama run's
// adapter as GGUF (against `webtune export-gguf`), and check that no request leaves the page's origin.
//
// Needs the built package (tools/build-web.sh), Chromium (/usr/bin/chromium, or $CHROMIUM) and
// the native CLI (cargo build; or $WEBTUNE_BIN).

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TRAIN_TIMEOUT, file, foreignRequests, openDemo, runWebtune, tiny } from "./browser-helpers.mjs";
import { readSafetensors } from "./safetensors.mjs";

let s;
let page;
before(async () => {
  s = await openDemo();
  page = s.page;
});
after(async () => {
  await s?.close();
});

const text = (sel) => s.text(sel);
const cls = (sel) => s.cls(sel);
const waitText = (...a) => s.waitText(...a);
const waitState = (...a) => s.waitState(...a);
const setOptions = (v) => s.setOptions(v);
const loadTinyModel = (o) => s.loadTinyModel(o);
const downloadBytes = (id) => s.downloadBytes(id);

test("the engine reports its WebGPU adapter", async () => {
  const gpu = await text("#gpu");
  assert.match(gpu, /webtune 0\.\d+\.\d+ · GPU: /);
  assert.match(gpu, /max storage binding/);
  assert.match(gpu, /runs saved in OPFS/);
});

test("a corrupted model file gives a readable error", async () => {
  const weights = readFileSync(join(tiny, "model", "model.safetensors"));
  const corrupted = Buffer.from(weights.subarray(0, 4000)); // header intact, data cut short
  await page.setInputFiles("#model-files", [
    file(join(tiny, "model", "config.json")),
    { name: "model.safetensors", mimeType: "application/octet-stream", buffer: corrupted },
  ]);
  await waitText("model-status", /^model\/model\.safetensors: /);
  assert.match(await cls("#model-status"), /error/);
  assert.match(await text("#model-status"), /^model\/model\.safetensors: /);
  assert.equal(await page.isDisabled("#train"), true);

  const garbage = Buffer.from("this is not a safetensors file at all");
  await page.setInputFiles("#model-files", [
    file(join(tiny, "model", "config.json")),
    { name: "model.safetensors", mimeType: "application/octet-stream", buffer: garbage },
  ]);
  await waitText("model-status", /not a valid safetensors file/);
});

test("a dataset with a bad line gives a readable error naming the line", async () => {
  await loadTinyModel();
  assert.match(await cls("#model-status"), /ok/, await text("#model-status"));
  assert.match(await text("#model-status"), /2 layers, 48 wide, 3 heads, vocab 97, 64 positions/);
  const bad = Buffer.from('{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5,\n');
  await page.setInputFiles("#dataset-file", { name: "bad.jsonl", mimeType: "application/jsonl", buffer: bad });
  assert.match(await waitText("dataset-status", /^bad\.jsonl/), /^bad\.jsonl:2: invalid JSON/);
  assert.match(await cls("#dataset-status"), /error/);
  const big = Buffer.from('{"input_ids": [1, 2, 300]}\n');
  await page.setInputFiles("#dataset-file", { name: "big.jsonl", mimeType: "application/jsonl", buffer: big });
  assert.match(await waitText("dataset-status", /^big\.jsonl/), /big\.jsonl:1: token id 300 .* vocab_size is 97/);
  assert.equal(await page.isDisabled("#train"), true);
});

test("a model and a dataset dropped together are sorted out and load", async () => {
  await page.evaluate(async () => {
    const dt = new DataTransfer();
    for (const f of ["model/config.json", "model/generation_config.json", "model/model.safetensors", "data.jsonl"]) {
      const blob = await fetch(`/fixtures/tiny/${f}`).then((r) => r.blob());
      dt.items.add(new File([blob], f.split("/").pop()));
    }
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: token ids, 9 records, 195 tokens .* 3 sequences of 64 tokens/s);
  assert.match(await text("#model-status"), /^model: 2 layers/);
  assert.equal(await page.inputValue("#options [name=seq]"), "64", "the sequence length is capped at n_positions");
});

test("3 steps from the PEFT init adapter match PyTorch + PEFT; the adapter downloads", async (t) => {
  const expectedJson = JSON.parse(readFileSync(join(tiny, "expected.json"), "utf8"));
  const expected = readSafetensors(readFileSync(join(tiny, "expected.safetensors")));
  const opt = expectedJson.lora.optimizer;
  // The form has no beta / eps fields: the run uses the package's defaults, which must be the fixture's.
  const defaults = await page.evaluate(async () => {
    const { DEFAULT_OPTIONS: d } = await import("/dist/index.js");
    return [[d.beta1, d.beta2], d.eps];
  });
  assert.deepEqual(defaults, [opt.betas, opt.eps], "the package's beta and eps defaults are the fixture's");

  await loadTinyModel();
  await page.setInputFiles("#dataset-file", join(tiny, "data.jsonl"));
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: token ids, 9 records, 195 tokens/);
  await page.setInputFiles("#adapter-files", [
    join(tiny, "adapter_init", "adapter_config.json"),
    join(tiny, "adapter_init", "adapter_model.safetensors"),
  ]);
  assert.match(await waitText("adapter-status", /^adapter/), /rank 4, alpha 8, targets c_attn, c_fc, c_proj \(8 layers\)/);
  await setOptions({
    mode: "lora", lr: opt.lr, weightDecay: opt.weight_decay, gradClip: expectedJson.lora.clip_grad_norm,
    steps: 3, batch: expectedJson.B, seq: expectedJson.T, shuffle: false, schedule: "constant", warmup: 0,
    gradAccum: 1, evalSplit: 0, evalEvery: 0, checkpointEvery: 0,
  });
  await page.press("#options [name=seq]", "Tab"); // the preview follows the sequence length
  await waitText("dataset-status", new RegExp(`sequences of ${expectedJson.T} tokens`));
  await page.click("#train");
  assert.equal(await waitState(["done", "failed", "stopped"]), "done", await text("#options-status"));
  assert.match(await text("#progress-text"), /^finished at step 3\/3/);

  const losses = await page.evaluate(() => globalThis.webtuneDemo.losses());
  const want = expectedJson["lora.losses"];
  assert.equal(losses.length, 3);
  losses.forEach((l, i) => assert.ok(Math.abs(l - want[i]) <= 1e-4 * Math.abs(want[i]), `loss ${i + 1}: ${l} vs ${want[i]}`));

  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const config = await downloadBytes("download-config");
  const weights = await downloadBytes("download-weights");
  assert.equal(config.name, "adapter_config.json");
  assert.equal(weights.name, "adapter_model.safetensors");
  const cfg = JSON.parse(config.bytes.toString("utf8"));
  assert.deepEqual([cfg.peft_type, cfg.r, cfg.lora_alpha, cfg.target_modules], ["LORA", 4, 8, ["c_attn", "c_fc", "c_proj"]]);
  const got = readSafetensors(weights.bytes);
  assert.equal(got.size, 16, "8 adapted layers x (A, B)");
  let worst = 0;
  for (const [name, t] of got) {
    const e = expected.get(`lora.step3.${name}`);
    assert.ok(e, `the fixture has no lora.step3.${name}`);
    assert.deepEqual(t.shape, e.shape, name);
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - e.data[i]));
  }
  t.diagnostic(`largest difference from PyTorch + PEFT's adapter after 3 steps: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `largest difference from PyTorch + PEFT: ${worst}`);
});

// Pause and Stop cannot race the run: it has 100,000 steps, so it is still running when they are
// clicked on any GPU, and each must end it within a few steps (a Pause or Stop that did nothing
// leaves the page training, and the wait for "paused" / "stopped" fails).
const PAUSE_TIMEOUT = 90_000;

test("the bundled tiny model trains: loss falls, pause / resume / stop work", async () => {
  await page.click("#use-tiny");
  assert.match(await waitText("model-status", /^tiny|error/i), /^tiny: 2 layers/);
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: token ids, 9 records/);
  assert.match(await text("#model-status"), /tokenizer: 97 tokens/);
  assert.equal(await page.isDisabled("#clear-adapter"), true, "a new model drops the init adapter");
  const steps = 100_000;
  await setOptions({ steps, shuffle: true, weightDecay: 0, checkpointEvery: 10 });
  await page.click("#train");
  await page.waitForFunction(() => (globalThis.webtuneDemo?.losses().length ?? 0) >= 2, null, { timeout: TRAIN_TIMEOUT });
  await page.click("#pause");
  assert.equal(await waitState(["paused", "done", "failed"], PAUSE_TIMEOUT), "paused", await text("#options-status"));
  const pausedAt = (await page.evaluate(() => globalThis.webtuneDemo.losses())).length;
  assert.ok(pausedAt >= 2 && pausedAt < 100, `paused within a few steps of the click, at step ${pausedAt}`);
  assert.match(await text("#progress-text"), new RegExp(`^paused at step ${pausedAt}/${steps} .*saved \\(reload-safe\\) at step ${pausedAt}`));
  assert.equal(await page.isDisabled("#download-weights"), false, "a paused run's adapter can be downloaded");
  assert.match(await waitText("resume-saved", /step/), new RegExp(`^Resume run from step ${pausedAt}$`), "the pause saved the run");
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await page.evaluate(() => globalThis.webtuneDemo.losses())).length, pausedAt, "no step runs while paused");

  await page.click("#pause"); // now labelled Resume
  await waitState(["done", "failed", "training"]);
  await page.waitForFunction((n) => globalThis.webtuneDemo.losses().length >= n, pausedAt + 23, { timeout: TRAIN_TIMEOUT });
  await page.click("#stop");
  assert.equal(await waitState(["stopped", "done", "failed"], PAUSE_TIMEOUT), "stopped", await text("#options-status"));
  const losses = await page.evaluate(() => globalThis.webtuneDemo.losses());
  const stepList = await page.evaluate(() => globalThis.webtuneDemo.steps());
  assert.deepEqual(stepList, losses.map((_, i) => i + 1), "every step reported once, in order");
  assert.ok(losses.length < pausedAt + 100, `stopped within a few steps of the click, at step ${losses.length}`);
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const [first, last] = [mean(losses.slice(0, 5)), mean(losses.slice(-5))];
  assert.ok(last < first - 0.05, `loss falls: mean of the first 5 steps ${first}, of the last 5 ${last}`);
  assert.match(await text("#progress-text"), new RegExp(`^stopped at step ${losses.length}/${steps}`));
  await page.waitForFunction(() => document.getElementById("resume-section")?.hidden === true);
  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const weights = await downloadBytes("download-weights");
  assert.equal(readSafetensors(weights.bytes).size, 16, "c_attn, c_proj, c_fc: 4 linears x 2 layers x (A, B)");
});

test("the package API: transfers, the engine's words, evaluate as the CLI, a run saved in IndexedDB resumes exactly", async () => {
  const native = JSON.parse(
    runWebtune(["eval", "--model", join(tiny, "model"), "--data", join(tiny, "data.jsonl"), "--seq", "16", "--batch", "8", "--json"]),
  );
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const out = {};
    const t = await Trainer.create({ storage: { name: "api-test", backend: "indexeddb" } });
    const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
    out.features = t.info.features;
    await t.discardSaved();
    out.exportFirst = await fail(t.exportAdapter());
    out.datasetFirst = await fail(t.loadDataset(new TextEncoder().encode('{"input_ids": [1]}\n')));
    const fetchBytes = (u) => fetch(u).then((x) => x.arrayBuffer());
    const [config, weights] = await Promise.all(["config.json", "model.safetensors"].map((f) => fetchBytes(`/fixtures/tiny/model/${f}`)));
    const size = weights.byteLength;
    out.model = (await t.loadModel({ config, weights, name: "tiny" })).nLayer;
    out.transferred = [size, weights.byteLength];
    out.badOption = await fail(t.train({ lr: -1 }));
    out.badTarget = await fail(t.train({ targets: ["c_attn"], seq: 65 }));
    out.textNoTokenizer = await fail(t.loadDataset(new TextEncoder().encode("some text"), "notes.txt"));
    const data = await fetchBytes("/fixtures/tiny/data.jsonl");
    out.dataset = (await t.loadDataset(data.slice(0), "data.jsonl", { seq: 16 })).windows;
    out.evaluate = await t.evaluate({ seq: 16, batch: 8 });
    out.generateNoTokenizer = await fail(t.generate("hi", { adapted: false }));
    const [vocab, merges] = await Promise.all(["vocab.json", "merges.txt"].map((f) => fetch(`/fixtures/tokenizer/gpt2like/${f}`).then((x) => x.text())));
    out.bigTokenizer = await fail(t.loadTokenizer({ vocab, merges, name: "gpt2like" }));
    out.badTokenizer = await fail(t.loadTokenizer({ json: "{}", name: "broken" }));
    out.badAdapter = await fail(t.loadAdapter({ config: '{"peft_type": "LORA"}', weights: new Uint8Array(8), name: "run1" }));
    const opts = { steps: 3, batch: 2, seq: 16, lr: 0.01, readbackEvery: 1, schedule: "linear", warmup: 1, gradAccum: 2 };
    const seen = [];
    const result = await t.train(opts, {
      onStart: (info) => (out.start = info),
      onProgress: (p) => seen.push(...p.logs.map((l) => [l.step, l.loss, l.lr])),
    });
    out.result = [result.status, result.step];
    out.uninterrupted = seen;
    out.evalNoData = await fail(t.evaluate());
    out.exportModelLora = await fail(t.exportModel());
    const files = (await t.exportAdapter()).files;
    out.files = [typeof files["adapter_config.json"], files["adapter_model.safetensors"].constructor.name];
    out.resumeDone = await fail(t.resume());
    out.savedAfterDone = await t.savedRun();

    // pause after step 1 (saved in IndexedDB), then continue from the store as after a reload
    const first = [];
    const paused = await t.train(opts, { pauseAfter: 1, appData: { note: "api" }, onProgress: (p) => first.push(...p.logs.map((l) => [l.step, l.loss, l.lr])) });
    out.paused = [paused.status, paused.step, paused.saved];
    const saved = await t.savedRun();
    out.saved = [saved.step, saved.steps, saved.storage, saved.appData, saved.history.logs.length];
    const [f16c, f16w] = await Promise.all(["config.json", "model.safetensors"].map((f) => fetchBytes(`/fixtures/tiny/model_f16/${f}`)));
    await t.loadModel({ config: f16c, weights: f16w, name: "tiny-f16" });
    await t.loadDataset(data.slice(0), "data.jsonl", { seq: 16 });
    out.otherModel = await fail(t.resumeSaved());
    // the same weights under a config with another eos_token_id: another model to a run (its EOS ends every record)
    const eosConfig = JSON.parse(new TextDecoder().decode(config));
    out.eos = eosConfig.eos_token_id;
    eosConfig.eos_token_id = 5;
    await t.loadModel({ config: new TextEncoder().encode(JSON.stringify(eosConfig)), weights: await fetchBytes("/fixtures/tiny/model/model.safetensors"), name: "tiny-eos5" });
    await t.loadDataset(data.slice(0), "data.jsonl", { seq: 16 });
    out.otherEos = await fail(t.resumeSaved());
    await t.loadModel({ config, weights: await fetchBytes("/fixtures/tiny/model/model.safetensors"), name: "tiny" });
    await t.loadDataset(new TextEncoder().encode('{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]}\n'), "other.jsonl", { seq: 16 });
    out.otherData = await fail(t.resumeSaved());
    await t.loadDataset(data.slice(0), "data.jsonl", { seq: 16 });
    const rest = [];
    const resumed = await t.resumeSaved({ onProgress: (p) => rest.push(...p.logs.map((l) => [l.step, l.loss, l.lr])) });
    out.resumed = [resumed.status, resumed.step];
    out.interrupted = [...first, ...rest];
    out.savedAfterResume = await t.savedRun();
    t.terminate();
    out.afterTerminate = await fail(t.exportAdapter());
    return out;
  });
  assert.deepEqual(r.features, { generate: true, evaluate: true, tokenizer: true, fullFineTuning: true, checkpoints: "indexeddb" });
  assert.equal(r.exportFirst, "EngineError: nothing to export: no training run yet");
  assert.match(r.datasetFirst, /^EngineError: load a model before the dataset/);
  assert.equal(r.model, 2);
  assert.deepEqual(r.transferred, [260096, 0], "the weights' ArrayBuffer moved to the worker");
  assert.equal(r.badOption, "OptionError: lr -1 is invalid: it must be > 0");
  assert.equal(r.badTarget, "OptionError: seq 65 is longer than the model's n_positions 64");
  assert.match(r.textNoTokenizer, /^EngineError: notes\.txt: text data needs a tokenizer/);
  assert.equal(r.dataset, 11);
  assert.equal(r.evaluate.tokens, native.tokens);
  assert.ok(Math.abs(r.evaluate.loss - native.base.loss) <= 1e-4 * native.base.loss, `evaluate ${r.evaluate.loss} vs webtune eval ${native.base.loss}`);
  assert.match(r.generateNoTokenizer, /^EngineError: generation needs the model's tokenizer/);
  assert.equal(r.bigTokenizer, "EngineError: gpt2like: the tokenizer has 1000 tokens but the model's vocab_size is 97: does the tokenizer belong to this model?");
  assert.match(r.badTokenizer, /^EngineError: broken\/tokenizer\.json: /);
  assert.equal(r.badAdapter, "EngineError: run1/adapter_config.json: missing field 'r'");
  assert.deepEqual(r.result, ["done", 3]);
  // the run's memory plan: the tiny model's 64 368 f32 weights; LoRA pairs, their gradients; the largest
  // tensors are the MLP's weights [C, 4C] = [48, 192] (its activations [B·T, 4C] are [32, 192])
  const mem = r.start.memory;
  assert.deepEqual(Object.keys(mem.classes).sort(), ["activations", "gradients", "optimizer", "trainable", "weights"]);
  assert.equal(mem.classes.weights, 4 * 64368);
  assert.equal(mem.classes.trainable, 4 * r.start.trainableParameters);
  assert.equal(mem.classes.gradients, mem.classes.trainable);
  assert.equal(mem.totalBytes, Object.values(mem.classes).reduce((a, b) => a + b, 0));
  assert.equal(mem.largest.bytes, 48 * 192 * 4);
  assert.equal(mem.largest.class, "weights");
  assert.deepEqual(r.uninterrupted.map((x) => x[0]), [1, 2, 3]);
  assert.deepEqual(r.uninterrupted.map((x) => x[2]), [0, 0.01, 0.005], "linear schedule, 1 warmup step: update s runs at lr_at(s - 1)");
  assert.match(r.evalNoData, /this run has no held-out data/);
  assert.equal(r.exportModelLora, "EngineError: this run trains a LoRA adapter: use exportAdapter");
  assert.deepEqual(r.files, ["string", "Uint8Array"]);
  assert.equal(r.resumeDone, "EngineError: the run ended at step 3; start a new one");
  assert.equal(r.savedAfterDone, null, "a finished run leaves no checkpoint");
  assert.deepEqual(r.paused, ["paused", 1, 1]);
  assert.deepEqual(r.saved, [1, 3, "indexeddb", { note: "api" }, 1]);
  assert.match(r.otherModel, /^EngineError: model tiny-f16: not the checkpoint's base model tiny \(.*\): load that model to resume the run$/);
  // the CLI's check and words (ModelInfo::check_same), with the browser's name for the option
  assert.match(
    r.otherEos,
    new RegExp(`^EngineError: model tiny-eos5: not the checkpoint's base model tiny \\(.*, eos ${r.eos}, model\\.safetensors 260096 bytes, fingerprint [0-9a-f]{16}; this one: .*, eos 5, model\\.safetensors 260096 bytes, fingerprint [0-9a-f]{16}\\): load that model to resume the run$`),
  );
  assert.match(r.otherData, /^EngineError: dataset other\.jsonl: not the checkpoint's data data\.jsonl \(.*\): load that file to resume the run$/);
  assert.deepEqual(r.resumed, ["done", 3]);
  assert.deepEqual(r.interrupted, r.uninterrupted, "pause + resume from IndexedDB gives the same steps, losses and lrs, bit for bit");
  assert.equal(r.savedAfterResume, null);
  assert.equal(r.afterTerminate, "EngineError: this Trainer was terminated");
});

test("exportGguf: a Llama run's adapter for llama.cpp, as webtune export-gguf writes it", async () => {
  const fixture = join(tiny, "..", "llama", "llama");
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const t = await Trainer.create();
    const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
    const get = (f) => fetch(`/fixtures/llama/llama/${f}`).then((x) => x.arrayBuffer());
    await t.loadModel({ config: await get("model/config.json"), weights: await get("model/model.safetensors"), name: "llama" });
    await t.loadDataset(await get("data.jsonl"), "data.jsonl", { seq: 16 });
    const out = {};
    out.before = await fail(t.exportGguf());
    out.status = (await t.train({ steps: 2, batch: 2, seq: 16, lr: 0.01, targets: ["q_proj", "k_proj", "down_proj"] })).status;
    const files = (await t.exportAdapter()).files;
    out.peft = [files["adapter_config.json"], Array.from(files["adapter_model.safetensors"])];
    out.gguf = [Array.from(await t.exportGguf()), Array.from(await t.exportGguf("f16"))];
    out.bad = await fail(t.exportGguf("bf16"));
    t.terminate();
    return out;
  });
  assert.equal(r.before, "EngineError: nothing to export: no training run yet");
  assert.equal(r.status, "done");
  assert.equal(r.bad, "EngineError: outtype: 'bf16' is not an output type: use f32 or f16");
  // the same bytes as the CLI's file of the exported PEFT adapter (general.name: the model's name + "-lora")
  const tmp = mkdtempSync(join(tmpdir(), "webtune-gguf-"));
  const dir = join(tmp, "llama-lora");
  mkdirSync(dir);
  writeFileSync(join(dir, "adapter_config.json"), r.peft[0]);
  writeFileSync(join(dir, "adapter_model.safetensors"), Buffer.from(r.peft[1]));
  for (const [i, outtype] of ["f32", "f16"].entries()) {
    const out = join(tmp, `adapter_${outtype}.gguf`);
    runWebtune(["export-gguf", "--adapter", dir, "--model", join(fixture, "model"), "--out", out, "--outtype", outtype]);
    assert.deepEqual(Buffer.from(r.gguf[i]), readFileSync(out), `exportGguf("${outtype}") is webtune export-gguf's file`);
  }
  rmSync(tmp, { recursive: true });
});

test("no request leaves the page's origin", () => {
  assert.ok(s.requests.length > 5, "requests were recorded");
  assert.deepEqual(foreignRequests(s), []);
});
