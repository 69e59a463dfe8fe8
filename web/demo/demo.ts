// The demo page: pick or drop a model folder and a dataset, train a LoRA adapter (or every
// weight) with live train and eval loss, compare generations of the base and the fine-tuned
// model, download the result; a paused run survives a reload. It uses the package exactly as an
// app would (`import ... from "webtune"`).

import uPlot from "uplot";
import {
  type DatasetInfo,
  type EvalLog,
  type GenerateOptions,
  type ModelInfo,
  type NamedFile,
  OptionError,
  type Progress,
  type RunExport,
  type RunInfo,
  type SavedRun,
  type StepLog,
  type TrainOptions,
  type TrainResult,
  Trainer,
  formatBytes,
  groupFiles,
  parseTargets,
  resolveGenerateOptions,
  resolveOptions,
} from "webtune";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page lacks #${id}`);
  return el as T;
};

/** A model and dataset the dev server bundles, with settings that suit them. */
interface Bundle {
  id: "assets" | "tiny";
  label: string;
  model: URL;
  tokenizer: URL;
  data: URL;
  dataName: string;
  settings: Record<string, string>;
  prompt: string;
}

/** assets/: the small GPT-2 pretrained on Moby Dick, fine-tuned on State of the Union addresses (as `webtune demo`). */
const ASSETS: Bundle = {
  id: "assets",
  label: "Use the bundled model (pretrained on Moby Dick; fine-tunes on State of the Union addresses)",
  model: new URL("../assets/model/", location.href),
  tokenizer: new URL("../assets/model/", location.href),
  data: new URL("../assets/sotu-1961-1980.jsonl", location.href),
  dataName: "sotu-1961-1980.jsonl",
  settings: {
    mode: "lora", lr: "0.002", schedule: "cosine", warmup: "10", minLr: "0", batch: "4", seq: "128", steps: "200",
    rank: "8", alpha: "16", evalSplit: "0.1", evalEvery: "50", checkpointEvery: "20",
  },
  prompt: "Mr. Speaker, Mr. President, Members of the Congress",
};

/** tests/fixtures/tiny: a 2-layer, 48-wide toy model with a 97-character tokenizer. */
const TINY: Bundle = {
  id: "tiny",
  label: "Use the bundled tiny test model",
  model: new URL("../fixtures/tiny/model/", location.href),
  tokenizer: new URL("../fixtures/tiny/tokenizer/", location.href),
  data: new URL("../fixtures/tiny/data.jsonl", location.href),
  dataName: "data.jsonl",
  settings: { lr: "0.01", batch: "2", seq: "16", steps: "30", rank: "4", alpha: "8" },
  prompt: "the ",
};

type PageState = "starting" | "idle" | "training" | "paused" | "done" | "stopped" | "failed";

let trainer: Trainer | undefined;
let bundle: Bundle = TINY;
let model: ModelInfo | undefined;
/** Where the model came from, for a saved run's "load it again". */
let modelSource: "assets" | "tiny" | "files" = "files";
let dataset: DatasetInfo | undefined;
/** The dataset the user chose; loaded (again) whenever the model or the sequence length changes. */
let datasetSource: { bytes: () => Promise<ArrayBuffer>; name: string } | undefined;
let evalSource: { bytes: () => Promise<ArrayBuffer>; name: string } | undefined;
let runInfo: RunInfo | undefined;
let exported: RunExport | undefined;
let controller: AbortController | undefined;
let chart: uPlot | undefined;
let saved: SavedRun | null = null;
/** Tests set this: the next run pauses after that step. */
let pauseAfter: number | undefined;
/** The chart's data: step, train loss, eval loss (null where none). */
const series: [number[], number[], (number | null)[]] = [[], [], []];

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
  $<HTMLButtonElement>("generate").disabled = busy || !trainer || !model?.tokenizer;
  $<HTMLButtonElement>("resume-saved").disabled = busy || !trainer || !saved;
  $<HTMLButtonElement>("discard-saved").disabled = busy || !saved;
  for (const id of ["model-files", "model-folder", "dataset-file", "eval-file", "adapter-files", "use-tiny"]) {
    ($(id) as HTMLInputElement | HTMLButtonElement).disabled = busy;
  }
  const full = formValue("mode") === "full";
  document.querySelectorAll<HTMLElement>(".lora-only").forEach((el) => el.classList.toggle("off", full));
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
// Model, tokenizer, adapter and datasets

