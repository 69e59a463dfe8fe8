// Sorting dropped or picked files into a model folder, an adapter and datasets, by name
// (a folder drop gives paths like "tiny/model/config.json"; a file picker gives bare names).

/** What is needed of a `File`: a name (and the path a folder drop gives) and the bytes. */
export interface NamedFile {
  readonly name: string;
  readonly webkitRelativePath?: string;
  readonly size: number;
  arrayBuffer(): Promise<ArrayBuffer>;
  text(): Promise<string>;
}

export interface ModelFiles<F extends NamedFile = NamedFile> {
  config: F;
  /**
   * The weights: model.safetensors (or a lone other *.safetensors), or, for a sharded
   * checkpoint, the *.safetensors files given next to `index` (check them against it with
   * `shardsOf` once its text is read: the index decides which are needed).
   */
  weights: F[];
  /** model.safetensors.index.json, when the weights are sharded. */
  index?: F;
  /** The model's tokenizer, when its files came along. */
  tokenizer?: TokenizerFiles<F>;
  /** The folder the files came from (for messages and the adapter's base_model_name_or_path). */
  folder: string;
}

/**
 * tokenizer.json, or the older pair vocab.json + merges.txt (used when there is no
 * tokenizer.json); with tokenizer_config.json when it came along (bos / eos tokens).
 */
export type TokenizerFiles<F extends NamedFile = NamedFile> = ({ json: F } | { vocab: F; merges: F }) & { config?: F };

export interface AdapterFiles<F extends NamedFile = NamedFile> {
  config: F;
  weights: F;
  folder: string;
}

export interface FileGroups<F extends NamedFile = NamedFile> {
  model?: ModelFiles<F>;
  adapter?: AdapterFiles<F>;
  /** A tokenizer (with the model, or on its own to go with a model loaded before). */
  tokenizer?: TokenizerFiles<F>;
  /** Training data: .jsonl and .txt files (other .json files too, which the engine refuses by name). */
  datasets: F[];
  /** Files that play no part (generation_config.json, README.md, ...). */
  ignored: F[];
  /** Why what was given does not make a model or adapter (a half model, two configs ...). */
  problems: string[];
}

const DATASET_EXTENSIONS = [".jsonl", ".txt", ".json"];

/** Files of a Hugging Face folder that play no part here (never taken for datasets). */
const IGNORED_NAMES = [
  "generation_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "chat_template.json",
  "preprocessor_config.json",
  "training_args.json",
  "trainer_state.json",
  "pytorch_model.bin.index.json",
];

/** The path a file came with: the folder-relative one when there is one, else its name. */
export function filePath(f: NamedFile): string {
  return f.webkitRelativePath && f.webkitRelativePath.length > 0 ? f.webkitRelativePath : f.name;
}

function folderOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : "";
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * Groups files by their names: config.json + model.safetensors (or model.safetensors.index.json
 * and its shards) (+ tokenizer.json, or vocab.json + merges.txt, and tokenizer_config.json) make
 * the model, adapter_config.json + adapter_model.safetensors an adapter, .jsonl / .txt / other
 * .json files are datasets (in a model's folder only .jsonl files: its LICENSE.txt is none). A lone
 * other *.safetensors stands in for model.safetensors. Files of
 * a folder drop whose parts sit in different folders (two models mixed) are named as problems.
 */
export function groupFiles<F extends NamedFile>(files: Iterable<F>): FileGroups<F> {
  const byRole = new Map<string, F[]>();
  const add = (role: string, f: F) => byRole.set(role, [...(byRole.get(role) ?? []), f]);
  const datasets: F[] = [];
  const ignored: F[] = [];
  const list = Array.from(files);
  // A dropped model folder holds other .txt / .json files (LICENSE.txt, original/params.json):
  // there, only .jsonl files are taken for datasets.
  const modelFolders = list
    .filter((f) => baseName(filePath(f)).toLowerCase() === "config.json")
    .map((f) => folderOf(filePath(f)))
    .filter((d) => d !== "");
  const inModelFolder = (f: F) => modelFolders.some((d) => filePath(f).startsWith(`${d}/`));
  for (const f of list) {
    const name = baseName(filePath(f)).toLowerCase();
    if (name === "config.json") add("config", f);
    else if (name === "model.safetensors") add("weights", f);
    else if (name === "model.safetensors.index.json") add("index", f);
    else if (name === "tokenizer.json") add("tokenizer", f);
    else if (name === "tokenizer_config.json") add("tokenizerConfig", f);
    else if (name === "vocab.json") add("vocab", f);
    else if (name === "merges.txt") add("merges", f);
    else if (name === "adapter_config.json") add("adapterConfig", f);
    else if (name === "adapter_model.safetensors") add("adapterWeights", f);
    else if (name.endsWith(".safetensors")) add("otherWeights", f);
    else if (IGNORED_NAMES.includes(name)) ignored.push(f);
    else if (name.endsWith(".jsonl") || (DATASET_EXTENSIONS.some((e) => name.endsWith(e)) && !inModelFolder(f))) datasets.push(f);
    else ignored.push(f);
  }
  const problems: string[] = [];
  const duplicated = new Set<string>();
  const one = (role: string, what: string): F | undefined => {
    const list = byRole.get(role) ?? [];
    if (list.length > 1) {
      problems.push(`${list.length} files named ${what} (${list.map(filePath).join(", ")}); give one model at a time`);
      duplicated.add(role);
    }
    return list[0];
  };
  const config = one("config", "config.json");
  const single = one("weights", "model.safetensors");
  const index = one("index", "model.safetensors.index.json");
  const others = byRole.get("otherWeights") ?? [];
  let weights: F[] = [];
  let modelIndex: F | undefined;
  if (single) {
    // as transformers and `webtune train`: model.safetensors wins over an index next to it
    weights = [single];
    ignored.push(...others, ...(index ? [index] : []));
  } else if (index) {
    modelIndex = index;
    const here = folderOf(filePath(index));
    weights = others.filter((f) => folderOf(filePath(f)) === here);
    ignored.push(...others.filter((f) => folderOf(filePath(f)) !== here));
  } else if (others.length === 1) {
    weights = others;
  } else if (others.length > 1 && config) {
    problems.push(
      `found ${others.length} weight files (${others.map(filePath).join(", ")}) but no model.safetensors.index.json ` +
        "to say which make the model: give the model's whole folder",
    );
  } else ignored.push(...others);
  const tokenizer = one("tokenizer", "tokenizer.json");
  const vocab = one("vocab", "vocab.json");
  const merges = one("merges", "merges.txt");
  const tokenizerConfig = one("tokenizerConfig", "tokenizer_config.json");
  const groups: FileGroups<F> = { datasets, ignored, problems };
  if (tokenizer) {
    groups.tokenizer = { json: tokenizer };
    ignored.push(...[vocab, merges].filter((f): f is F => f !== undefined));
  } else if (vocab && merges) {
    groups.tokenizer = { vocab, merges };
  } else if (vocab || merges) {
    const f = (vocab ?? merges) as F;
    problems.push(`found ${filePath(f)} but not its partner (a tokenizer is tokenizer.json, or vocab.json + merges.txt)`);
    ignored.push(f);
  }
  if (groups.tokenizer && tokenizerConfig) groups.tokenizer.config = tokenizerConfig;
  else if (tokenizerConfig) ignored.push(tokenizerConfig);
  const hasWeights = weights.length > 0 || modelIndex !== undefined;
  if (config && hasWeights) {
    // A folder drop names each file's folder: the model's files must share one.
    const parts = [config, ...(modelIndex ? [modelIndex] : []), ...weights];
    const apart = parts.filter((f) => folderOf(filePath(f)) !== folderOf(filePath(config)));
    const mixed = ["config", "weights", "index", "tokenizer", "tokenizerConfig", "vocab", "merges"].some((r) => duplicated.has(r));
    if (mixed) {
      // (named above) a model is not guessed from two models' files
    } else if (apart.length > 0) {
      problems.push(
        `${filePath(apart[0] as F)} is not in the folder of ${filePath(config)}: are two models mixed? give one model folder at a time`,
      );
    } else {
      groups.model = { config, weights, folder: folderOf(filePath(config)) || "model" };
      if (modelIndex) groups.model.index = modelIndex;
      if (groups.tokenizer) groups.model.tokenizer = groups.tokenizer;
    }
  } else if (config && others.length <= 1) {
    problems.push(`found ${filePath(config)} but no model.safetensors (or model.safetensors.index.json and its shards) next to it`);
  } else if (!config && hasWeights) {
    const f = (modelIndex ?? weights[0]) as F;
    problems.push(`found ${filePath(f)} but no config.json next to it`);
  }
  const aConfig = one("adapterConfig", "adapter_config.json");
  const aWeights = one("adapterWeights", "adapter_model.safetensors");
  if (aConfig && aWeights) {
    groups.adapter = { config: aConfig, weights: aWeights, folder: folderOf(filePath(aConfig)) || "adapter" };
  } else if (aConfig || aWeights) {
    problems.push(
      aConfig
        ? `found ${filePath(aConfig)} but no adapter_model.safetensors next to it`
        : `found ${filePath(aWeights as F)} but no adapter_config.json next to it`,
    );
  }
  return groups;
}

/**
 * The shard files model.safetensors.index.json (`indexText`; `indexName` for messages) lists, in
 * the order it first names them: the file names, checked (plain names in the folder, at least
 * one). Throws an Error naming the index and what is wrong.
 */
export function indexShards(indexText: string, indexName: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(indexText);
  } catch (e) {
    throw new Error(`${indexName}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const map = v && typeof v === "object" ? (v as { weight_map?: unknown }).weight_map : undefined;
  if (!map || typeof map !== "object" || Array.isArray(map)) throw new Error(`${indexName}: missing object 'weight_map'`);
  const files: string[] = [];
  for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== "string" || file === "" || file === "." || file === ".." || /[/\\]/.test(file)) {
      throw new Error(`${indexName}: weight_map['${tensor}'] must be a file name in the folder, found ${JSON.stringify(file)}`);
    }
    if (!files.includes(file)) files.push(file);
  }
  if (files.length === 0) throw new Error(`${indexName}: weight_map lists no files`);
  return files;
}

/**
 * The files of a sharded model to load, in the index's order: each file the index lists, found
 * among `given` by name. Throws an Error naming every listed file that was not given.
 */
export function shardsOf<F extends NamedFile>(indexText: string, indexName: string, given: readonly F[]): F[] {
  const listed = indexShards(indexText, indexName);
  const byName = new Map(given.map((f) => [baseName(filePath(f)), f]));
  const missing = listed.filter((n) => !byName.has(n));
  if (missing.length > 0) {
    const shown = missing.slice(0, 3).join(", ") + (missing.length > 3 ? ` and ${missing.length - 3} more` : "");
    throw new Error(
      `${indexName} lists ${listed.length} weight files; ${missing.length} of them ${missing.length === 1 ? "was" : "were"} not given: ${shown} (give the model's whole folder)`,
    );
  }
  return listed.map((n) => byName.get(n) as F);
}

/** A human size: 1.2 MB, 340 kB, 12 B. */
export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}
