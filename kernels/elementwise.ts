/**
 * The decode step's one-invocation-per-element kernels: `add`, `mul`, `silu`, `gelu`,
 * `gelu_tanh`, `rope` (rotate-half, partial rotary) and `embedding` (a lookup, scaled). Each
 * writes every element of its f32 output; element counts and model constants are WGSL `const`s
 * of the generated source.
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import {
  bindingDeclarations,
  floatLiteral,
  MAIN_ARGS,
  PARAMS_DECL,
  weightPrelude,
} from "./wgsl_common.ts";

/** Invocations per workgroup of every kernel in this file. */
export const ELEMENTWISE_WORKGROUP = 256;

type Storage = [name: string, access: "read" | "read_write", type: string][];

function elementKernel(
  name: string,
  count: number,
  storage: Storage,
  body: string,
  prelude = "",
): KernelSpec {
  const source = `// sparqc ${name}: one invocation per output element
${prelude}${PARAMS_DECL}
const COUNT = ${count}u;
${bindingDeclarations(storage)}

@compute @workgroup_size(${ELEMENTWISE_WORKGROUP})
fn main(
  ${MAIN_ARGS},
) {
  let i = (wid.y * groups.x + wid.x) * ${ELEMENTWISE_WORKGROUP}u + tid;
  if (i >= COUNT) { return; }
${body}
}
`;
  return computeKernel(name, name, source, storage);
}

/**
 * `add` or `mul` of two f32 tensors of `count` elements: bindings a, b, y, params.
 *
 * @example
 * ```ts
 * import { binaryKernel } from "./elementwise.ts";
 * binaryKernel("add", 1024).name; // "add"
 * ```
 */
export function binaryKernel(op: "add" | "mul", count: number): KernelSpec {
  const sign = op === "add" ? "+" : "*";
  return elementKernel(op, count, [
    ["a", "read", "f32"],
    ["b", "read", "f32"],
    ["y", "read_write", "f32"],
  ], `  y[i] = a[i] ${sign} b[i];`);
}

/** The activations, as WGSL expressions of `v`. */
const ACTIVATIONS = {
  silu: "v / (1.0 + exp(-v))",
  gelu: "0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476))",
  gelu_tanh: "0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))",
} as const;

// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7); WGSL has no erf.
const ERF = `fn erf_approx(z: f32) -> f32 {
  let a = abs(z);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(z) * (1.0 - poly * exp(-a * a));
}
`;

/**
 * An activation of an f32 tensor of `count` elements: bindings x, y, params.
 *
 * @example
 * ```ts
 * import { activationKernel } from "./elementwise.ts";
 * activationKernel("silu", 1024).name; // "silu"
 * ```
 */
export function activationKernel(op: keyof typeof ACTIVATIONS, count: number): KernelSpec {
  return elementKernel(
    op,
    count,
    [["x", "read", "f32"], ["y", "read_write", "f32"]],
    `  let v = x[i];\n  y[i] = ${ACTIVATIONS[op]};`,
    op === "gelu" ? ERF : "",
  );
}

/**
 * An activation times a second tensor, y = act(gate) · up, in one dispatch: the gated MLP's
 * act and mul fused (at batch 1 each dispatch costs a few µs whatever its size). Bindings
 * gate, up, y, params.
 *
 * @example
 * ```ts
 * import { gatedActivationKernel } from "./elementwise.ts";
 * gatedActivationKernel("silu", 11008).name; // "silu_mul"
 * ```
 */
export function gatedActivationKernel(op: keyof typeof ACTIVATIONS, count: number): KernelSpec {
  return elementKernel(
    `${op}_mul`,
    count,
    [["gate", "read", "f32"], ["up", "read", "f32"], ["y", "read_write", "f32"]],
    `  let v = gate[i];\n  y[i] = (${ACTIVATIONS[op]}) * up[i];`,
    op === "gelu" ? ERF : "",
  );
}

/** What rope needs of a node. */
export interface RopeShape {
  batch: number;
  heads: number;
  headDim: number;
  rotaryDims: number;
  theta: number;
}

/**
 * Rotary embedding, rotate-half convention (Llama, GPT-NeoX, Qwen2): in each head the first
 * `rotaryDims` components are rotated in pairs (j, j + rotaryDims/2) by position · θ^(−2j /
 * rotaryDims); the rest are copied. The inverse frequencies are computed in float64 here and
 * written into the source. Bindings x, positions, y, params. With `pairedHeads`, a second
 * tensor of that many heads at the same positions (q and k) in the same dispatch: bindings x,
 * x2, positions, y, y2, params.
 *
 * @example
 * ```ts
 * import { ropeKernel } from "./elementwise.ts";
 * ropeKernel({ batch: 1, heads: 4, headDim: 16, rotaryDims: 16, theta: 10000 }).name; // "rope"
 * ```
 */
export function ropeKernel(s: RopeShape, pairedHeads?: number): KernelSpec {
  const count = s.batch * s.heads * s.headDim;
  const storage: [string, "read" | "read_write", string][] = pairedHeads === undefined
    ? [["x", "read", "f32"], ["positions", "read", "u32"], ["y", "read_write", "f32"]]
    : [
      ["x", "read", "f32"],
      ["x2", "read", "f32"],
      ["positions", "read", "u32"],
      ["y", "read_write", "f32"],
      ["y2", "read_write", "f32"],
    ];
  const tensors = pairedHeads === undefined
    ? [{ name: "x", heads: s.heads }]
    : [{ name: "x", heads: s.heads }, { name: "x2", heads: pairedHeads }];
  return elementKernel(
    pairedHeads === undefined ? "rope" : "rope_pair",
    count + (pairedHeads === undefined ? 0 : s.batch * pairedHeads * s.headDim),
    storage,
    pairedHeads === undefined ? "  y[i] = rotated_x(i);" : `  if (i < ${count}u) {
    y[i] = rotated_x(i);
  } else {
    y2[i - ${count}u] = rotated_x2(i - ${count}u);
  }`,
    ropeFunctions(s, tensors),
  );
}

