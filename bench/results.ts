/**
 * The bench's results: a JSONL file, `out/bench/<run-id>.jsonl`. The first line is the run's
 * header (adapter, Deno version, git commit, date, options, the measured read ceiling); each
 * later line is one point, appended and flushed as soon as it is measured, so an interrupted
 * run keeps every completed point and `--resume` continues it.
 *
 * @module
 */
import { z } from "zod";
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import { UserError, zodErrorLine } from "../compiler/user_error.ts";
import { Stats } from "../runtime/stats.ts";

/** The sweep's options, as recorded in the header (and reused by `--resume`). */
export const SweepOptions = z.strictObject({
  models: z.array(z.string()).min(1),
  seqs: z.array(z.int().positive()).min(1),
  batches: z.array(z.int().positive()).min(1),
  methods: z.array(z.enum(["dense", "sparq"])).min(1),
  rs: z.array(z.int().positive()).min(1),
  ks: z.array(z.int().positive()).min(1),
  kvDtype: z.enum(["f16", "f32"]),
  data: z.enum(["realistic", "gaussian"]),
  memoryBudget: z.number().positive(),
  /**
   * The L2 bytes the plans were compiled for (0: none known, so no kernel read weights ahead into
   * it). Absent from runs before the L2 prefetch (2026-11-24).
   */
  l2Bytes: z.int().nonnegative().optional(),
  /** Set for `--decode` runs: whole decode steps instead of attention calls. */
  decode: z.strictObject({
    /** A Hugging Face checkpoint the weights came from; null: seeded random weights. */
    weights: z.string().nullable(),
    weightDtype: z.enum(["f16", "f32"]),
    /** Tokens generated per point to time the generation loop (0: not timed). */
    generateSteps: z.int().nonnegative(),
  }).optional(),
});
/** The sweep's options. */
export type SweepOptions = z.infer<typeof SweepOptions>;

/** The header line. */
export const RunHeader = z.strictObject({
  type: z.literal("header"),
  format: z.literal("sparqc-bench"),
  version: z.literal(1),
  runId: z.string(),
  createdAt: z.string(),
  adapter: z.strictObject({
    vendor: z.string(),
    architecture: z.string(),
    device: z.string(),
    description: z.string(),
    isFallbackAdapter: z.boolean(),
    features: z.array(z.string()),
  }),
  deno: z.string(),
  commit: z.string(),
  options: SweepOptions,
  nsPerTick: z.number().positive(),
  roofline: z.strictObject({ bytes: z.int().positive(), time: Stats, gbps: z.number().positive() }),
});
/** The header line. */
export type RunHeader = z.infer<typeof RunHeader>;

const pointFields = {
  /** Unique within a run: model, batch, context, method and its parameters. */
  key: z.string(),
  model: z.string(),
  heads: z.int().positive(),
  kvHeads: z.int().positive(),
  headDim: z.int().positive(),
  batch: z.int().positive(),
  seq: z.int().positive(),
  method: z.enum(["dense", "sparq"]),
  r: z.int().positive().optional(),
  k: z.int().positive().optional(),
  kvDtype: z.enum(["f16", "f32"]),
};

/** A measured point. Times in ns; bandwidths in GB/s. */
export const PointLine = z.strictObject({
  type: z.literal("point"),
  ...pointFields,
  /** GPU time of one attention call (all its dispatches), from timestamp queries. */
  time: Stats,
  /** SparQ: time of each stage (its shards together). */
  stages: z.record(z.string(), Stats),
  /** Bytes one call moves by the transfer model of SPARQ.md. */
  bytes: z.number().positive(),
  /** bytes / median time. */
  achievedGBps: z.number().nonnegative(),
  /** The dense call's bytes / this median time (= speedup × dense bandwidth). */
  denseEquivalentGBps: z.number().nonnegative(),
  /** achieved / the run's read ceiling, in percent. */
  rooflinePercent: z.number().nonnegative(),
  /** Dense median / this median, at the same point (1 for dense). */
  speedup: z.number().positive(),
  /** Dense bytes / these bytes: the speedup the byte ratio allows. */
  theoreticalSpeedup: z.number().positive(),
  /** SparQ's output against dense attention on the same data, relative L2, per data mode. */
  errorVsDense: z.record(z.string(), z.number()),
  /** Buffers the KV cache was split over (more than one past a binding's limit). */
  shards: z.int().positive(),
  /**
   * Bytes of other data read through the L2 before each timed repetition (0: none, on a
   * software adapter). Absent from runs before 2026-11-24, which rotated `inputSets` copies of
   * the inputs instead — and so timed SparQ warm wherever its bytes, not its inputs, fit the L2.
   */
  scrubL2Bytes: z.int().nonnegative().optional(),
  /** Legacy (see `scrubL2Bytes`): input copies rotated for a cold L2. */
  inputSets: z.int().positive().optional(),
});
/** A measured point. */
export type PointLine = z.infer<typeof PointLine>;

