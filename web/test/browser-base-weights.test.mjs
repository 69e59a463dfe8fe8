// `Trainer.create({ baseWeights })` (the CLI's --base-weights) through the package, in headless
// Chromium: the choice reaches the engine (`info.gpu.f16BaseWeights`), "auto" keeps f32 on a
// fallback (CPU) adapter such as SwiftShader, an unknown value is refused naming the option, and
// "f16" either stores them in f16 (a GPU with shader-f16: a LoRA run on the bundled model then
// trains, its first loss close to the f32 run's but not equal) or is refused saying why (no
// shader-f16, as on SwiftShader). The f16 kernels themselves are tested natively
// (tests/half_weights.rs, lavapipe has shader-f16).
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

/** In the page: a Trainer made with `baseWeights`; its GPU info and, if it starts, a 2-step LoRA run's losses. */
async function attempt(baseWeights) {
  return s.page.evaluate(async (baseWeights) => {
    const { Trainer } = await import("/dist/index.js");
    let t;
    try {
      t = await Trainer.create({ storage: { name: "base-weights", backend: "none" }, baseWeights });
    } catch (e) {
      return { error: String(e.message ?? e) };
    }
    try {
      await t.loadModel({ url: new URL("/assets/model/", location.href).href, name: "bundled" });
      const ids = (r) => JSON.stringify({ input_ids: Array.from({ length: 100 }, (_, i) => (i * 7919 + r * 31) % 2048) });
      await t.loadDataset(new TextEncoder().encode([0, 1, 2, 3].map(ids).join("\n") + "\n"), "ids.jsonl", { seq: 32 });
      const options = { mode: "lora", lr: 1e-3, steps: 2, batch: 1, seq: 32, shuffle: false, schedule: "constant", warmup: 0, evalSplit: 0, readbackEvery: 1 };
      const losses = [];
      await t.train(options, { onProgress: (p) => losses.push(...p.logs.map((l) => l.loss)) });
      return { gpu: t.info.gpu, losses };
    } finally {
      t.terminate();
    }
  }, baseWeights);
}

test("baseWeights: auto, f32, f16 and a bad value", { timeout: 2 * TRAIN_TIMEOUT }, async () => {
  const auto = await attempt(undefined);
  assert.equal(auto.error, undefined, auto.error);
  const gpu = auto.gpu;
  assert.equal(gpu.f16BaseWeights, gpu.shaderF16 && gpu.deviceType !== "Cpu", `auto on ${gpu.summary}`);
  const f32 = await attempt("f32");
  assert.equal(f32.gpu.f16BaseWeights, false);
  assert.equal(f32.losses.length, 2);
  if (!gpu.f16BaseWeights) assert.deepEqual(auto.losses, f32.losses, "auto is f32 here");

  const bad = await attempt("f64");
  assert.match(bad.error ?? "", /baseWeights: base weights 'f64' is not one of auto, f16, f32/);

  const f16 = await attempt("f16");
  if (gpu.shaderF16) {
    assert.equal(f16.error, undefined, f16.error);
    assert.equal(f16.gpu.f16BaseWeights, true);
    // the rounding of the weights moves the loss a little, no more
    assert.notEqual(f16.losses[0], f32.losses[0]);
    assert.ok(Math.abs(f16.losses[0] - f32.losses[0]) < 1e-2 * f32.losses[0], `${f16.losses[0]} vs ${f32.losses[0]}`);
  } else {
    assert.match(f16.error ?? "", /baseWeights: f16 base weights need a GPU with shader-f16, and .* has none: use f32 or auto/);
  }
});
