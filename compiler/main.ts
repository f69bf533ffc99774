/**
 * `deno task compile <preset|config.json> [options]`: compiles one decode step of a model into a
 * plan and writes `plan.json` with one `.wgsl` file per kernel.
 *
 * @module
 */
import { join } from "node:path";
import { buildDecodeGraph } from "./build_graph.ts";
import { type BuildOptions, checkOptions, defaultOptions } from "./build_options.ts";
import {
  choiceOption,
  integerOption,
  type Io,
  nonNegativeNumberOption,
  parseOptions,
  positiveNumberOption,
  processIo,
  runCommand,
} from "./cli.ts";
import { compile } from "./compile.ts";
import { loadModel } from "./load_model.ts";
import { PRESETS } from "./presets.ts";
import { summaryLines } from "./summary.ts";
import { type Target, TARGETS, withBudget, withL2 } from "./target.ts";
import { tuningProblems } from "./tuning.ts";
import type { ModelConfig } from "./model_config.ts";
import { adapterLine, openGpu } from "../runtime/device.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { TuneCache } from "../runtime/tune_cache.ts";
import { tune } from "../runtime/tuner.ts";
import { UserError } from "./user_error.ts";
import { writeDirAtomic } from "./atomic_write.ts";

const HELP = `Usage: deno task compile <model> [options]

Compiles one transformer decode step of <model> into a plan: plan.json and one .wgsl file
per kernel, and prints a summary (graph, kernels, memory, bytes per step dense vs SparQ).

<model>  a preset (${[...PRESETS.keys()].join(", ")})
         or a path to a Hugging Face config.json (Llama, Mistral, Gemma, GPT-NeoX, Qwen2)

Options:
  --attention dense|sparq   attention method (default sparq)
  --r N                     SparQ: query components used to rank positions, 1..head_dim
                            (default head_dim/4)
  --k N                     SparQ: positions attended exactly (default 128)
  --local-window N          SparQ: newest positions always kept, counted in k (default 0)
  --batch N                 sequences decoded together (default 1)
  --max-seq N               KV cache capacity in positions (default: the model's context)
  --kv-dtype f16|f32        KV cache element type (default f16)
  --weight-dtype f16|f32    weight element type (default f16)
  --target NAME             ${[...TARGETS.keys()].join(", ")} (default h100)
  --memory-budget GIB       memory the plan may use, overriding the target's
  --l2 MIB                  the GPU's L2 cache (WebGPU does not report it; default: the target's,
                            50 for h100, or the adapter's with --tune where sparqc knows it);
                            SparQ at batch 1 reads the next matmul's weights into it while its
                            last workgroups select and gather. 0: none
  --out DIR                 output folder (default out/plans/<model>-<attention>)
  --tune                    tune launch parameters on this machine's adapter: measure each
                            tunable kernel's candidates (or reuse the cache) and compile for
                            this adapter's limits
  --no-tune                 use the kernels' built-in launch parameters (the default)
  --tune-cache PATH         tuning cache file (default out/tune-cache.json)
  -h, --help                this text

Example:
  deno task compile llama3-8b --attention sparq --r 32 --k 128 --max-seq 32768`;