/** A point that was not run, and why. */
export const SkippedLine = z.strictObject({
  type: z.literal("skipped"),
  ...pointFields,
  reason: z.string(),
});
/** A point that was not run. */
export type SkippedLine = z.infer<typeof SkippedLine>;

/** Wall-clock time of a generation loop that reads tokens back every `readEvery` steps. */
export const GenerationTiming = z.strictObject({
  readEvery: z.int().positive(),
  steps: z.int().positive(),
  /** The median run's wall-clock time. */
  wallMs: z.number().nonnegative(),
  tokensPerSecond: z.number().nonnegative(),
  /** Every run's wall-clock time (absent from runs before 2026-11-24, which ran once). */
  runsMs: z.array(z.number().nonnegative()).optional(),
});
/** Wall-clock time of a generation loop. */
export type GenerationTiming = z.infer<typeof GenerationTiming>;

/** A measured decode step (`--decode`). Times in ns; bandwidths in GB/s. */
export const DecodeLine = z.strictObject({
  type: z.literal("decode"),
  ...pointFields,
  layers: z.int().positive(),
  weightDtype: z.enum(["f16", "f32"]),
  /** GPU time of one whole decode step (one compute pass), from timestamp queries. */
  time: Stats,
  /** GPU time per kind of kernel in a step (attention, kv_append, matmul, other). */
  stages: z.record(z.string(), Stats),
  /**
   * GPU time per kernel in a step (all its calls; one pass per run of equal kernels, so pass
   * overheads are included) and its calls per step.
   */
  kernels: z.record(z.string(), z.strictObject({ ns: z.number(), calls: z.int().positive() }))
    .optional(),
  /** Attention's share of the stage total. */
  attentionShare: z.number().nonnegative(),
  /** batch / median step time. */
  tokensPerSecond: z.number().nonnegative(),
  /** Bytes one step moves: every weight once (embedding rows only) and the KV traffic. */
  bytes: z.strictObject({ weights: z.number().nonnegative(), kv: z.number().nonnegative() }),
  achievedGBps: z.number().nonnegative(),
  rooflinePercent: z.number().nonnegative(),
  /** Dense median / this median at the same point (1 for dense). */
  speedup: z.number().positive(),
  /** Dense step bytes / these: the speedup the byte ratio allows. */
  theoreticalSpeedup: z.number().positive(),
  /** Tokens read back every step, and every N steps with the feed on the GPU. */
  generation: z.array(GenerationTiming),
});
/** A measured decode step. */
export type DecodeLine = z.infer<typeof DecodeLine>;

/** Any line after the header. */
export const ResultLine = z.discriminatedUnion("type", [PointLine, SkippedLine, DecodeLine]);
/** Any line after the header. */
export type ResultLine = z.infer<typeof ResultLine>;

/** A run read back. */
export interface Run {
  header: RunHeader;
  lines: ResultLine[];
  /** True when the last line was cut short (an interrupted write) and was dropped. */
  tornTail: boolean;
}

/**
 * Reads a run's JSONL; a torn last line (an interrupted write) is dropped, any other fault is
 * a {@link UserError} naming the line.
 *
 * @example
 * ```ts
 * import { readRun } from "./results.ts";
 * // const { header, lines } = await readRun("out/bench/20261124-0430-h100.jsonl");
 * ```
 */
