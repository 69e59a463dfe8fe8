// Grouping picked or dropped files into model, adapter and datasets (dist/files.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { filePath, formatBytes, groupFiles, indexShards, shardsOf } from "../dist/files.js";

const file = (path, { folderDrop = true } = {}) => {
  const name = path.split("/").pop();
  return {
    name,
    webkitRelativePath: folderDrop ? path : "",
    size: 1,
    arrayBuffer: async () => new ArrayBuffer(1),
    text: async () => "",
  };
};
const names = (list) => list.map(filePath);

test("a model folder with tokenizer, extras and a dataset", () => {
  const g = groupFiles(
    ["gpt2/config.json", "gpt2/model.safetensors", "gpt2/tokenizer.json", "gpt2/generation_config.json",
      "gpt2/README.md", "gpt2/train.jsonl"].map((p) => file(p)),
  );
  assert.equal(g.model.folder, "gpt2");
  assert.equal(filePath(g.model.config), "gpt2/config.json");
  assert.deepEqual(names(g.model.weights), ["gpt2/model.safetensors"]);
  assert.equal(g.model.index, undefined);
  assert.equal(filePath(g.model.tokenizer.json), "gpt2/tokenizer.json");
  assert.deepEqual(names(g.datasets), ["gpt2/train.jsonl"]);
  assert.deepEqual(names(g.ignored), ["gpt2/generation_config.json", "gpt2/README.md"]);
  assert.deepEqual(g.problems, []);
  assert.equal(g.adapter, undefined);
});

test("bare names from a file picker; a lone differently named safetensors is the weights", () => {
  const g = groupFiles([file("config.json", { folderDrop: false }), file("pytorch-f16.safetensors", { folderDrop: false })]);
  assert.deepEqual(g.model.weights.map((f) => f.name), ["pytorch-f16.safetensors"]);
  assert.equal(g.model.folder, "model");
});

test("an adapter folder next to a model", () => {
  const g = groupFiles(
    ["m/config.json", "m/model.safetensors", "run/adapter_config.json", "run/adapter_model.safetensors"].map((p) => file(p)),
  );
  assert.equal(g.model.folder, "m");
  assert.equal(g.adapter.folder, "run");
  assert.equal(g.adapter.config.name, "adapter_config.json");
});

test("half a model or adapter, or two models, are named as problems", () => {
  let g = groupFiles([file("m/config.json")]);
  assert.equal(g.model, undefined);
  assert.match(g.problems[0], /found m\/config\.json but no model\.safetensors/);
  g = groupFiles([file("m/model.safetensors")]);
  assert.match(g.problems[0], /no config\.json next to it/);
  g = groupFiles([file("a/adapter_model.safetensors")]);
  assert.match(g.problems[0], /no adapter_config\.json next to it/);
  g = groupFiles(["a/config.json", "a/model.safetensors", "b/config.json", "b/model.safetensors"].map((p) => file(p)));
  assert.match(g.problems.join("\n"), /2 files named config\.json \(a\/config\.json, b\/config\.json\)/);
});

test("the older tokenizer pair vocab.json + merges.txt; tokenizer.json wins over it; a tokenizer on its own", () => {
  let g = groupFiles(["m/config.json", "m/model.safetensors", "m/vocab.json", "m/merges.txt", "d/train.txt"].map((p) => file(p)));
  assert.deepEqual([filePath(g.model.tokenizer.vocab), filePath(g.model.tokenizer.merges)], ["m/vocab.json", "m/merges.txt"]);
  assert.deepEqual(names(g.datasets), ["d/train.txt"], "merges.txt is not a dataset");
  g = groupFiles(["m/config.json", "m/model.safetensors", "m/tokenizer.json", "m/vocab.json", "m/merges.txt"].map((p) => file(p)));
  assert.equal(filePath(g.model.tokenizer.json), "m/tokenizer.json");
  assert.deepEqual(names(g.ignored), ["m/vocab.json", "m/merges.txt"]);
  g = groupFiles([file("tok/tokenizer.json")]);
  assert.equal(g.model, undefined);
  assert.equal(filePath(g.tokenizer.json), "tok/tokenizer.json");
  g = groupFiles(["m/config.json", "m/model.safetensors", "m/vocab.json"].map((p) => file(p)));
  assert.equal(g.model.tokenizer, undefined);
  assert.match(g.problems[0], /found m\/vocab\.json but not its partner/);
});

const index = (files) => JSON.stringify({
  metadata: { total_size: 1 },
  weight_map: Object.fromEntries(files.map((f, i) => [`model.layers.${i}.mlp.down_proj.weight`, f])),
});
const SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];

