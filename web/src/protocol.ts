// The messages between the page (Trainer) and the engine's worker, and the client that pairs
// each request with its answer. Requests carry an id; the worker answers each with exactly one
// "result" or "error" message (plus any "progress" messages before it). Byte buffers travel in
// the transfer list: moved, never copied.

import type { GenerateOptions, TrainOptions } from "./options.js";

export interface GpuInfo {
  name: string;
  backend: string;
  deviceType: string;
  driver: string;
  shaderF16: boolean;
  limits: {
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
  };
  /** The most bytes one buffer holds here: the device's limits, or a lower `maxBinding`; tensors over it are row-chunked. */
  maxBinding: number;
  /** Frozen base weights are stored in f16 (`CreateOptions.baseWeights`). */
  f16BaseWeights: boolean;
  summary: string;
}

/** Where checkpoints go: the origin-private file system, IndexedDB, or nowhere. */
export type StorageKind = "opfs" | "indexeddb" | "none";

export interface EngineInfo {
  version: string;
  gpu: GpuInfo;
  /** What this build can do beyond LoRA training, and where it saves checkpoints. */
  features: { generate: boolean; evaluate: boolean; tokenizer: boolean; fullFineTuning: boolean; checkpoints: StorageKind };
}

export interface TokenizerInfo {
  name: string;
  vocabSize: number;
  /** The tokenizer has a chat template (chat datasets and `generate({chat: true})` work). */
  chatTemplate?: boolean;
}

export interface ModelInfo {
  name: string;
  /** config.json's model_type: "gpt2", "llama", "qwen2" or "qwen3". */
  modelType: string;
  /** How its blocks are built: "gpt2", or "llama" (Llama, Qwen2, Qwen3). */
  family: "gpt2" | "llama";
  /** The PEFT target names its linear layers answer to ("all-linear" included). */
  loraTargets: string[];
  nLayer: number;
  /** Attention heads, and key/value heads (fewer with grouped-query attention; GPT-2: the same). */
  nHead: number;
  nKvHead: number;
  headDim: number;
  nEmbd: number;
  /** The MLP's inner width. */
  intermediate: number;
  vocabSize: number;
  nPositions: number;
  /** The first end-of-text id, and every id that ends generation. */
  eosTokenId: number;
  eosTokenIds: number[];
  bosTokenId: number;
  /** The LM head is the token embedding (no lm_head.weight). */
  tiedEmbeddings: boolean;
  parameters: number;
  /** Bytes of the weight files, and how many there were (1, or the shards). */
  weightsBytes: number;
  files: number;
  /** FNV-1a 64 of the weight files, in order (a checkpoint checks the model by it). */
  fingerprint: string;
  /** The tokenizer loaded with it, if any. */
  tokenizer?: TokenizerInfo;
}

export interface AdapterInfo {
  name: string;
  r: number;
  alpha: number;
  targets: string[];
  modules: number;
}

/** One of the first records of a dataset, for a preview. */
export interface DatasetSample {
  /** Tokens in the record, and how many of them count in the loss. */
  tokens: number;
  trainedTokens: number;
  /** Its first token ids. */
  ids: number[];
  /** Its beginning decoded (when a tokenizer is loaded), else null. */
  text: string | null;
}

export interface DatasetInfo {
  name: string;
  /** "text", "prompt + completion" or "token ids". */
  format: string;
  bytes: number;
  /** Records (lines; a .txt file is one). */
  records: number;
  /** Tokens, counting the EOS the engine puts after each record. */
  tokens: number;
  /** Sequences of `seq` tokens (plus the shifted target) the data makes. */
  windows: number;
  seq: number;
  /** The data is text, encoded with the model's tokenizer. */
  usesTokenizer: boolean;
  /** The first few token ids of the first record. */
  firstTokens: number[];
  /** The first three records. */
  samples: DatasetSample[];
  /** Chat data: the first record as the chat template renders it; `marked` wraps each trained span in
   * [[ ]], `spans` are the trained [start, end) byte offsets of `text` in UTF-8. */
  rendered?: { text: string; marked: string; spans: [number, number][] } | null;
}

