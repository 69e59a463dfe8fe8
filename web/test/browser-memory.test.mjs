// The engine's wasm heap does not hold the model (issue 10): its weight files stay in JS and each
// tensor is read, converted and uploaded one at a time. In headless Chromium, the engine itself
// (the wasm module in the page, no worker) loads the bundled model and runs 2 LoRA steps, 1 full
// step, an evaluation and a generation. WebAssembly.Memory's size (it never shrinks) after loading
// must have grown by less than the weights' f32 size (4 bytes per parameter, the parameter count
// derived from config.json here), and after everything else by less than the f32 file plus that
// f32 copy, which the engine held before (loading alone grew it by 8.5 MiB for these 4.1 MiB of
// weights; now 2.7 MiB, and 4.8 MiB after the runs).
//
// Needs the built package (tools/build-web.sh) and Chromium.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TRAIN_TIMEOUT, openDemo } from "./browser-helpers.mjs";

let s;
before(async () => {
  s = await openDemo();
});
after(async () => {
  await s?.close();
});

/** GPT-2's parameter count from its config.json (tied head): wte, wpe, the blocks, ln_f. */
function gpt2Parameters(c) {
  const C = c.n_embd;
  const block = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C);
  return c.vocab_size * C + c.n_positions * C + c.n_layer * block + 2 * C;
}

test("the wasm heap grows by less than the model's f32 weights: loading, training, evaluating, generating", { timeout: TRAIN_TIMEOUT }, async () => {
  const r = await s.page.evaluate(async () => {
    const wasm = await import("/dist/wasm/webtune.js");
    const { memory } = await wasm.default();
    const heap = () => memory.buffer.byteLength;
    const get = (f) => fetch(`/assets/model/${f}`).then((x) => x.arrayBuffer());
    const [config, weights, tokenizer] = await Promise.all(["config.json", "model.safetensors", "tokenizer.json"].map(get));
    const configText = new TextDecoder().decode(config);
    const engine = await wasm.Engine.create(undefined);
    const out = { config: JSON.parse(configText), start: heap() };
    const info = engine.loadModel(configText, new Uint8Array(weights), "bundled");
    out.loaded = heap();
    out.parameters = info.parameters;
    out.weightsBytes = info.weightsBytes;
    engine.loadTokenizer(new TextDecoder().decode(tokenizer), undefined, undefined, "bundled", undefined, undefined);
    const record = (r) => JSON.stringify({ input_ids: Array.from({ length: 120 }, (_, i) => (i * 7919 + r * 31) % 2048) });
    const data = new TextEncoder().encode([0, 1, 2, 3, 4].map(record).join("\n") + "\n");
    engine.loadDataset("ids.jsonl", data, 32);
    const base = { lr: 1e-3, batch: 1, seq: 32, shuffle: false, schedule: "constant", warmup: 0, evalSplit: 0.2, readbackEvery: 1 };
    engine.startTraining(JSON.stringify({ ...base, mode: "lora", steps: 2 }));
    out.losses = [];
    for (let i = 0; i < 2; i++) out.losses.push(...(await engine.step("run")).logs.map((l) => l.loss));
    out.lora = heap();
    out.eval = (await engine.evaluate(undefined, undefined)).loss;
    engine.startTraining(JSON.stringify({ ...base, mode: "full", steps: 1 }));
    out.losses.push(...(await engine.step("run")).logs.map((l) => l.loss));
    out.full = heap();
    out.generated = (await engine.generate("the cat", JSON.stringify({ maxNewTokens: 4, adapted: false }))).ids.length;
    out.end = heap();
    engine.free();
    return out;
  });
  const f32 = 4 * gpt2Parameters(r.config);
  assert.equal(r.parameters, gpt2Parameters(r.config), "the engine counts the parameters config.json gives");
  assert.ok(r.weightsBytes > f32, "the bundled model's file is f32");
  assert.equal(r.losses.length, 3);
  r.losses.forEach((l) => assert.ok(Number.isFinite(l) && l > 0, `loss ${l}`));
  assert.ok(Number.isFinite(r.eval));
  assert.equal(r.generated, 4);
  const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const grown = `from ${mib(r.start)}: loaded ${mib(r.loaded)}, 2 LoRA steps ${mib(r.lora)}, 1 full step ${mib(r.full)}, end ${mib(r.end)}`;
  console.log(`wasm heap ${grown} (weights as f32: ${mib(f32)})`);
  assert.ok(r.loaded - r.start < f32, `loading grew the heap by the weights' f32 size or more: ${grown}`);
  // (runs allocate more than loading: data, the adapter, the programs; still far from a host copy)
  assert.ok(r.end - r.start < 2 * f32, `the heap grew by the file and the weights' f32 copy or more: ${grown}`);
});
