// webtune in the browser: fine-tune a GPT-2, Llama, Qwen2 or Qwen3 model (LoRA or every weight) on the user's GPU
// (WebGPU), evaluate it, generate text with it, and keep the run in the browser's storage so it
// survives a reload. The engine (Rust compiled to wasm, WGSL shaders) runs in a module Web
// Worker; this class is the page's handle on it. Every method returns a promise; engine errors
// reject it with the engine's message, and the worker stays usable for the next call.

import {
  type AdapterFiles,
  type ModelFiles,
  type NamedFile,
  type TokenizerFiles,
  filePath,
  groupFiles,
  indexShards,
  shardsOf,
} from "./files.js";
import { type GenerateOptions, type TrainOptions, resolveGenerateOptions, resolveOptions } from "./options.js";
import {
  type AdapterInfo,
  type DatasetInfo,
  EngineError,
  type EngineInfo,
  type EvalLog,
  type GenerateResult,
  type Listeners,
  type ModelInfo,
  type Port,
  type Progress,
  type Request,
  type ResultOf,
  RpcClient,
  type RunControl,
  type RunInfo,
  type SavedRun,
  type StorageKind,
  type TokenizerInfo,
  type TokenizerSource,
  type TrainResult,
  type WeightFile,
  errorMessage,
} from "./protocol.js";

export * from "./options.js";
export * from "./files.js";
export {
  EngineError,
  type AdapterInfo,
  type DatasetInfo,
  type DatasetSample,
  type EngineInfo,
  type EvalLog,
  type GenerateResult,
  type GpuInfo,
  type MemoryPlan,
  type ModelInfo,
  type Progress,
  type RunInfo,
  type SavedRun,
  type StepLog,
  type StorageKind,
  type TokenizerInfo,
  type TrainResult,
  type TrainStatus,
} from "./protocol.js";

/** Bytes in any of the forms a page has them. */
export type Bytes = ArrayBuffer | Uint8Array | Blob;

/** A tokenizer's files' contents; `config` is tokenizer_config.json (special tokens, chat template) and
 * `chatTemplate` a Jinja chat template (chat_template.jinja, or the user's) that replaces the config's. */
export type TokenizerContents = ({ json: string | Bytes } | { vocab: string | Bytes; merges: string | Bytes }) & {
  config?: string | Bytes;
  chatTemplate?: string | Bytes;
};

/**
 * A model: the files' contents (`weights`: model.safetensors, or the shards of a sharded
 * checkpoint as `[{name, bytes}]` — the files model.safetensors.index.json lists — with the
 * tokenizer's, for text data and generation), a folder's files (from a file input or a drop:
 * model.safetensors or model.safetensors.index.json + its shards; tokenizer.json or vocab.json +
 * merges.txt, and tokenizer_config.json, are picked up), or the URL of a folder that holds
 * config.json and model.safetensors or model.safetensors.index.json and its shards (and
 * tokenizer.json / tokenizer_config.json, fetched when there: or give `tokenizerUrl`, the
 * tokenizer's folder).
 */
export type ModelSource =
  | {
      config: string | Bytes;
      weights: Bytes | readonly { name: string; bytes: Bytes }[];
      tokenizer?: TokenizerContents;
      name?: string;
    }
  | Iterable<NamedFile>
  | ArrayLike<NamedFile>
  | { url: string | URL; tokenizerUrl?: string | URL; name?: string };

/** A tokenizer for the loaded model: contents, files, or the URL of its folder. */
export type TokenizerInput =
  | (TokenizerContents & { name?: string })
  | Iterable<NamedFile>
  | ArrayLike<NamedFile>
  | { url: string | URL; name?: string };

/** A PEFT LoRA adapter to start from: its two files' contents, its files, or its folder's URL. */
export type AdapterSource =
  | { config: string | Bytes; weights: Bytes; name?: string }
  | Iterable<NamedFile>
  | ArrayLike<NamedFile>
  | { url: string | URL; name?: string };

export interface TrainHandlers {
  /** Called when the run is set up (memory planned, programs built). */
  onStart?: (run: RunInfo) => void;
  /** Called whenever steps finish (every `readbackEvery` steps), evaluations run or a checkpoint is saved. */
  onProgress?: (p: Progress) => void;
  /** Aborting stops the run (the adapter so far can still be exported). */
  signal?: AbortSignal;
  /** Pause (saving a checkpoint) once this step is done, as if `pause()` were called then. */
  pauseAfter?: number;
  /**
   * Kept with the run's checkpoints and given back by `savedRun()`: e.g. where the page got the
   * model and dataset, to offer loading them again after a reload. Must survive structured cloning and JSON.
   */
  appData?: unknown;
}

