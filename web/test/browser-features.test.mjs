// The demo page's phase-2 features in headless Chromium (WebGPU on SwiftShader):
// - full fine-tuning of the tiny fixture model matches PyTorch (losses and weights after 3 AdamW
//   steps), its eval loss on a second dataset equals `webtune eval` of the downloaded model folder,
//   which the native CLI loads;
// - text data through the tokenizer with a preview, a held-out split whose eval loss shows on the
//   progress line and the chart, and the generation box: the same seed gives the same text, and
//   the fine-tuned model's text differs from the base model's;
// - a run paused at step 2 and resumed after a page reload (from OPFS) logs the same losses and
//   eval losses (within 1e-6) and gives the same adapter as an uninterrupted run; a resume with
//   another dataset is refused with a readable error;
// - no request leaves the page's origin.
//
// Needs the built package (tools/build-web.sh), Chromium and the native CLI (cargo build).

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { foreignRequests, openDemo, runWebtune, textFile, tiny } from "./browser-helpers.mjs";
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

const close = (a, b, rel) => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b));

test("full fine-tuning: 3 steps match PyTorch; the downloaded model loads in the native CLI with the same eval loss", async (t) => {
  const ex = JSON.parse(readFileSync(join(tiny, "expected.json"), "utf8"));
  const expected = readSafetensors(readFileSync(join(tiny, "expected.safetensors")));
  const o = ex.full.optimizer;
  await s.loadTinyModel();
  await page.setInputFiles("#dataset-file", join(tiny, "data.jsonl"));
  await s.waitText("dataset-status", /^data\.jsonl: token ids/);
  await page.click("#eval-details summary");
  await page.setInputFiles("#eval-file", join(tiny, "data.jsonl"));
  await s.waitText("eval-status", /^data\.jsonl: 9 records/);
  await s.setOptions({
    mode: "full", lr: o.lr, weightDecay: o.weight_decay, gradClip: ex.full.clip_grad_norm, steps: 3, batch: ex.B,
    seq: ex.T, shuffle: false, schedule: "constant", warmup: 0, gradAccum: 1, evalSplit: 0, evalEvery: 0, checkpointEvery: 0,
  });
  await page.press("#options [name=seq]", "Tab");
  await s.waitText("dataset-status", new RegExp(`sequences of ${ex.T} tokens`));
  await page.click("#train");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  assert.match(await s.text("#options-status"), /^training every weight \([\d,]+ parameters\) on 11 sequences; eval loss on \d+ held-out tokens; GPU memory [\d.]+ [kMG]?B \(activations [\d.]+ [kMG]?B, eval [\d.]+ [kMG]?B, gradients [\d.]+ [kMG]?B, optimizer [\d.]+ [kMG]?B, trainable [\d.]+ [kMG]?B\)$/);
  const losses = await s.losses();
  ex["full.losses"].forEach((want, i) => assert.ok(close(losses[i], want, 1e-4), `loss ${i + 1}: ${losses[i]} vs PyTorch ${want}`));
  const [evalAtEnd] = await s.evals();
  assert.equal(evalAtEnd.step, 3, "eval data without evalEvery: evaluated at the end");
  assert.match(await s.text("#progress-text"), /^finished at step 3\/3 · loss \d\.\d{4} · eval loss \d\.\d{4}/);

  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const config = await s.downloadBytes("download-config");
  const weights = await s.downloadBytes("download-weights");
  assert.deepEqual([config.name, weights.name], ["config.json", "model.safetensors"]);
  const got = readSafetensors(weights.bytes);
  let worst = 0;
  let n = 0;
  for (const [name, tensor] of got) {
    const e = expected.get(`full.step3.${name.replace(/^transformer\./, "")}`);
    assert.ok(e, `PyTorch's fixture has no full.step3 tensor for ${name}`);
    for (let i = 0; i < tensor.data.length; i++) worst = Math.max(worst, Math.abs(tensor.data[i] - e.data[i]));
    n += 1;
  }
  assert.equal(n, 2 + 12 * 2 + 2, "wte, wpe, 12 tensors per layer x 2, ln_f");
  t.diagnostic(`largest difference from PyTorch's weights after 3 full steps: ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `largest difference from PyTorch: ${worst}`);

  const dir = mkdtempSync(join(tmpdir(), "webtune-full-"));
  try {
    writeFileSync(join(dir, "config.json"), config.bytes);
    writeFileSync(join(dir, "model.safetensors"), weights.bytes);
    const native = JSON.parse(
      runWebtune(["eval", "--model", dir, "--data", join(tiny, "data.jsonl"), "--seq", String(ex.T), "--batch", String(ex.B), "--json"]),
    );
    t.diagnostic(`eval loss: browser ${evalAtEnd.loss}, webtune eval of the downloaded folder ${native.base.loss}`);
    assert.ok(close(native.base.loss, evalAtEnd.loss, 1e-4), `native ${native.base.loss} vs browser ${evalAtEnd.loss}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await page.click("#clear-eval");
  await s.waitText("eval-status", /^$/);
});

// Text within the tiny tokenizer's 97 characters (printable ASCII, space, newline).
const LINES = [
  "the cat sat on the mat.",
  "the dog sat on the log.",
  "a cat and a dog met on the mat.",
  "the cat saw the dog and ran.",
  "the dog saw the cat and sat.",
  "on the mat sat the cat, on the log the dog.",
  "the cat and the dog are friends now.",
  "every day the cat sits on the mat.",
  "every day the dog sits on the log.",
  "the end of the story of the cat and the dog.",
];

test("text data through the tokenizer: preview, held-out eval loss on the chart, generation deterministic and changed by training", async () => {
  await page.selectOption("#options [name=mode]", "lora");
  await s.loadTinyModel();
  assert.match(await s.text("#model-status"), /no tokenizer \(token-id data only, no generation\)/);
  assert.equal(await page.isDisabled("#generate"), true, "no tokenizer, no generation");
  await page.setInputFiles("#dataset-file", textFile("story.txt", `${LINES.join("\n")}\n`));
  assert.match(await s.waitText("dataset-status", /^story\.txt/), /^story\.txt: text data needs a tokenizer: give the model's tokenizer\.json/);
  assert.match(await s.cls("#dataset-status"), /error/);

  await s.loadTinyModel({ tokenizer: true }); // the chosen dataset is read again with the tokenizer
  assert.match(await s.text("#model-status"), /tokenizer: 97 tokens$/);
  const chars = LINES.join("\n").length + 1;
  assert.match(await s.waitText("dataset-status", /^story\.txt: text/), new RegExp(`^story\\.txt: text, 1 records, ${chars + 1} tokens`));
  assert.match(await s.text("#dataset-preview"), /^the cat sat on the mat\.\nthe dog sat/);

  const pc = LINES.map((l) => JSON.stringify({ prompt: l.slice(0, 8), completion: l.slice(8) })).join("\n");
  await page.setInputFiles("#dataset-file", textFile("pairs.jsonl", pc));
  assert.match(await s.waitText("dataset-status", /^pairs\.jsonl/), /^pairs\.jsonl: prompt \+ completion, 10 records/);
  assert.match(await s.text("#dataset-preview li"), /^the cat sat on the mat\.  \(23 tokens, 15 trained on\)$/);
  await page.setInputFiles("#dataset-file", textFile("lines.jsonl", `${LINES.map((l) => JSON.stringify({ text: l })).join("\n")}\n`));
  assert.match(await s.waitText("dataset-status", /^lines\.jsonl/), /^lines\.jsonl: text, 10 records/);

  await s.setOptions({
    mode: "lora", rank: 4, alpha: 8, lr: 0.01, steps: 12, batch: 2, seq: 16, shuffle: true, seed: 1, schedule: "cosine", warmup: 2,
    minLr: 0.001, gradAccum: 1, evalSplit: 0.3, evalEvery: 4, checkpointEvery: 0,
  });
  await page.click("#train");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  assert.match(await s.text("#options-status"), /eval loss on \d+ held-out tokens; GPU memory [\d.]+ [kMG]?B \(/);
  const evals = await s.evals();
  assert.deepEqual(evals.map((e) => e.step), [4, 8, 12], "evaluated every 4 steps");
  assert.ok(evals.every((e) => Number.isFinite(e.loss) && e.loss > 0));
  assert.match(await s.text("#progress-text"), new RegExp(`eval loss ${evals[2].loss.toFixed(4)}`));
  assert.match(await s.text("#chart"), /eval loss/, "the chart has an eval-loss series");

  await page.fill("#prompt", "the cat ");
  await s.setOptions({ maxNewTokens: 24, temperature: 0.8, topK: 40, topP: 1, seed: 5 }, "gen-options");
  const generate = async () => {
    await page.evaluate(() => (document.getElementById("gen-status").textContent = ""));
    await page.click("#generate");
    await s.waitText("gen-status", /^seed|error|:/);
    assert.match(await s.cls("#gen-status"), /ok/, await s.text("#gen-status"));
    return [await s.text("#gen-base"), await s.text("#gen-adapted")];
  };
  const [base1, adapted1] = await generate();
  const [base2, adapted2] = await generate();
  assert.match(base1, /^the cat ▌/);
  assert.match(adapted1, /^the cat ▌/);
  assert.equal(base2, base1, "the same seed gives the same base text");
  assert.equal(adapted2, adapted1, "the same seed gives the same fine-tuned text");
  assert.notEqual(adapted1, base1, "training changed the model's text");
  await s.setOptions({ seed: 6 }, "gen-options");
  const [base3] = await generate();
  assert.notEqual(base3, base1, "another seed, another sample");
  await s.setOptions({ seed: 5 }, "gen-options");
});

test("a run paused at step 2 and resumed after a reload logs the same losses and gives the same adapter", async () => {
  const options = {
    rank: 4, alpha: 8, lr: 0.01, steps: 4, batch: 2, seq: 16, shuffle: true, seed: 3, schedule: "cosine", warmup: 1,
    minLr: 0, gradAccum: 2, evalSplit: 0.2, evalEvery: 2, checkpointEvery: 0,
  };
  await page.click("#use-tiny");
  assert.match(await s.waitText("dataset-status", /^data\.jsonl|error/), /^data\.jsonl: token ids/);
  await s.setOptions(options);
  await page.click("#train");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  const losses = await s.losses();
  const evals = await s.evals();
  assert.equal(losses.length, 4);
  assert.deepEqual(evals.map((e) => e.step), [2, 4]);
  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const adapter = readSafetensors((await s.downloadBytes("download-weights")).bytes);
  assert.equal(await page.isHidden("#resume-section"), true, "a finished run leaves no saved run");

  await page.evaluate(() => globalThis.webtuneDemo.pauseAfter(2));
  await page.click("#train");
  assert.equal(await s.waitState(["paused", "done", "failed"]), "paused", await s.report());
  assert.match(await s.text("#progress-text"), /^paused at step 2\/4 .*saved \(reload-safe\) at step 2$/);

  await s.reload();
  assert.equal(await page.getAttribute("body", "data-state"), "idle", await s.report());
  assert.equal(await s.waitText("resume-saved", /from step/), "Resume run from step 2");
  assert.match(await s.text("#resume-text"), /^A LoRA run of tiny on data\.jsonl was saved at step 2 of 4 .*the origin-private file system/);
  assert.deepEqual(await s.losses(), [], "a fresh page");

  // Another dataset than the run's: refused, with what to do.
  await page.click("#use-tiny");
  await s.waitText("dataset-status", /^data\.jsonl/);
  const other = '{"input_ids": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]}\n'.repeat(6);
  await page.setInputFiles("#dataset-file", textFile("other.jsonl", other));
  await s.waitText("dataset-status", /^other\.jsonl: token ids/);
  await page.click("#resume-saved");
  assert.match(
    await s.waitText("resume-status", /./),
    /^dataset other\.jsonl: not the checkpoint's data data\.jsonl \(\d+ bytes, fingerprint [0-9a-f]{16}; this file: \d+ bytes, fingerprint [0-9a-f]{16}\): load that file to resume the run$/,
  );
  await s.waitState(["failed"]);
  assert.equal(await page.isHidden("#resume-section"), false, "the saved run is still offered");

  await page.click("#use-tiny");
  await s.waitText("dataset-status", /^data\.jsonl/);
  await page.click("#resume-saved");
  assert.equal(await s.waitState(["done", "failed", "stopped"]), "done", await s.report());
  const resumed = await s.losses();
  const resumedEvals = await s.evals();
  assert.deepEqual(await s.steps(), [1, 2, 3, 4], "steps 1-2 from the checkpoint, 3-4 trained after the reload");
  resumed.forEach((l, i) => assert.ok(Math.abs(l - losses[i]) <= 1e-6, `step ${i + 1}: ${l} resumed vs ${losses[i]} uninterrupted`));
  assert.deepEqual(resumedEvals.map((e) => e.step), [2, 4]);
  resumedEvals.forEach((e, i) => assert.ok(Math.abs(e.loss - evals[i].loss) <= 1e-6, `eval at step ${e.step}`));
  assert.equal(await page.inputValue("#options [name=gradAccum]"), "2", "the form shows the run's settings");
  await page.waitForFunction(() => !document.getElementById("download-weights")?.hasAttribute("disabled"));
  const again = readSafetensors((await s.downloadBytes("download-weights")).bytes);
  assert.equal(again.size, adapter.size);
  let worst = 0;
  for (const [name, t] of adapter) {
    const u = again.get(name);
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - u.data[i]));
  }
  assert.ok(worst <= 1e-6, `the resumed adapter differs by ${worst}`);
  assert.equal(await page.isHidden("#resume-section"), true, "the finished run's checkpoint is gone");
});

test("no request leaves the page's origin", () => {
  assert.ok(s.requests.length > 5, "requests were recorded");
  assert.deepEqual(foreignRequests(s), []);
});
