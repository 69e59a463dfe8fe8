// Training and generation options: defaults (the CLI's), and the checks the engine makes, done
// early so a form can show them next to the field. The engine checks again; its word is final.

/** Every setting of a training run. Names are the CLI's flags in camelCase. */
export interface TrainOptions {
  /** "lora" trains a LoRA adapter; "full" fine-tunes every weight (export: config.json + model.safetensors). */
  mode: "lora" | "full";
  /** LoRA rank r. */
  rank: number;
  /** LoRA alpha; the update is scaled by alpha / rank. */
  alpha: number;
  /** PEFT target modules, suffix-matched: "all-linear" (every linear layer); GPT-2: c_attn, c_proj (attention and MLP), c_fc, attn.c_proj, mlp.c_proj; Llama family: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj. */
  targets: string[];
  /** Start from the adapter given to `loadAdapter` (its rank, alpha and targets win) when there is one. */
  useInitAdapter: boolean;
  /** AdamW peak learning rate. */
  lr: number;
  /** Learning-rate schedule after warmup (Hugging Face's): constant, linear or cosine decay to `minLr`. */
  schedule: "constant" | "linear" | "cosine";
  /** Warmup steps: a linear ramp from 0 to `lr`. */
  warmup: number;
  /** Floor of the linear and cosine decay (in [0, lr]). */
  minLr: number;
  /** Optimizer steps. */
  steps: number;
  /** Sequences per micro-batch. */
  batch: number;
  /** Tokens per sequence (at most the model's n_positions). */
  seq: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  gradAccum: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Clip the global gradient norm to this; 0 turns clipping off. */
  gradClip: number;
  /** Fixes the LoRA init, the shuffling and the held-out split. */
  seed: number;
  /** Visit the windows in a seeded random order per epoch (false: file order). */
  shuffle: boolean;
  /** Hold this fraction of the dataset's records out for the eval loss (0 = none; or load an eval dataset). */
  evalSplit: number;
  /** With eval data: evaluate every N steps (and at the end); 0 = only at the end. */
  evalEvery: number;
  /** Save a checkpoint (browser storage) every N steps; 0 = only when paused. */
  checkpointEvery: number;
  /** Steps between loss readbacks (progress reports); 1 reports every step. */
  readbackEvery: number;
}

/** PEFT's shorthand for every linear layer of the model (the default). */
export const ALL_LINEAR = "all-linear";

/**
 * PEFT target names of the families webtune trains (GPT-2's and the Llama family's linear layers,
 * by their last part or their path in a block), for checks before a model is loaded; a loaded
 * model's own list (`ModelInfo.loraTargets`) is what counts.
 */
export const LORA_TARGETS: readonly string[] = [
  "c_attn",
  "c_proj",
  "c_fc",
  "attn.c_attn",
  "attn.c_proj",
  "mlp.c_fc",
  "mlp.c_proj",
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
  ALL_LINEAR,
];

export const SCHEDULES: readonly TrainOptions["schedule"][] = ["constant", "linear", "cosine"];
export const MODES: readonly TrainOptions["mode"][] = ["lora", "full"];

/** The engine's defaults (Rust's `RunSpec::default()`, which `webtune train` has too), plus a readback
 * every 4 steps; web/test/unit-options.test.mjs checks them against the wasm build's `defaultOptions()`. */
export const DEFAULT_OPTIONS: Readonly<TrainOptions> = Object.freeze({
  mode: "lora",
  rank: 8,
  alpha: 16,
  targets: [ALL_LINEAR],
  useInitAdapter: true,
  lr: 2e-4,
  schedule: "constant",
  warmup: 0,
  minLr: 0,
  steps: 100,
  batch: 8,
  seq: 128,
  gradAccum: 1,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  gradClip: 1,
  seed: 0,
  shuffle: true,
  evalSplit: 0,
  evalEvery: 0,
  checkpointEvery: 0,
  readbackEvery: 4,
} satisfies TrainOptions);

/** A bad option; `field` names it (e.g. for a form to mark). */
export class OptionError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = "OptionError";
    this.field = field;
  }
}

/** Integer fields and their least value. */
const INTEGER_FIELDS: [keyof TrainOptions, number][] = [
  ["rank", 1],
  ["steps", 1],
  ["batch", 1],
  ["seq", 1],
  ["gradAccum", 1],
  ["seed", 0],
  ["warmup", 0],
  ["evalEvery", 0],
  ["checkpointEvery", 0],
  ["readbackEvery", 1],
];
const NUMBER_FIELDS = ["alpha", "lr", "minLr", "weightDecay", "beta1", "beta2", "eps", "gradClip", "evalSplit"] as const;
const BOOLEAN_FIELDS = ["useInitAdapter", "shuffle"] as const;

/** What the model allows, when known: a sequence may not exceed n_positions; LoRA targets are its own. */
export interface ModelLimits {
  nPositions?: number;
  /** The loaded model's valid PEFT target names (`ModelInfo.loraTargets`). */
  loraTargets?: readonly string[];
  /** Its model_type, for messages. */
  modelType?: string;
}

/** Refuses keys that are not options (a typo would otherwise be ignored). */
function checkKeys(given: object, defaults: object): void {
  const known = new Set<string>(Object.keys(defaults));
  for (const key of Object.keys(given)) {
    if (!known.has(key)) {
      throw new OptionError("unknown", `unknown option '${key}'; known options are ${[...known].join(", ")}`);
    }
  }
}

/**
 * Defaults filled in, every field checked. Throws an `OptionError` naming the first bad
 * field, with the engine's wording ("lr -1 is invalid: it must be > 0").
 */