export interface AdapterExport {
  files: { "adapter_config.json": string; "adapter_model.safetensors": Uint8Array };
}

export interface ModelExport {
  files: { "config.json": string; "model.safetensors": Uint8Array };
}

/** What a run produced: a LoRA adapter (PEFT's files) or, for full fine-tuning, a model (HF's files). */
export type RunExport = ({ kind: "adapter" } & AdapterExport) | ({ kind: "model" } & ModelExport);

export interface CreateOptions {
  /** Makes the engine's worker; by default the package's own worker.js next to this file. */
  worker?: () => Worker;
  /**
   * Where runs are saved so they survive a reload: `name` picks one store (default "webtune";
   * one saved run per store), `backend` "auto" (OPFS, else IndexedDB), "opfs", "indexeddb" or "none".
   */
  storage?: { name?: string; backend?: StorageKind | "auto" };
  /**
   * Testing and diagnostics: the most bytes one GPU buffer may hold, below the device's
   * `maxStorageBufferBindingSize` (a positive multiple of 4). Larger tensors (a big vocabulary's
   * embedding or LM head) are split into row chunks, as on a GPU that binds only that much.
   */
  maxBinding?: number;
  /**
   * How frozen base weights (every linear layer's weight and the vocabulary tables of a LoRA run)
   * are kept on the GPU, as the CLI's `--base-weights`: "f16" halves their memory (values rounded
   * as PyTorch's `.half()`; products still accumulate in f32) and needs a GPU with shader-f16;
   * "f32" keeps the checkpoint's values; "auto" (default) is f16 on a GPU with shader-f16 that is
   * not a fallback (CPU) adapter. `info.gpu.f16BaseWeights` says what was chosen.
   */
  baseWeights?: BaseWeights;
}

/** How frozen base weights are stored on the GPU (see `CreateOptions.baseWeights`). */
export type BaseWeights = "auto" | "f16" | "f32";

/** The device settings a worker is (re)started with. */
interface DeviceOptions {
  maxBinding?: number;
  baseWeights?: BaseWeights;
}

function defaultWorker(): Worker {
  return new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "webtune" });
}

/** An ArrayBuffer holding exactly these bytes, safe to transfer. Blobs and views are copied once. */
async function toArrayBuffer(b: Bytes): Promise<ArrayBuffer> {
  if (b instanceof ArrayBuffer) return b;
  if (b instanceof Uint8Array) {
    if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
    return b.slice().buffer as ArrayBuffer;
  }
  return b.arrayBuffer();
}

async function toText(b: string | Bytes): Promise<string> {
  if (typeof b === "string") return b;
  if (b instanceof Blob) return b.text();
  return new TextDecoder().decode(b instanceof ArrayBuffer ? new Uint8Array(b) : b);
}

async function fetchBytes(url: URL): Promise<ArrayBuffer> {
  const r = await fetch(url);
  if (!r.ok) throw new EngineError(`${url.href}: HTTP ${r.status} ${r.statusText}`);
  return r.arrayBuffer();
}

function folderUrl(u: string | URL): URL {
  const s = typeof u === "string" ? u : u.href;
  const base = typeof location !== "undefined" ? location.href : undefined;
  return new URL(s.endsWith("/") ? s : `${s}/`, base);
}

/** The body of `url`, or undefined on 404 (for optional files). */
async function fetchOptional(url: URL): Promise<ArrayBuffer | undefined> {
  const r = await fetch(url);
  if (r.status === 404) return undefined;
  if (!r.ok) throw new EngineError(`${url.href}: HTTP ${r.status} ${r.statusText}`);
  return r.arrayBuffer();
}

async function tokenizerSource(t: TokenizerContents, name: string): Promise<TokenizerSource> {
  const src: TokenizerSource =
    "json" in t
      ? { name, json: await toText(t.json) }
      : { name, vocab: await toText(t.vocab), merges: await toText(t.merges) };
  if (t.config !== undefined) src.config = await toText(t.config);
  if (t.chatTemplate !== undefined) src.chatTemplate = await toText(t.chatTemplate);
  return src;
}

async function tokenizerFromFiles(t: TokenizerFiles, folder: string): Promise<TokenizerSource> {
  const out: TokenizerSource =
    "json" in t
      ? { name: folder, json: await t.json.text() }
      : { name: folder, vocab: await t.vocab.text(), merges: await t.merges.text() };
  if (t.config) out.config = await t.config.text();
  return out;
}

