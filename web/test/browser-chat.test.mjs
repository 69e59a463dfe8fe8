// Chat data in the package API, headless Chromium: the tiny model, its character-level tokenizer and
// a chat template with generation markers (tests/fixtures/chat/tiny_marked.jinja) given to
// loadTokenizer; the chat records of tests/fixtures/chat/peft give the preview transformers' labels
// (the trained tokens' count per record, and the first record's trained spans spell the tokens
// transformers' assistant mask marks); generate({chat: true}) runs with the template's generation prompt.
//
// Needs the built package (tools/build-web.sh) and Chromium.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { openDemo, repo, tiny } from "./browser-helpers.mjs";

let s;
before(async () => {
  s = await openDemo();
});
after(async () => {
  await s?.close();
});

test("chat records through the tokenizer's template: the preview's labels are transformers'", async () => {
  const ex = JSON.parse(readFileSync(join(repo, "tests/fixtures/chat/peft/expected.json"), "utf8"));
  const vocab = JSON.parse(readFileSync(join(tiny, "tokenizer/tokenizer.json"), "utf8")).model.vocab;
  const byId = Object.fromEntries(Object.entries(vocab).map(([t, id]) => [id, t.replaceAll("Ġ", " ").replaceAll("Ċ", "\n")]));
  byId[96] = "<|endoftext|>";
  const r = await s.page.evaluate(async () => {
    const { Trainer } = await import("/dist/index.js");
    const out = {};
    const t = await Trainer.create({ storage: { name: "chat-test", backend: "indexeddb" } });
    const fail = async (p) => p.then(() => "resolved", (e) => `${e.name}: ${e.message}`);
    const bytes = (u) => fetch(u).then((x) => x.arrayBuffer());
    const text = (u) => fetch(u).then((x) => x.text());
    const [config, weights] = await Promise.all(["config.json", "model.safetensors"].map((f) => bytes(`/fixtures/tiny/model/${f}`)));
    await t.loadModel({ config, weights, name: "tiny" });
    const json = await text("/fixtures/tiny/tokenizer/tokenizer.json");
    const data = await bytes("/fixtures/chat/peft/records.jsonl");
    await t.loadTokenizer({ json, name: "tiny" });
    out.noTemplate = await fail(t.loadDataset(data.slice(0), "chat.jsonl", { seq: 16 }));
    out.tokenizer = await t.loadTokenizer({ json, chatTemplate: await text("/fixtures/chat/tiny_marked.jinja"), name: "tiny" });
    out.preview = await t.loadDataset(data.slice(0), "chat.jsonl", { seq: 16 });
    out.generated = await t.generateWithInfo("hi", { adapted: false, chat: true, temperature: 0, maxNewTokens: 4 });
    t.terminate();
    return out;
  });
  assert.match(r.noTemplate, /chat\.jsonl: chat data needs a chat template/);
  assert.equal(r.tokenizer.chatTemplate, true);
  const p = r.preview;
  assert.equal(p.format, "chat");
  assert.equal(p.samples.length, ex.records.length);
  ex.records.forEach((rec, i) => {
    assert.equal(p.samples[i].tokens, rec.input_ids.length, `record ${i}: tokens`);
    assert.equal(p.samples[i].trainedTokens, rec.labels.filter((l) => l >= 0).length, `record ${i}: trained tokens`);
  });
  // the first record: the text of its tokens, and the spans mark exactly the tokens transformers trains
  const first = ex.records[0];
  assert.equal(p.rendered.text, first.input_ids.map((id) => byId[id]).join(""));
  const trained = first.input_ids.map((id, k) => (first.labels[k] >= 0 ? byId[id] : "\u0000")).join("").split("\u0000").filter(Boolean);
  const bytes = new TextEncoder().encode(p.rendered.text);
  const spans = p.rendered.spans.map(([a, b]) => new TextDecoder().decode(bytes.subarray(a, b)));
  assert.deepEqual(spans, trained);
  assert.equal(p.rendered.marked, p.rendered.text.replace(trained[0], `[[${trained[0]}]]`));
  assert.ok(r.generated.ids.length >= 1 && r.generated.ids.length <= 4);
  assert.equal(r.generated.promptTokens, "U: hi\nA: ".length, "the user message through the template, one token a character");
});