test("a sharded Llama folder: the index, its shards and tokenizer_config.json", () => {
  const g = groupFiles(
    ["m/config.json", "m/model.safetensors.index.json", ...SHARDS.map((s) => `m/${s}`), "m/tokenizer.json",
      "m/tokenizer_config.json", "m/special_tokens_map.json", "m/added_tokens.json", "m/generation_config.json",
      "other/stray.safetensors", "m/LICENSE.txt", "m/original/params.json", "m/data/train.jsonl", "notes/todo.txt"].map((p) => file(p)),
  );
  assert.deepEqual(g.problems, []);
  assert.equal(filePath(g.model.index), "m/model.safetensors.index.json");
  assert.deepEqual(names(g.model.weights), SHARDS.map((s) => `m/${s}`));
  assert.equal(filePath(g.model.tokenizer.config), "m/tokenizer_config.json");
  assert.deepEqual(names(g.datasets), ["m/data/train.jsonl", "notes/todo.txt"], "in a model folder only .jsonl files are datasets");
  assert.deepEqual(names(g.ignored).sort(), ["m/LICENSE.txt", "m/added_tokens.json", "m/generation_config.json",
    "m/original/params.json", "m/special_tokens_map.json", "other/stray.safetensors"]);
  // the index's order; the shards in any order
  const given = [...g.model.weights].reverse();
  assert.deepEqual(names(shardsOf(index([SHARDS[0], SHARDS[1], SHARDS[0], SHARDS[2]]), "m/idx", given)), SHARDS.map((s) => `m/${s}`));
  // model.safetensors wins over an index next to it (as transformers and webtune train)
  const both = groupFiles(["m/config.json", "m/model.safetensors", "m/model.safetensors.index.json", `m/${SHARDS[0]}`].map((p) => file(p)));
  assert.deepEqual(names(both.model.weights), ["m/model.safetensors"]);
  assert.equal(both.model.index, undefined);
});

test("a shard the index lists but not given, a bad index, shards without an index: each named", () => {
  const given = [SHARDS[0], SHARDS[2]].map((s) => file(`m/${s}`));
  assert.throws(() => shardsOf(index(SHARDS), "m/model.safetensors.index.json", given),
    /^Error: m\/model\.safetensors\.index\.json lists 3 weight files; 1 of them was not given: model-00002-of-00003\.safetensors \(give the model's whole folder\)$/);
  assert.throws(() => shardsOf(index(SHARDS), "idx", []), /3 of them were not given: model-00001-of-00003\.safetensors, model-00002/);
  assert.throws(() => indexShards("{", "idx"), /^Error: idx: not valid JSON/);
  assert.throws(() => indexShards('{"metadata": {}}', "idx"), /^Error: idx: missing object 'weight_map'$/);
  assert.throws(() => indexShards('{"weight_map": {}}', "idx"), /^Error: idx: weight_map lists no files$/);
  assert.throws(() => indexShards(index(["../secret.safetensors"]), "idx"), /must be a file name in the folder, found "\.\.\/secret\.safetensors"/);
  assert.throws(() => indexShards('{"weight_map": {"a": 3}}', "idx"), /weight_map\['a'\] must be a file name in the folder, found 3/);
  const g = groupFiles(["m/config.json", ...SHARDS.map((s) => `m/${s}`)].map((p) => file(p)));
  assert.equal(g.model, undefined);
  assert.match(g.problems[0], /^found 3 weight files \(m\/model-00001-of-00003\.safetensors, .*\) but no model\.safetensors\.index\.json/);
  const lone = groupFiles([file("m/config.json"), file("m/model.safetensors.index.json")]);
  assert.deepEqual(lone.model.weights, [], "an index alone: shardsOf names every missing shard");
});

test("two models' files mixed are refused, not guessed", () => {
  let g = groupFiles(["a/config.json", "b/model.safetensors"].map((p) => file(p)));
  assert.equal(g.model, undefined);
  assert.match(g.problems[0], /^b\/model\.safetensors is not in the folder of a\/config\.json: are two models mixed\?/);
  g = groupFiles(["a/config.json", "a/model.safetensors", "b/config.json", "b/model.safetensors"].map((p) => file(p)));
  assert.equal(g.model, undefined, "two configs: no model is picked");
  g = groupFiles(["a/config.json", "a/model.safetensors.index.json", `a/${SHARDS[0]}`, "b/model.safetensors.index.json"].map((p) => file(p)));
  assert.equal(g.model, undefined);
  assert.match(g.problems.join("\n"), /2 files named model\.safetensors\.index\.json/);
});

test("nothing recognisable", () => {
  const g = groupFiles([file("notes.md"), file("x.bin")]);
  assert.equal(g.model, undefined);
  assert.deepEqual(g.datasets, []);
  assert.equal(g.ignored.length, 2);
});

test("sizes for people", () => {
  assert.equal(formatBytes(12), "12 B");
  assert.equal(formatBytes(26_528), "27 kB");
  assert.equal(formatBytes(497_774_208), "497.8 MB");
  assert.equal(formatBytes(1_500_000_000), "1.50 GB");
});
