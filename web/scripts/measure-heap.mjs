// Measures the engine's wasm heap (WebAssembly.Memory's size, which never shrinks: the peak so
// far) in headless Chromium while it loads a model, runs LoRA steps and a full fine-tuning step.
// A manual measurement (a GPT-2 124M step takes about a minute on SwiftShader), not a test:
//
//   node scripts/measure-heap.mjs --model /tmp/gpt2-124m [--wasm dist/wasm] [--max-binding 134217728] [--lora-steps 2]
//
// --model: a Hugging Face folder (config.json, model.safetensors); --wasm: the folder of the
// wasm-bindgen output (webtune.js, webtune_bg.wasm), e.g. another build's, to compare. Prints one
// JSON line of bytes: {start, loaded, lora: [after each step], full, losses, ...}.

import { readFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { ARGS, web } from "../test/browser-helpers.mjs";

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const model = arg("model");
if (!model) throw new Error("give --model DIR (config.json and model.safetensors)");
const wasmDir = resolve(arg("wasm", join(web, "dist", "wasm")));
const maxBinding = arg("max-binding") ? Number(arg("max-binding")) : undefined;
const loraSteps = Number(arg("lora-steps", "2"));
for (const f of [join(model, "config.json"), join(model, "model.safetensors"), join(wasmDir, "webtune.js")]) {
  if (!existsSync(f)) throw new Error(`${f} is missing`);
}

const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html" };
const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const [dir, rest] = path.startsWith("/wasm/") ? [wasmDir, path.slice(6)] : path.startsWith("/model/") ? [model, path.slice(7)] : [null, ""];
  const file = dir && !rest.includes("..") ? join(dir, rest) : null;
  if (path === "/") {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>heap</title>");
  } else if (file && existsSync(file)) {
    res.writeHead(200, { "content-type": types[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true, args: ARGS });
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  await page.goto(url);
  const r = await page.evaluate(
    async ([maxBinding, loraSteps]) => {
      const wasm = await import("/wasm/webtune.js");
      const { memory } = await wasm.default();
      const heap = () => memory.buffer.byteLength;
      const engine = await wasm.Engine.create(maxBinding);
      const out = { start: heap() };
      const config = await (await fetch("/model/config.json")).text();
      let t = performance.now();
      const weights = new Uint8Array(await (await fetch("/model/model.safetensors")).arrayBuffer());
      const info = engine.loadModel(config, weights, "model");
      out.loadSeconds = (performance.now() - t) / 1000;
      out.loaded = heap();
      out.parameters = info.parameters;
      out.fileBytes = info.weightsBytes;
      const vocab = JSON.parse(config).vocab_size;
      const ids = Array.from({ length: 400 }, (_, i) => (i * 7919) % vocab);
      engine.loadDataset("ids.jsonl", new TextEncoder().encode(JSON.stringify({ input_ids: ids }) + "\n"), 32);
      const base = { lr: 1e-4, batch: 1, seq: 32, shuffle: false, schedule: "constant", warmup: 0, evalSplit: 0, readbackEvery: 1 };
      out.losses = [];
      out.lora = [];
      engine.startTraining(JSON.stringify({ ...base, mode: "lora", steps: loraSteps }));
      out.loraStarted = heap();
      t = performance.now();
      for (let i = 0; i < loraSteps; i++) {
        out.losses.push(...(await engine.step("run")).logs.map((l) => l.loss));
        out.lora.push(heap());
      }
      out.loraSeconds = (performance.now() - t) / 1000;
      engine.startTraining(JSON.stringify({ ...base, mode: "full", steps: 1 }));
      out.fullStarted = heap();
      t = performance.now();
      out.losses.push(...(await engine.step("run")).logs.map((l) => l.loss));
      out.fullSeconds = (performance.now() - t) / 1000;
      out.full = heap();
      engine.free();
      return out;
    },
    [maxBinding, loraSteps],
  );
  console.log(JSON.stringify(r));
} finally {
  await browser.close();
  server.close();
}
