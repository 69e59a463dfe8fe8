// The engine's module worker: owns the wasm instance, the WebGPU device and the checkpoint
// store; runs one request at a time in arrival order (pause and stop are handled at once),
// answers every request with a result or the engine's error message, and keeps running after
// errors. If the engine itself crashes (a Rust panic: a bug), the answer is marked fatal so the
// page starts a new worker.
//
// The training loop is the engine's: each `step(control)` runs one step and says what happened
// and what is due (the library's step policy, as in `webtune train`: evaluations every
// `evalEvery` steps and at the end, checkpoints every `checkpointEvery` steps and when paused).
// The worker only moves messages and checkpoint files: it stores a checkpoint when one is due,
// and removes a finished or stopped run's checkpoint.

import init, { Engine, lastPanic, version } from "./wasm/webtune.js";
import { type CheckpointStore, type Files, openStore } from "./checkpoints.js";
import type { TrainOptions } from "./options.js";
import {
  type Control,
  type EngineInfo,
  type EvalLog,
  type GpuInfo,
  type Progress,
  ProgressMeter,
  type Request,
  type RequestMessage,
  type ResponseMessage,
  type RunControl,
  type RunInfo,
  type SavedRun,
  type StepLog,
  type TrainResult,
  errorMessage,
  isControl,
  resultTransferables,
} from "./protocol.js";

interface WorkerScope {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: "message", listener: (e: MessageEvent) => void): void;
}
const scope = self as unknown as WorkerScope;

function post(m: ResponseMessage, transfer: Transferable[] = []): void {
  scope.postMessage(m, transfer);
}

/** What the worker records next to the engine's checkpoint files (run.json). */
interface RunRecord {
  format: 1;
  options: TrainOptions;
  appData?: unknown;
  model: string;
  dataset: string;
  evalData: string | null;
  mode: "lora" | "full";
  steps: number;
  history: { logs: StepLog[]; evals: EvalLog[] };
}

interface Run {
  info: RunInfo;
  record: RunRecord;
  done: number;
  lastLoss: number;
  lastEval: number | undefined;
  control: "run" | "pause" | "stop";
  pauseAfter: number | undefined;
  /** A step loop is running (a train or resume request is in flight). */
  looping: boolean;
  /** Ended by stop or by finishing: it cannot be resumed. */
  stopped: boolean;
  /** The step of the last checkpoint saved. */
  saved: number | undefined;
  /** Why the last save failed, if it did. */
  saveError: string | undefined;
}

let engine: Engine | undefined;
let store: CheckpointStore | undefined;
let run: Run | undefined;

function requireEngine(): Engine {
  if (!engine) throw new Error("the engine is not started: call create first");
  return engine;
}

/** Lets queued messages (pause, stop) in between GPU steps that did not wait on anything. */
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(null);
  });
}

const encoder = new TextEncoder();

/**
 * Saves the run's checkpoint (reading back the logs not reported yet, which it returns). A
 * storage failure (quota, a private window) does not end the run: it is kept in `r.saveError`.
 */
async function saveCheckpoint(r: Run): Promise<StepLog[]> {
  const e = requireEngine();
  const c = (await e.checkpoint()) as { step: number; logs: StepLog[]; files: Files };
  if (!store) return c.logs;
  r.record.history.logs.push(...c.logs); // (the caller reports them)
  const files: Files = { ...c.files, "run.json": encoder.encode(`${JSON.stringify({ ...r.record, savedAt: new Date().toISOString() })}\n`) };
  try {
    await store.save(c.step, files);
    r.saved = c.step;
    r.saveError = undefined;
  } catch (err) {
    r.saveError = `could not save the run at step ${c.step} (${store.kind}): ${errorMessage(err)}`;
  }
  return c.logs;
}

async function trainLoop(id: number, r: Run): Promise<TrainResult> {
  r.looping = true;
  try {
    return await stepUntilDone(id, r);
  } finally {
    r.looping = false;
  }
}

/** What the engine's `step(control)` returns: the step's events, decided by the engine's step policy. */
interface StepEvents {
  step: number;
  logs: StepLog[];
  eval: EvalLog | null;
  /** A checkpoint is due now. */
  checkpoint: boolean;
  /** The loop ends after this step. */
  stop: boolean;
  /** Every step of the run ran. */
  finished: boolean;
}

