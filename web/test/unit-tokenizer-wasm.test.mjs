// The tokenizer compiled to wasm32 (dist/wasm, the same build the browser loads) against
// Python `tokenizers` / transformers: tests/fixtures/tokenizer/cases.json, made by
// tools/make_tokenizer_fixtures.py. The native build is checked by tests/tokenizer.rs.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import init, { Tokenizer } from "../dist/wasm/webtune.js";

const fixtures = new URL("../../tests/fixtures/tokenizer/", import.meta.url);
const read = (path) => readFileSync(new URL(path, fixtures), "utf8");
await init({ module_or_path: readFileSync(new URL("../dist/wasm/webtune_bg.wasm", import.meta.url)) });
const cases = JSON.parse(read("cases.json"));

const tokenizers = {
  gpt2like: Tokenizer.fromJson(read("gpt2like/tokenizer.json"), "gpt2like/tokenizer.json"),
  appended: Tokenizer.fromJson(read("appended/tokenizer.json"), "appended/tokenizer.json"),
  options: Tokenizer.fromJson(read("options/tokenizer.json"), "options/tokenizer.json"),
};

for (const [name, tok] of Object.entries(tokenizers)) {
  test(`wasm32 ${name}: encode and decode equal Python on every case`, () => {
    assert.equal(tok.vocabSize(), cases.vocab_size[name]);
    for (const c of cases.cases) {
      const want = c[name];
      assert.deepEqual(Array.from(tok.encode(c.text)), want.ids, `encode ${JSON.stringify(c.text).slice(0, 80)}`);
      assert.equal(tok.decode(Uint32Array.from(want.ids)), want.decoded, `decode of ${JSON.stringify(c.text).slice(0, 80)}`);
    }
  });
}

test("wasm32 vocab.json + merges.txt equals Python, decode of split characters too", () => {
  const pair = Tokenizer.fromVocabMerges(read("gpt2like/vocab.json"), read("gpt2like/merges.txt"), "gpt2like pair");
  for (const c of cases.cases) {
    assert.deepEqual(Array.from(pair.encode(c.text)), c.gpt2like.ids);
  }
  for (const d of cases.decode_cases) {
    assert.equal(tokenizers[d.tokenizer].decode(Uint32Array.from(d.ids)), d.decoded, `decode ${d.ids}`);
  }
});

test("wasm32 refuses a malformed tokenizer.json with its name", () => {
  assert.throws(() => Tokenizer.fromJson("{", "broken.json"), /broken\.json/);
});