export async function readRun(path: string): Promise<Run> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "no such file" : String(error);
    throw new UserError(`cannot read ${path}: ${reason}`);
  }
  const rows = text.split("\n");
  const complete = text.endsWith("\n");
  if (rows.at(-1) === "") rows.pop();
  let tornTail = false;
  const parsed: unknown[] = [];
  for (const [i, row] of rows.entries()) {
    try {
      parsed.push(JSON.parse(row));
    } catch {
      if (i === rows.length - 1 && !complete && i > 0) {
        tornTail = true;
        break;
      }
      throw new UserError(`${path}:${i + 1}: not a JSON line`);
    }
  }
  if (parsed.length === 0) throw new UserError(`${path} is empty; expected a sparqc bench run`);
  const header = RunHeader.safeParse(parsed[0]);
  if (!header.success) {
    throw new UserError(zodErrorLine(`${path}:1 is not a sparqc bench header`, header.error));
  }
  const lines = parsed.slice(1).map((raw, i) => {
    const line = ResultLine.safeParse(raw);
    if (!line.success) throw new UserError(zodErrorLine(`${path}:${i + 2}`, line.error));
    return line.data;
  });
  return { header: header.data, lines, tornTail };
}

/** Appends JSON lines to a run file, each flushed to disk before the call returns. */
export class RunWriter {
  private constructor(private readonly file: Deno.FsFile) {}

  /**
   * Opens `path` for appending. With `rewrite`, the file is first replaced atomically by
   * exactly these lines (used on resume to drop a torn tail).
   */
  static async open(path: string, rewrite?: unknown[]): Promise<RunWriter> {
    if (rewrite) await writeFileAtomic(path, rewrite.map((l) => JSON.stringify(l) + "\n").join(""));
    const file = await Deno.open(path, { append: true, create: true });
    return new RunWriter(file);
  }

  /** Appends one line and flushes it. */
  async append(line: RunHeader | ResultLine): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify(line) + "\n");
    let written = 0;
    while (written < bytes.length) written += await this.file.write(bytes.subarray(written));
    await this.file.syncData();
  }

  close(): void {
    this.file.close();
  }
}

/**
 * The run's points as CSV, one row per line (skipped points with their reason).
 *
 * @example
 * ```ts
 * import { toCsv } from "./results.ts";
 * // await Deno.writeTextFile("run.csv", toCsv(run.lines));
 * ```
 */
export function toCsv(lines: ResultLine[]): string {
  const columns = [
    "key",
    "model",
    "heads",
    "kvHeads",
    "headDim",
    "batch",
    "seq",
    "method",
    "r",
    "k",
    "kvDtype",
    "status",
    "median_us",
    "p10_us",
    "p90_us",
    "n",
    "bytes",
    "achieved_GBps",
    "dense_equivalent_GBps",
    "roofline_percent",
    "speedup",
    "theoretical_speedup",
    "error_realistic",
    "error_gaussian",
    "tokens_per_second",
    "attention_share",
    "reason",
  ];
  const quote = (value: unknown) => {
    const text = value === undefined ? "" : String(value);
    return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const rows = lines.map((l) => {
    const p = l.type === "point" ? l : undefined;
    const measured = l.type === "skipped" ? undefined : l;
    const us = (ns?: number) => ns === undefined ? undefined : (ns / 1000).toFixed(3);
    return [
      l.key,
      l.model,
      l.heads,
      l.kvHeads,
      l.headDim,
      l.batch,
      l.seq,
      l.method,
      l.r,
      l.k,
      l.kvDtype,
      l.type === "skipped" ? "skipped" : "measured",
      us(measured?.time.median),
      us(measured?.time.p10),
      us(measured?.time.p90),
      measured?.time.n,
      l.type === "decode" ? l.bytes.weights + l.bytes.kv : p?.bytes,
      measured?.achievedGBps.toFixed(1),
      p?.denseEquivalentGBps.toFixed(1),
      measured?.rooflinePercent.toFixed(1),
      measured?.speedup.toFixed(3),
      measured?.theoreticalSpeedup.toFixed(3),
      p?.errorVsDense.realistic,
      p?.errorVsDense.gaussian,
      l.type === "decode" ? l.tokensPerSecond.toFixed(1) : undefined,
      l.type === "decode" ? l.attentionShare.toFixed(3) : undefined,
      l.type === "skipped" ? l.reason : undefined,
    ].map(quote).join(",");
  });
  return [columns.join(","), ...rows].join("\n") + "\n";
}