function describeModel(m: ModelInfo): string {
  const params = m.parameters >= 1e6 ? `${(m.parameters / 1e6).toFixed(1)}M` : `${(m.parameters / 1e3).toFixed(1)}k`;
  const tok = m.tokenizer
    ? `tokenizer: ${m.tokenizer.vocabSize.toLocaleString("en")} tokens`
    : "no tokenizer (token-id data only, no generation)";
  // grouped-query attention (fewer key/value heads) and a head_dim other than width / heads are shown
  const kv = m.nKvHead !== m.nHead ? `, ${m.nKvHead} kv head${m.nKvHead === 1 ? "" : "s"}` : "";
  const hd = m.headDim * m.nHead !== m.nEmbd ? `, head_dim ${m.headDim}` : "";
  const family = m.family === "llama" && m.modelType !== "llama" ? `${m.modelType}, Llama family` : m.modelType;
  const files = m.files > 1 ? `, ${m.files} weight files` : "";
  return (
    `${m.name}: ${m.nLayer} layers, ${m.nEmbd} wide, ${m.nHead} heads${kv}${hd}, vocab ${m.vocabSize.toLocaleString("en")}, ` +
    `${m.nPositions} positions, ${params} parameters (${family}${files}); ${tok}`
  );
}

/** Forgets the run shown on the page (a new model or dataset ends it). */
function endRun(): void {
  runInfo = undefined;
  exported = undefined;
  updateDownloads();
  status("export-status", "");
  $("gen-adapted").textContent = "";
  if (state === "paused" || state === "done" || state === "stopped") state = "idle";
}

async function loadModel(load: (t: Trainer) => Promise<ModelInfo>, source: typeof modelSource): Promise<void> {
  if (!trainer) return;
  status("model-status", "Loading the model…");
  model = undefined;
  dataset = undefined;
  endRun();
  refresh();
  try {
    model = await load(trainer);
    modelSource = source;
    status("model-status", describeModel(model), "ok");
    const seq = $<HTMLInputElement>("options").querySelector<HTMLInputElement>("[name=seq]");
    if (seq && Number(seq.value) > model.nPositions) seq.value = String(model.nPositions);
  } catch (e) {
    status("model-status", message(e), "error");
  }
  status("adapter-status", "");
  $<HTMLButtonElement>("clear-adapter").disabled = true;
  await loadDatasets();
}

/** A chat record as its template renders it, the trained spans (UTF-8 byte ranges) highlighted. */
function renderedItem(r: { text: string; spans: [number, number][] }): HTMLLIElement {
  const li = document.createElement("li");
  const bytes = new TextEncoder().encode(r.text);
  const dec = new TextDecoder();
  let at = 0;
  for (const [s, e] of r.spans) {
    li.append(dec.decode(bytes.subarray(at, s)));
    const m = document.createElement("mark");
    m.textContent = dec.decode(bytes.subarray(s, e));
    m.title = "trained on";
    li.append(m);
    at = e;
  }
  li.append(dec.decode(bytes.subarray(at)), "  (first record through the chat template; highlighted: trained on)");
  return li;
}

function showPreview(d: DatasetInfo): void {
  const list = $("dataset-preview");
  if (d.rendered) {
    list.replaceChildren(renderedItem(d.rendered));
    return;
  }
  list.replaceChildren(
    ...d.samples.map((s) => {
      const li = document.createElement("li");
      const what = s.trainedTokens < s.tokens ? `${s.tokens} tokens, ${s.trainedTokens} trained on` : `${s.tokens} tokens`;
      const ids = s.ids.join(" ") + (s.tokens > s.ids.length ? " …" : "");
      li.textContent = `${d.format === "token ids" || s.text === null ? ids : s.text}  (${what})`;
      return li;
    }),
  );
}

