// Training options: defaults (the CLI's), and the checks the engine makes, done early so a
// form can show them next to the field. The engine checks again; its word is final.

/** Every setting of a training run. Names are the CLI's flags in camelCase. */
export interface TrainOptions {
  /** LoRA rank r. */
  rank: number;
  /** LoRA alpha; the update is scaled by alpha / rank. */
  alpha: number;
  /** PEFT target modules, suffix-matched: c_attn, c_proj (attention and MLP), c_fc, attn.c_proj, mlp.c_proj. */
  targets: string[];
  /** Start from the adapter given to `loadAdapter` (its rank, alpha and targets win) when there is one. */
  useInitAdapter: boolean;
  /** AdamW learning rate (constant). */
  lr: number;
  /** Optimizer steps. */
  steps: number;
  /** Sequences per batch. */
  batch: number;
  /** Tokens per sequence (at most the model's n_positions). */
  seq: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Clip the global gradient norm to this; 0 turns clipping off. */
  gradClip: number;
  /** Fixes the LoRA init and the shuffling. */
  seed: number;
  /** Visit the windows in a seeded random order per epoch (false: file order). */
  shuffle: boolean;
  /** Steps between loss readbacks (progress reports); 1 reports every step. */
  readbackEvery: number;
}

/** PEFT target names that match GPT-2's linear layers. */
export const LORA_TARGETS: readonly string[] = [
  "c_attn",
  "c_proj",
  "c_fc",
  "attn.c_attn",
  "attn.c_proj",
  "mlp.c_fc",
  "mlp.c_proj",
];

/** The CLI's defaults (`webtune train --help`), plus a readback every 4 steps. */
export const DEFAULT_OPTIONS: Readonly<TrainOptions> = Object.freeze({
  rank: 8,
  alpha: 16,
  targets: ["c_attn", "c_proj", "c_fc"],
  useInitAdapter: true,
  lr: 2e-4,
  steps: 100,
  batch: 8,
  seq: 128,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  gradClip: 1,
  seed: 0,
  shuffle: true,
  readbackEvery: 4,
});

/** A bad option; `field` names it (e.g. for a form to mark). */
export class OptionError extends Error {
  readonly field: keyof TrainOptions | "unknown";
  constructor(field: keyof TrainOptions | "unknown", message: string) {
    super(message);
    this.name = "OptionError";
    this.field = field;
  }
}

const INTEGER_FIELDS = ["rank", "steps", "batch", "seq", "seed", "readbackEvery"] as const;
const NUMBER_FIELDS = ["alpha", "lr", "weightDecay", "beta1", "beta2", "eps", "gradClip"] as const;
const BOOLEAN_FIELDS = ["useInitAdapter", "shuffle"] as const;

/** What the model allows, when known (a sequence may not exceed n_positions). */
export interface ModelLimits {
  nPositions?: number;
}

/**
 * Defaults filled in, every field checked. Throws an `OptionError` naming the first bad
 * field, with the engine's wording ("lr -1 is invalid: it must be > 0").
 */
export function resolveOptions(given: Partial<TrainOptions> = {}, limits: ModelLimits = {}): TrainOptions {
  const known = new Set<string>(Object.keys(DEFAULT_OPTIONS));
  for (const key of Object.keys(given)) {
    if (!known.has(key)) {
      throw new OptionError("unknown", `unknown option '${key}'; known options are ${[...known].join(", ")}`);
    }
  }
  const o: TrainOptions = { ...DEFAULT_OPTIONS, targets: [...DEFAULT_OPTIONS.targets] };
  for (const [key, value] of Object.entries(given)) {
    if (value !== undefined) (o as unknown as Record<string, unknown>)[key] = value;
  }
  for (const f of INTEGER_FIELDS) {
    const v = o[f];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < (f === "seed" ? 0 : 1)) {
      throw new OptionError(f, `${f} ${String(v)} is invalid: it must be an integer >= ${f === "seed" ? 0 : 1}`);
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
  range("alpha", o.alpha > 0, "> 0");
  range("lr", o.lr > 0, "> 0");
  range("weightDecay", o.weightDecay >= 0, ">= 0");
  range("beta1", o.beta1 >= 0 && o.beta1 < 1, "in [0, 1)");
  range("beta2", o.beta2 >= 0 && o.beta2 < 1, "in [0, 1)");
  range("eps", o.eps > 0, "> 0");
  range("gradClip", o.gradClip >= 0, ">= 0 (0 turns clipping off)");
  if (limits.nPositions !== undefined && o.seq > limits.nPositions) {
    throw new OptionError("seq", `seq ${o.seq} is longer than the model's n_positions ${limits.nPositions}`);
  }
  if (!Array.isArray(o.targets) || o.targets.length === 0) {
    throw new OptionError("targets", `give at least one LoRA target; valid targets are ${LORA_TARGETS.join(", ")}`);
  }
  for (const t of o.targets) {
    if (typeof t !== "string" || !LORA_TARGETS.includes(t)) {
      throw new OptionError(
        "targets",
        `LoRA target '${String(t)}' matches no GPT-2 linear layer; valid targets are ${LORA_TARGETS.join(", ")}`,
      );
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
