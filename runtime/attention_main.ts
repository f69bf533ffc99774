/**
 * `deno task attention --input in.safetensors --out out.safetensors [options]`: runs one dense
 * or SparQ attention call on the user's own tensors (for example dumped from a real model) and,
 * with `--check`, compares it with the float64 reference.
 *
 * @module
 */
import { totalmem } from "node:os";
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import {
  choiceOption,
  integerOption,
  type Io,
  parseOptions,
  processIo,
  runCommand,
} from "../compiler/cli.ts";
import type { AttentionMethod } from "../compiler/ir.ts";
import { UserError } from "../compiler/user_error.ts";
import { compareIndices, maxAbsError, relativeL2 } from "../kernels/compare.ts";
import { randomProblem } from "../kernels/random_problem.ts";
import { type AttentionProblem, denseReference, sparqReference } from "../kernels/reference.ts";
import { openGpu } from "./device.ts";
import { deviceTarget } from "./device_target.ts";
import { runAttention } from "./run_attention.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  type SafeTensor,
  type TensorToWrite,
  tensorValues,
} from "./safetensors.ts";

const HELP = `Usage: deno task attention --input IN.safetensors [--out OUT.safetensors] [options]

Runs one attention call on the GPU on your own tensors and writes the result.

Input tensors (F32 or F16):
  q        [B, H, d]
  k, v     [B, Hkv, S, d]      (H a multiple of Hkv; d a multiple of 4)
  lengths  [B] (I32, optional) valid positions per sequence, 1..S (default S)
Output tensors:
  y        [B, H, d] F32
  indices  [B, Hkv, min(k, S)] I32, SparQ only: selected positions, ascending, -1 where fewer
  alpha    [B, H] F32, SparQ only: score mass kept

Options:
  --method dense|sparq    attention method (default sparq)
  --r N                   SparQ: query components used to rank positions (default d/4)
  --k N                   SparQ: positions attended exactly (default 128)
  --local-window N        SparQ: newest positions always kept, counted in k (default 0)
  --kv-dtype f16|f32      KV storage on the GPU (default f16; f32 where shader-f16 is missing)
  --check                 compare with the float64 reference (and SparQ with dense attention)
  --out FILE              output file (required unless --check)
  --write-example FILE    write a seeded random input (B=2, H=32, Hkv=8, S=4096, d=128,
                          ragged lengths, F16) to FILE and exit
  -h, --help              this text

Example:
  deno task attention --write-example out/example.safetensors
  deno task attention --input out/example.safetensors --out out/y.safetensors --method sparq --r 16 --k 64 --check

  deno task attention --input dump.safetensors --out y.safetensors --method sparq --r 16 --k 64 --check`;