/** (Re)loads the chosen datasets. The previous preview stays until this one answers. */
async function loadDatasets(): Promise<void> {
  if (!trainer) return;
  const seq = Number(formValue("seq")) || 128;
  if (datasetSource) {
    if (!model) {
      status("dataset-status", `${datasetSource.name}: load a model first (token ids are checked against its vocabulary)`);
    } else {
      if (!dataset) status("dataset-status", "Reading the dataset…");
      try {
        dataset = await trainer.loadDataset(await datasetSource.bytes(), datasetSource.name, { seq });
        const d = dataset;
        status(
          "dataset-status",
          `${d.name}: ${d.format}, ${d.records.toLocaleString("en")} records, ${d.tokens.toLocaleString("en")} tokens (with an EOS after each), ` +
            `${d.windows.toLocaleString("en")} sequences of ${d.seq} tokens`,
          d.windows > 0 ? "ok" : "error",
        );
        showPreview(d);
      } catch (e) {
        dataset = undefined;
        status("dataset-status", message(e), "error");
        $("dataset-preview").replaceChildren();
      }
    }
  }
  if (evalSource && model) {
    try {
      const d = await trainer.loadEvalDataset(await evalSource.bytes(), evalSource.name, { seq });
      status("eval-status", `${d.name}: ${d.records} records, ${d.tokens} tokens, ${d.windows} sequences of ${d.seq} tokens`, "ok");
      $<HTMLButtonElement>("clear-eval").disabled = false;
    } catch (e) {
      evalSource = undefined;
      status("eval-status", message(e), "error");
    }
  }
  refresh();
}

function chooseDataset(file: NamedFile): void {
  datasetSource = { bytes: () => file.arrayBuffer(), name: file.name };
  dataset = undefined;
  endRun();
  void loadDatasets();
}

async function handleFiles(files: NamedFile[]): Promise<void> {
  const groups = groupFiles(files);
  if (groups.model) {
    const list = files;
    await loadModel((t) => t.loadModel(list), "files");
  } else if (groups.tokenizer && model && trainer) {
    try {
      const info = await trainer.loadTokenizer(files);
      model = { ...model, tokenizer: info };
      status("model-status", describeModel(model), "ok");
      await loadDatasets();
    } catch (e) {
      status("model-status", message(e), "error");
    }
  } else if (!groups.adapter && groups.datasets.length === 0) {
    status(
      "model-status",
      groups.problems[0] ??
        "no model among these files: give config.json and model.safetensors (or model.safetensors.index.json and its shards)",
      "error",
    );
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

/** The bundled model: assets/ when the server has it, else the tiny test fixture (`?bundle=tiny` or `=assets` picks one). */
async function findBundle(): Promise<Bundle> {
  const asked = new URLSearchParams(location.search).get("bundle");
  if (asked === "tiny") return TINY;
  if (asked === "assets") return ASSETS;
  try {
    const r = await fetch(new URL("config.json", ASSETS.model), { method: "HEAD" });
    return r.ok ? ASSETS : TINY;
  } catch {
    return TINY;
  }
}

async function useBundle(b: Bundle, settings = true): Promise<void> {
  await loadModel((t) => t.loadModel({ url: b.model, tokenizerUrl: b.tokenizer, name: b.id === "tiny" ? "tiny" : "model" }), b.id);
  if (!model) return;
  if (settings) {
    setForm(b.settings, $<HTMLFormElement>("options"));
    if (!$<HTMLTextAreaElement>("prompt").value) $<HTMLTextAreaElement>("prompt").value = b.prompt;
  }
  datasetSource = {
    name: b.dataName,
    bytes: async () => {
      const r = await fetch(b.data);
      if (!r.ok) throw new Error(`${b.dataName}: HTTP ${r.status}`);
      return r.arrayBuffer();
    },
  };
  await loadDatasets();
}

// ---------------------------------------------------------------------------------------
// Forms

function formValue(name: string, form: HTMLFormElement = $<HTMLFormElement>("options")): string {
  const el = form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | null;
  if (!el) return "";
  return el instanceof HTMLInputElement && el.type === "checkbox" ? String(el.checked) : el.value;
}

function setForm(values: Record<string, string>, form: HTMLFormElement): void {
  for (const [k, v] of Object.entries(values)) {
    const el = form.elements.namedItem(k) as HTMLInputElement | HTMLSelectElement | null;
    if (el instanceof HTMLInputElement && el.type === "checkbox") el.checked = v === "true";
    else if (el) el.value = v;
  }
  refresh();
}

function markInvalid(form: HTMLFormElement, e: unknown, statusId: string): void {
  if (e instanceof OptionError) form.querySelector(`[name=${e.field}]`)?.classList.add("invalid");
  status(statusId, message(e), "error");
}

/** The form as options, checked; marks the bad field and says why, or returns undefined. */
function readOptions(): TrainOptions | undefined {
  const form = $<HTMLFormElement>("options");
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const num = (k: string) => (formValue(k).trim() === "" ? Number.NaN : Number(formValue(k)));
  try {
    const o = resolveOptions(
      {
        mode: formValue("mode") as TrainOptions["mode"],
        rank: num("rank"),
        alpha: num("alpha"),
        targets: parseTargets(formValue("targets")),
        lr: num("lr"),
        schedule: formValue("schedule") as TrainOptions["schedule"],
        warmup: num("warmup"),
        minLr: num("minLr"),
        steps: num("steps"),
        batch: num("batch"),
        seq: num("seq"),
        gradAccum: num("gradAccum"),
        weightDecay: num("weightDecay"),
        gradClip: num("gradClip"),
        seed: num("seed"),
        shuffle: formValue("shuffle") === "true",
        evalSplit: num("evalSplit"),
        evalEvery: num("evalEvery"),
        checkpointEvery: num("checkpointEvery"),
        readbackEvery: 1,
      },
      { nPositions: model?.nPositions, loraTargets: model?.loraTargets, modelType: model?.modelType },
    );
    status("options-status", "");
    return o;
  } catch (e) {
    markInvalid(form, e, "options-status");
    return undefined;
  }
}

/** Fills the form with a run's settings (a resumed run's). */
function showOptions(o: Partial<TrainOptions>): void {
  const values: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || v === null || k === "readbackEvery" || k === "useInitAdapter") continue;
    values[k] = Array.isArray(v) ? v.join(", ") : String(v);
  }
  setForm(values, $<HTMLFormElement>("options"));
}