export function resolveOptions(given: Partial<TrainOptions> = {}, limits: ModelLimits = {}): TrainOptions {
  checkKeys(given, DEFAULT_OPTIONS);
  const o: TrainOptions = { ...DEFAULT_OPTIONS, targets: [...DEFAULT_OPTIONS.targets] };
  for (const [key, value] of Object.entries(given)) {
    if (value !== undefined) (o as unknown as Record<string, unknown>)[key] = value;
  }
  for (const [f, least] of INTEGER_FIELDS) {
    const v = o[f];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < least) {
      throw new OptionError(f, `${f} ${String(v)} is invalid: it must be an integer >= ${least}`);
    }
  }
  for (const f of NUMBER_FIELDS) {
    if (typeof o[f] !== "number" || !Number.isFinite(o[f])) {
      throw new OptionError(f, `${f} ${String(o[f])} is invalid: it must be a finite number`);
    }
  }
  for (const f of BOOLEAN_FIELDS) {
    if (typeof o[f] !== "boolean") throw new OptionError(f, `${f} must be true or false, found ${String(o[f])}`);
  }
  const range = (f: keyof TrainOptions, ok: boolean, want: string) => {
    if (!ok) throw new OptionError(f, `${f} ${String(o[f])} is invalid: it must be ${want}`);
  };
  range("mode", MODES.includes(o.mode), '"lora" or "full"');
  range("schedule", SCHEDULES.includes(o.schedule), "constant, linear or cosine");
  range("alpha", o.alpha > 0, "> 0");
  range("lr", o.lr > 0, "> 0");
  range("minLr", o.minLr >= 0 && o.minLr <= o.lr, "in [0, lr]");
  range("weightDecay", o.weightDecay >= 0, ">= 0");
  range("beta1", o.beta1 >= 0 && o.beta1 < 1, "in [0, 1)");
  range("beta2", o.beta2 >= 0 && o.beta2 < 1, "in [0, 1)");
  range("eps", o.eps > 0, "> 0");
  range("gradClip", o.gradClip >= 0, ">= 0 (0 turns clipping off)");
  range("evalSplit", o.evalSplit >= 0 && o.evalSplit < 1, "in [0, 1) (0 = no held-out split)");
  if (limits.nPositions !== undefined && o.seq > limits.nPositions) {
    throw new OptionError("seq", `seq ${o.seq} is longer than the model's n_positions ${limits.nPositions}`);
  }
  if (o.mode === "lora") {
    const valid = limits.loraTargets ?? LORA_TARGETS;
    if (!Array.isArray(o.targets) || o.targets.length === 0) {
      throw new OptionError("targets", `give at least one LoRA target; valid targets are ${valid.join(", ")}`);
    }
    for (const t of o.targets) {
      if (typeof t !== "string" || !valid.includes(t)) {
        const model = limits.modelType ? `${limits.modelType} ` : "";
        throw new OptionError("targets", `LoRA target '${String(t)}' matches no ${model}linear layer; valid targets are ${valid.join(", ")}`);
      }
    }
  }
  return o;
}

/** Parses a comma-separated target list as typed in a form ("c_attn, c_fc"). */
export function parseTargets(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** How text is generated (`webtune generate`'s options and defaults). */
export interface GenerateOptions {
  /** New tokens at most (fewer at the model's n_positions or after the end-of-text token). */
  maxNewTokens: number;
  /** Softmax temperature; 0 = greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** Nucleus sampling: keep the most likely tokens up to this probability mass; 1 = off. */
  topP: number;
  /** Fixes the sampling: the same seed gives the same text on the same device. */
  seed: number;
  /** Generate with the current run's model (adapter or fine-tuned weights); false = the base model. */
  adapted: boolean;
  /** Stop after the end-of-text token. */
  stopAtEos: boolean;
  /** The prompt is a user message: formatted with the tokenizer's chat template (its generation prompt);
   * generation stops at the template's end-of-turn token too. Needs a tokenizer with a chat template. */
  chat: boolean;
}

export const DEFAULT_GENERATE_OPTIONS: Readonly<GenerateOptions> = Object.freeze({
  maxNewTokens: 64,
  temperature: 0.8,
  topK: 50,
  topP: 0.95,
  seed: 0,
  adapted: true,
  stopAtEos: true,
  chat: false,
} satisfies GenerateOptions);

/** Defaults filled in and checked, as `resolveOptions` does for training. */
export function resolveGenerateOptions(given: Partial<GenerateOptions> = {}): GenerateOptions {
  checkKeys(given, DEFAULT_GENERATE_OPTIONS);
  const o: GenerateOptions = { ...DEFAULT_GENERATE_OPTIONS };
  for (const [key, value] of Object.entries(given)) {
    if (value !== undefined) (o as unknown as Record<string, unknown>)[key] = value;
  }
  for (const [f, least] of [
    ["maxNewTokens", 1],
    ["topK", 0],
    ["seed", 0],
  ] as const) {
    const v = o[f];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < least) {
      throw new OptionError(f, `${f} ${String(v)} is invalid: it must be an integer >= ${least}`);
    }
  }
  if (typeof o.temperature !== "number" || !Number.isFinite(o.temperature) || o.temperature < 0) {
    throw new OptionError("temperature", `temperature ${String(o.temperature)} is invalid: it must be >= 0 (0 = greedy)`);
  }
  if (typeof o.topP !== "number" || !(o.topP > 0 && o.topP <= 1)) {
    throw new OptionError("topP", `topP ${String(o.topP)} is invalid: it must be in (0, 1] (1 = off)`);
  }
  for (const f of ["adapted", "stopAtEos", "chat"] as const) {
    if (typeof o[f] !== "boolean") throw new OptionError(f, `${f} must be true or false, found ${String(o[f])}`);
  }
  return o;
}
