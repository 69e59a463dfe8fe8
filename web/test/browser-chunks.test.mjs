// Tensors larger than one GPU buffer, in headless Chromium (WebGPU on SwiftShader), through the
// package API: `Trainer.create({maxBinding})` lowers the binding limit below the bundled model's
// 1 MiB token embedding (2048 x 128; its largest other tensor is 256 KiB), so the engine splits the
// embedding (the tied LM head), its gradient and AdamW state into 3 row chunks. 3 full fine-tuning
// steps then log the same losses as without the limit, and the exported model.safetensors has the
// same tensors, shapes and values (to 1e-4, but for the key biases, whose gradient is noise). A maxBinding that
// is not a positive multiple of 4 is refused by name.
//
// Needs the built package (tools/build-web.sh) and Chromium.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TRAIN_TIMEOUT, openDemo } from "./browser-helpers.mjs";
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

const LINES = [
  "the cat sat on the mat and looked at the dog.",
  "a dog ran in the park while the sun was warm.",
  "we sailed at dawn, and the sea was grey and calm.",
  "call me ishmael. some years ago, never mind how long.",
];

/** In the page: 3 full steps on the bundled model with `maxBinding` (or none); losses, the export and the GPU info. */
async function trainInPage(maxBinding) {
  const r = await page.evaluate(
    async ([maxBinding, lines]) => {
      const { Trainer } = await import("/dist/index.js");
      const t = await Trainer.create({ storage: { name: "chunks", backend: "none" }, maxBinding });
      try {
        await t.loadModel({ url: new URL("/assets/model/", location.href).href, name: "bundled" });
        const text = lines.map((l) => JSON.stringify({ text: l })).join("\n") + "\n";
        await t.loadDataset(new TextEncoder().encode(text.repeat(8)), "lines.jsonl", { seq: 32 });
        const options = {
          mode: "full", lr: 1e-3, weightDecay: 0, steps: 3, batch: 1, seq: 32, shuffle: false, schedule: "constant",
          warmup: 0, gradAccum: 1, evalSplit: 0, evalEvery: 0, checkpointEvery: 0, readbackEvery: 1,
        };
        const losses = [];
        const result = await t.train(options, { onProgress: (p) => losses.push(...p.logs.map((l) => l.loss)) });
        const out = (await t.exportModel()).files;
        return { status: result.status, losses, gpu: t.info.gpu, weights: Array.from(out["model.safetensors"]) };
      } finally {
        t.terminate();
      }
    },
    [maxBinding, LINES],
  );
  return { ...r, tensors: readSafetensors(Uint8Array.from(r.weights)) };
}

test("maxBinding below the embedding: 3 full steps match the run without a limit", { timeout: 2 * TRAIN_TIMEOUT }, async (t) => {
  const limit = 400_000;
  const chunked = await trainInPage(limit);
  const whole = await trainInPage(undefined);
  assert.equal(chunked.gpu.maxBinding, limit, "the engine reports the lowered limit");
  assert.ok(whole.gpu.maxBinding > 1 << 20, `without a limit the embedding fits one buffer (${whole.gpu.maxBinding})`);
  assert.equal(chunked.status, "done");
  assert.equal(chunked.losses.length, 3);
  chunked.losses.forEach((l, i) => assert.ok(Math.abs(l - whole.losses[i]) <= 1e-5 * Math.abs(whole.losses[i]), `loss ${i + 1}: ${l} vs ${whole.losses[i]}`));
  assert.deepEqual([...chunked.tensors.keys()].sort(), [...whole.tensors.keys()].sort());
  // the key biases (c_attn.bias[128..256)) get a gradient softmax cancels, i.e. rounding noise, which
  // AdamW turns into steps of about lr: those are left out; every other entry agrees to 1e-4
  let worst = 0;
  let embedding = 0;
  for (const [name, w] of whole.tensors) {
    const c = chunked.tensors.get(name);
    assert.deepEqual(c.shape, w.shape, name);
    const keyBias = (i) => name.endsWith("attn.c_attn.bias") && i >= 128 && i < 256;
    for (let i = 0; i < w.data.length; i++) if (!keyBias(i)) worst = Math.max(worst, Math.abs(c.data[i] - w.data[i]));
    if (name.endsWith("wte.weight")) embedding = c.data.length;
  }
  assert.equal(embedding, 2048 * 128, "the embedding came back whole");
  t.diagnostic(`largest difference outside the key biases: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `largest difference ${worst}`);
});

test("a maxBinding that is not a positive multiple of 4 is refused by name", { timeout: TRAIN_TIMEOUT }, async () => {
  const msg = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    try {
      const t = await Trainer.create({ storage: { name: "chunks-bad", backend: "none" }, maxBinding: 6 });
      t.terminate();
      return "created";
    } catch (e) {
      return String(e);
    }
  });
  assert.match(msg, /maxBinding/);
});
