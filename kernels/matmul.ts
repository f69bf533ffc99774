/**
 * GEMV / skinny GEMM for the decode step: y[b, n] = Σ_k x[b, k] · W[n, k] (+ bias[n]), f32
 * activations and accumulation, weights in the weight dtype. Used for `matmul` (bindings x,
 * weight, [bias,] y) and `logits` (x, table, y). A weight split into shards is dispatched once
 * per shard: params = [first output row of the shard, its rows].
 *
 * Each workgroup takes a few output rows (`rowsPerWorkgroup`: 16 where the target allows 512
 * invocations, see {@link matmulRowsFor}), one team of 32 invocations per row. The
 * vector kernel (rows of whole 16-byte pieces) has each invocation load {@link LOADS} pieces
 * before using any (generated straight-line, see unrolled.ts), applies each piece to up to
 * {@link BATCH_TILE} sequences at once, and sums a team by `subgroupAdd` where the target's
 * subgroups are 32 wide (else by a tree in workgroup memory). The scalar kernel serves other
 * row lengths.
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { indentLines, unroll } from "./unrolled.ts";
import {
  bindingDeclarations,
  FLAT_ID,
  floatLiteral,
  MAIN_ARGS,
  PARAMS_DECL,
  weightPrelude,
} from "./wgsl_common.ts";

/** Output rows per workgroup: one team of {@link TEAM} invocations per row. */
export const MATMUL_ROWS = 4;
/** Output rows per workgroup where the target allows 512 invocations (see {@link matmulRowsFor}). */
const WIDE_ROWS = 16;
/** Invocations per output row. */
const TEAM = 32;
/** 16-byte weight pieces each invocation loads before using any. */
const LOADS = 4;
/**
 * Sequences of the batch accumulated together, so each weight load serves all of them. At B ≥ 4
 * the kernel is bound by the loads of x (two 16-byte loads per sequence per weight piece), not
 * the weights: on the H100 llama2-7b's B=16 step took 50.36 ms with tiles of 4, 47.29 with 8 and
 * 48.25 with 16 (B=1 and B=4 unchanged).
 */
const BATCH_TILE = 8;

/** What a matmul needs of a node. */
export interface MatmulShape {
  batch: number;
  /** The reduced dimension. */
  inner: number;
  /** Output features of the whole (unsharded) weight. */
  outer: number;
  weightDtype: "f16" | "f32";
  bias: boolean;
  /** `matmul` or `logits` (binding names differ). */
  op: "matmul" | "logits";
  /** The target's fixed subgroup size, if any: 32 reduces a row by `subgroupAdd`. */
  subgroupSize?: number | null;
  /** Output rows per workgroup (default {@link MATMUL_ROWS}). */
  rowsPerWorkgroup?: number;
  /**
   * Several matmuls of the same x in one dispatch (q, k, v; gate, up): each part's output rows.
   * Bindings: x, each weight, [each bias,] each y. Unsharded weights only.
   */
  group?: number[];
  /** Adds a residual [B, outer] to the output (binding `residual` before y): y = x·Wᵀ + r. */
  residual?: boolean;
  /**
   * The RMSNorm that feeds the matmul, folded in: x is the norm's input and `norm_weight` (after
   * x) its gain, y = inv · Σ_k W[n, k] · x[b, k] · (g[k] + weightOffset) with inv = 1 / sqrt(mean_k
   * x[b, k]² + eps), from the same loads of x. Vector kernel only.
   */
  norm?: { eps: number; weightOffset: number };
}

/**
 * Workgroups of a matmul: ⌈rows / rowsPerWorkgroup⌉ for each part of a group.
 *
 * @example
 * ```ts
 * import { matmulWorkgroups } from "./matmul.ts";
 * matmulWorkgroups([4096, 1024, 1024], 4); // 1536
 * ```
 */
export function matmulWorkgroups(rows: readonly number[], rowsPerWorkgroup: number): number {
  return rows.reduce((sum, r) => sum + Math.ceil(r / rowsPerWorkgroup), 0);
}

/**
 * Output rows per workgroup for a target: 16 (512 invocations) where allowed — on the H100 at
 * B=1, 2 / 4 / 8 / 16 / 32 rows per workgroup gave a llama2-7b step of 12.22 / 12.15 / 12.13 /
 * 12.08 / 12.08 ms at S=32k — else as many as fit.
 *
 * @example
 * ```ts
 * import { matmulRowsFor } from "./matmul.ts";
 * [matmulRowsFor(1024), matmulRowsFor(256)]; // [16, 8]
 * ```
 */
export function matmulRowsFor(maxInvocationsPerWorkgroup: number): number {
  return Math.max(1, Math.min(WIDE_ROWS, Math.floor(maxInvocationsPerWorkgroup / TEAM)));
}