export interface RunInfo {
  mode: "lora" | "full";
  /** The step the run starts at (a resumed run: the checkpoint's). */
  step: number;
  steps: number;
  batch: number;
  seq: number;
  gradAccum: number;
  windows: number;
  readbackEvery: number;
  evalEvery: number;
  checkpointEvery: number;
  /** Counted tokens of the held-out data (0: no eval loss). */
  evalTokens: number;
  evalData: string | null;
  trainableParameters: number;
  adapter: { r: number; alpha: number; targets: string[] } | null;
  model: string;
  dataset: string;
  /** The run's settings (a resumed run's come from its checkpoint). */
  options: Partial<TrainOptions>;
  /** The GPU memory the run allocated, as planned before it did (a run that would not fit the
   * device's limits is refused before anything is allocated). */
  memory: MemoryPlan;
}

/** What a run holds on the GPU, by class (bytes; classes the run does not use are absent). */
export interface MemoryPlan {
  totalBytes: number;
  classes: Partial<Record<"weights" | "trainable" | "gradients" | "optimizer" | "activations" | "eval", number>>;
  /** The largest tensor: one buffer, bound whole by the kernels that use it. */
  largest: { name: string; class: string; bytes: number } | null;
}

/** One optimizer step as read back from the GPU. */
export interface StepLog {
  step: number;
  /** Mean cross-entropy of the step's batch, before the update. */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/** A held-out evaluation: mean cross-entropy over every counted token of the eval data. */
export interface EvalLog {
  /** Optimizer steps taken when it ran. */
  step: number;
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface Progress {
  /** Steps finished (read back from the GPU). */
  step: number;
  steps: number;
  /** Loss of the latest finished step. */
  loss: number;
  tokensPerSec: number;
  /** Seconds left at the current speed. */
  etaSec: number;
  /** The steps finished since the last report, in order. */
  logs: StepLog[];
  /** Evaluations since the last report. */
  evals: EvalLog[];
  /** The latest eval loss of the run, if any. */
  evalLoss?: number;
  /** Set when a checkpoint was just saved (at this step). */
  saved?: number;
  /** Set when saving a checkpoint failed (the run goes on). */
  saveError?: string;
}

export type TrainStatus = "done" | "paused" | "stopped";

export interface TrainResult {
  status: TrainStatus;
  step: number;
  steps: number;
  /** Loss of the last finished step (NaN before the first). */
  loss: number;
  /** The latest eval loss, if the run has eval data. */
  evalLoss?: number;
  /** The step of the checkpoint saved for this run (on pause), if any. */
  saved?: number;
  /** Why saving the paused run failed, if it did. */
  saveError?: string;
}

/** A run saved in the browser's storage (it survives a page reload). */
export interface SavedRun {
  step: number;
  steps: number;
  mode: "lora" | "full";
  /** ISO time of the save. */
  savedAt: string;
  storage: StorageKind;
  /** The model and dataset the run needs (their names as loaded). */
  model: string;
  dataset: string;
  evalData: string | null;
  options: TrainOptions;
  /** What the page passed as `appData` to `train` (e.g. how to load the model again). */
  appData?: unknown;
  /** Everything reported so far, to redraw a chart. */
  history: { logs: StepLog[]; evals: EvalLog[] };
}

export interface GenerateResult {
  /** The new text (the prompt not included). */
  text: string;
  /** The new token ids. */
  ids: number[];
  promptTokens: number;
  adapted: boolean;
  /** Generation ended with the end-of-text token. */
  endOfText: boolean;
}

export interface ExportedAdapter {
  adapterConfigJson: string;
  adapterSafetensors: Uint8Array;
}

export interface ExportedModel {
  configJson: string;
  modelSafetensors: Uint8Array;
}

/** Tokenizer file contents: tokenizer.json, or vocab.json + merges.txt. */
/** `config`: tokenizer_config.json's text (special tokens, chat template); `chatTemplate`: a Jinja chat
 * template's text (chat_template.jinja, or the user's) that replaces the config's. */
export type TokenizerSource = ({ name: string; json: string } | { name: string; vocab: string; merges: string }) & {
  config?: string;
  chatTemplate?: string;
};

/** One weight file of a model: model.safetensors, or one of its shards. */
export interface WeightFile {
  name: string;
  bytes: ArrayBuffer;
}

/** Handlers that shape a run besides its options. */
export interface RunControl {
  /** Pause (and save a checkpoint) once this step is done. */
  pauseAfter?: number;
  /** Kept with the run's checkpoints and given back by `savedRun()`. */
  appData?: unknown;
}

/** What the page asks of the worker. */
export type Request =
  | { type: "create"; storage: { name: string; backend: StorageKind | "auto" }; maxBinding?: number; baseWeights?: string }
  | { type: "loadModel"; name: string; config: string; weights: WeightFile[]; tokenizer?: TokenizerSource }
  | { type: "loadTokenizer"; tokenizer: TokenizerSource }
  | { type: "loadAdapter"; name: string; config: string; weights: ArrayBuffer }
  | { type: "clearAdapter" }
  | { type: "loadDataset"; name: string; bytes: ArrayBuffer; seq: number; role: "train" | "eval" }
  | { type: "clearEvalDataset" }
  | { type: "train"; options: TrainOptions; control: RunControl }
  | { type: "resume"; control: RunControl }
  | { type: "savedRun" }
  | { type: "resumeSaved"; readbackEvery?: number; control: RunControl }
  | { type: "discardSaved" }
  | { type: "evaluate"; seq?: number; batch?: number }
  | { type: "generate"; prompt: string; options: GenerateOptions }
  | { type: "export" }
  | { type: "exportGguf"; outtype: "f32" | "f16" }
  | { type: "exportModel" };

/** Out-of-band requests: answered at once, even while a long request (training) runs. */
export type Control = { type: "pause" } | { type: "stop" };

/** What each request resolves to. */
export interface ResultOf {
  create: EngineInfo;
  loadModel: ModelInfo;
  loadTokenizer: TokenizerInfo;
  loadAdapter: AdapterInfo;
  clearAdapter: null;
  loadDataset: DatasetInfo;
  clearEvalDataset: null;
  train: TrainResult;
  resume: TrainResult;
  savedRun: SavedRun | null;
  resumeSaved: TrainResult;
  discardSaved: null;
  evaluate: EvalLog;
  generate: GenerateResult;
  export: ExportedAdapter;
  /** The GGUF file's bytes. */
  exportGguf: Uint8Array;
  exportModel: ExportedModel;
  pause: null;
  stop: null;
}

export type RequestMessage = { id: number; request: Request | Control };

export type ResponseMessage =
  | { id: number; kind: "result"; value: unknown }
  /** `fatal`: the engine crashed (a bug) and the worker must be replaced. */
  | { id: number; kind: "error"; message: string; fatal?: boolean }
  | { id: number; kind: "started"; run: RunInfo }
  | { id: number; kind: "progress"; progress: Progress };

export function isControl(r: Request | Control): r is Control {
  return r.type === "pause" || r.type === "stop";
}

/** The buffers a request moves to the worker. */
export function transferables(r: Request | Control): ArrayBuffer[] {
  switch (r.type) {
    case "loadModel":
      return [...new Set(r.weights.map((w) => w.bytes))]; // (a buffer may be listed only once)
    case "loadAdapter":
      return [r.weights];
    case "loadDataset":
      return [r.bytes];
    default:
      return [];
  }
}

/** The buffers a result moves back to the page. */
export function resultTransferables(value: unknown): ArrayBuffer[] {
  if (value instanceof Uint8Array) return value.buffer instanceof ArrayBuffer ? [value.buffer] : [];
  if (!value || typeof value !== "object") return [];
  const out: ArrayBuffer[] = [];
  for (const key of ["adapterSafetensors", "modelSafetensors"]) {
    const bytes = (value as Record<string, unknown>)[key];
    if (bytes instanceof Uint8Array && bytes.buffer instanceof ArrayBuffer) out.push(bytes.buffer);
  }
  return out;
}

/** The message of anything thrown (Error, JsError from Rust, a string ...). */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && "message" in e) return String((e as { message: unknown }).message);
  return String(e);
}

