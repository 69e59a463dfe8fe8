// The package API in headless Chromium (WebGPU on SwiftShader) on the cases the other browser tests
// cannot see:
// - weight decay that shows: 3 LoRA and 3 full steps at weight decay 1.0 (lr 1e-2, betas 0.8 / 0.95,
//   eps 1e-6), where the decay alone moves the weights by 1e-2 or more, against PyTorch (+ PEFT);
// - another LoRA scale on a subset of the linears: 3 steps from adapter_r5 (alpha 3, r 5 on
//   attn.c_proj and c_fc) against PEFT, and a fresh adapter from the options rank / alpha / targets
//   with `useInitAdapter: false` (the loaded adapter ignored) against `webtune train` with the same
//   flags (itself checked against the CPU reference by tests/cli.rs);
// - pause() and stop (an AbortSignal) on a run too long to finish first, on any GPU;
// - `Trainer.create({worker})`, a storage failure reported as `saveError` (the run goes on), and the
//   worker replaced after a fatal engine error (a wasm trap), through a worker script that wraps the
//   package's own.
//
// Needs the built package (tools/build-web.sh), Chromium and the native CLI (cargo build).

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TRAIN_TIMEOUT, foreignRequests, openDemo, runWebtune, tiny } from "./browser-helpers.mjs";
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

const ex = JSON.parse(readFileSync(join(tiny, "expected.json"), "utf8"));
const expected = readSafetensors(readFileSync(join(tiny, "expected.safetensors")));

/** The training options of a fixture section (3 steps on its batches, in file order). */
function fixtureOptions(section, mode) {
  const o = ex[section].optimizer;
  return {
    mode, lr: o.lr, weightDecay: o.weight_decay, beta1: o.betas[0], beta2: o.betas[1], eps: o.eps,
    gradClip: ex[section].clip_grad_norm, steps: ex[section].steps, batch: ex.B, seq: ex.T, shuffle: false,
    schedule: "constant", warmup: 0, gradAccum: 1, evalSplit: 0, evalEvery: 0, checkpointEvery: 0, readbackEvery: 1,
  };
}

/**
 * In the page: a Trainer with the tiny model and its data, `adapter` (a fixture folder) loaded if
 * given, trained with `options`; returns the logged losses and the exported file (as a byte array).
 */
async function trainInPage(options, adapter) {
  const r = await page.evaluate(
    async ([options, adapter]) => {
      const { Trainer } = await import("/dist/index.js");
      const t = await Trainer.create({ storage: { name: "cases", backend: "indexeddb" } });
      try {
        const bytes = (f) => fetch(`/fixtures/tiny/${f}`).then((x) => x.arrayBuffer());
        await t.loadModel({ config: await bytes("model/config.json"), weights: await bytes("model/model.safetensors"), name: "tiny" });
        await t.loadDataset(await bytes("data.jsonl"), "data.jsonl", { seq: options.seq });
        if (adapter) {
          await t.loadAdapter({
            config: await bytes(`${adapter}/adapter_config.json`), weights: await bytes(`${adapter}/adapter_model.safetensors`), name: adapter,
          });
        }
        const losses = [];
        const result = await t.train(options, { onProgress: (p) => losses.push(...p.logs.map((l) => l.loss)) });
        const out = options.mode === "full" ? (await t.exportModel()).files : (await t.exportAdapter()).files;
        const weights = out["model.safetensors"] ?? out["adapter_model.safetensors"];
        return { status: result.status, losses, config: out["config.json"] ?? out["adapter_config.json"], weights: Array.from(weights) };
      } finally {
        t.terminate();
      }
    },
    [options, adapter],
  );
  return { ...r, tensors: readSafetensors(Uint8Array.from(r.weights)) };
}

/** Largest |got - want| over every tensor, each named `key(name)` in the fixture. */
function worstDifference(tensors, key) {
  let worst = 0;
  for (const [name, t] of tensors) {
    const e = expected.get(key(name));
    assert.ok(e, `the fixture has no ${key(name)}`);
    assert.deepEqual(t.shape, e.shape, name);
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - e.data[i]));
  }
  return worst;
}

function checkLosses(losses, want) {
  assert.equal(losses.length, want.length);
  losses.forEach((l, i) => assert.ok(Math.abs(l - want[i]) <= 1e-4 * Math.abs(want[i]), `loss ${i + 1}: ${l} vs PyTorch ${want[i]}`));
}

test("weight decay 1.0: 3 LoRA steps and 3 full steps match PyTorch (+ PEFT)", { timeout: 2 * TRAIN_TIMEOUT }, async (t) => {
  for (const section of ["lora_wd", "full_wd"]) {
    assert.ok(ex[section].decay_effect > 1e-2, `${section}: the decay alone moves the weights by only ${ex[section].decay_effect}`);
    const full = section === "full_wd";
    const r = await trainInPage(fixtureOptions(section, full ? "full" : "lora"), full ? undefined : "adapter_init");
    assert.equal(r.status, "done");
    checkLosses(r.losses, ex[`${section}.losses`]);
    const prefix = `${section}.step3.`;
    assert.equal(r.tensors.size, [...expected.keys()].filter((k) => k.startsWith(prefix)).length);
    const worst = worstDifference(r.tensors, (n) => prefix + n.replace(/^transformer\./, ""));
    t.diagnostic(`${section}: largest difference from PyTorch after 3 steps ${worst.toExponential(2)} (decay effect ${ex[section].decay_effect.toExponential(2)})`);
    assert.ok(worst <= 1e-4, `${section}: largest difference from PyTorch ${worst}`);
  }
});