const OPTIONS = {
  input: { type: "string" },
  out: { type: "string" },
  method: { type: "string" },
  r: { type: "string" },
  k: { type: "string" },
  "local-window": { type: "string" },
  "kv-dtype": { type: "string" },
  check: { type: "boolean" },
  "write-example": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * A seeded example input: B=2, H=32, Hkv=8, S=4096, d=128, F16, ragged lengths.
 *
 * @example
 * ```ts
 * import { exampleInput } from "./attention_main.ts";
 * exampleInput(1).get("q")!.shape; // [2, 32, 128]
 * ```
 */
export function exampleInput(seed: number): Map<string, TensorToWrite> {
  const p = randomProblem({
    batch: 2,
    heads: 32,
    kvHeads: 8,
    seqCapacity: 4096,
    headDim: 128,
    ragged: true,
    seed,
    kvDtype: "f16",
  });
  return new Map<string, TensorToWrite>([
    ["q", { dtype: "F16", shape: [2, 32, 128], values: p.q }],
    ["k", { dtype: "F16", shape: [2, 8, 4096, 128], values: p.k }],
    ["v", { dtype: "F16", shape: [2, 8, 4096, 128], values: p.v }],
    ["lengths", { dtype: "I32", shape: [2], values: p.lengths }],
  ]);
}

/** Reads and checks the input file into a problem (values as the file holds them). */
async function readProblem(
  path: string,
): Promise<AttentionProblem & { q: Float64Array; k: Float64Array; v: Float64Array }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "no such file" : String(error);
    throw new UserError(`cannot read ${path}: ${reason}`);
  }
  const tensors = decodeSafetensors(bytes, path);
  const need = (name: string, rank: number): SafeTensor => {
    const t = tensors.get(name);
    if (!t) {
      throw new UserError(
        `${path}: no tensor '${name}' (has: ${[...tensors.keys()].join(", ") || "none"})`,
      );
    }
    if (t.shape.length !== rank) {
      throw new UserError(
        `${path}: '${name}' is [${t.shape.join(", ")}], expected ${rank} dimensions`,
      );
    }
    if (t.dtype !== "F32" && t.dtype !== "F16") {
      throw new UserError(`${path}: '${name}' is ${t.dtype}; q, k and v must be F32 or F16`);
    }
    return t;
  };
  const q = need("q", 3);
  const k = need("k", 4);
  const v = need("v", 4);
  const [B, H, d] = q.shape;
  const [kB, Hkv, S, kd] = k.shape;
  const mismatch = (what: string) => {
    throw new UserError(
      `${path}: ${what} (q [${q.shape.join(", ")}], k [${k.shape.join(", ")}], ` +
        `v [${v.shape.join(", ")}])`,
    );
  };
  if (kB !== B || kd !== d) mismatch("k must be [B, Hkv, S, d] for q [B, H, d]");
  if (v.shape.join() !== k.shape.join()) mismatch("v must have k's shape");
  if (Hkv === 0 || H % Hkv !== 0) mismatch(`H = ${H} is not a multiple of Hkv = ${Hkv}`);
  if (d % 4 !== 0 || d === 0) mismatch(`d = ${d} must be a positive multiple of 4`);
  if (S === 0 || B === 0) mismatch("B and S must be at least 1");
  let lengths = Array<number>(B).fill(S);
  const raw = tensors.get("lengths");
  if (raw) {
    if (raw.shape.join() !== String(B) || !["I32", "I64"].includes(raw.dtype)) {
      throw new UserError(
        `${path}: 'lengths' must be I32 [${B}], got ${raw.dtype} [${raw.shape.join(", ")}]`,
      );
    }
    lengths = Array.from(tensorValues(raw, "lengths"));
    const bad = lengths.findIndex((L) => !(L >= 1 && L <= S));
    if (bad >= 0) {
      throw new UserError(`${path}: lengths[${bad}] = ${lengths[bad]} is outside 1..${S}`);
    }
  }
  return {
    batch: B,
    heads: H,
    kvHeads: Hkv,
    seqCapacity: S,
    headDim: d,
    q: tensorValues(q, "q").map(Math.fround),
    k: tensorValues(k, "k"),
    v: tensorValues(v, "v"),
    lengths,
  };
}

/**
 * Runs the attention command with `args`; returns the exit code.
 *
 * @example
 * ```ts
 * import { attentionCommand } from "./attention_main.ts";
 * // await attentionCommand(["--input", "in.safetensors", "--check"]);
 * ```
 */