/**
 * WGSL: for each named f32 tensor of `heads` heads (a module-scope storage array beside
 * `positions`), `fn rotated_<name>(e: u32) -> f32`, its element e after rotary embedding at its
 * sequence's position; with the constants they use.
 *
 * @example
 * ```ts
 * import { ropeFunctions } from "./elementwise.ts";
 * ropeFunctions({ headDim: 128, rotaryDims: 128, theta: 1e4 }, [{ name: "k", heads: 8 }]);
 * ```
 */
export function ropeFunctions(
  s: Pick<RopeShape, "headDim" | "rotaryDims" | "theta">,
  tensors: { name: string; heads: number }[],
): string {
  return `${ropeConstants(s)}
${
    tensors.map(({ name, heads }) =>
      `fn rotated_${name}(e: u32) -> f32 {
  let j = e % ROPE_DIM;
  if (j >= ROTARY) { return ${name}[e]; }
  let pair = j % HALF;
  let angle = f32(positions[e / (${heads}u * ROPE_DIM)]) * INV_FREQ[pair];
  let c = cos(angle);
  let s = sin(angle);
  let x1 = ${name}[e - j + pair];
  let x2 = ${name}[e - j + pair + HALF];
  return select(x2 * c + x1 * s, x1 * c - x2 * s, j < HALF);
}`
    ).join("\n")
  }
`;
}

/** WGSL: the constants of the rotary functions (ROPE_DIM, ROTARY, HALF, INV_FREQ). */
function ropeConstants(s: Pick<RopeShape, "headDim" | "rotaryDims" | "theta">): string {
  const half = s.rotaryDims / 2;
  const inverse = Array.from(
    { length: half },
    (_, j) => floatLiteral(Math.pow(s.theta, (-2 * j) / s.rotaryDims)),
  );
  return `const ROPE_DIM = ${s.headDim}u;
const ROTARY = ${s.rotaryDims}u;
const HALF = ${half}u;
const INV_FREQ = array<f32, ${half}>(${inverse.join(", ")});`;
}

/**
 * WGSL: for each named `array<vec4<f32>>` (a module-scope storage binding), `fn
 * rotated_<name>4(head: u32, c: u32, pos: u32) -> vec4<f32>`, components 4c … 4c + 3 of the head
 * that starts at vec4 `head`, rotated as {@link ropeFunctions} rotates them, at position `pos`;
 * with the constants they use. For kernels that hold a head in vec4s (attention folding rope in):
 * each component's partner (j ± rotaryDims/2) may lie in another vec4, so partial rotary of any
 * even width works.
 *
 * @example
 * ```ts
 * import { ropeQuadFunctions } from "./elementwise.ts";
 * ropeQuadFunctions({ headDim: 16, rotaryDims: 4, theta: 1e4 }, ["q"]).includes("fn rotated_q4"); // true
 * ```
 */
export function ropeQuadFunctions(
  s: Pick<RopeShape, "headDim" | "rotaryDims" | "theta">,
  names: string[],
): string {
  return `${ropeConstants(s)}
${
    names.map((name) =>
      `fn rotated_${name}4(head: u32, c: u32, pos: u32) -> vec4<f32> {
  let x = ${name}[head + c];
  let j = vec4<u32>(c * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
  let first = j < vec4<u32>(HALF);
  // Straight-line, so that the partners' loads go out with x's (past ROTARY: not used).
  let partner = select(j - vec4<u32>(HALF), j + vec4<u32>(HALF), first);
  let y = vec4<f32>(${
        ["x", "y", "z", "w"].map((e) => `${name}[head + partner.${e} / 4u][partner.${e} % 4u]`)
          .join(", ")
      });
  let angle = f32(pos) * vec4<f32>(${
        ["x", "y", "z", "w"].map((e) => `INV_FREQ[j.${e} % HALF]`).join(", ")
      });
  let cosine = cos(angle);
  let sine = sin(angle);
  let rotated = select(x * cosine + y * sine, x * cosine - y * sine, first);
  return select(x, rotated, j < vec4<u32>(ROTARY));
}`
    ).join("\n")
  }
`;
}

/**
 * Embedding lookup of one shard of the table (vocabulary rows [first_row, first_row + rows) of
 * params): y[b, :] = table[tokens[b] − first_row, :] · scale for the tokens in the shard.
 * Bindings tokens, table, y, params.
 *
 * @example
 * ```ts
 * import { embeddingKernel } from "./elementwise.ts";
 * embeddingKernel({ batch: 2, hidden: 64, scale: 1, weightDtype: "f32" }).name; // "embedding"
 * ```
 */
export function embeddingKernel(
  s: { batch: number; hidden: number; scale: number; weightDtype: "f16" | "f32" },
): KernelSpec {
  return elementKernel(
    "embedding",
    s.batch * s.hidden,
    [["tokens", "read", "u32"], ["table", "read", "W"], ["y", "read_write", "f32"]],
    `  let b = i / HIDDEN;
  let token = tokens[b];
  if (token < params.first_row || token - params.first_row >= params.rows) { return; }
  y[i] = f32(table[(token - params.first_row) * HIDDEN + i % HIDDEN]) * SCALE;`,
    `${weightPrelude(s.weightDtype)}const HIDDEN = ${s.hidden}u;
const SCALE = ${floatLiteral(s.scale)};
`,
  );
}