/** The tokenizer files in a folder at `base` (tokenizer.json, with tokenizer_config.json when there). */
async function tokenizerFromUrl(base: URL, name: string, required: boolean): Promise<TokenizerSource | undefined> {
  const url = new URL("tokenizer.json", base);
  const [t, c] = await Promise.all([
    required ? fetchBytes(url) : fetchOptional(url),
    fetchOptional(new URL("tokenizer_config.json", base)),
  ]);
  if (!t) return undefined;
  const out: TokenizerSource = { name, json: new TextDecoder().decode(t) };
  if (c) out.config = new TextDecoder().decode(c);
  return out;
}

/** A model folder's weight files at `base`: model.safetensors, else the shards its index lists. */
async function weightsFromUrl(base: URL): Promise<WeightFile[]> {
  const single = await fetchOptional(new URL("model.safetensors", base));
  if (single) return [{ name: "model.safetensors", bytes: single }];
  const indexUrl = new URL("model.safetensors.index.json", base);
  const index = await fetchOptional(indexUrl);
  if (!index) {
    throw new EngineError(`${base.href}: neither model.safetensors nor model.safetensors.index.json is there (HTTP 404)`);
  }
  let names: string[];
  try {
    names = indexShards(new TextDecoder().decode(index), indexUrl.href);
  } catch (e) {
    throw new EngineError(errorMessage(e));
  }
  return Promise.all(names.map(async (name) => ({ name, bytes: await fetchBytes(new URL(name, base)) })));
}

function isFileList(src: unknown): src is Iterable<NamedFile> | ArrayLike<NamedFile> {
  if (!src || typeof src !== "object") return false;
  return Symbol.iterator in src || ("length" in src && typeof (src as ArrayLike<unknown>).length === "number");
}

function runControl(h: TrainHandlers): RunControl {
  const c: RunControl = {};
  if (h.pauseAfter !== undefined) c.pauseAfter = h.pauseAfter;
  if (h.appData !== undefined) c.appData = h.appData;
  return c;
}

/** The page's handle on a webtune engine running in a Web Worker. */
export class Trainer {
  private worker: Worker;
  private rpc: RpcClient;
  private model: ModelInfo | undefined;
  private closed = false;

  private constructor(
    private readonly makeWorker: () => Worker,
    private readonly storage: { name: string; backend: StorageKind | "auto" },
    private readonly device: DeviceOptions,
    /** Version, GPU and features of the engine. */
    public info: EngineInfo,
    worker: Worker,
    rpc: RpcClient,
  ) {
    this.worker = worker;
    this.rpc = rpc;
    this.watch();
  }

  /** Starts the worker, loads the wasm engine and opens the WebGPU device. */
  static async create(options: CreateOptions = {}): Promise<Trainer> {
    const make = options.worker ?? defaultWorker;
    const storage = { name: options.storage?.name ?? "webtune", backend: options.storage?.backend ?? "auto" };
    const device = { maxBinding: options.maxBinding, baseWeights: options.baseWeights };
    const { worker, rpc, info } = await Trainer.start(make, storage, device);
    return new Trainer(make, storage, device, info, worker, rpc);
  }

  private static async start(
    make: () => Worker,
    storage: { name: string; backend: StorageKind | "auto" },
    device: DeviceOptions,
  ): Promise<{ worker: Worker; rpc: RpcClient; info: EngineInfo }> {
    const worker = make();
    const rpc = new RpcClient(worker as unknown as Port);
    const failed = new Promise<never>((_, reject) => {
      worker.addEventListener("error", (e) => {
        e.preventDefault();
        reject(new EngineError(`the webtune worker failed to start: ${e.message || "script error"}`));
      });
    });
    try {
      const info = await Promise.race([rpc.call({ type: "create", storage, ...device }), failed]);
      return { worker, rpc, info };
    } catch (e) {
      worker.terminate();
      throw e instanceof EngineError ? e : new EngineError(errorMessage(e));
    }
  }

  /** After a crash (or an error event) the worker is replaced by a fresh one, so later calls work. */
  private watch(): void {
    this.rpc.onFatal = () => void this.restart();
    this.worker.addEventListener("error", (e) => {
      e.preventDefault();
      this.rpc.failAll(`the webtune worker failed: ${e.message || "script error"}; it was restarted`);
      void this.restart();
    });
  }

  private restarting: Promise<void> | undefined;