async function stepUntilDone(id: number, r: Run): Promise<TrainResult> {
  const e = requireEngine();
  const info = r.info;
  const steps = info.steps;
  r.control = "run";
  e.setPauseAfter(r.pauseAfter);
  const meter = new ProgressMeter(steps, info.batch * info.seq * info.gradAccum, r.done);
  const report = (logs: StepLog[], evals: EvalLog[], saved?: number) => {
    if (logs.length === 0 && evals.length === 0 && saved === undefined) return;
    const p: Progress = meter.report(logs, evals);
    if (saved !== undefined && r.saveError === undefined) p.saved = saved;
    if (saved !== undefined && r.saveError !== undefined) p.saveError = r.saveError;
    r.lastLoss = p.loss;
    post({ id, kind: "progress", progress: p });
  };
  let finished = r.done >= steps;
  while (!finished) {
    // (a pause or stop message changes r.control while a step awaits the GPU)
    const ev = (await e.step(r.control)) as StepEvents;
    r.done = ev.step;
    finished = ev.finished;
    const logs = [...ev.logs];
    r.record.history.logs.push(...ev.logs);
    const evals = ev.eval ? [ev.eval] : [];
    r.record.history.evals.push(...evals);
    if (ev.eval) r.lastEval = ev.eval.loss;
    let saved: number | undefined;
    if (ev.checkpoint && store) {
      logs.push(...(await saveCheckpoint(r)));
      saved = ev.step;
    }
    report(logs, evals, saved);
    if (ev.stop) break;
    if (logs.length === 0 && evals.length === 0) await yieldToEvents();
  }
  const asked = r.control as Run["control"];
  const status = finished ? "done" : asked === "stop" ? "stopped" : "paused";
  if (status !== "paused") {
    r.stopped = true;
    await store?.clear();
    r.saved = undefined;
  }
  const result: TrainResult = { status, step: r.done, steps, loss: r.lastLoss };
  if (r.lastEval !== undefined) result.evalLoss = r.lastEval;
  if (status === "paused" && r.saved !== undefined) result.saved = r.saved;
  if (status === "paused" && r.saveError !== undefined) result.saveError = r.saveError;
  return result;
}

function newRun(info: RunInfo, options: TrainOptions, control: RunControl, history?: RunRecord["history"]): Run {
  return {
    info,
    record: {
      format: 1,
      options,
      ...(control.appData === undefined ? {} : { appData: control.appData }),
      model: info.model,
      dataset: info.dataset,
      evalData: info.evalData,
      mode: info.mode,
      steps: info.steps,
      history: history ?? { logs: [], evals: [] },
    },
    done: info.step,
    lastLoss: history?.logs.at(-1)?.loss ?? Number.NaN,
    lastEval: history?.evals.at(-1)?.loss,
    control: "run",
    pauseAfter: control.pauseAfter,
    looping: false,
    stopped: false,
    saved: undefined,
    saveError: undefined,
  };
}

async function readRecord(): Promise<(RunRecord & { savedAt: string }) | undefined> {
  const bytes = await store?.read("run.json");
  if (!bytes) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as RunRecord & { savedAt: string };
  } catch {
    return undefined;
  }
}

async function savedRun(): Promise<SavedRun | null> {
  if (!store) return null;
  const rec = await readRecord();
  const state = await store.read("trainer_state.json");
  if (!rec || !state) return null;
  const { step } = JSON.parse(new TextDecoder().decode(state)) as { step: number };
  const out: SavedRun = {
    step,
    steps: rec.steps,
    mode: rec.mode,
    savedAt: rec.savedAt,
    storage: store.kind,
    model: rec.model,
    dataset: rec.dataset,
    evalData: rec.evalData,
    options: rec.options,
    history: rec.history,
  };
  if (rec.appData !== undefined) out.appData = rec.appData;
  return out;
}