test("alpha 3, rank 5 on attn.c_proj and c_fc: 3 steps from adapter_r5 match PEFT", { timeout: TRAIN_TIMEOUT }, async (t) => {
  // the options' shape agrees with the adapter's (which decides it when useInitAdapter is true)
  const options = { ...fixtureOptions("lora_r5", "lora"), rank: 5, alpha: 3, targets: ["attn.c_proj", "c_fc"] };
  const r = await trainInPage(options, "adapter_r5");
  checkLosses(r.losses, ex["lora_r5.losses"]);
  const cfg = JSON.parse(r.config);
  assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.target_modules], [5, 3, ["attn.c_proj", "c_fc"]]);
  assert.deepEqual([...r.tensors.keys()].map((k) => k.replace(/^base_model\.model\.transformer\./, "")).sort(), [
    "h.0.attn.c_proj.lora_A.weight", "h.0.attn.c_proj.lora_B.weight", "h.0.mlp.c_fc.lora_A.weight", "h.0.mlp.c_fc.lora_B.weight",
    "h.1.attn.c_proj.lora_A.weight", "h.1.attn.c_proj.lora_B.weight", "h.1.mlp.c_fc.lora_A.weight", "h.1.mlp.c_fc.lora_B.weight",
  ]);
  const worst = worstDifference(r.tensors, (n) => `lora_r5.step3.${n}`);
  t.diagnostic(`largest difference from PEFT's adapter after 3 steps: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `largest difference from PEFT: ${worst}`);
});

test("rank / alpha / targets options with useInitAdapter false: a fresh adapter that trains as webtune train's", { timeout: TRAIN_TIMEOUT }, async (t) => {
  const flags = { rank: 5, alpha: 3, targets: ["attn.c_proj", "c_fc"], seed: 4, lr: 0.01, steps: 4 };
  const options = {
    ...fixtureOptions("lora", "lora"), weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, ...flags, useInitAdapter: false,
  };
  // adapter_init (rank 4, alpha 8, every linear) is loaded, and must be ignored
  const r = await trainInPage(options, "adapter_init");
  const cfg = JSON.parse(r.config);
  assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.target_modules], [5, 3, ["attn.c_proj", "c_fc"]]);

  const dir = mkdtempSync(join(tmpdir(), "webtune-fresh-"));
  try {
    const log = join(dir, "log.jsonl");
    runWebtune([
      "train", "--model", join(tiny, "model"), "--data", join(tiny, "data.jsonl"), "--out", join(dir, "out"), "--log-json", log,
      "--lora-rank", "5", "--lora-alpha", "3", "--lora-targets", "attn.c_proj,c_fc", "--seed", "4", "--lr", "1e-2", "--steps", "4",
      "--batch", String(ex.B), "--seq", String(ex.T), "--no-shuffle",
    ]);
    const native = readSafetensors(readFileSync(join(dir, "out", "adapter_model.safetensors")));
    const nativeLosses = readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l).loss);
    checkLosses(r.losses, nativeLosses);
    assert.deepEqual([...r.tensors.keys()].sort(), [...native.keys()].sort());
    let worst = 0;
    for (const [name, tensor] of r.tensors) {
      const n = native.get(name);
      for (let i = 0; i < tensor.data.length; i++) worst = Math.max(worst, Math.abs(tensor.data[i] - n.data[i]));
    }
    t.diagnostic(`largest difference from webtune train's adapter: ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `largest difference from webtune train: ${worst}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pause() and stop hold on a run too long to end first", { timeout: TRAIN_TIMEOUT }, async () => {
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const t = await Trainer.create({ storage: { name: "control", backend: "indexeddb" } });
    const bytes = (f) => fetch(`/fixtures/tiny/${f}`).then((x) => x.arrayBuffer());
    await t.loadModel({ config: await bytes("model/config.json"), weights: await bytes("model/model.safetensors"), name: "tiny" });
    await t.loadDataset(await bytes("data.jsonl"), "data.jsonl", { seq: 16 });
    const opts = { steps: 1_000_000, batch: 2, seq: 16, lr: 0.01, readbackEvery: 1 };
    const out = {};
    // pause() once step 2 is reported; the run cannot have ended by then
    let asked = false;
    const paused = await t.train(opts, {
      onProgress: (p) => {
        if (p.step >= 2 && !asked) {
          asked = true;
          void t.pause();
        }
      },
    });
    out.paused = [paused.status, paused.step];
    // resume, then stop through an AbortSignal once 2 more steps are reported
    const ac = new AbortController();
    const stopped = await t.resume({
      signal: ac.signal,
      onProgress: (p) => {
        if (p.step >= paused.step + 2) ac.abort();
      },
    });
    out.stopped = [stopped.status, stopped.step];
    out.resumeAfterStop = await t.resume().then(() => "resolved", (e) => e.message);
    t.terminate();
    return out;
  });
  assert.equal(r.paused[0], "paused");
  assert.ok(r.paused[1] >= 2 && r.paused[1] < 100, `paused within a few steps of pause(): step ${r.paused[1]}`);
  assert.equal(r.stopped[0], "stopped");
  assert.ok(r.stopped[1] >= r.paused[1] + 2 && r.stopped[1] < r.paused[1] + 100, `stopped within a few steps: step ${r.stopped[1]}`);
  assert.equal(r.resumeAfterStop, `the run ended at step ${r.stopped[1]}; start a new one`);
});