  private restart(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.restarting ??= (async () => {
      this.rpc.close();
      this.worker.terminate();
      this.model = undefined;
      const { worker, rpc, info } = await Trainer.start(this.makeWorker, this.storage, this.device);
      this.worker = worker;
      this.rpc = rpc;
      this.info = info;
      this.watch();
    })().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  private async call<R extends Request>(request: R, listeners?: Listeners): Promise<ResultOf[R["type"]]> {
    if (this.closed) throw new EngineError("this Trainer was terminated");
    if (this.restarting) await this.restarting;
    return this.rpc.call(request, listeners);
  }

  /** The loaded model's shape, if any. */
  get modelInfo(): ModelInfo | undefined {
    return this.model;
  }

  /**
   * Loads a Hugging Face model — GPT-2, Llama (Llama 2 / 3, SmolLM2, TinyLlama), Qwen2 or Qwen3:
   * config.json and model.safetensors or the shards model.safetensors.index.json lists, in f32,
   * f16 or bf16 — and, when given, its tokenizer (needed for text data and generation). A folder
   * whose files do not make one model (a shard the index lists missing, two models' files
   * mixed) is refused with a message naming the file.
   */
  async loadModel(src: ModelSource): Promise<ModelInfo> {
    let name: string;
    let config: string;
    let weights: WeightFile[];
    let tokenizer: TokenizerSource | undefined;
    if (isFileList(src)) {
      const groups = groupFiles(Array.from(src as ArrayLike<NamedFile>));
      const m: ModelFiles | undefined = groups.model;
      if (!m) {
        throw new EngineError(
          groups.problems[0] ??
            "no model among these files: give config.json and model.safetensors (or model.safetensors.index.json and its shards)",
        );
      }
      name = m.folder;
      config = await m.config.text();
      let files = m.weights;
      if (m.index) {
        try {
          files = shardsOf(await m.index.text(), filePath(m.index), m.weights);
        } catch (e) {
          throw new EngineError(errorMessage(e));
        }
      }
      weights = await Promise.all(files.map(async (f) => ({ name: f.name, bytes: await f.arrayBuffer() })));
      if (m.tokenizer) tokenizer = await tokenizerFromFiles(m.tokenizer, m.folder);
    } else if ("url" in src) {
      const base = folderUrl(src.url);
      name = src.name ?? (base.pathname.split("/").filter(Boolean).pop() || "model");
      const explicit = src.tokenizerUrl !== undefined;
      const tokBase = src.tokenizerUrl === undefined ? base : folderUrl(src.tokenizerUrl);
      const [c, w, t] = await Promise.all([
        fetchBytes(new URL("config.json", base)),
        weightsFromUrl(base),
        tokenizerFromUrl(tokBase, name, explicit),
      ]);
      config = new TextDecoder().decode(c);
      weights = w;
      tokenizer = t;
    } else {
      name = src.name ?? "model";
      config = await toText(src.config);
      const w = src.weights;
      if (w instanceof ArrayBuffer || w instanceof Uint8Array || (typeof Blob !== "undefined" && w instanceof Blob)) {
        weights = [{ name: "model.safetensors", bytes: await toArrayBuffer(w) }];
      } else {
        const list = w as readonly { name: string; bytes: Bytes }[];
        weights = await Promise.all(list.map(async (f) => ({ name: f.name, bytes: await toArrayBuffer(f.bytes) })));
      }
      if (src.tokenizer) tokenizer = await tokenizerSource(src.tokenizer, name);
    }
    this.model = undefined;
    const request: Request = { type: "loadModel", name, config, weights };
    if (tokenizer) request.tokenizer = tokenizer;
    const info = await this.call(request);
    this.model = info;
    return info;
  }

  /** Loads a tokenizer for the model loaded before (replacing the one it came with). */
  async loadTokenizer(src: TokenizerInput): Promise<TokenizerInfo> {
    let t: TokenizerSource;
    if (isFileList(src)) {
      const groups = groupFiles(Array.from(src as ArrayLike<NamedFile>));
      if (!groups.tokenizer) {
        throw new EngineError(groups.problems[0] ?? "no tokenizer among these files: give tokenizer.json, or vocab.json and merges.txt");
      }
      const first = "json" in groups.tokenizer ? groups.tokenizer.json : groups.tokenizer.vocab;
      t = await tokenizerFromFiles(groups.tokenizer, filePath(first).split("/").slice(0, -1).join("/") || "tokenizer");
    } else if ("url" in src) {
      const base = folderUrl(src.url);
      const name = src.name ?? (base.pathname.split("/").filter(Boolean).pop() || "tokenizer");
      t = (await tokenizerFromUrl(base, name, true)) as TokenizerSource;
    } else {
      t = await tokenizerSource(src, src.name ?? "tokenizer");
    }
    const info = await this.call({ type: "loadTokenizer", tokenizer: t });
    if (this.model) this.model = { ...this.model, tokenizer: info };
    return info;
  }

  /** Loads a PEFT LoRA adapter to start training from (instead of a fresh seeded init). */
  async loadAdapter(src: AdapterSource): Promise<AdapterInfo> {
    let name: string;
    let config: string;
    let weights: ArrayBuffer;
    if (isFileList(src)) {
      const groups = groupFiles(Array.from(src as ArrayLike<NamedFile>));
      const a: AdapterFiles | undefined = groups.adapter;
      if (!a) {
        throw new EngineError(
          groups.problems[0] ?? "no adapter among these files: give adapter_config.json and adapter_model.safetensors",
        );
      }
      name = a.folder;
      config = await a.config.text();
      weights = await a.weights.arrayBuffer();
    } else if ("url" in src) {
      const base = folderUrl(src.url);
      name = src.name ?? (base.pathname.split("/").filter(Boolean).pop() || "adapter");
      const [c, w] = await Promise.all([
        fetchBytes(new URL("adapter_config.json", base)),
        fetchBytes(new URL("adapter_model.safetensors", base)),
      ]);
      config = new TextDecoder().decode(c);
      weights = w;
    } else {
      name = src.name ?? "adapter";
      config = await toText(src.config);
      weights = await toArrayBuffer(src.weights);
    }
    return this.call({ type: "loadAdapter", name, config, weights });
  }

  /** Forgets the adapter from `loadAdapter`: the next run starts from a seeded init. */
  async clearAdapter(): Promise<void> {
    await this.call({ type: "clearAdapter" });
  }

  /**
   * Loads training data: `.txt` (one record), or `.jsonl` with one `{"text"}`,
   * `{"prompt", "completion"}` (loss on the completion only) or `{"input_ids"}` (optionally
   * `"labels"`, -100 = not trained on) per line; text needs the model's tokenizer. The name's
   * extension decides the format. `seq` only shapes the preview's window count.
   * An ArrayBuffer given here is transferred to the worker (it is empty afterwards).
   */
  async loadDataset(src: Bytes | NamedFile, name?: string, opts: { seq?: number } = {}): Promise<DatasetInfo> {
    return this.dataset("train", src, name, opts.seq);
  }

  /** Loads held-out data (the same formats) for the eval loss of the next run and for `evaluate()`. */
  async loadEvalDataset(src: Bytes | NamedFile, name?: string, opts: { seq?: number } = {}): Promise<DatasetInfo> {
    return this.dataset("eval", src, name, opts.seq);
  }

  /** Forgets the eval dataset. */
  async clearEvalDataset(): Promise<void> {
    await this.call({ type: "clearEvalDataset" });
  }

  private async dataset(role: "train" | "eval", src: Bytes | NamedFile, name?: string, seq?: number): Promise<DatasetInfo> {
    const file = !(src instanceof ArrayBuffer) && !(src instanceof Uint8Array) && "name" in src ? src : undefined;
    const label = name ?? (file ? filePath(file) : "dataset.jsonl");
    const bytes = file ? await file.arrayBuffer() : await toArrayBuffer(src as Bytes);
    const s = seq ?? Math.min(128, this.model?.nPositions ?? 128);
    return this.call({ type: "loadDataset", name: label, bytes, seq: s, role });
  }

  /**
   * Trains with `options` (defaults: the CLI's). Resolves when the run ends ("done"), is paused
   * (`pause()`, "paused": `resume()` continues) or stopped (`signal` aborted, "stopped").
   */
  async train(options: Partial<TrainOptions> = {}, handlers: TrainHandlers = {}): Promise<TrainResult> {
    const resolved = resolveOptions(options, {
      nPositions: this.model?.nPositions,
      loraTargets: this.model?.loraTargets,
      modelType: this.model?.modelType,
    });
    return this.runWith({ type: "train", options: resolved, control: runControl(handlers) }, handlers);
  }

  /** Continues a paused run. */
  async resume(handlers: TrainHandlers = {}): Promise<TrainResult> {
    return this.runWith({ type: "resume", control: runControl(handlers) }, handlers);
  }

  /**
   * The run saved in the browser's storage (by a pause or every `checkpointEvery` steps), e.g.
   * after a page reload; null when there is none.
   */
  async savedRun(): Promise<SavedRun | null> {
    return this.call({ type: "savedRun" });
  }

  /**
   * Continues the saved run. Load its model (with the tokenizer, for text data) and dataset
   * first: they are checked against the checkpoint's fingerprints. The losses are the same as
   * those of a run that never stopped.
   */
  async resumeSaved(handlers: TrainHandlers & { readbackEvery?: number } = {}): Promise<TrainResult> {
    const request: Request = { type: "resumeSaved", control: runControl(handlers) };
    if (handlers.readbackEvery !== undefined) request.readbackEvery = handlers.readbackEvery;
    return this.runWith(request, handlers);
  }

  /** Deletes the saved run. */
  async discardSaved(): Promise<void> {
    await this.call({ type: "discardSaved" });
  }

  /** Pauses the running `train()`/`resume()` after the step in flight; it resolves with "paused". */
  async pause(): Promise<void> {
    await this.rpc.call({ type: "pause" });
  }

  /** Stops the running run after the step in flight; it resolves with "stopped". */
  async stop(): Promise<void> {
    await this.rpc.call({ type: "stop" });
  }

  private async runWith(
    request: Extract<Request, { type: "train" | "resume" | "resumeSaved" }>,
    h: TrainHandlers,
  ): Promise<TrainResult> {
    if (h.signal?.aborted) throw new EngineError("the run was aborted before it started");
    const onAbort = () => void this.stop().catch(() => undefined);
    h.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await this.call(request, { onStarted: h.onStart, onProgress: h.onProgress });
    } finally {
      h.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The current LoRA run's adapter in PEFT's format (`PeftModel.from_pretrained` loads it). */
  async exportAdapter(): Promise<AdapterExport> {
    const r = await this.call({ type: "export" });
    return {
      files: { "adapter_config.json": r.adapterConfigJson, "adapter_model.safetensors": r.adapterSafetensors },
    };
  }

  /**
   * The current LoRA run's adapter as a GGUF file for llama.cpp (`llama-cli -m base.gguf --lora
   * adapter.gguf`), as `webtune export-gguf` writes it: f32 (the default) or f16 tensors.
   */
  async exportGguf(outtype: "f32" | "f16" = "f32"): Promise<Uint8Array> {
    return this.call({ type: "exportGguf", outtype });
  }

  /** The current full fine-tuning run's model as a Hugging Face folder (f32; `from_pretrained` loads it). */
  async exportModel(): Promise<ModelExport> {
    const r = await this.call({ type: "exportModel" });
    return { files: { "config.json": r.configJson, "model.safetensors": r.modelSafetensors } };
  }

  /** What the current run produced: its adapter (mode "lora") or its model (mode "full"). */
  async export(mode: "lora" | "full"): Promise<RunExport> {
    return mode === "full" ? { kind: "model", ...(await this.exportModel()) } : { kind: "adapter", ...(await this.exportAdapter()) };
  }

  /**
   * Generates text after `prompt` with the current run's model (`adapted: true`, the default)
   * or the base model (`adapted: false`), KV-cached on the GPU. Needs the model's tokenizer.
   * The same seed gives the same text on the same device. Resolves to the new text.
   */
  async generate(prompt: string, options: Partial<GenerateOptions> = {}): Promise<string> {
    return (await this.generateWithInfo(prompt, options)).text;
  }

  /** `generate`, with the token ids and whether the end-of-text token ended it. */
  async generateWithInfo(prompt: string, options: Partial<GenerateOptions> = {}): Promise<GenerateResult> {
    return this.call({ type: "generate", prompt, options: resolveGenerateOptions(options) });
  }

  /**
   * The held-out loss: with a run, of its current weights on its eval data (`evalSplit`, or the
   * eval dataset); without one, of the base model on the eval dataset (else the dataset), in
   * windows of `seq` tokens, `batch` at a time (as `webtune eval`).
   */
  async evaluate(opts: { seq?: number; batch?: number } = {}): Promise<EvalLog> {
    const request: Request = { type: "evaluate" };
    if (opts.seq !== undefined) request.seq = opts.seq;
    if (opts.batch !== undefined) request.batch = opts.batch;
    return this.call(request);
  }

  /** Ends the worker and frees its GPU memory. */
  terminate(): void {
    this.closed = true;
    this.rpc.failAll("this Trainer was terminated");
    this.rpc.close();
    this.worker.terminate();
  }
}
