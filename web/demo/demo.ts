// The demo page: pick or drop a model folder and a dataset, train a LoRA adapter with live
// loss, download it. It uses the package exactly as an app would (`import ... from "webtune"`).

import uPlot from "uplot";
import {
  type AdapterExport,
  type DatasetInfo,
  type ModelInfo,
  type NamedFile,
  OptionError,
  type Progress,
  type TrainOptions,
  type TrainResult,
  Trainer,
  formatBytes,
  groupFiles,
  parseTargets,
  resolveOptions,
} from "webtune";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page lacks #${id}`);
  return el as T;
};

/** Where the dev server serves the repository's test fixtures (the bundled tiny model). */
const TINY = new URL("../fixtures/tiny/", location.href);

type PageState = "starting" | "idle" | "training" | "paused" | "done" | "stopped" | "failed";

let trainer: Trainer | undefined;
let model: ModelInfo | undefined;
let dataset: DatasetInfo | undefined;
/** The dataset the user chose; loaded (again) whenever the model or the sequence length changes. */
let datasetSource: { bytes: () => Promise<ArrayBuffer>; name: string } | undefined;
let exported: AdapterExport | undefined;
let controller: AbortController | undefined;
let chart: uPlot | undefined;
const losses: [number[], number[]] = [[], []];

let state: PageState = "starting";

/** Changes the page's state (the run's lifecycle) and what can be clicked. */
function setState(s: PageState): void {
  state = s;
  refresh();
}

/** Enables what fits the state and what is loaded; `body[data-state]` lets tests wait on it. */
function refresh(): void {
  document.body.dataset.state = state;
  const busy = state === "training" || state === "starting";
  $<HTMLButtonElement>("train").disabled = busy || !trainer || !model || !dataset;
  $<HTMLButtonElement>("pause").disabled = !(state === "training" || state === "paused");
  $<HTMLButtonElement>("pause").textContent = state === "paused" ? "Resume" : "Pause";
  $<HTMLButtonElement>("stop").disabled = !(state === "training" || state === "paused");
  for (const id of ["model-files", "model-folder", "dataset-file", "adapter-files", "use-tiny"]) {
    ($(id) as HTMLInputElement | HTMLButtonElement).disabled = busy;
  }
}

