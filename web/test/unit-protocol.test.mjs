// The page <-> worker protocol (dist/protocol.js) over a real MessageChannel: answers pair with
// requests by id, errors reject with the engine's message, progress reaches its listener, byte
// buffers are transferred (the sender's copy is detached), a crash fails what is waiting.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  EngineError,
  ProgressMeter,
  RpcClient,
  errorMessage,
  isControl,
  resultTransferables,
  transferables,
} from "../dist/protocol.js";

/** A fake worker on the other end of a channel; `behave(request, reply)` answers each request. */
function channel(behave) {
  const { port1, port2 } = new MessageChannel();
  port2.addEventListener("message", (e) => {
    const { id, request } = e.data;
    behave(request, (m, transfer = []) => port2.postMessage({ id, ...m }, transfer), e.data);
  });
  port2.start();
  port1.start();
  const rpc = new RpcClient(port1);
  return { rpc, close: () => (rpc.close(), port1.close(), port2.close()) };
}

test("results pair with their requests, even out of order", async () => {
  const { rpc, close } = channel((req, reply) => {
    const delay = req.type === "loadModel" ? 30 : 0;
    setTimeout(() => reply({ kind: "result", value: { echo: req.type } }), delay);
  });
  const a = rpc.call({ type: "loadModel", name: "m", config: "{}", weights: [{ name: "model.safetensors", bytes: new ArrayBuffer(8) }] });
  const b = rpc.call({ type: "clearAdapter" });
  assert.deepEqual(await b, { echo: "clearAdapter" });
  assert.deepEqual(await a, { echo: "loadModel" });
  assert.equal(rpc.waiting, 0);
  close();
});

test("an engine error rejects with its message, and the next call still works", async () => {
  let calls = 0;
  const { rpc, close } = channel((req, reply) => {
    calls += 1;
    if (calls === 1) reply({ kind: "error", message: "tiny/model.safetensors: not a valid safetensors file: header too large" });
    else reply({ kind: "result", value: null });
  });
  await assert.rejects(
    rpc.call({ type: "export" }),
    (e) => e instanceof EngineError && !e.fatal && e.message === "tiny/model.safetensors: not a valid safetensors file: header too large",
  );
  assert.equal(await rpc.call({ type: "clearAdapter" }), null);
  close();
});

test("buffers are transferred, not copied", async () => {
  let received;
  const { rpc, close } = channel((req, reply) => {
    received = req.bytes;
    reply({ kind: "result", value: req.bytes.byteLength });
  });
  const bytes = new Uint8Array([1, 2, 3, 4, 5]).buffer;
  const n = await rpc.call({ type: "loadDataset", name: "d.jsonl", bytes, seq: 16 });
  assert.equal(n, 5);
  assert.equal(bytes.byteLength, 0, "the page's buffer is detached: it moved to the worker");
  assert.deepEqual([...new Uint8Array(received)], [1, 2, 3, 4, 5]);
  close();
});

test("progress and started events reach the call's listeners before its result", async () => {
  const { rpc, close } = channel((req, reply) => {
    reply({ kind: "started", run: { steps: 2 } });
    reply({ kind: "progress", progress: { step: 1, loss: 4.5, logs: [] } });
    reply({ kind: "progress", progress: { step: 2, loss: 4.4, logs: [] } });
    reply({ kind: "result", value: { status: "done", step: 2 } });
  });
  const seen = [];
  const r = await rpc.call(
    { type: "train", options: {} },
    { onStarted: (run) => seen.push(`started ${run.steps}`), onProgress: (p) => seen.push(`step ${p.step}`) },
  );
  assert.deepEqual(seen, ["started 2", "step 1", "step 2"]);
  assert.equal(r.status, "done");
  close();
});

test("a crash is fatal: the call rejects, onFatal fires; failAll rejects what waits", async () => {
  const { rpc, close } = channel((req, reply) => {
    if (req.type === "export") reply({ kind: "error", message: "internal error: boom", fatal: true });
  });
  let fatal;
  rpc.onFatal = (m) => (fatal = m);
  await assert.rejects(rpc.call({ type: "export" }), (e) => e instanceof EngineError && e.fatal);
  assert.equal(fatal, "internal error: boom");
  const waiting = rpc.call({ type: "resume" });
  rpc.failAll("the worker died");
  await assert.rejects(waiting, /the worker died/);
  close();
});

test("which buffers move, and which requests are out of band", () => {
  const w = new ArrayBuffer(4);
  const shards = [new ArrayBuffer(4), new ArrayBuffer(4)];
  const weights = shards.map((bytes, i) => ({ name: `model-0000${i + 1}-of-00002.safetensors`, bytes }));
  assert.deepEqual(transferables({ type: "loadModel", name: "m", config: "{}", weights }), shards);
  assert.deepEqual(transferables({ type: "loadAdapter", name: "a", config: "{}", weights: w }), [w]);
  assert.deepEqual(transferables({ type: "loadDataset", name: "d", bytes: w, seq: 1 }), [w]);
  assert.deepEqual(transferables({ type: "export" }), []);
  const out = new Uint8Array(3);
  assert.deepEqual(resultTransferables({ adapterConfigJson: "{}", adapterSafetensors: out }), [out.buffer]);
  assert.deepEqual(resultTransferables({ configJson: "{}", modelSafetensors: out }), [out.buffer]);
  assert.deepEqual(resultTransferables(out), [out.buffer], "exportGguf's bytes");
  assert.deepEqual(transferables({ type: "exportGguf", outtype: "f16" }), []);
  assert.deepEqual(resultTransferables({ text: "hi", ids: [1] }), []);
  assert.deepEqual(resultTransferables(null), []);
  assert.ok(isControl({ type: "pause" }) && isControl({ type: "stop" }));
  assert.ok(!isControl({ type: "train", options: {} }));
  assert.equal(errorMessage(new Error("x")), "x");
  assert.equal(errorMessage("y"), "y");
  assert.equal(errorMessage({ message: "z" }), "z");
});

test("progress: speed and time left from the steps read back", () => {
  let now = 1000;
  const m = new ProgressMeter(10, 2 * 16, 0, () => now);
  now += 2000; // 4 steps in 2 s
  const p = m.report([
    { step: 1, loss: 4.6, lr: 0.01, gradNorm: 1 },
    { step: 2, loss: 4.5, lr: 0.01, gradNorm: 1 },
    { step: 3, loss: 4.4, lr: 0.01, gradNorm: 1 },
    { step: 4, loss: 4.3, lr: 0.01, gradNorm: 1 },
  ]);
  assert.equal(p.step, 4);
  assert.equal(p.loss, 4.3);
  assert.equal(p.tokensPerSec, 2 * 32);
  assert.equal(p.etaSec, 3);
  assert.equal(p.evalLoss, undefined, "no eval loss before the first evaluation");
  assert.deepEqual(p.evals, []);
  const q = m.report([{ step: 5, loss: 4.2, lr: 0.01, gradNorm: 1 }], [{ step: 5, loss: 4.4, perplexity: 81.5, tokens: 48 }]);
  assert.equal(q.evalLoss, 4.4);
  assert.equal(q.evals.length, 1);
  assert.equal(m.report([{ step: 6, loss: 4.1, lr: 0.01, gradNorm: 1 }]).evalLoss, 4.4, "the latest eval loss stays");
  const resumed = new ProgressMeter(10, 32, 4, () => now);
  assert.equal(resumed.report([]).etaSec, Number.POSITIVE_INFINITY, "no speed before the first step back");
});
