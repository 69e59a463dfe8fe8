// webtune in the browser: fine-tune a GPT-2-family model with LoRA on the user's GPU (WebGPU).
// The engine (Rust compiled to wasm, WGSL shaders) runs in a module Web Worker; this class is
// the page's handle on it. Every method returns a promise; engine errors reject it with the
// engine's message, and the worker stays usable for the next call.

import { type AdapterFiles, type ModelFiles, type NamedFile, filePath, groupFiles } from "./files.js";
import { type TrainOptions, resolveOptions } from "./options.js";
import {
  type AdapterInfo,
  type DatasetInfo,
  EngineError,
  type EngineInfo,
  type Listeners,
  type ModelInfo,
  type Port,
  type Progress,
  type Request,
  type ResultOf,
  RpcClient,
  type RunInfo,
  type TrainResult,
  errorMessage,
} from "./protocol.js";

export * from "./options.js";
export * from "./files.js";
export {
  EngineError,
  type AdapterInfo,
  type DatasetInfo,
  type EngineInfo,
  type GpuInfo,
  type ModelInfo,
  type Progress,
  type RunInfo,
  type StepLog,
  type TrainResult,
  type TrainStatus,
} from "./protocol.js";

/** Bytes in any of the forms a page has them. */
export type Bytes = ArrayBuffer | Uint8Array | Blob;

/**
 * A model: the two files' contents, a folder's files (from a file input or a drop), or the
 * URL of a folder that holds config.json and model.safetensors.
 */
export type ModelSource =
  | { config: string | Bytes; weights: Bytes; name?: string }
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
  /** Called whenever steps finish (every `readbackEvery` steps). */
  onProgress?: (p: Progress) => void;
  /** Aborting stops the run (the adapter so far can still be exported). */
  signal?: AbortSignal;
}

export interface AdapterExport {
  files: { "adapter_config.json": string; "adapter_model.safetensors": Uint8Array };
}

export interface CreateOptions {
  /** Makes the engine's worker; by default the package's own worker.js next to this file. */
  worker?: () => Worker;
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

function isFileList(src: unknown): src is Iterable<NamedFile> | ArrayLike<NamedFile> {
  if (!src || typeof src !== "object") return false;
  return Symbol.iterator in src || ("length" in src && typeof (src as ArrayLike<unknown>).length === "number");
}

/** The page's handle on a webtune engine running in a Web Worker. */
export class Trainer {
  private worker: Worker;
  private rpc: RpcClient;
  private model: ModelInfo | undefined;
  private closed = false;

  private constructor(
    private readonly makeWorker: () => Worker,
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
    const { worker, rpc, info } = await Trainer.start(make);
    return new Trainer(make, info, worker, rpc);
  }

  private static async start(make: () => Worker): Promise<{ worker: Worker; rpc: RpcClient; info: EngineInfo }> {
    const worker = make();
    const rpc = new RpcClient(worker as unknown as Port);
    const failed = new Promise<never>((_, reject) => {
      worker.addEventListener("error", (e) => {
        e.preventDefault();
        reject(new EngineError(`the webtune worker failed to start: ${e.message || "script error"}`));
      });
    });
    try {
      const info = await Promise.race([rpc.call({ type: "create" }), failed]);
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
      const { worker, rpc, info } = await Trainer.start(this.makeWorker);
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

  /** Loads a Hugging Face GPT-2 model (config.json + model.safetensors in f32, f16 or bf16). */
  async loadModel(src: ModelSource): Promise<ModelInfo> {
    let name: string;
    let config: string;
    let weights: ArrayBuffer;
    if (isFileList(src)) {
      const groups = groupFiles(Array.from(src as ArrayLike<NamedFile>));
      const m: ModelFiles | undefined = groups.model;
      if (!m) {
        throw new EngineError(
          groups.problems[0] ?? "no model among these files: give config.json and model.safetensors",
        );
      }
      name = m.folder;
      config = await m.config.text();
      weights = await m.weights.arrayBuffer();
    } else if ("url" in src) {
      const base = folderUrl(src.url);
      name = src.name ?? (base.pathname.split("/").filter(Boolean).pop() || "model");
      const [c, w] = await Promise.all([fetchBytes(new URL("config.json", base)), fetchBytes(new URL("model.safetensors", base))]);
      config = new TextDecoder().decode(c);
      weights = w;
    } else {
      name = src.name ?? "model";
      config = await toText(src.config);
      weights = await toArrayBuffer(src.weights);
    }
    this.model = undefined;
    const info = await this.call({ type: "loadModel", name, config, weights });
    this.model = info;
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
   * Loads training data: JSONL, one `{"input_ids": [...]}` per line (optionally `"labels"`,
   * -100 = not trained on). `seq` only shapes the preview's window count.
   * An ArrayBuffer given here is transferred to the worker (it is empty afterwards).
   */
  async loadDataset(src: Bytes | NamedFile, name?: string, opts: { seq?: number } = {}): Promise<DatasetInfo> {
    const file = !(src instanceof ArrayBuffer) && !(src instanceof Uint8Array) && "name" in src ? src : undefined;
    const label = name ?? (file ? filePath(file) : "dataset.jsonl");
    const bytes = file ? await file.arrayBuffer() : await toArrayBuffer(src as Bytes);
    const seq = opts.seq ?? Math.min(128, this.model?.nPositions ?? 128);
    return this.call({ type: "loadDataset", name: label, bytes, seq });
  }

  /**
   * Trains with `options` (defaults: the CLI's). Resolves when the run ends ("done"), is paused
   * (`pause()`, "paused": `resume()` continues) or stopped (`signal` aborted, "stopped").
   */
  async train(options: Partial<TrainOptions> = {}, handlers: TrainHandlers = {}): Promise<TrainResult> {
    const resolved = resolveOptions(options, { nPositions: this.model?.nPositions });
    return this.runWith({ type: "train", options: resolved }, handlers);
  }

  /** Continues a paused run. */
  async resume(handlers: TrainHandlers = {}): Promise<TrainResult> {
    return this.runWith({ type: "resume" }, handlers);
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
    request: { type: "train"; options: TrainOptions } | { type: "resume" },
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

  /** The current run's adapter in PEFT's format (`PeftModel.from_pretrained` loads it). */
  async exportAdapter(): Promise<AdapterExport> {
    const r = await this.call({ type: "export" });
    return {
      files: { "adapter_config.json": r.adapterConfigJson, "adapter_model.safetensors": r.adapterSafetensors },
    };
  }

  /** Text generation: not in this build yet (`info.features.generate` says when it is). */
  async generate(_prompt: string, _options: Record<string, unknown> = {}): Promise<string> {
    throw new EngineError("generation is not available in this build of webtune yet");
  }

  /** Held-out loss: not in this build yet (`info.features.evaluate` says when it is). */
  async evaluate(_data: Bytes | NamedFile): Promise<{ loss: number }> {
    throw new EngineError("evaluation is not available in this build of webtune yet");
  }

  /** Ends the worker and frees its GPU memory. */
  terminate(): void {
    this.closed = true;
    this.rpc.failAll("this Trainer was terminated");
    this.rpc.close();
    this.worker.terminate();
  }
}