async function handle(id: number, req: Request): Promise<unknown> {
  switch (req.type) {
    case "create": {
      if (!engine) {
        await init();
        engine = await Engine.create(req.maxBinding, req.baseWeights);
        store = await openStore(req.storage.name, req.storage.backend);
      }
      const info: EngineInfo = {
        version: version(),
        gpu: engine.adapterInfo() as GpuInfo,
        features: {
          generate: true,
          evaluate: true,
          tokenizer: true,
          fullFineTuning: true,
          checkpoints: store?.kind ?? "none",
        },
      };
      return info;
    }
    case "loadModel": {
      run = undefined;
      const e = requireEngine();
      const info = e.loadModelShards(
        req.config,
        req.weights.map((w) => w.name),
        req.weights.map((w) => new Uint8Array(w.bytes)),
        req.name,
      ) as Record<string, unknown>;
      if (req.tokenizer) info.tokenizer = loadTokenizer(e, req.tokenizer);
      return info;
    }
    case "loadTokenizer":
      return loadTokenizer(requireEngine(), req.tokenizer);
    case "loadAdapter":
      return requireEngine().loadAdapter(req.config, new Uint8Array(req.weights), req.name);
    case "clearAdapter":
      requireEngine().clearAdapter();
      return null;
    case "loadDataset": {
      // For the next run; a run in progress keeps its data.
      const e = requireEngine();
      const bytes = new Uint8Array(req.bytes);
      return req.role === "eval" ? e.loadEvalDataset(req.name, bytes, req.seq) : e.loadDataset(req.name, bytes, req.seq);
    }
    case "clearEvalDataset":
      requireEngine().clearEvalDataset();
      return null;
    case "train": {
      run = undefined;
      const info = requireEngine().startTraining(JSON.stringify(req.options)) as RunInfo;
      await store?.clear(); // a new run replaces the saved one
      run = newRun(info, req.options, req.control);
      post({ id, kind: "started", run: info });
      return trainLoop(id, run);
    }
    case "resume": {
      if (!run) throw new Error("nothing to resume: no training run");
      if (run.stopped) throw new Error(`the run ended at step ${run.done}; start a new one`);
      run.pauseAfter = req.control.pauseAfter;
      post({ id, kind: "started", run: run.info });
      return trainLoop(id, run);
    }
    case "savedRun":
      return savedRun();
    case "resumeSaved": {
      if (!store) throw new Error("this browser keeps no checkpoints (no OPFS or IndexedDB)");
      const saved = await store.load();
      const rec = await readRecord();
      if (!saved || !rec) throw new Error("there is no saved run to resume");
      run = undefined;
      const readback = req.readbackEvery ?? rec.options.readbackEvery ?? 4;
      const info = requireEngine().resumeRun(saved.files, readback) as RunInfo;
      const control: RunControl = { ...req.control };
      if (control.appData === undefined && rec.appData !== undefined) control.appData = rec.appData;
      const history = {
        logs: rec.history.logs.filter((l) => l.step <= info.step),
        evals: rec.history.evals.filter((l) => l.step <= info.step),
      };
      run = newRun(info, { ...rec.options, readbackEvery: readback }, control, history);
      run.saved = info.step;
      post({ id, kind: "started", run: info });
      return trainLoop(id, run);
    }
    case "discardSaved":
      await store?.clear();
      return null;
    case "evaluate":
      return requireEngine().evaluate(req.seq, req.batch);
    case "generate":
      return requireEngine().generate(req.prompt, JSON.stringify(req.options));
    case "export":
      return requireEngine().exportAdapter();
    case "exportGguf":
      return requireEngine().exportGguf(req.outtype);
    case "exportModel":
      return requireEngine().exportModel();
  }
}

function loadTokenizer(
  e: Engine,
  t: { name: string; json?: string; vocab?: string; merges?: string; config?: string; chatTemplate?: string },
): unknown {
  return e.loadTokenizer(t.json, t.vocab, t.merges, t.name, t.config, t.chatTemplate);
}

/** Pause or stop the running loop after its current step; stopping a paused run ends it. */
async function control(c: Control): Promise<null> {
  if (!run || run.stopped) return null;
  if (c.type === "stop" && !run.looping) {
    run.stopped = true;
    await store?.clear();
  } else run.control = c.type;
  return null;
}

/** A trap in the wasm code leaves the instance unusable: report its panic message, mark it fatal. */
function crashMessage(e: unknown): string | undefined {
  let panic: string | undefined;
  try {
    panic = lastPanic() ?? undefined;
  } catch {
    panic = undefined;
  }
  const trapped = typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError;
  if (!panic && !trapped) return undefined;
  engine = undefined;
  run = undefined;
  return `internal error in the webtune engine (a bug: please report it): ${panic ?? errorMessage(e)}; the engine was restarted, load the model and dataset again`;
}

let queue: Promise<void> = Promise.resolve();

scope.addEventListener("message", (event: MessageEvent) => {
  const { id, request } = event.data as RequestMessage;
  if (isControl(request)) {
    void control(request).then(
      (value) => post({ id, kind: "result", value }),
      (e: unknown) => post({ id, kind: "error", message: errorMessage(e) }),
    );
    return;
  }
  queue = queue.then(async () => {
    try {
      const value = await handle(id, request);
      post({ id, kind: "result", value }, resultTransferables(value));
    } catch (e) {
      const crash = crashMessage(e);
      if (crash) post({ id, kind: "error", message: crash, fatal: true });
      else post({ id, kind: "error", message: errorMessage(e) });
    }
  });
});