// ---------------------------------------------------------------------------------------
// Training, chart, downloads

function resetChart(history: { logs: StepLog[]; evals: EvalLog[] } = { logs: [], evals: [] }): void {
  for (const s of series) s.length = 0;
  addPoints(history.logs, history.evals);
  const el = $("chart");
  chart?.destroy();
  chart = new uPlot(
    {
      width: Math.max(320, el.clientWidth || 800),
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss" }],
      series: [
        { label: "step" },
        { label: "train loss", stroke: "#2f6fde", width: 2, points: { show: false } },
        { label: "eval loss", stroke: "#d9822b", width: 2, spanGaps: true, points: { show: true, size: 6 } },
      ],
      legend: { show: true },
    },
    series,
    el,
  );
}

function addPoints(logs: StepLog[], evals: EvalLog[]): void {
  for (const l of logs) {
    series[0].push(l.step);
    series[1].push(l.loss);
    series[2].push(null);
  }
  for (const ev of evals) {
    const i = series[0].lastIndexOf(ev.step);
    if (i >= 0) series[2][i] = ev.loss;
  }
}

function showProgress(p: Progress): void {
  addPoints(p.logs, p.evals);
  chart?.setData(series);
  const bar = $<HTMLProgressElement>("progress");
  bar.max = p.steps;
  bar.value = p.step;
  const eta = Number.isFinite(p.etaSec) ? `${Math.ceil(p.etaSec)} s left` : "";
  const ev = p.evalLoss === undefined ? "" : ` · eval loss ${p.evalLoss.toFixed(4)}`;
  const sv = p.saveError ? ` · ${p.saveError}` : p.saved === undefined ? "" : ` · saved at step ${p.saved}`;
  $("progress-text").textContent =
    `step ${p.step}/${p.steps} · loss ${p.loss.toFixed(4)}${ev} · ${Math.round(p.tokensPerSec).toLocaleString("en")} tokens/s` +
    (eta ? ` · ${eta}` : "") +
    sv;
}