/** An error from the engine, with its message unchanged. */
export class EngineError extends Error {
  /** The engine crashed (a bug, reported with its panic message) and was restarted. */
  readonly fatal: boolean;
  constructor(message: string, fatal = false) {
    super(message);
    this.name = "EngineError";
    this.fatal = fatal;
  }
}

/** The page's end of a worker (a `Worker`, a `MessagePort` ...). */
export interface Port {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: "message", listener: (e: MessageEvent) => void): void;
  removeEventListener(type: "message", listener: (e: MessageEvent) => void): void;
}

export interface Listeners {
  onStarted?: (run: RunInfo) => void;
  onProgress?: (p: Progress) => void;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  listeners: Listeners;
}

/** Sends requests and pairs the answers with them by id. */
export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly onMessage = (e: MessageEvent) => this.receive(e.data as ResponseMessage);
  /** Called when the worker reports a crash (after the pending call is rejected). */
  onFatal: ((message: string) => void) | undefined;

  constructor(private readonly port: Port) {
    port.addEventListener("message", this.onMessage);
  }

  call<R extends Request | Control>(request: R, listeners: Listeners = {}): Promise<ResultOf[R["type"]]> {
    const id = this.nextId++;
    return new Promise<ResultOf[R["type"]]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, listeners });
      try {
        this.port.postMessage({ id, request } satisfies RequestMessage, transferables(request));
      } catch (e) {
        this.pending.delete(id);
        reject(new EngineError(errorMessage(e)));
      }
    });
  }

  /** Rejects every call still waiting (the worker died or was replaced). */
  failAll(message: string): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(new EngineError(message, true));
  }

  get waiting(): number {
    return this.pending.size;
  }

  close(): void {
    this.port.removeEventListener("message", this.onMessage);
  }

  private receive(m: ResponseMessage): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    switch (m.kind) {
      case "started":
        p.listeners.onStarted?.(m.run);
        break;
      case "progress":
        p.listeners.onProgress?.(m.progress);
        break;
      case "result":
        this.pending.delete(m.id);
        p.resolve(m.value);
        break;
      case "error":
        this.pending.delete(m.id);
        p.reject(new EngineError(m.message, m.fatal === true));
        if (m.fatal) this.onFatal?.(m.message);
        break;
    }
  }
}

