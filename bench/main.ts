/**
 * `deno task bench`: dense against SparQ attention across sequence lengths and batch sizes on
 * this machine's GPU; writes `out/bench/<run-id>.jsonl` point by point and, at the end, the HTML
 * report beside it.
 *
 * @module
 */
import { totalmem } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import {
  choiceOption,
  type Io,
  nonNegativeNumberOption,
  parseOptions,
  positiveNumberOption,
  processIo,
  runCommand,
} from "../compiler/cli.ts";
import { loadModel } from "../compiler/load_model.ts";
import type { ModelConfig } from "../compiler/model_config.ts";
import { TARGETS, withL2 } from "../compiler/target.ts";
import { UserError } from "../compiler/user_error.ts";
import { writeReport } from "../reports/write_report.ts";
import { adapterLine, type Gpu, openGpu } from "../runtime/device.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { L2Scrub } from "../runtime/l2_scrub.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { decodeGroups, measureDecodeGroup } from "./decode.ts";
import { measureGroup } from "./measure.ts";
import {
  type DecodeLine,
  type PointLine,
  readRun,
  type ResultLine,
  type RunHeader,
  RunWriter,
  type SweepOptions,
  toCsv,
} from "./results.ts";
import { measureRoofline } from "./roofline.ts";
import { sweepGroups } from "./sweep.ts";

const HELP = `Usage: deno task bench [options]

Runs dense against SparQ attention across sequence lengths and batch sizes on this machine's
GPU, times every call with timestamp queries, and writes out/bench/<run-id>.jsonl (one line per
point, flushed as measured) and the HTML report out/bench/<run-id>.html.

Options (lists are comma-separated):
  --model LIST        presets or config.json paths (GPU default: llama2-7b,llama3-8b)
  --seq LIST          context lengths (GPU default: 1k,2k,4k,8k,16k,32k,64k,128k; k = 1024)
  --batch LIST        batch sizes (GPU default: 1,4,16,64)
  --method LIST       dense, sparq (default both)
  --r LIST            SparQ query components (default 16,32,64)
  --k LIST            SparQ positions kept (default 128)
  --kv-dtype f16|f32  KV cache type (default f16)
  --data realistic|gaussian
                      data the timings run on (default realistic; errors use both)
  --memory-budget GIB memory the sweep may use (default: the H100's 78.6, system memory / 2 on
                      a software adapter, else 8)
  --l2 MIB            the GPU's L2 cache, which WebGPU does not report (default: 50 on an H100,
                      else 0: unknown); SparQ at batch 1 reads the next matmul's weights into it
                      while its last workgroups select and gather
  --quick             a short sweep: llama2-7b; S 4k, 32k; B 1, 16; dense and SparQ r=32
  --decode LIST       time whole decode steps of these models (presets or config.json paths)
                      instead of attention calls: GPU time per step, tokens/s, bytes per step
                      (weights + KV), bandwidth, attention's share, and generation with tokens
                      read back every step and every N steps (GPU defaults: S 4k,16k,32k; B 1;
                      SparQ r=32 k=128)
  --weights PATH      with --decode: a Hugging Face checkpoint (folder or .safetensors) to load
                      instead of seeded random weights (timings do not depend on the values)
  --weight-dtype f16|f32
                      with --decode: weight type (default f16)
  --generate N        with --decode: tokens generated to time the loop (default 32; 0: none)
  --resume RUN        continue an interrupted run (its .jsonl path or run id) with its options
  --csv               also write out/bench/<run-id>.csv
  --out DIR           output folder (default out/bench)
  -h, --help          this text

On a software adapter (no GPU) the default is a small sweep that finishes in about a minute
or two, and the report says in its title that the figures come from a CPU.

Examples:
  deno task bench
  deno task bench --model llama3-8b --seq 4096,32768 --batch 1,16 --r 32
  deno task bench --decode llama2-7b --seq 16k,32k --batch 1
  deno task bench --resume out/bench/20261124-120000-nvidia-h100.jsonl`;