async function finish(r: TrainResult): Promise<void> {
  const words = { done: "finished", paused: "paused", stopped: "stopped" } as const;
  const ev = r.evalLoss === undefined ? "" : ` · eval loss ${r.evalLoss.toFixed(4)}`;
  const sv = r.saveError ? ` · ${r.saveError}` : r.saved === undefined ? "" : ` · saved (reload-safe) at step ${r.saved}`;
  $("progress-text").textContent =
    `${words[r.status]} at step ${r.step}/${r.steps}` + (Number.isNaN(r.loss) ? "" : ` · loss ${r.loss.toFixed(4)}`) + ev + sv;
  await exportRun();
  setState(r.status);
  await refreshSaved();
}

type Start = (t: Trainer, h: Parameters<Trainer["train"]>[1]) => Promise<TrainResult>;

async function run(start: Start): Promise<void> {
  if (!trainer) return;
  controller = new AbortController();
  setState("training");
  const appData = { source: modelSource, model: model?.name, dataset: datasetSource?.name };
  try {
    const handlers: NonNullable<Parameters<Trainer["train"]>[1]> = {
      signal: controller.signal,
      appData,
      onStart: (info) => {
        runInfo = info;
        // The run now in the worker replaces any saved one (which it deletes when it starts anew).
        saved = null;
        $("resume-section").hidden = true;
        const what =
          info.mode === "full"
            ? `every weight (${info.trainableParameters.toLocaleString("en")} parameters)`
            : `${info.trainableParameters.toLocaleString("en")} adapter parameters (rank ${info.adapter?.r})`;
        const ev = info.evalTokens > 0 ? `; eval loss on ${info.evalTokens.toLocaleString("en")} held-out tokens` : "";
        const m = info.memory;
        const parts = Object.entries(m.classes).map(([k, b]) => `${k} ${formatBytes(b ?? 0)}`).join(", ");
        const mem = `; GPU memory ${formatBytes(m.totalBytes)} (${parts})`;
        status("options-status", `training ${what} on ${info.windows} sequences${ev}${mem}`, "ok");
        updateDownloads();
      },
      onProgress: showProgress,
    };
    if (pauseAfter !== undefined) handlers.pauseAfter = pauseAfter;
    pauseAfter = undefined;
    const r = await start(trainer, handlers);
    await finish(r);
  } catch (e) {
    status("options-status", message(e), "error");
    setState("failed");
    await refreshSaved();
  }
}

async function train(): Promise<void> {
  const o = readOptions();
  if (!o || !trainer) return;
  exported = undefined;
  runInfo = undefined;
  updateDownloads();
  status("export-status", "");
  $("gen-adapted").textContent = "";
  resetChart();
  $<HTMLProgressElement>("progress").value = 0;
  $("progress-text").textContent = "setting up the run (first steps compile the shaders)…";
  await run((t, h) => t.train(o, h));
}

async function exportRun(): Promise<void> {
  if (!trainer || !runInfo) return;
  try {
    exported = await trainer.export(runInfo.mode);
    const bytes =
      exported.kind === "adapter" ? exported.files["adapter_model.safetensors"] : exported.files["model.safetensors"];
    const names = Object.keys(exported.files).join(" and ");
    status("export-status", `ready: ${names} (${formatBytes(bytes.byteLength)})`, "ok");
  } catch (e) {
    exported = undefined;
    status("export-status", message(e), "error");
  }
  updateDownloads();
}

function exportNames(): [string, string] {
  return runInfo?.mode === "full" ? ["config.json", "model.safetensors"] : ["adapter_config.json", "adapter_model.safetensors"];
}

function updateDownloads(): void {
  const [config, weights] = exportNames();
  $("download-config").textContent = config;
  $("download-weights").textContent = weights;
  $<HTMLButtonElement>("download-config").disabled = !exported;
  $<HTMLButtonElement>("download-weights").disabled = !exported;
  $<HTMLButtonElement>("download-gguf").disabled = exported?.kind !== "adapter";
}

