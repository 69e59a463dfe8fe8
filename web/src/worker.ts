// The engine's module worker: owns the wasm instance and the WebGPU device, runs one request
// at a time in arrival order (pause and stop are handled at once), answers every request with
// a result or the engine's error message, and keeps running after errors. If the engine
// itself crashes (a Rust panic: a bug), the answer is marked fatal so the page starts a new worker.

import init, { Engine, lastPanic, version } from "./wasm/webtune.js";
import {
  type Control,
  type EngineInfo,
  type GpuInfo,
  type Progress,
  ProgressMeter,
  type Request,
  type RequestMessage,
  type ResponseMessage,
  type RunInfo,
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

interface Run {
  info: RunInfo;
  done: number;
  lastLoss: number;
  control: "run" | "pause" | "stop";
  /** A step loop is running (a train or resume request is in flight). */
  looping: boolean;
  /** Ended by stop or by finishing: it cannot be resumed. */
  stopped: boolean;
}

let engine: Engine | undefined;
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

async function trainLoop(id: number, r: Run): Promise<TrainResult> {
  r.looping = true;
  try {
    return await stepUntilDone(id, r);
  } finally {
    r.looping = false;
  }
}

async function stepUntilDone(id: number, r: Run): Promise<TrainResult> {
  const e = requireEngine();
  r.control = "run";
  const meter = new ProgressMeter(r.info.steps, r.info.batch * r.info.seq, r.done);
  const report = (logs: StepLog[]) => {
    if (logs.length === 0) return;
    const p: Progress = meter.report(logs);
    r.lastLoss = p.loss;
    post({ id, kind: "progress", progress: p });
  };
  while (r.done < r.info.steps && r.control === "run") {
    const logs = (await e.step()) as StepLog[];
    r.done += 1;
    report(logs);
    if (logs.length === 0) await yieldToEvents();
  }
  if (r.done < r.info.steps) report((await e.flush()) as StepLog[]);
  // (A pause or stop message changed r.control while the loop awaited the GPU.)
  const asked = r.control as Run["control"];
  const status = r.done >= r.info.steps ? "done" : asked === "stop" ? "stopped" : "paused";
  if (status !== "paused") r.stopped = true;
  return { status, step: r.done, steps: r.info.steps, loss: r.lastLoss };
}

async function handle(id: number, req: Request): Promise<unknown> {
  switch (req.type) {
    case "create": {
      if (!engine) {
        await init();
        engine = await Engine.create();
      }
      const info: EngineInfo = {
        version: version(),
        gpu: engine.adapterInfo() as GpuInfo,
        features: { generate: false, evaluate: false, tokenizer: false },
      };
      return info;
    }
    case "loadModel": {
      run = undefined;
      return requireEngine().loadModel(req.config, new Uint8Array(req.weights), req.name);
    }
    case "loadAdapter":
      return requireEngine().loadAdapter(req.config, new Uint8Array(req.weights), req.name);
    case "clearAdapter":
      requireEngine().clearAdapter();
      return null;
    case "loadDataset":
      // For the next run; a run in progress keeps its data.
      return requireEngine().loadDataset(req.name, new Uint8Array(req.bytes), req.seq);
    case "train": {
      run = undefined;
      const info = requireEngine().startTraining(JSON.stringify(req.options)) as RunInfo;
      run = { info, done: 0, lastLoss: Number.NaN, control: "run", looping: false, stopped: false };
      post({ id, kind: "started", run: info });
      return trainLoop(id, run);
    }
    case "resume": {
      if (!run) throw new Error("nothing to resume: no training run");
      if (run.stopped) throw new Error(`the run ended at step ${run.done}; start a new one`);
      post({ id, kind: "started", run: run.info });
      return trainLoop(id, run);
    }
    case "export":
      return requireEngine().exportAdapter();
  }
}

/** Pause or stop the running loop after its current step; stopping a paused run ends it. */
function control(c: Control): null {
  if (!run || run.stopped) return null;
  if (c.type === "stop" && !run.looping) run.stopped = true;
  else run.control = c.type;
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
    post({ id, kind: "result", value: control(request) });
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