/**
 * The kernel; dispatch ⌈rows / rowsPerWorkgroup⌉ workgroups per shard. Rows whose length is a whole
 * number of 16-byte pieces (8 f16 or 4 f32 weights) get the vector kernel, others a scalar one.
 *
 * @example
 * ```ts
 * import { matmulKernel } from "./matmul.ts";
 * matmulKernel({ batch: 1, inner: 4096, outer: 4096, weightDtype: "f16", bias: false,
 *   op: "matmul" }).name; // "matmul"
 * ```
 */
export function matmulKernel(s: MatmulShape): KernelSpec {
  if (matmulVectorFits(s)) return vectorKernel(s);
  if (s.group || s.residual || s.norm) {
    throw new Error(
      "grouped matmuls, norms and residual epilogues need rows of whole 16-byte pieces",
    );
  }
  return scalarKernel(s);
}

/**
 * Whether rows are whole 16-byte pieces (8 f16 or 4 f32 weights): the vector kernel, which
 * can also group matmuls.
 *
 * @example
 * ```ts
 * import { matmulVectorFits } from "./matmul.ts";
 * matmulVectorFits({ inner: 4096, weightDtype: "f16" }); // true
 * ```
 */
export function matmulVectorFits(s: Pick<MatmulShape, "inner" | "weightDtype">): boolean {
  return s.inner % (s.weightDtype === "f16" ? 8 : 4) === 0;
}

/** Sums `value` over a team: `subgroupAdd` where a subgroup is a team, else a tree. */
function teamSum(subgroups: boolean, rows: number): string {
  if (subgroups) {
    return "fn team_sum(value: f32, tid: u32, lane: u32) -> f32 { return subgroupAdd(value); }";
  }
  return `var<workgroup> partial: array<f32, ${rows * TEAM}>;
fn team_sum(value: f32, tid: u32, lane: u32) -> f32 {
  partial[tid] = value;
  workgroupBarrier();
  for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { partial[tid] += partial[tid + stride]; }
    workgroupBarrier();
  }
  let total = partial[tid - lane];
  workgroupBarrier();
  return total;
}`;
}

/**
 * The vector kernel: the team of a row reads consecutive 16-byte pieces of it, {@link LOADS}
 * per invocation in flight (straight-line, see unrolled.ts), multiplies each by up to
 * {@link BATCH_TILE} sequences' x, and reduces once per sequence. With `norm`, each piece of x is
 * scaled by its gain and its squares summed on the way (each team reads all of x anyway).
 */