function download(which: 0 | 1): void {
  if (!exported) return;
  const name = exportNames()[which];
  const data = (exported.files as Record<string, string | Uint8Array>)[name];
  if (data === undefined) return;
  save(name, data);
}

/** The run's adapter as GGUF for llama.cpp (f32, as `webtune export-gguf`). */
async function downloadGguf(): Promise<void> {
  if (!trainer || exported?.kind !== "adapter") return;
  try {
    save("adapter.gguf", await trainer.exportGguf());
  } catch (e) {
    status("export-status", message(e), "error");
  }
}

function save(name: string, data: string | Uint8Array): void {
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
// Generation

function readGenerateOptions(): GenerateOptions | undefined {
  const form = $<HTMLFormElement>("gen-options");
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const num = (k: string) => (formValue(k, form).trim() === "" ? Number.NaN : Number(formValue(k, form)));
  try {
    return resolveGenerateOptions({
      maxNewTokens: num("maxNewTokens"),
      temperature: num("temperature"),
      topK: num("topK"),
      topP: num("topP"),
      seed: num("seed"),
      chat: (form.elements.namedItem("chat") as HTMLInputElement | null)?.checked ?? false,
    });
  } catch (e) {
    markInvalid(form, e, "gen-status");
    return undefined;
  }
}

async function generate(): Promise<void> {
  const o = readGenerateOptions();
  if (!o || !trainer) return;
  const prompt = $<HTMLTextAreaElement>("prompt").value;
  const busy = $<HTMLButtonElement>("generate");
  busy.disabled = true;
  status("gen-status", "generating…");
  try {
    const show = (id: string, r: { text: string; endOfText: boolean }) => {
      $(id).textContent = `${prompt}▌${r.text}${r.endOfText ? " ⟨end of text⟩" : ""}`;
    };
    show("gen-base", await trainer.generateWithInfo(prompt, { ...o, adapted: false }));
    if (runInfo) show("gen-adapted", await trainer.generateWithInfo(prompt, { ...o, adapted: true }));
    else $("gen-adapted").textContent = "(train first)";
    status("gen-status", `seed ${o.seed}, temperature ${o.temperature}, top-k ${o.topK}, top-p ${o.topP}; the prompt ends at ▌`, "ok");
  } catch (e) {
    status("gen-status", message(e), "error");
  }
  refresh();
}

// ---------------------------------------------------------------------------------------
// A run saved in the browser's storage

async function refreshSaved(): Promise<void> {
  if (!trainer) return;
  try {
    saved = await trainer.savedRun();
  } catch {
    saved = null;
  }
  const section = $("resume-section");
  section.hidden = !saved;
  if (saved) {
    const when = new Date(saved.savedAt).toLocaleString("en");
    $("resume-text").textContent =
      `A ${saved.mode === "full" ? "full fine-tuning" : "LoRA"} run of ${saved.model} on ${saved.dataset} was saved at step ${saved.step} of ${saved.steps} (${when}, in ${saved.storage === "opfs" ? "the origin-private file system" : "IndexedDB"}).` +
      (sourceOf(saved) === "files" ? " Load the same model and dataset, then resume." : "");
    $("resume-saved").textContent = `Resume run from step ${saved.step}`;
  }
  refresh();
}

function sourceOf(s: SavedRun): string {
  const a = s.appData as { source?: string } | undefined;
  return a?.source ?? "files";
}

async function resumeSaved(): Promise<void> {
  if (!trainer || !saved) return;
  const s = saved;
  status("resume-status", "");
  const src = sourceOf(s);
  if ((src === "assets" || src === "tiny") && (modelSource !== src || !dataset)) {
    await useBundle(src === "assets" ? ASSETS : TINY, false);
  }
  if (!model || !dataset) {
    status("resume-status", `load the run's model (${s.model}) and dataset (${s.dataset}) first`, "error");
    return;
  }
  setState("training"); // (busy from here: the run is being set up)
  showOptions(s.options);
  await loadDatasets(); // the preview at the run's sequence length
  exported = undefined;
  updateDownloads();
  resetChart(s.history);
  $("progress-text").textContent = `resuming at step ${s.step}/${s.steps}…`;
  await run(async (t, h) => {
    try {
      return await t.resumeSaved(h ?? {});
    } catch (e) {
      status("resume-status", message(e), "error");
      throw e;
    }
  });
}

// ---------------------------------------------------------------------------------------
// Wiring

function wire(): void {
  for (const id of ["model-files", "model-folder"]) {
    $<HTMLInputElement>(id).addEventListener("change", (e) => {
      const files = Array.from((e.target as HTMLInputElement).files ?? []);
      if (files.length) void handleFiles(files);
    });
  }
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
  $("use-tiny").addEventListener("click", () => void useBundle(bundle));
  $<HTMLInputElement>("dataset-file").addEventListener("change", (e) => {
    const file = (e.target as HTMLInputElement).files?.[0];
    if (file) chooseDataset(file);
  });
  $<HTMLInputElement>("eval-file").addEventListener("change", (e) => {
    const file = (e.target as HTMLInputElement).files?.[0];
    if (!file) return;
    evalSource = { bytes: () => file.arrayBuffer(), name: file.name };
    void loadDatasets();
  });
  $("clear-eval").addEventListener("click", () => {
    evalSource = undefined;
    void trainer?.clearEvalDataset().then(() => {
      status("eval-status", "");
      $<HTMLButtonElement>("clear-eval").disabled = true;
    });
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
    if (state !== "training" && state !== "paused") void loadDatasets();
  });
  $<HTMLFormElement>("options").addEventListener("input", () => {
    void readOptions();
    refresh();
  });
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
    // A paused run has no loop to interrupt: stopping just ends it (and drops its checkpoint).
    void trainer?.stop().then(async () => {
      $("progress-text").textContent = `stopped at step ${series[0].at(-1) ?? 0}`;
      setState("stopped");
      await refreshSaved();
    });
  });
  $("generate").addEventListener("click", () => void generate());
  $("resume-saved").addEventListener("click", () => void resumeSaved());
  $("discard-saved").addEventListener("click", () => {
    void trainer?.discardSaved().then(refreshSaved);
  });
  $("download-config").addEventListener("click", () => download(0));
  $("download-weights").addEventListener("click", () => download(1));
  $("download-gguf").addEventListener("click", () => void downloadGguf());
}