const OPTIONS = {
  model: { type: "string" },
  seq: { type: "string" },
  batch: { type: "string" },
  method: { type: "string" },
  r: { type: "string" },
  k: { type: "string" },
  "kv-dtype": { type: "string" },
  data: { type: "string" },
  "memory-budget": { type: "string" },
  l2: { type: "string" },
  quick: { type: "boolean" },
  decode: { type: "string" },
  weights: { type: "string" },
  "weight-dtype": { type: "string" },
  generate: { type: "string" },
  resume: { type: "string" },
  csv: { type: "boolean" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** A comma-separated list of whole numbers, "k" meaning ×1024. */
function numberList(name: string, raw: string | undefined): number[] | undefined {
  if (raw === undefined) return undefined;
  const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UserError(`${name} needs at least one value`);
  return items.map((item) => {
    const match = /^(\d+)(k?)$/i.exec(item);
    const value = match ? Number(match[1]) * (match[2] ? 1024 : 1) : NaN;
    if (!(value >= 1) || !Number.isSafeInteger(value)) {
      throw new UserError(`${name}: '${item}' is not a positive whole number (e.g. 4096 or 4k)`);
    }
    return value;
  });
}

function defaultsFor(
  gpu: Gpu,
  quick: boolean,
  decode: boolean,
): Omit<SweepOptions, "memoryBudget" | "kvDtype" | "data"> {
  if (decode) {
    const cpu = gpu.info.isFallbackAdapter;
    return {
      models: [],
      seqs: cpu ? [256, 1024] : [4096, 16384, 32768],
      batches: [1],
      methods: ["dense", "sparq"],
      rs: [cpu ? 16 : 32],
      ks: [cpu ? 64 : 128],
    };
  }
  if (quick) {
    return {
      models: ["llama2-7b"],
      seqs: [4096, 32768],
      batches: [1, 16],
      methods: ["dense", "sparq"],
      rs: [32],
      ks: [128],
    };
  }
  if (gpu.info.isFallbackAdapter) {
    return {
      models: ["llama2-7b", "llama3-8b"],
      seqs: [256, 1024],
      batches: [1, 2],
      methods: ["dense", "sparq"],
      rs: [16, 32],
      ks: [64],
    };
  }
  return {
    models: ["llama2-7b", "llama3-8b"],
    seqs: [1, 2, 4, 8, 16, 32, 64, 128].map((k) => k * 1024),
    batches: [1, 4, 16, 64],
    methods: ["dense", "sparq"],
    rs: [16, 32, 64],
    ks: [128],
  };
}

function defaultBudget(gpu: Gpu): number {
  if (gpu.info.isFallbackAdapter) return totalmem() / 2;
  if (/H100/i.test(gpu.info.description)) return TARGETS.get("h100")!.memoryBudget;
  return 8 * 2 ** 30;
}

/** The sparqc commit: $SPARQC_COMMIT (for copies without git history), else git's HEAD. */
async function gitCommit(): Promise<string> {
  const given = Deno.env.get("SPARQC_COMMIT");
  if (given) return given;
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

function runIdFor(gpu: Gpu): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  const name = (gpu.info.description || gpu.info.vendor || "gpu").toLowerCase()
    .replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 32);
  return `${stamp}-${name}`;
}

/**
 * Runs the bench command with `args`; returns the exit code.
 *
 * @example
 * ```ts
 * import { benchCommand } from "./main.ts";
 * // await benchCommand(["--quick"]);
 * ```
 */
export function benchCommand(args: string[], io: Io = processIo): Promise<number> {
  return runCommand("bench", io, async () => {
    const { values, positionals } = parseOptions("bench", args, OPTIONS);
    if (values.help) {
      io.out(HELP);
      return 0;
    }
    if (positionals.length) throw new UserError(`unexpected argument '${positionals[0]}'`);
    const outDir = values.out ?? join("out", "bench");
    const resumed = values.resume ? await openResume(values.resume, outDir) : undefined;
    if (resumed) {
      const given = [
        "model",
        "seq",
        "batch",
        "method",
        "r",
        "k",
        "kv-dtype",
        "data",
        "quick",
        "memory-budget",
        "l2",
        "decode",
        "weights",
        "weight-dtype",
        "generate",
      ]
        .filter((o) => values[o as keyof typeof values] !== undefined);
      if (given.length) {
        throw new UserError(`--resume continues a run with its own options; drop --${given[0]}`);
      }
    }
    const methods = values.method?.split(",").map((m) =>
      choiceOption("--method", m.trim(), ["dense", "sparq"] as const)!
    );
    const kvDtype = choiceOption("--kv-dtype", values["kv-dtype"], ["f16", "f32"] as const);
    const data = choiceOption("--data", values.data, ["realistic", "gaussian"] as const);
    const budget = positiveNumberOption("--memory-budget", values["memory-budget"]);
    const l2 = nonNegativeNumberOption("--l2", values.l2);
    const seqs = numberList("--seq", values.seq);
    const batches = numberList("--batch", values.batch);
    const rs = numberList("--r", values.r);
    const ks = numberList("--k", values.k);
    const modelNames = values.model?.split(",").map((m) => m.trim()).filter(Boolean);
    const decodeModels = values.decode?.split(",").map((m) => m.trim()).filter(Boolean);
    if (decodeModels && modelNames) {
      throw new UserError("--decode names its models; drop --model");
    }
    if (decodeModels?.length === 0) throw new UserError("--decode needs at least one model");
    if (decodeModels && values.quick) throw new UserError("--quick is for attention sweeps");
    for (const option of ["weights", "weight-dtype", "generate"] as const) {
      if (values[option] !== undefined && !decodeModels) {
        throw new UserError(`--${option} needs --decode`);
      }
    }
    const weightDtype = choiceOption(
      "--weight-dtype",
      values["weight-dtype"],
      [
        "f16",
        "f32",
      ] as const,
    );
    const generateSteps = values.generate === undefined ? 32 : Number(values.generate);
    if (!Number.isSafeInteger(generateSteps) || generateSteps < 0) {
      throw new UserError(`--generate: '${values.generate}' is not a whole number ≥ 0`);
    }

    const gpu = await openGpu();
    io.err(`sparqc bench: ${adapterLine(gpu)}`);
    if (!gpu.features.has("timestamp-query")) {
      throw new UserError("this adapter has no timestamp-query; the bench needs GPU timestamps");
    }
    let options: SweepOptions;
    if (resumed) {
      options = resumed.header.options;
    } else {
      const d = defaultsFor(gpu, values.quick ?? false, decodeModels !== undefined);
      options = {
        models: decodeModels ?? modelNames ?? d.models,
        seqs: seqs ?? d.seqs,
        batches: batches ?? d.batches,
        methods: methods ?? d.methods,
        rs: rs ?? d.rs,
        ks: ks ?? d.ks,
        kvDtype: kvDtype ?? "f16",
        data: data ?? "realistic",
        memoryBudget: budget !== undefined ? budget * 2 ** 30 : defaultBudget(gpu),
        l2Bytes: l2 !== undefined ? Math.floor(l2 * 2 ** 20) : deviceTarget(gpu, 1).l2Bytes ?? 0,
        ...(decodeModels
          ? {
            decode: {
              weights: values.weights ?? null,
              weightDtype: weightDtype ?? "f16",
              generateSteps,
            },
          }
          : {}),
      };
      if (!options.methods.includes("dense")) {
        throw new UserError(
          "--method must include dense: SparQ's speedup and error are against it",
        );
      }
    }
    if (options.decode?.weightDtype === "f16" && !gpu.features.has("shader-f16")) {
      if (resumed || weightDtype === "f16") {
        throw new UserError("this adapter has no shader-f16 for f16 weights");
      }
      io.err("sparqc bench: note: this adapter has no shader-f16; the weights are f32");
      options = { ...options, decode: { ...options.decode, weightDtype: "f32" } };
    }
    if (options.kvDtype === "f16" && !gpu.features.has("shader-f16")) {
      if (resumed || kvDtype === "f16") {
        throw new UserError("this adapter has no shader-f16 for an f16 KV cache");
      }
      io.err("sparqc bench: note: this adapter has no shader-f16; the KV cache is f32");
      options = { ...options, kvDtype: "f32" };
    }
    const models = new Map<string, ModelConfig>();
    for (const name of options.models) models.set(name, (await loadModel(name)).config);
    // Runs from before the L2 prefetch record no L2: resumed, they go on without it.
    const target = withL2(
      { ...deviceTarget(gpu, options.memoryBudget), name: "adapter" },
      options.l2Bytes ?? 0,
    );

    let header: RunHeader;
    let writer: RunWriter;
    let path: string;
    if (resumed) {
      header = resumed.header;
      path = resumed.path;
      writer = await RunWriter.open(
        path,
        resumed.tornTail ? [header, ...resumed.lines] : undefined,
      );
      io.err(`sparqc bench: resuming ${path}: ${resumed.lines.length} points done`);
    } else {
      io.err("sparqc bench: calibrating timestamp ticks and measuring the read ceiling");
      const calibration = await calibrateTicks(gpuProbe(gpu.device, gpu.info.isFallbackAdapter), {
        minShortNs: gpu.info.isFallbackAdapter ? 20e6 : 50e6,
      });
      const roofline = await measureRoofline(gpu, calibration.nsPerTick);
      const runId = runIdFor(gpu);
      header = {
        type: "header",
        format: "sparqc-bench",
        version: 1,
        runId,
        createdAt: new Date().toISOString(),
        adapter: {
          vendor: gpu.info.vendor,
          architecture: gpu.info.architecture,
          device: gpu.info.device,
          description: gpu.info.description,
          isFallbackAdapter: gpu.info.isFallbackAdapter,
          features: [...gpu.features],
        },
        deno: Deno.version.deno,
        commit: await gitCommit(),
        options,
        nsPerTick: calibration.nsPerTick,
        roofline,
      };
      path = join(outDir, `${runId}.jsonl`);
      await Deno.mkdir(outDir, { recursive: true });
      writer = await RunWriter.open(path);
      await writer.append(header);
      io.err(
        `sparqc bench: read ceiling ${
          roofline.gbps.toFixed(roofline.gbps < 10 ? 2 : 0)
        } GB/s; writing ${path}`,
      );
    }

    const done = new Set(resumed?.lines.map((l) => l.key) ?? []);
    const recordedDense = new Map(
      (resumed?.lines ?? []).filter((l): l is PointLine =>
        l.type === "point" && l.method === "dense"
      )
        .map((l) => [l.key, l]),
    );
    const recordedDecodeDense = new Map(
      (resumed?.lines ?? []).filter((l): l is DecodeLine =>
        l.type === "decode" && l.method === "dense"
      ).map((l) => [l.key, l]),
    );
    const groups = options.decode
      ? decodeGroups(sweepGroups(models, options))
      : sweepGroups(models, options);
    const total = groups.reduce((n, g) => n + 1 + g.sparq.length, 0);
    let count = done.size;
    const onInterrupt = () => {
      io.err(
        `\nsparqc bench: interrupted; ${count} of ${total} points are in ${path}; continue with --resume ${path}`,
      );
      Deno.exit(130);
    };
    const emit = async (line: ResultLine) => {
      await writer.append(line);
      count++;
      io.err(`sparqc bench: [${count}/${total}] ${line.key}: ${progressText(line)}`);
    };
    // Made before any point's warm-up: attention calls are timed after a cold-L2 pass.
    const scrub = options.decode ? undefined : L2Scrub.forTiming(gpu);
    Deno.addSignalListener("SIGINT", onInterrupt);
    try {
      for (const group of groups) {
        if (options.decode) {
          const log = (text: string) => io.err(`sparqc bench: ${text}`);
          await measureDecodeGroup(
            { gpu, target, header, models, seed: 20261124, log },
            group,
            done,
            recordedDecodeDense,
            emit,
          );
        } else {
          await measureGroup(
            { gpu, target, header, data: options.data, seed: 20261124, scrub },
            group,
            done,
            recordedDense,
            emit,
          );
        }
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onInterrupt);
      writer.close();
      scrub?.destroy();
      gpu.device.destroy();
    }
    const run = await readRun(path);
    const html = path.replace(/\.jsonl$/, ".html");
    await writeReport(run, html);
    io.out(`wrote ${path} (${run.lines.length} points) and ${html}`);
    if (values.csv) {
      const csv = path.replace(/\.jsonl$/, ".csv");
      await writeFileAtomic(csv, toCsv(run.lines));
      io.out(`wrote ${csv}`);
    }
    return 0;
  });
}

/** One progress line's text for a measured or skipped point. */
function progressText(line: ResultLine): string {
  const gbps = (x: number) => x.toFixed(x < 10 ? 2 : 0);
  if (line.type === "skipped") return `skipped: ${line.reason}`;
  const vsDense = line.method === "sparq"
    ? `, ${line.speedup.toFixed(2)}× dense (${line.theoreticalSpeedup.toFixed(2)}× possible)`
    : "";
  if (line.type === "point") {
    return `${(line.time.median / 1e3).toFixed(1)} µs` +
      (vsDense || `, ${gbps(line.achievedGBps)} GB/s`);
  }
  const generation = line.generation.map((g) =>
    `${g.tokensPerSecond.toFixed(1)} tokens/s reading every ${g.readEvery}`
  );
  return `${(line.time.median / 1e6).toFixed(3)} ms/step, ${
    line.tokensPerSecond.toFixed(1)
  } tokens/s, ${gbps(line.achievedGBps)} GB/s (${line.rooflinePercent.toFixed(0)}% of ceiling)` +
    `, attention ${(100 * line.attentionShare).toFixed(0)}%${vsDense}` +
    (generation.length ? `; generation ${generation.join(", ")}` : "");
}

async function openResume(spec: string, outDir: string) {
  const path = spec.endsWith(".jsonl") ? spec : join(outDir, `${spec}.jsonl`);
  return { path, ...await readRun(path) };
}

if (import.meta.main) Deno.exit(await benchCommand(Deno.args));