function vectorKernel(s: MatmulShape): KernelSpec {
  const ROWS = s.rowsPerWorkgroup ?? MATMUL_ROWS;
  const f16 = s.weightDtype === "f16";
  const parts = s.group ?? [s.outer];
  const grouped = s.group !== undefined;
  if (s.residual && grouped) throw new Error("a grouped matmul takes no residual");
  const suffix = (p: number) => (grouped ? `${p}` : "");
  const weightName = (p: number) => `${s.op === "logits" ? "table" : "weight"}${suffix(p)}`;
  const pieceType = f16 ? "vec4<u32>" : "vec4<f32>";
  const storage: [string, "read" | "read_write", string][] = [
    ["x", "read", "vec4<f32>"],
    ...(s.norm ? [["norm_weight", "read", pieceType] as [string, "read", string]] : []),
    ...parts.map((_, p): [string, "read", string] => [weightName(p), "read", pieceType]),
    ...(s.bias
      ? parts.map((_, p): [string, "read", string] => [`bias${suffix(p)}`, "read", "W"])
      : []),
    ...(s.residual ? [["residual", "read", "f32"] as [string, "read", string]] : []),
    ...parts.map((_, p): [string, "read_write", string] => [`y${suffix(p)}`, "read_write", "f32"]),
  ];
  const pieces = s.inner / (f16 ? 8 : 4);
  const step = TEAM * LOADS;
  const fullEnd = Math.floor(pieces / step) * step;
  const tailLoads = Math.ceil((pieces - fullEnd) / TEAM);
  const subgroups = s.subgroupSize === TEAM;
  const xAt = (b: string, p: string, half: number) =>
    f16 ? `x[(${b}) * X_ROW + 2u * (${p})${half ? " + 1u" : ""}]` : `x[(${b}) * X_ROW + ${p}]`;
  // x of sequence b, piece p: two vec4 for 8 f16 weights, one for 4 f32.
  const xOf = (b: string, p: string) => f16 ? `${xAt(b, p, 0)}, ${xAt(b, p, 1)}` : xAt(b, p, 0);
  // The statements that apply weight piece `w` (piece index p) to each sequence of the tile.
  const use = (w: string, p: string, count: number, b0: string): string[] => {
    const batches = [...Array(count).keys()];
    if (!s.norm) {
      return batches.map((t) => `acc${t} += piece_dot(${w}, ${xOf(`${b0} + ${t}u`, p)});`);
    }
    return [
      `let g_${w} = norm_weight[${p}];`,
      ...batches.flatMap((t) => {
        const names = (f16 ? ["a", "b"] : ["a"]).map((h) => `x${h}_${w}_${t}`);
        return [
          ...names.map((name, h) => `let ${name} = ${xAt(`${b0} + ${t}u`, p, h)};`),
          `acc${t} += normed_dot(${w}, g_${w}, ${names.join(", ")});`,
          `sq${t} += squares(${names.join(", ")});`,
        ];
      }),
    ];
  };
  const biasOf = (part: number) => (s.bias ? ` + f32(bias${suffix(part)}[n])` : "");
  // One tile of sequences of one weight: accumulators, the loop over the row's pieces and its
  // tail, then each sequence's sum over the team (times its norm's scale) and its store.
  const tile = (part: number, count: number, b0: string): string => {
    const weight = weightName(part);
    const batches = [...Array(count).keys()];
    const loads = [...Array(LOADS).keys()];
    const lines = [
      ...batches.map((t) => `var acc${t} = 0.0;`),
      ...(s.norm ? batches.map((t) => `var sq${t} = 0.0;`) : []),
      ...(fullEnd > 0
        ? [
          `for (var p = lane; p < ${fullEnd}u; p += ${step}u) {`,
          ...loads.map((u) => `  let w${u} = ${weight}[w_base + p + ${u * TEAM}u];`),
          ...loads.flatMap((u) => use(`w${u}`, `p + ${u * TEAM}u`, count, b0).map((l) => `  ${l}`)),
          "}",
        ]
        : []),
      ...[...Array(tailLoads).keys()].flatMap((u) => [
        `let tail${u} = ${fullEnd + u * TEAM}u + lane;`,
        `if (tail${u} < PIECES) {`,
        `  let wt${u} = ${weight}[w_base + tail${u}];`,
        ...use(`wt${u}`, `tail${u}`, count, b0).map((l) => `  ${l}`),
        "}",
      ]),
      ...batches.flatMap((t) => {
        const at = `(${b0} + ${t}u) * ${parts[part]}u + n`;
        return [
          `let total${t} = team_sum(acc${t}, tid, lane)${
            s.norm ? ` * inverseSqrt(team_sum(sq${t}, tid, lane) / f32(INNER) + EPS)` : ""
          };`,
          `if (valid && lane == 0u) { y${suffix(part)}[${at}] = total${t}${biasOf(part)}${
            s.residual ? ` + residual[${at}]` : ""
          }; }`,
        ];
      }),
    ];
    return indentLines(["{", ...lines.map((l) => `  ${l}`), "}"], "  ");
  };
  const width = Math.min(s.batch, BATCH_TILE);
  const fullTiles = Math.floor(s.batch / width) * width;
  const tiles = (part: number) =>
    (fullTiles > width
      ? `  for (var b0 = 0u; b0 < ${fullTiles}u; b0 += ${width}u) ${
        tile(part, width, "b0").trimStart()
      }`
      : tile(part, width, "0u")) +
    (s.batch > fullTiles ? `\n${tile(part, s.batch - fullTiles, `${fullTiles}u`)}` : "");
  // A row of the shard (params) or, grouped, of the part whose workgroups this one is among.
  let body: string;
  if (!grouped) {
    body = `  let local_row = flat * ${ROWS}u + tid / TEAM;
  // Rows past the shard still take part in the reductions; they read row 0 and write nothing.
  let valid = local_row < params.rows;
  let w_base = select(0u, local_row, valid) * PIECES;
  let n = params.first_row + local_row;
${tiles(0)}`;
  } else {
    let first = 0;
    body = parts.map((rows, p) => {
      const start = first;
      first += Math.ceil(rows / ROWS);
      return `${p === 0 ? "  " : " else "}if (flat < ${first}u) {
    let local_row = (flat - ${start}u) * ${ROWS}u + tid / TEAM;
    let valid = local_row < ${rows}u;
    let w_base = select(0u, local_row, valid) * PIECES;
    let n = local_row;
${indentLines(tiles(p).split("\n"), "  ")}
  }`;
    }).join("");
  }
  const base = s.op === "logits" ? "logits" : s.bias ? "matmul_bias" : "matmul";
  const name = `${s.norm ? "rms_" : ""}${base}_vec${grouped ? `_x${parts.length}` : ""}${
    s.residual ? "_residual" : ""
  }`;
  // Without an offset (all but Gemma) no add: the compiler may not drop x + 0.0 (−0.0).
  const plusOffset = s.norm?.weightOffset ? " + OFFSET" : "";
  const gainOf = (a: string, b: string) =>
    `vec4<f32>(unpack2x16float(${a}), unpack2x16float(${b}))${plusOffset}`;
  const normWgsl = !s.norm ? "" : `const INNER = ${s.inner}u;
const EPS = ${floatLiteral(s.norm.eps)};
${
    plusOffset
      ? `const OFFSET = ${floatLiteral(s.norm.weightOffset)};
`
      : ""
  }${
    f16
      ? `fn normed_dot(w: vec4<u32>, g: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  return piece_dot(w, xa * (${gainOf("g.x", "g.y")}), xb * (${gainOf("g.z", "g.w")}));
}
fn squares(xa: vec4<f32>, xb: vec4<f32>) -> f32 { return dot(xa, xa) + dot(xb, xb); }`
      : `fn normed_dot(w: vec4<f32>, g: vec4<f32>, xa: vec4<f32>) -> f32 {
  return dot(w, xa * (g${plusOffset}));
}
fn squares(xa: vec4<f32>) -> f32 { return dot(xa, xa); }`
  }
`;
  const source = `// sparqc ${s.op}: ${ROWS} rows per workgroup, a team of ${TEAM} per row, ${
    f16 ? "8 f16" : "4 f32"
  } weights per load, ${LOADS} loads in flight per invocation${
    grouped ? `; ${parts.length} matmuls of the same x in one dispatch` : ""
  }${s.norm ? "; the RMSNorm of x folded in" : ""}
${weightPrelude(s.weightDtype)}${PARAMS_DECL}
const PIECES = ${pieces}u;
const X_ROW = ${s.inner / 4}u;
const TEAM = ${TEAM}u;
${bindingDeclarations(storage)}
${teamSum(subgroups, ROWS)}
${
    f16
      ? `fn piece_dot(w: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), xa) +
    dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), xb);
}`
      : "fn piece_dot(w: vec4<f32>, xa: vec4<f32>) -> f32 { return dot(w, xa); }"
  }
${normWgsl}
@compute @workgroup_size(${ROWS * TEAM})
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let lane = tid % TEAM;
${body}
}
`;
  return computeKernel(name, s.op, source, storage);
}