const OPTIONS = {
  attention: { type: "string" },
  r: { type: "string" },
  k: { type: "string" },
  "local-window": { type: "string" },
  batch: { type: "string" },
  "max-seq": { type: "string" },
  "kv-dtype": { type: "string" },
  "weight-dtype": { type: "string" },
  target: { type: "string" },
  "memory-budget": { type: "string" },
  l2: { type: "string" },
  out: { type: "string" },
  tune: { type: "boolean" },
  "no-tune": { type: "boolean" },
  "tune-cache": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

async function checkOutDir(dir: string): Promise<void> {
  try {
    if (!(await Deno.stat(dir)).isDirectory) {
      throw new UserError(`--out ${dir} exists and is not a folder; choose another path`);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** The default tuning cache. */
export const DEFAULT_TUNE_CACHE = join("out", "tune-cache.json");

/**
 * Tunes the plan's kernels on the local adapter: the target becomes the adapter's limits (with
 * the named target's memory budget), ticks are calibrated, and each tunable problem is measured
 * or taken from the cache. Progress goes to stderr.
 */
async function tuneForAdapter(
  config: ModelConfig,
  options: BuildOptions,
  named: Target,
  cachePath: string | undefined,
  io: Io,
) {
  const gpu = await openGpu();
  try {
    io.err(`sparqc compile: ${adapterLine(gpu)}`);
    if (!gpu.features.has("timestamp-query")) {
      throw new UserError(
        "this adapter has no timestamp-query, which --tune needs to measure GPU time; " +
          "compile without --tune",
      );
    }
    if (options.kvDtype === "f16" && !gpu.features.has("shader-f16")) {
      io.err("sparqc compile: note: this adapter has no shader-f16; the KV cache is f32");
      options = { ...options, kvDtype: "f32" };
    }
    const target = { ...deviceTarget(gpu, named.memoryBudget), name: "adapter" };
    const cache = await TuneCache.open(
      cachePath ?? DEFAULT_TUNE_CACHE,
      (line) => io.err(`sparqc compile: warning: ${line}`),
    );
    const problems = tuningProblems(buildDecodeGraph(config, options));
    const result = await tune(gpu, problems, {
      target,
      cache,
      reps: gpu.info.isFallbackAdapter ? 5 : 30,
      progress: (line) => io.err(`sparqc compile: ${line}`),
      nsPerTick: async () => {
        io.err("sparqc compile: calibrating GPU timestamp ticks against the wall clock");
        const calibration = await calibrateTicks(
          gpuProbe(gpu.device, gpu.info.isFallbackAdapter),
          { minShortNs: gpu.info.isFallbackAdapter ? 20e6 : 50e6 },
        );
        io.err(
          `sparqc compile: ${calibration.measuredNsPerTick.toFixed(3)} ns per tick measured; ` +
            `using ${
              calibration.nsPerTick === 1 ? "1 (ticks are nanoseconds)" : calibration.nsPerTick
            }`,
        );
        return calibration.nsPerTick;
      },
    });
    return { target, tuning: result, options };
  } finally {
    gpu.device.destroy();
  }
}

/**
 * Runs the compile command with `args`; returns the exit code.
 *
 * @example
 * ```ts
 * import { compileCommand } from "./main.ts";
 * const code = await compileCommand(["tiny-llama", "--out", "out/plans/tiny"]);
 * ```
 */
export function compileCommand(args: string[], io: Io = processIo): Promise<number> {
  return runCommand("compile", io, async () => {
    const { values, positionals } = parseOptions("compile", args, OPTIONS);
    if (values.help) {
      io.out(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError(
        positionals.length === 0
          ? "name a model: a preset or a config.json path (see 'deno task compile --help')"
          : `expected one model, got ${positionals.length}: ${positionals.join(" ")}`,
      );
    }
    const method = choiceOption("--attention", values.attention, ["dense", "sparq"] as const) ??
      "sparq";
    const r = integerOption("--r", values.r, 1);
    const k = integerOption("--k", values.k, 1);
    const localWindow = integerOption("--local-window", values["local-window"], 0);
    if (method === "dense" && (r ?? k ?? localWindow) !== undefined) {
      throw new UserError("--r, --k and --local-window apply to --attention sparq only");
    }
    const batch = integerOption("--batch", values.batch, 1);
    const maxSeq = integerOption("--max-seq", values["max-seq"], 1);
    const kvDtype = choiceOption("--kv-dtype", values["kv-dtype"], ["f16", "f32"] as const);
    const weightDtype = choiceOption(
      "--weight-dtype",
      values["weight-dtype"],
      ["f16", "f32"] as const,
    );
    const targetName = values.target ?? "h100";
    let target = TARGETS.get(targetName);
    if (!target) {
      throw new UserError(
        `unknown --target '${targetName}' (known: ${[...TARGETS.keys()].join(", ")})`,
      );
    }
    const budget = positiveNumberOption("--memory-budget", values["memory-budget"]);
    if (budget !== undefined) target = withBudget(target, budget * 1024 ** 3);
    const l2Mib = nonNegativeNumberOption("--l2", values.l2);
    const l2Bytes = l2Mib === undefined ? undefined : l2Mib * 1024 ** 2;
    if (l2Bytes !== undefined) target = withL2(target, l2Bytes);

    const { config, warnings } = await loadModel(positionals[0]);
    warnings.forEach((w) => io.err(`sparqc compile: note: ${w}`));
    const defaults = defaultOptions(config, method);
    let options: BuildOptions = {
      batch: batch ?? defaults.batch,
      maxSeq: maxSeq ?? defaults.maxSeq,
      kvDtype: kvDtype ?? defaults.kvDtype,
      weightDtype: weightDtype ?? defaults.weightDtype,
      attention: defaults.attention.kind === "sparq"
        ? {
          kind: "sparq",
          r: r ?? defaults.attention.r,
          k: k ?? defaults.attention.k,
          localWindow: localWindow ?? 0,
        }
        : defaults.attention,
    };
    if (options.maxSeq > config.maxPositionEmbeddings) {
      io.err(
        `sparqc compile: note: --max-seq ${options.maxSeq} is beyond ${config.name}'s trained ` +
          `context of ${config.maxPositionEmbeddings}`,
      );
    }
    const outDir = values.out ??
      join("out", "plans", `${config.name.replace(/[^A-Za-z0-9._-]+/g, "_")}-${method}`);
    await checkOutDir(outDir);

    if (values.tune && values["no-tune"]) throw new UserError("give --tune or --no-tune, not both");
    if (values["tune-cache"] && !values.tune) throw new UserError("--tune-cache needs --tune");
    checkOptions(config, options);
    let tuning;
    if (values.tune) {
      const tuned = await tuneForAdapter(config, options, target, values["tune-cache"], io);
      // The adapter's own target, with the stated L2 where --l2 gave one.
      target = l2Bytes === undefined ? tuned.target : withL2(tuned.target, l2Bytes);
      tuning = tuned.tuning;
      options = tuned.options;
    }

    const started = performance.now();
    const plan = compile(config, options, target, tuning);
    const compileMs = performance.now() - started;

    const files = new Map<string, string>([["plan.json", JSON.stringify(plan, null, 1) + "\n"]]);
    for (const kernel of plan.kernels) files.set(kernel.file, kernel.source);
    await writeDirAtomic(outDir, files);

    for (const line of summaryLines(plan)) io.out(line);
    io.out(
      `  wrote         ${join(outDir, "plan.json")} and ${plan.kernels.length} .wgsl files ` +
        `(compiled in ${compileMs.toFixed(0)} ms)`,
    );
    return 0;
  });
}

if (import.meta.main) Deno.exit(await compileCommand(Deno.args));