function status(id: string, text: string, kind: "ok" | "error" | "" = ""): void {
  const el = $(id);
  el.textContent = text;
  el.className = `status ${kind}`;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------
// Model, adapter and dataset

function describeModel(m: ModelInfo): string {
  const params = m.parameters >= 1e6 ? `${(m.parameters / 1e6).toFixed(1)}M` : `${(m.parameters / 1e3).toFixed(1)}k`;
  return `${m.name}: ${m.nLayer} layers, ${m.nEmbd} wide, ${m.nHead} heads, vocab ${m.vocabSize}, ${m.nPositions} positions, ${params} parameters`;
}

async function loadModel(load: (t: Trainer) => Promise<ModelInfo>): Promise<void> {
  if (!trainer) return;
  status("model-status", "Loading the model…");
  model = undefined;
  dataset = undefined;
  exported = undefined;
  updateDownloads();
  status("export-status", "");
  if (state === "paused" || state === "done" || state === "stopped") state = "idle"; // a new model ends the run
  refresh();
  try {
    model = await load(trainer);
    status("model-status", describeModel(model), "ok");
    const seq = $<HTMLInputElement>("options").querySelector<HTMLInputElement>("[name=seq]");
    if (seq && Number(seq.value) > model.nPositions) seq.value = String(model.nPositions);
  } catch (e) {
    status("model-status", message(e), "error");
  }
  status("adapter-status", "");
  $<HTMLButtonElement>("clear-adapter").disabled = true;
  await loadDataset();
}

/** (Re)loads the chosen dataset. The previous preview stays usable until this one answers. */
async function loadDataset(): Promise<void> {
  if (!trainer || !datasetSource) {
    refresh();
    return;
  }
  if (!model) {
    status("dataset-status", `${datasetSource.name}: load a model first (token ids are checked against its vocabulary)`);
    refresh();
    return;
  }
  if (!dataset) status("dataset-status", "Reading the dataset…"); // (a re-preview keeps the old text meanwhile)
  try {
    const seq = Number(formValue("seq")) || 128;
    dataset = await trainer.loadDataset(await datasetSource.bytes(), datasetSource.name, { seq });
    const d = dataset;
    status(
      "dataset-status",
      `${d.name}: ${d.records} records, ${d.tokens} tokens (with an EOS after each), ` +
        `${d.windows} sequences of ${d.seq} tokens\nfirst record: ${d.firstTokens.join(" ")}${d.firstTokens.length >= 32 ? " …" : ""}`,
      d.windows > 0 ? "ok" : "error",
    );
  } catch (e) {
    dataset = undefined;
    status("dataset-status", message(e), "error");
  }
  refresh();
}

function chooseDataset(file: NamedFile): void {
  datasetSource = { bytes: () => file.arrayBuffer(), name: file.name };
  void loadDataset();
}

async function handleFiles(files: NamedFile[]): Promise<void> {
  const groups = groupFiles(files);
  if (groups.model) {
    const m = groups.model;
    await loadModel((t) => t.loadModel([m.config, m.weights]));
  } else if (!groups.adapter && groups.datasets.length === 0) {
    status("model-status", groups.problems[0] ?? "no model among these files: give config.json and model.safetensors", "error");
    return;
  } else if (groups.problems.length > 0) {
    status("model-status", groups.problems.join("\n"), "error");
  }
  if (groups.adapter) await loadAdapter(files);
  const [data] = groups.datasets;
  if (data) chooseDataset(data);
}

async function loadAdapter(files: NamedFile[]): Promise<void> {
  if (!trainer) return;
  if (!model) {
    status("adapter-status", "load a model before an adapter", "error");
    return;
  }
  try {
    const a = await trainer.loadAdapter(files);
    status("adapter-status", `${a.name}: rank ${a.r}, alpha ${a.alpha}, targets ${a.targets.join(", ")} (${a.modules} layers); training starts from it`, "ok");
    $<HTMLButtonElement>("clear-adapter").disabled = false;
  } catch (e) {
    status("adapter-status", message(e), "error");
  }
}

/** Files from a drop, folders walked, each with its path relative to the drop. */
async function droppedFiles(dt: DataTransfer): Promise<NamedFile[]> {
  const entries = Array.from(dt.items)
    .map((i) => i.webkitGetAsEntry())
    .filter((e): e is FileSystemEntry => e !== null);
  if (entries.length === 0) return Array.from(dt.files);
  const out: NamedFile[] = [];
  const walk = async (entry: FileSystemEntry): Promise<void> => {
    if (entry.isFile) {
      const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
      const path = entry.fullPath.replace(/^\//, "");
      out.push({ name: file.name, webkitRelativePath: path, size: file.size, arrayBuffer: () => file.arrayBuffer(), text: () => file.text() });
    } else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  for (const e of entries) await walk(e);
  return out;
}

async function useTinyModel(): Promise<void> {
  await loadModel((t) => t.loadModel({ url: new URL("model/", TINY), name: "tiny" }));
  if (!model) return;
  // Settings that suit a 2-layer, 48-wide toy model and its 20 short records.
  setForm({ lr: "0.01", batch: "2", seq: "16", steps: "30", rank: "4", alpha: "8" });
  if (!datasetSource) {
    datasetSource = {
      name: "data.jsonl",
      bytes: async () => {
        const r = await fetch(new URL("data.jsonl", TINY));
        if (!r.ok) throw new Error(`data.jsonl: HTTP ${r.status}`);
        return r.arrayBuffer();
      },
    };
  }
  await loadDataset();
}

// ---------------------------------------------------------------------------------------
// Options form

function formValue(name: string): string {
  const el = $<HTMLFormElement>("options").elements.namedItem(name) as HTMLInputElement | null;
  if (!el) return "";
  return el.type === "checkbox" ? String(el.checked) : el.value;
}

function setForm(values: Record<string, string>): void {
  for (const [k, v] of Object.entries(values)) {
    const el = $<HTMLFormElement>("options").elements.namedItem(k) as HTMLInputElement | null;
    if (el) el.value = v;
  }
}

/** The form as options, checked; marks the bad field and says why, or returns undefined. */
function readOptions(): TrainOptions | undefined {
  const form = $<HTMLFormElement>("options");
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const num = (k: string) => (formValue(k).trim() === "" ? Number.NaN : Number(formValue(k)));
  try {
    const o = resolveOptions(
      {
        rank: num("rank"),
        alpha: num("alpha"),
        targets: parseTargets(formValue("targets")),
        lr: num("lr"),
        steps: num("steps"),
        batch: num("batch"),
        seq: num("seq"),
        weightDecay: num("weightDecay"),
        gradClip: num("gradClip"),
        seed: num("seed"),
        shuffle: formValue("shuffle") === "true",
        readbackEvery: 1,
      },
      { nPositions: model?.nPositions },
    );
    status("options-status", "");
    return o;
  } catch (e) {
    if (e instanceof OptionError) form.querySelector(`[name=${e.field}]`)?.classList.add("invalid");
    status("options-status", message(e), "error");
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Training, chart, downloads

function resetChart(): void {
  losses[0].length = 0;
  losses[1].length = 0;
  const el = $("chart");
  chart?.destroy();
  chart = new uPlot(
    {
      width: Math.max(320, el.clientWidth || 800),
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss" }],
      series: [{ label: "step" }, { label: "loss", stroke: "#2f6fde", width: 2, points: { show: false } }],
      legend: { show: false },
    },
    losses,
    el,
  );
}

function showProgress(p: Progress): void {
  for (const l of p.logs) {
    losses[0].push(l.step);
    losses[1].push(l.loss);
  }
  chart?.setData(losses);
  const bar = $<HTMLProgressElement>("progress");
  bar.max = p.steps;
  bar.value = p.step;
  const eta = Number.isFinite(p.etaSec) ? `${Math.ceil(p.etaSec)} s left` : "";
  $("progress-text").textContent =
    `step ${p.step}/${p.steps} · loss ${p.loss.toFixed(4)} · ${Math.round(p.tokensPerSec).toLocaleString("en")} tokens/s` +
    (eta ? ` · ${eta}` : "");
}

async function finish(r: TrainResult): Promise<void> {
  const words = { done: "finished", paused: "paused", stopped: "stopped" } as const;
  $("progress-text").textContent = `${words[r.status]} at step ${r.step}/${r.steps}` + (Number.isNaN(r.loss) ? "" : ` · loss ${r.loss.toFixed(4)}`);
  await exportAdapter();
  setState(r.status);
}

async function run(start: (t: Trainer, h: Parameters<Trainer["train"]>[1]) => Promise<TrainResult>): Promise<void> {
  if (!trainer) return;
  controller = new AbortController();
  setState("training");
  try {
    const r = await start(trainer, {
      signal: controller.signal,
      onStart: (info) => {
        status("options-status", `training ${info.trainableParameters.toLocaleString("en")} adapter parameters (rank ${info.adapter.r}) on ${info.windows} sequences`, "ok");
      },
      onProgress: showProgress,
    });
    await finish(r);
  } catch (e) {
    status("options-status", message(e), "error");
    setState("failed");
  }
}

async function train(): Promise<void> {
  const o = readOptions();
  if (!o || !trainer) return;
  exported = undefined;
  updateDownloads();
  status("export-status", "");
  resetChart();
  $<HTMLProgressElement>("progress").value = 0;
  $("progress-text").textContent = "setting up the run (first steps compile the shaders)…";
  await run((t, h) => t.train(o, h));
}

async function exportAdapter(): Promise<void> {
  if (!trainer) return;
  try {
    exported = await trainer.exportAdapter();
    const size = exported.files["adapter_model.safetensors"].byteLength;
    status("export-status", `ready: adapter_config.json and adapter_model.safetensors (${formatBytes(size)})`, "ok");
  } catch (e) {
    exported = undefined;
    status("export-status", message(e), "error");
  }
  updateDownloads();
}

function updateDownloads(): void {
  $<HTMLButtonElement>("download-config").disabled = !exported;
  $<HTMLButtonElement>("download-weights").disabled = !exported;
}

function download(name: keyof AdapterExport["files"]): void {
  if (!exported) return;
  const data = exported.files[name];
  const type = name.endsWith(".json") ? "application/json" : "application/octet-stream";
  const url = URL.createObjectURL(new Blob([data as BlobPart], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------------------------------------------------------------------------------------
// Wiring

function wire(): void {
  $<HTMLInputElement>("model-files").addEventListener("change", (e) => {
    const files = Array.from((e.target as HTMLInputElement).files ?? []);
    if (files.length) void handleFiles(files);
  });
  $<HTMLInputElement>("model-folder").addEventListener("change", (e) => {
    const files = Array.from((e.target as HTMLInputElement).files ?? []);
    if (files.length) void handleFiles(files);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer) void droppedFiles(e.dataTransfer).then(handleFiles);
  });
  $("use-tiny").addEventListener("click", () => void useTinyModel());
  $<HTMLInputElement>("dataset-file").addEventListener("change", (e) => {
    const file = (e.target as HTMLInputElement).files?.[0];
    if (file) chooseDataset(file);
  });
  $<HTMLInputElement>("adapter-files").addEventListener("change", (e) => {
    const files = Array.from((e.target as HTMLInputElement).files ?? []);
    if (files.length) void loadAdapter(files);
  });
  $("clear-adapter").addEventListener("click", () => {
    void trainer?.clearAdapter().then(() => {
      status("adapter-status", "training starts from a fresh seeded adapter");
      $<HTMLButtonElement>("clear-adapter").disabled = true;
    });
  });
  // The preview counts sequences of this length; while a run is going it keeps its own data.
  $<HTMLFormElement>("options").querySelector("[name=seq]")?.addEventListener("change", () => {
    if (state !== "training" && state !== "paused") void loadDataset();
  });
  $<HTMLFormElement>("options").addEventListener("input", () => void readOptions());
  $("train").addEventListener("click", () => void train());
  $("pause").addEventListener("click", () => {
    if (!trainer) return;
    if (document.body.dataset.state === "paused") void run((t, h) => t.resume(h));
    else void trainer.pause();
  });
  $("stop").addEventListener("click", () => {
    if (document.body.dataset.state !== "paused") {
      controller?.abort();
      return;
    }
    // A paused run has no loop to interrupt: stopping just ends it.
    void trainer?.stop().then(() => {
      $("progress-text").textContent = `stopped at step ${losses[0].at(-1) ?? 0}`;
      setState("stopped");
    });
  });
  $("download-config").addEventListener("click", () => download("adapter_config.json"));
  $("download-weights").addEventListener("click", () => download("adapter_model.safetensors"));
}

async function main(): Promise<void> {
  setState("starting");
  wire();
  try {
    trainer = await Trainer.create();
    const g = trainer.info.gpu;
    $("gpu").textContent = `webtune ${trainer.info.version} · GPU: ${g.name || "(unnamed)"} (${g.backend}), shader-f16 ${g.shaderF16 ? "yes" : "no"}, max storage binding ${formatBytes(g.limits.maxStorageBufferBindingSize)}`;
    setState("idle");
  } catch (e) {
    $("gpu").textContent = `The engine could not start: ${message(e)}`;
    $("gpu").className = "status error";
    setState("failed");
  }
}

/** For the console and the browser tests: the losses of the current run, by step. */
Object.assign(globalThis, {
  webtuneDemo: { steps: () => [...losses[0]], losses: () => [...losses[1]] },
});

void main();
