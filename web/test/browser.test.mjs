// The demo page in headless Chromium (Debian's package; WebGPU on SwiftShader): start the engine,
// show readable errors for a corrupted model and a bad dataset line and train afterwards, train
// the tiny fixture model from the PEFT init adapter for 3 steps and compare the downloaded
// adapter with PyTorch + PEFT's (tests/fixtures/tiny/expected.safetensors), train the bundled
// tiny model with pause / resume / stop, and check that no request leaves the page's origin.
//
// Needs the built package (tools/build-web.sh) and Chromium (/usr/bin/chromium, or $CHROMIUM).

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "../scripts/serve.mjs";
import { readSafetensors } from "./safetensors.mjs";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tiny = resolve(web, "..", "tests", "fixtures", "tiny");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--use-angle=swiftshader",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];
// SwiftShader runs WebGPU on the CPU: the first steps compile every shader.
const TRAIN_TIMEOUT = 240_000;

for (const [what, path] of [
  ["the wasm engine (run tools/build-web.sh)", join(web, "dist", "wasm", "webtune_bg.wasm")],
  ["the demo (run npm run build in web/)", join(web, "dist", "demo", "demo.js")],
  [`Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`, executablePath],
]) {
  if (!existsSync(path)) throw new Error(`the browser tests need ${what}: ${path} is missing`);
}

let server;
let context;
let page;
let profile;
const requests = [];
const consoleLines = [];