test("a custom worker: its factory is used, a failed save is reported and the run goes on, a fatal error restarts it", { timeout: TRAIN_TIMEOUT }, async () => {
  const r = await page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const origin = location.origin;
    // Runs before the package's worker: IndexedDB refuses every write, and the engine's evaluate traps
    // as a Rust panic or an out-of-bounds access would.
    const sabotage = `
      import { Engine } from "${origin}/dist/wasm/webtune.js";
      IDBObjectStore.prototype.put = function () { throw new DOMException("the test's disk is full", "QuotaExceededError"); };
      Engine.prototype.evaluate = function () { throw new WebAssembly.RuntimeError("unreachable executed (test)"); };
    `;
    const sabotageUrl = URL.createObjectURL(new Blob([sabotage], { type: "text/javascript" }));
    const main = `import "${sabotageUrl}";\nimport "${origin}/dist/worker.js";\n`;
    const workerUrl = URL.createObjectURL(new Blob([main], { type: "text/javascript" }));
    let made = 0;
    const worker = () => {
      made += 1;
      return new Worker(workerUrl, { type: "module" });
    };
    const t = await Trainer.create({ worker, storage: { name: "sabotaged", backend: "indexeddb" } });
    const out = { madeAtStart: made };
    const bytes = (f) => fetch(`/fixtures/tiny/${f}`).then((x) => x.arrayBuffer());
    const load = async () => {
      await t.loadModel({ config: await bytes("model/config.json"), weights: await bytes("model/model.safetensors"), name: "tiny" });
      await t.loadDataset(await bytes("data.jsonl"), "data.jsonl", { seq: 16 });
    };
    await load();
    const progress = [];
    const opts = { steps: 4, batch: 2, seq: 16, lr: 0.01, readbackEvery: 1, checkpointEvery: 1 };
    const paused = await t.train(opts, { pauseAfter: 2, onProgress: (p) => progress.push([p.step, p.saved ?? null, p.saveError ?? null]) });
    out.paused = { status: paused.status, step: paused.step, saved: paused.saved ?? null, saveError: paused.saveError ?? null };
    out.progress = progress;
    out.savedRun = await t.savedRun();
    const done = await t.resume();
    out.done = [done.status, done.step];
    out.fatal = await t.evaluate().then(
      () => "resolved",
      (e) => ({ name: e.name, fatal: e.fatal, message: e.message }),
    );
    await load(); // on the replacement worker
    out.afterRestart = (await t.train({ steps: 1, batch: 2, seq: 16, lr: 0.01 })).status;
    out.madeAtEnd = made;
    t.terminate();
    return out;
  });
  assert.equal(r.madeAtStart, 1, "Trainer.create used the given worker factory");
  const saveError = /^could not save the run at step \d \(indexeddb\): the test's disk is full$/;
  assert.equal(r.paused.status, "paused");
  assert.equal(r.paused.step, 2);
  assert.equal(r.paused.saved, null, "nothing was saved");
  assert.match(r.paused.saveError, saveError);
  assert.match(r.paused.saveError, /at step 2 /);
  const withError = r.progress.filter((p) => p[2] !== null);
  assert.ok(withError.length > 0 && withError.every((p) => saveError.test(p[2]) && p[1] === null), JSON.stringify(r.progress));
  assert.equal(r.savedRun, null);
  assert.deepEqual(r.done, ["done", 4], "the run went on after the failed saves");
  assert.equal(r.fatal.name, "EngineError");
  assert.equal(r.fatal.fatal, true);
  assert.match(r.fatal.message, /^internal error in the webtune engine \(a bug: please report it\): .*unreachable executed \(test\).*the engine was restarted/);
  assert.equal(r.madeAtEnd, 2, "the worker was replaced once, through the same factory");
  assert.equal(r.afterRestart, "done", "the replacement worker trains");
});

test("no request leaves the page's origin", () => {
  assert.ok(s.requests.length > 5, "requests were recorded");
  assert.deepEqual(foreignRequests(s), []);
});