/** Progress numbers from the logs read back in one run segment. */
export class ProgressMeter {
  private readonly t0: number;
  private readonly firstStep: number;
  private lastLoss = Number.NaN;
  private lastEval: number | undefined;
  private lastStep: number;

  constructor(
    private readonly steps: number,
    private readonly tokensPerStep: number,
    startStep: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.t0 = now();
    this.firstStep = startStep;
    this.lastStep = startStep;
  }

  report(logs: StepLog[], evals: EvalLog[] = []): Progress {
    const last = logs[logs.length - 1];
    const lastEval = evals[evals.length - 1];
    if (lastEval) this.lastEval = lastEval.loss;
    if (last) {
      this.lastStep = last.step;
      this.lastLoss = last.loss;
    }
    const secs = Math.max((this.now() - this.t0) / 1000, 1e-6);
    const stepsPerSec = (this.lastStep - this.firstStep) / secs;
    return {
      step: this.lastStep,
      steps: this.steps,
      loss: this.lastLoss,
      tokensPerSec: stepsPerSec * this.tokensPerStep,
      etaSec: stepsPerSec > 0 ? (this.steps - this.lastStep) / stepsPerSec : Number.POSITIVE_INFINITY,
      logs,
      evals,
      ...(this.lastEval === undefined ? {} : { evalLoss: this.lastEval }),
    };
  }

  get loss(): number {
    return this.lastLoss;
  }

  get evalLoss(): number | undefined {
    return this.lastEval;
  }
}