before(async () => {
  server = await startServer({ port: 0 });
  profile = mkdtempSync(join(tmpdir(), "webtune-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ARGS,
    acceptDownloads: true,
    viewport: { width: 1000, height: 1400 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(`${server.url}demo/`);
  await page.waitForFunction(() => ["idle", "failed"].includes(document.body.dataset.state ?? ""), null, {
    timeout: 60_000,
  });
  const gpu = await page.textContent("#gpu");
  assert.equal(await page.getAttribute("body", "data-state"), "idle", `the engine did not start: ${gpu}\n${consoleLines.join("\n")}`);
});

after(async () => {
  await context?.close();
  await server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

const file = (path) => ({ name: path.split("/").pop(), mimeType: "application/octet-stream", buffer: readFileSync(path) });
const text = async (sel) => (await page.textContent(sel)) ?? "";
const cls = async (sel) => (await page.getAttribute(sel, "class")) ?? "";

/** Waits until #id's text matches `re` (statuses change asynchronously, so wait for the very text). */
async function waitText(id, re, timeout = 60_000) {
  await page.waitForFunction(
    ([id, source, flags]) => new RegExp(source, flags).test(document.getElementById(id)?.textContent ?? ""),
    [id, re.source, re.flags],
    { timeout },
  );
  return text(`#${id}`);
}

/** What the page shows, for failure messages. */
async function pageReport() {
  const ids = ["gpu", "model-status", "dataset-status", "adapter-status", "options-status", "progress-text", "export-status"];
  const texts = await page.evaluate((ids) => ids.map((id) => `${id}: ${document.getElementById(id)?.textContent}`), ids);
  const state = await page.getAttribute("body", "data-state");
  return [`state: ${state}`, ...texts, "console:", ...consoleLines.slice(-20)].join("\n");
}

async function waitState(states, timeout = TRAIN_TIMEOUT) {
  try {
    await page.waitForFunction((s) => s.includes(document.body.dataset.state ?? ""), states, { timeout });
  } catch (e) {
    throw new Error(`waiting for the page state ${states.join(" / ")}: ${e.message}\n${await pageReport()}`);
  }
  return page.getAttribute("body", "data-state");
}

async function setOptions(values) {
  for (const [name, value] of Object.entries(values)) {
    if (typeof value === "boolean") {
      await page.$eval(`#options [name=${name}]`, (el, v) => (el.checked = v), value);
    } else await page.fill(`#options [name=${name}]`, String(value));
  }
}

async function loadTinyModel() {
  await page.setInputFiles("#model-files", [file(join(tiny, "model", "config.json")), file(join(tiny, "model", "model.safetensors"))]);
  await waitText("model-status", /^model[:/]/);
  // Loading a model reloads the dataset chosen before (if any): let that finish first.
  await page.waitForFunction(() => !/Reading the dataset/.test(document.getElementById("dataset-status")?.textContent ?? ""));
}

async function downloadBytes(buttonId) {
  const [d] = await Promise.all([page.waitForEvent("download"), page.click(`#${buttonId}`)]);
  return { name: d.suggestedFilename(), bytes: readFileSync(await d.path()) };
}

test("the engine reports its WebGPU adapter", async () => {
  const gpu = await text("#gpu");
  assert.match(gpu, /webtune 0\.\d+\.\d+ · GPU: /);
  assert.match(gpu, /max storage binding/);
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
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: 9 records, 195 tokens .* 3 sequences of 64 tokens/s);
  assert.match(await text("#model-status"), /^model: 2 layers/);
  assert.equal(await page.inputValue("#options [name=seq]"), "64", "the sequence length is capped at n_positions");
});

test("3 steps from the PEFT init adapter match PyTorch + PEFT; the adapter downloads", async (t) => {
  const expectedJson = JSON.parse(readFileSync(join(tiny, "expected.json"), "utf8"));
  const expected = readSafetensors(readFileSync(join(tiny, "expected.safetensors")));
  const opt = expectedJson.lora.optimizer;
  assert.deepEqual([opt.betas, opt.eps], [[0.9, 0.999], 1e-8], "the form's beta and eps defaults are the fixture's");

  await loadTinyModel();
  await page.setInputFiles("#dataset-file", join(tiny, "data.jsonl"));
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: 9 records, 195 tokens/);
  await page.setInputFiles("#adapter-files", [
    join(tiny, "adapter_init", "adapter_config.json"),
    join(tiny, "adapter_init", "adapter_model.safetensors"),
  ]);
  assert.match(await waitText("adapter-status", /^adapter/), /rank 4, alpha 8, targets c_attn, c_fc, c_proj \(8 layers\)/);
  await setOptions({
    lr: opt.lr, weightDecay: opt.weight_decay, gradClip: expectedJson.lora.clip_grad_norm,
    steps: 3, batch: expectedJson.B, seq: expectedJson.T, shuffle: false,
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

test("the bundled tiny model trains: loss falls, pause / resume / stop work", async () => {
  await page.click("#use-tiny");
  assert.match(await waitText("model-status", /^tiny|error/i), /^tiny: 2 layers/);
  assert.match(await waitText("dataset-status", /^data\.jsonl/), /^data\.jsonl: 9 records/);
  assert.equal(await page.isDisabled("#clear-adapter"), true, "a new model drops the init adapter");
  await setOptions({ steps: 40, shuffle: true, weightDecay: 0 });
  await page.click("#train");
  await page.waitForFunction(() => (globalThis.webtuneDemo?.losses().length ?? 0) >= 2, null, { timeout: TRAIN_TIMEOUT });
  await page.click("#pause");
  assert.equal(await waitState(["paused", "done", "failed"]), "paused", await text("#options-status"));
  const pausedAt = (await page.evaluate(() => globalThis.webtuneDemo.losses())).length;
  assert.match(await text("#progress-text"), new RegExp(`^paused at step ${pausedAt}/40`));
  assert.equal(await page.isDisabled("#download-weights"), false, "a paused run's adapter can be downloaded");

  await page.click("#pause"); // now labelled Resume
  await waitState(["done", "failed", "training"]);
  await page.waitForFunction(() => globalThis.webtuneDemo.losses().length >= 25, null, { timeout: TRAIN_TIMEOUT });
  await page.click("#stop");
  assert.equal(await waitState(["stopped", "done", "failed"]), "stopped", await text("#options-status"));
  const losses = await page.evaluate(() => globalThis.webtuneDemo.losses());
  const steps = await page.evaluate(() => globalThis.webtuneDemo.steps());
  assert.deepEqual(steps, losses.map((_, i) => i + 1), "every step reported once, in order");
  assert.ok(losses.length < 40, "stopped before the end");
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const [first, last] = [mean(losses.slice(0, 5)), mean(losses.slice(-5))];
  assert.ok(last < first - 0.05, `loss falls: mean of the first 5 steps ${first}, of the last 5 ${last}`);
  assert.match(await text("#progress-text"), /^stopped at step \d+\/40/);
  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const weights = await downloadBytes("download-weights");
  assert.equal(readSafetensors(weights.bytes).size, 16, "c_attn, c_proj, c_fc: 4 linears x 2 layers x (A, B)");
});

test("the package API: transferred buffers, rejected promises with the engine's words, a worker that carries on", async () => {
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const out = {};
    const t = await Trainer.create();
    const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
    out.exportFirst = await fail(t.exportAdapter());
    out.datasetFirst = await fail(t.loadDataset(new TextEncoder().encode('{"input_ids": [1]}\n')));
    const [config, weights] = await Promise.all(
      ["config.json", "model.safetensors"].map((f) => fetch(`/fixtures/tiny/model/${f}`).then((x) => x.arrayBuffer())),
    );
    const size = weights.byteLength;
    out.model = (await t.loadModel({ config, weights, name: "tiny" })).nLayer;
    out.transferred = [size, weights.byteLength];
    out.badOption = await fail(t.train({ lr: -1 }));
    out.badTarget = await fail(t.train({ targets: ["c_attn"], seq: 65 }));
    const data = await fetch("/fixtures/tiny/data.jsonl").then((x) => x.arrayBuffer());
    out.dataset = (await t.loadDataset(data, "data.jsonl", { seq: 16 })).windows;
    out.badAdapter = await fail(t.loadAdapter({ config: '{"peft_type": "LORA"}', weights: new Uint8Array(8), name: "run1" }));
    const seen = [];
    const result = await t.train({ steps: 2, batch: 2, seq: 16, lr: 0.01, readbackEvery: 1 }, { onProgress: (p) => seen.push(p.step) });
    out.result = [result.status, result.step, seen];
    const files = (await t.exportAdapter()).files;
    out.files = [typeof files["adapter_config.json"], files["adapter_model.safetensors"].constructor.name];
    out.resumeDone = await fail(t.resume());
    out.generate = await fail(t.generate("hi"));
    out.features = t.info.features;
    t.terminate();
    out.afterTerminate = await fail(t.exportAdapter());
    return out;
  });
  assert.equal(r.exportFirst, "EngineError: nothing to export: no training run yet");
  assert.match(r.datasetFirst, /^EngineError: load a model before the dataset/);
  assert.equal(r.model, 2);
  assert.deepEqual(r.transferred, [260096, 0], "the weights' ArrayBuffer moved to the worker");
  assert.equal(r.badOption, "OptionError: lr -1 is invalid: it must be > 0");
  assert.equal(r.badTarget, "OptionError: seq 65 is longer than the model's n_positions 64");
  assert.equal(r.dataset, 11);
  assert.equal(r.badAdapter, "EngineError: run1/adapter_config.json: missing field 'r'");
  assert.deepEqual(r.result, ["done", 2, [1, 2]]);
  assert.deepEqual(r.files, ["string", "Uint8Array"]);
  assert.equal(r.resumeDone, "EngineError: the run ended at step 2; start a new one");
  assert.match(r.generate, /not available in this build/);
  assert.deepEqual(r.features, { generate: false, evaluate: false, tokenizer: false });
  assert.equal(r.afterTerminate, "EngineError: this Trainer was terminated");
});

test("no request leaves the page's origin", () => {
  const origin = new URL(server.url).origin;
  assert.ok(requests.length > 5, "requests were recorded");
  const foreign = requests.filter((u) => !(u.startsWith(`${origin}/`) || u.startsWith(`blob:${origin}/`) || u.startsWith("data:")));
  assert.deepEqual(foreign, []);
});
