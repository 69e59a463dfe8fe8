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
  weights: F;
  /** The model's tokenizer, when its files came along. */
  tokenizer?: TokenizerFiles<F>;
  /** The folder the files came from (for messages and the adapter's base_model_name_or_path). */
  folder: string;
}

/** tokenizer.json, or the older pair vocab.json + merges.txt (used when there is no tokenizer.json). */
export type TokenizerFiles<F extends NamedFile = NamedFile> = { json: F } | { vocab: F; merges: F };

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
 * Groups files by their names: config.json + model.safetensors (+ tokenizer.json, or
 * vocab.json + merges.txt) make the model, adapter_config.json + adapter_model.safetensors an adapter, .jsonl / .txt / other
 * .json files are datasets. A lone other *.safetensors stands in for model.safetensors.
 */
export function groupFiles<F extends NamedFile>(files: Iterable<F>): FileGroups<F> {
  const byRole = new Map<string, F[]>();
  const add = (role: string, f: F) => byRole.set(role, [...(byRole.get(role) ?? []), f]);
  const datasets: F[] = [];
  const ignored: F[] = [];
  for (const f of files) {
    const name = baseName(filePath(f)).toLowerCase();
    if (name === "config.json") add("config", f);
    else if (name === "model.safetensors") add("weights", f);
    else if (name === "tokenizer.json") add("tokenizer", f);
    else if (name === "vocab.json") add("vocab", f);
    else if (name === "merges.txt") add("merges", f);
    else if (name === "adapter_config.json") add("adapterConfig", f);
    else if (name === "adapter_model.safetensors") add("adapterWeights", f);
    else if (name.endsWith(".safetensors")) add("otherWeights", f);
    else if (
      [
        "generation_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "training_args.json",
      ].includes(name)
    )
      ignored.push(f);
    else if (DATASET_EXTENSIONS.some((e) => name.endsWith(e))) datasets.push(f);
    else ignored.push(f);
  }
  const problems: string[] = [];
  const one = (role: string, what: string): F | undefined => {
    const list = byRole.get(role) ?? [];
    if (list.length > 1) {
      problems.push(`${list.length} files named ${what} (${list.map(filePath).join(", ")}); give one model at a time`);
    }
    return list[0];
  };
  const config = one("config", "config.json");
  let weights = one("weights", "model.safetensors");
  const others = byRole.get("otherWeights") ?? [];
  if (!weights && others.length === 1) weights = others[0];
  else ignored.push(...others);
  const tokenizer = one("tokenizer", "tokenizer.json");
  const vocab = one("vocab", "vocab.json");
  const merges = one("merges", "merges.txt");
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
  if (config && weights) {
    groups.model = { config, weights, folder: folderOf(filePath(config)) || folderOf(filePath(weights)) || "model" };
    if (groups.tokenizer) groups.model.tokenizer = groups.tokenizer;
  } else if (config || weights) {
    problems.push(
      config
        ? `found ${filePath(config)} but no model.safetensors next to it`
        : `found ${filePath(weights as F)} but no config.json next to it`,
    );
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

/** A human size: 1.2 MB, 340 kB, 12 B. */
export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}
