// The tokenizer compiled to wasm32 (dist/wasm, the same build the browser loads) against
// Python `tokenizers` / transformers: tests/fixtures/tokenizer/cases.json, made by
// tools/make_tokenizer_fixtures.py. The native build is checked by tests/tokenizer.rs.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
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

// The real Llama-2-format, Llama 3 and Qwen3 tokenizer.json files (gzipped fixtures, see
// tests/fixtures/tokenizer/REAL.md) and the variants of families.json, as tests/tokenizer.rs
// checks them natively.
const families = JSON.parse(read("families.json"));
const baseCache = new Map();
const baseJson = (base) => {
  if (!baseCache.has(base)) {
    let text;
    try {
      text = gunzipSync(readFileSync(new URL(`${base}/tokenizer.json.gz`, fixtures))).toString("utf8");
    } catch {
      text = read(`${base}/tokenizer.json`);
    }
    baseCache.set(base, JSON.parse(text));
  }
  return baseCache.get(base);
};
const variantJson = (name) => {
  const v = families.variants[name];
  return JSON.stringify({ ...baseJson(v.base), ...v.set });
};

for (const [name, v] of Object.entries(families.variants)) {
  test(`wasm32 ${name}: encode (with and without special tokens) and decode equal Python on every text`, () => {
    const tok = Tokenizer.fromJson(variantJson(name), name);
    assert.equal(tok.vocabSize(), v.vocab_size);
    families.texts.forEach((text, i) => {
      const [ids, dec, skip] = v.results[i];
      const label = JSON.stringify(text).slice(0, 80);
      assert.deepEqual(Array.from(tok.encode(text)), ids, `encode ${label}`);
      assert.deepEqual(Array.from(tok.encodeWithSpecialTokens(text)), [...v.prefix, ...ids, ...v.suffix], `special ${label}`);
      assert.equal(tok.decode(Uint32Array.from(ids)), dec, `decode of ${label}`);
      assert.equal(tok.decodeSkipSpecial(Uint32Array.from(ids)), skip ?? dec, `decode skipping specials of ${label}`);
    });
    for (const [ids, dec, skip] of v.decode_cases) {
      assert.equal(tok.decode(Uint32Array.from(ids)), dec, `decode ${ids}`);
      assert.equal(tok.decodeSkipSpecial(Uint32Array.from(ids)), skip, `decode skip ${ids}`);
    }
    tok.free();
  });
}

test("wasm32 fromFiles: tokenizer_config.json's special tokens equal transformers'", () => {
  for (const [name, c] of Object.entries(families.configs)) {
    const family = families.variants[c.variant].base;
    const config = { ...JSON.parse(read(`${family}/tokenizer_config.json`)), ...c.config };
    const tok = Tokenizer.fromFiles(variantJson(c.variant), JSON.stringify(config), name);
    const s = tok.specialTokens();
    const want = c.special;
    assert.deepEqual(
      { bos: s.bos ?? null, eos: s.eos ?? null, pad: s.pad ?? null, unk: s.unk ?? null, prefix: s.prefix, suffix: s.suffix },
      { bos: want.bos, eos: want.eos, pad: want.pad, unk: want.unk, prefix: want.prefix, suffix: want.suffix },
      name,
    );
    assert.equal(s.addBos, want.bos !== null && want.prefix.includes(want.bos), `${name} addBos`);
    tok.free();
  }
  assert.throws(() => Tokenizer.fromFiles(variantJson("qwen3"), '{"bos_token": "<|nope|>"}', "q"), /q\/tokenizer_config\.json.*bos_token/);
});