async function main(): Promise<void> {
  setState("starting");
  wire();
  try {
    trainer = await Trainer.create();
    const g = trainer.info.gpu;
    const store = trainer.info.features.checkpoints;
    $("gpu").textContent =
      `webtune ${trainer.info.version} · GPU: ${g.name || "(unnamed)"} (${g.backend}), shader-f16 ${g.shaderF16 ? "yes" : "no"}${g.f16BaseWeights ? " (base weights kept in f16)" : ""}, ` +
      `max storage binding ${formatBytes(g.limits.maxStorageBufferBindingSize)} · runs saved in ${store === "opfs" ? "OPFS" : store}`;
    bundle = await findBundle();
    $("use-tiny").textContent = bundle.label;
    resetChart();
    setState("idle");
    await refreshSaved();
  } catch (e) {
    $("gpu").textContent = `The engine could not start: ${message(e)}`;
    $("gpu").className = "status error";
    setState("failed");
  }
}

/** For the console and the browser tests: the current run's losses by step, and a pause hook. */
Object.assign(globalThis, {
  webtuneDemo: {
    steps: () => [...series[0]],
    losses: () => [...series[1]],
    evals: () => series[0].flatMap((s, i) => (series[2][i] === null ? [] : [{ step: s, loss: series[2][i] }])),
    pauseAfter: (step: number) => {
      pauseAfter = step;
    },
    bundle: () => bundle.id,
    /** For the tests: the engine's worker fails as a crashed one does (its "error" event). */
    crashWorker: (message: string) => {
      const worker = (trainer as unknown as { worker?: Worker } | undefined)?.worker;
      worker?.dispatchEvent(new ErrorEvent("error", { message }));
      return worker !== undefined;
    },
  },
});

void main();