export function attentionCommand(args: string[], io: Io = processIo): Promise<number> {
  return runCommand("attention", io, async () => {
    const { values, positionals } = parseOptions("attention", args, OPTIONS);
    if (values.help) {
      io.out(HELP);
      return 0;
    }
    if (positionals.length) throw new UserError(`unexpected argument '${positionals[0]}'`);
    if (values["write-example"]) {
      await writeFileAtomic(values["write-example"], encodeSafetensors(exampleInput(2024)));
      io.out(
        `wrote ${values["write-example"]}: q [2, 32, 128], k and v [2, 8, 4096, 128], lengths`,
      );
      return 0;
    }
    if (!values.input) throw new UserError("--input IN.safetensors is required");
    if (!values.out && !values.check) {
      throw new UserError("give --out OUT.safetensors, or --check to only compare");
    }
    const method = choiceOption("--method", values.method, ["dense", "sparq"] as const) ?? "sparq";
    const r = integerOption("--r", values.r, 1);
    const k = integerOption("--k", values.k, 1);
    const localWindow = integerOption("--local-window", values["local-window"], 0);
    if (method === "dense" && (r ?? k ?? localWindow) !== undefined) {
      throw new UserError("--r, --k and --local-window apply to --method sparq only");
    }
    let kvDtype = choiceOption("--kv-dtype", values["kv-dtype"], ["f16", "f32"] as const);

    const p = await readProblem(values.input);
    const attention: AttentionMethod = method === "dense" ? { kind: "dense" } : {
      kind: "sparq",
      r: r ?? Math.max(1, p.headDim / 4),
      k: k ?? 128,
      localWindow: localWindow ?? 0,
    };
    if (attention.kind === "sparq") {
      if (attention.r > p.headDim) {
        throw new UserError(`--r ${attention.r} is outside 1..${p.headDim} (the head dimension d)`);
      }
      if (attention.localWindow > attention.k) {
        throw new UserError(
          `--local-window ${attention.localWindow} is larger than --k ${attention.k}`,
        );
      }
    }

    const gpu = await openGpu();
    io.err(
      `sparqc attention: adapter ${gpu.info.description || gpu.info.vendor}` +
        `${gpu.info.isFallbackAdapter ? " (software, on the CPU)" : ""}`,
    );
    if (!gpu.features.has("shader-f16") && kvDtype !== "f32") {
      if (kvDtype === "f16") {
        throw new UserError(
          "--kv-dtype f16 needs the shader-f16 feature, which this adapter lacks",
        );
      }
      io.err("sparqc attention: note: this adapter has no shader-f16; KV is stored as f32");
      kvDtype = "f32";
    }
    kvDtype ??= "f16";
    // The GPU holds K and V in kvDtype; round them here so the reference sees the same values.
    const round = kvDtype === "f16" ? Math.f16round : Math.fround;
    const problem = { ...p, k: p.k.map(round), v: p.v.map(round) };

    // WebGPU does not report GPU memory; the software adapter lives in system memory.
    const budget = gpu.info.isFallbackAdapter ? totalmem() : Number.MAX_SAFE_INTEGER;
    const out = await runAttention(
      gpu,
      deviceTarget(gpu, budget),
      problem,
      attention,
      kvDtype,
    );
    gpu.device.destroy();

    if (values.out) {
      const { batch: B, heads: H, kvHeads: Hkv, headDim: d, seqCapacity: S } = p;
      const tensors = new Map<string, TensorToWrite>([
        ["y", { dtype: "F32", shape: [B, H, d], values: out.y }],
      ]);
      if (attention.kind === "sparq") {
        const kept = Math.min(attention.k, S);
        tensors.set("indices", {
          dtype: "I32" as const,
          shape: [B, Hkv, kept],
          values: out.indices!,
        });
        tensors.set("alpha", { dtype: "F32" as const, shape: [B, H], values: out.alpha! });
      }
      await writeFileAtomic(values.out, encodeSafetensors(tensors));
      io.out(`wrote ${values.out}: ${[...tensors.keys()].join(", ")}`);
    }
    if (values.check) check(io, problem, attention, out, kvDtype);
    return 0;
  });
}

function check(
  io: Io,
  p: AttentionProblem,
  method: AttentionMethod,
  out: Awaited<ReturnType<typeof runAttention>>,
  kvDtype: "f16" | "f32",
): void {
  const e = (x: number) => x.toExponential(2);
  const bound = kvDtype === "f32" ? 1e-5 : 2e-3;
  const dense = denseReference(p);
  let reference = dense;
  if (method.kind === "sparq") {
    const indices = compareIndices(p, method, out.indices!);
    io.out(
      `indices vs float64 reference: ${indices.equal} of ${indices.sets} sets equal` +
        (indices.tied ? `, ${indices.tied} differ only by ties within 1e-6` : "") +
        (indices.faults.length ? `; MISMATCH: ${indices.faults[0]}` : ""),
    );
    reference = sparqReference(p, method, indices.faults.length ? undefined : indices.chosen).y;
  }
  const rel = relativeL2(out.y, reference);
  io.out(
    `y vs float64 reference: max abs ${e(maxAbsError(out.y, reference))}, relative L2 ` +
      `${e(rel)} (${rel <= bound ? "within" : "OUTSIDE"} ${e(bound)} for ${kvDtype} KV)`,
  );
  if (method.kind === "sparq") {
    io.out(`SparQ y vs dense attention (float64): relative L2 ${e(relativeL2(out.y, dense))}`);
  }
}

if (import.meta.main) Deno.exit(await attentionCommand(Deno.args));