/** The scalar kernel, for rows that are not a whole number of 16-byte pieces. */
function scalarKernel(s: MatmulShape): KernelSpec {
  const ROWS = s.rowsPerWorkgroup ?? MATMUL_ROWS;
  const width = s.inner % 4 === 0 ? 4 : 1;
  const vec = (t: string) => (width === 4 ? `vec4<${t}>` : t);
  const product = (w: string, x: string) =>
    width === 4 ? `dot(vec4<f32>(${w}), ${x})` : `f32(${w}) * ${x}`;
  const weightName = s.op === "logits" ? "table" : "weight";
  const storage: [string, "read" | "read_write", string][] = [
    ["x", "read", vec("f32")],
    [weightName, "read", vec("W")],
    ...(s.bias ? [["bias", "read", "W"] as [string, "read", string]] : []),
    ["y", "read_write", "f32"],
  ];
  const pieces = s.inner / width;
  const name = s.op === "logits" ? "logits" : s.bias ? "matmul_bias" : "matmul";
  const source = `// sparqc ${s.op}: ${ROWS} output rows per workgroup, ${TEAM} invocations per row
${weightPrelude(s.weightDtype)}${PARAMS_DECL}
const BATCH = ${s.batch}u;
const PIECES = ${pieces}u;
const OUTER = ${s.outer}u;
const LANES = ${TEAM}u;
const TEAM = ${TEAM}u;
const STEP = LANES * ${LOADS}u;
${bindingDeclarations(storage)}
${teamSum(false, ROWS)}

@compute @workgroup_size(${ROWS * TEAM})
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let lane = tid % LANES;
  let local_row = flat * ${ROWS}u + tid / LANES;
  // Rows past the shard still take part in the barriers; they read row 0 and write nothing.
  let valid = local_row < params.rows;
  let w_row = select(0u, local_row, valid) * PIECES;
  for (var b = 0u; b < BATCH; b++) {
    var sum = 0.0;
    for (var k = lane; k < PIECES; k += STEP) {
${
    unroll(LOADS, (u) =>
      `let w${u} = ${weightName}[w_row + min(k + ${u * TEAM}u, PIECES - 1u)];`, "      ")
  }
${
    unroll(LOADS, (u) =>
      `if (k + ${u * TEAM}u < PIECES) { sum += ${
        product(`w${u}`, `x[b * PIECES + k + ${u * TEAM}u]`)
      }; }`, "      ")
  }
    }
    let total = team_sum(sum, tid, lane);
    if (valid && lane == 0u) {
      let n = params.first_row + local_row;
      y[b * OUTER + n] = total${s.bias ? " + f32(bias[n])" : ""};
    }
  }
}
`;
  return computeKernel(name, s.op, source, storage);
}
