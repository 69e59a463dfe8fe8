// The messages between the page (Trainer) and the engine's worker, and the client that pairs
// each request with its answer. Requests carry an id; the worker answers each with exactly one
// "result" or "error" message (plus any "progress" messages before it). Byte buffers travel in
// the transfer list: moved, never copied.

import type { TrainOptions } from "./options.js";

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
  summary: string;
}

export interface EngineInfo {
  version: string;
  gpu: GpuInfo;
  /** What this build can do beyond LoRA training (the seams for what is coming). */
  features: { generate: boolean; evaluate: boolean; tokenizer: boolean };
}

export interface ModelInfo {
  name: string;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  vocabSize: number;
  nPositions: number;
  eosTokenId: number;
  parameters: number;
}

export interface AdapterInfo {
  name: string;
  r: number;
  alpha: number;
  targets: string[];
  modules: number;
}

export interface DatasetInfo {
  name: string;
  /** Records (lines) in the file. */
  records: number;
  /** Tokens, counting the EOS the engine puts after each record. */
  tokens: number;
  /** Sequences of `seq` tokens (plus the shifted target) the data makes. */
  windows: number;
  seq: number;
  /** The first few token ids of the first record. */
  firstTokens: number[];
}

export interface RunInfo {
  steps: number;
  batch: number;
  seq: number;
  windows: number;
  readbackEvery: number;
  trainableParameters: number;
  adapter: { r: number; alpha: number; targets: string[] };
  model: string;
  dataset: string;
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
}

export type TrainStatus = "done" | "paused" | "stopped";

export interface TrainResult {
  status: TrainStatus;
  step: number;
  steps: number;
  /** Loss of the last finished step (NaN before the first). */
  loss: number;
}

export interface ExportedAdapter {
  adapterConfigJson: string;
  adapterSafetensors: Uint8Array;
}

/** What the page asks of the worker. */
export type Request =
  | { type: "create" }
  | { type: "loadModel"; name: string; config: string; weights: ArrayBuffer }
  | { type: "loadAdapter"; name: string; config: string; weights: ArrayBuffer }
  | { type: "clearAdapter" }
  | { type: "loadDataset"; name: string; bytes: ArrayBuffer; seq: number }
  | { type: "train"; options: TrainOptions }
  | { type: "resume" }
  | { type: "export" };

/** Out-of-band requests: answered at once, even while a long request (training) runs. */
export type Control = { type: "pause" } | { type: "stop" };

/** What each request resolves to. */
export interface ResultOf {
  create: EngineInfo;
  loadModel: ModelInfo;
  loadAdapter: AdapterInfo;
  clearAdapter: null;
  loadDataset: DatasetInfo;
  train: TrainResult;
  resume: TrainResult;
  export: ExportedAdapter;
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
  if (value && typeof value === "object" && "adapterSafetensors" in value) {
    const bytes = (value as ExportedAdapter).adapterSafetensors;
    if (bytes instanceof Uint8Array && bytes.buffer instanceof ArrayBuffer) return [bytes.buffer];
  }
  return [];
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

  report(logs: StepLog[]): Progress {
    const last = logs[logs.length - 1];
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
    };
  }

  get loss(): number {
    return this.lastLoss;
  }
}
