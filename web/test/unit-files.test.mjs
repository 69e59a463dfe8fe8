// Grouping picked or dropped files into model, adapter and datasets (dist/files.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { filePath, formatBytes, groupFiles } from "../dist/files.js";

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
  assert.equal(filePath(g.model.weights), "gpt2/model.safetensors");
  assert.equal(filePath(g.model.tokenizer.json), "gpt2/tokenizer.json");
  assert.deepEqual(names(g.datasets), ["gpt2/train.jsonl"]);
  assert.deepEqual(names(g.ignored), ["gpt2/generation_config.json", "gpt2/README.md"]);
  assert.deepEqual(g.problems, []);
  assert.equal(g.adapter, undefined);
});

test("bare names from a file picker; a lone differently named safetensors is the weights", () => {
  const g = groupFiles([file("config.json", { folderDrop: false }), file("pytorch-f16.safetensors", { folderDrop: false })]);
  assert.equal(g.model.weights.name, "pytorch-f16.safetensors");
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
