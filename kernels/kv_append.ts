/**
 * `kv_append`: writes the new token's key and value at its sequence's own position — the K row,
 * for SparQ also the Kᵀ column, the V row — and for SparQ updates V_mean in f32 with
 * mean ← mean + (v − mean)/(n + 1), v as stored (so V_mean is the mean of the cache's V).
 * One invocation per (row, component); rows are (sequence, KV head) pairs of this shard.
 *
 * @module
 */
import { ropeFunctions, ropeQuadFunctions, type RopeShape } from "./elementwise.ts";
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import type { Binding } from "./sparq_common.ts";
import { ktIndexWgsl } from "./kt_layout.ts";
import { FLAT_ID, type KvDtype, kvPrelude, MAIN_ARGS, PARAMS_DECL } from "./wgsl_common.ts";

/** kv_append's launch parameters. */
export interface KvAppendConfig {
  /** Invocations per workgroup. */
  workgroup: number;
}

/** The default launch, and the candidates the tuner measures. */
export const KV_APPEND_DEFAULT: KvAppendConfig = { workgroup: 256 };
/** kv_append's search space. */
export const KV_APPEND_SPACE: KvAppendConfig[] = [64, 128, 256, 512].map((workgroup) => ({
  workgroup,
}));

/**
 * WGSL storing `key` and `value` (component j of position pos) in the cache row `row` of this
 * buffer: K, V, and for SparQ Kᵀ and the running V_mean.
 */
function cacheStores(sparq: boolean, row: string): string {
  const lines = [
    `k_cache[(${row} * MAX_SEQ + pos) * HEAD_DIM + j] = key;`,
    `v_cache[(${row} * MAX_SEQ + pos) * HEAD_DIM + j] = value;`,
    ...(sparq
      ? [
        `kt_cache[kt_index(${row}, j, pos)] = key;`,
        `v_mean[${row} * HEAD_DIM + j] = mean + (f32(value) - mean) / f32(pos + 1u);`,
      ]
      : []),
  ];
  return lines.map((l) => `  ${l}\n`).join("");
}

/**
 * WGSL loading V_mean's component j of the cache row `row` (SparQ). The kernels read it, the new
 * key and value before the branch on the sequence's position: none of them depends on it, and
 * after the branch each invocation waited one more memory round trip.
 */
function meanLoad(sparq: boolean, row: string): string {
  return sparq ? `  let mean = v_mean[${row} * HEAD_DIM + j];\n` : "";
}

/**
 * The kv_append kernel for one cache layout.
 *
 * @example
 * ```ts
 * import { kvAppendKernel } from "./kv_append.ts";
 * const spec = kvAppendKernel({ kvHeads: 8, headDim: 128, maxSeq: 4096, kvDtype: "f16", sparq: true });
 * spec.bindings.map((b) => b.name); // k, v, positions, k_cache, kt_cache, v_cache, v_mean, params
 * ```
 */
export function kvAppendKernel(
  s: { kvHeads: number; headDim: number; maxSeq: number; kvDtype: KvDtype; sparq: boolean },
  config: KvAppendConfig = KV_APPEND_DEFAULT,
): KernelSpec {
  const cache = s.sparq ? ["k_cache", "kt_cache", "v_cache", "v_mean"] : ["k_cache", "v_cache"];
  const decls = ["k", "v", "positions", ...cache].map((name, i) => {
    const type = name === "positions" ? "u32" : name === "v_mean" || i < 2 ? "f32" : "KV";
    const access = i < 3 ? "read" : "read_write";
    return `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<${type}>;`;
  });
  const source = `// sparqc kv_append (${s.sparq ? "SparQ: K, Kᵀ, V, V_mean" : "dense: K, V"})
${kvPrelude(s.kvDtype)}
const HEAD_DIM = ${s.headDim}u;
const KV_HEADS = ${s.kvHeads}u;
const MAX_SEQ = ${s.maxSeq}u;
${s.sparq ? ktIndexWgsl(s.headDim, s.maxSeq) : ""}
const WG = ${config.workgroup}u;
${PARAMS_DECL}
${decls.join("\n")}
@group(0) @binding(${decls.length}) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let i = flat * WG + tid;
  if (i >= params.rows * HEAD_DIM) { return; }
  let local_row = i / HEAD_DIM;
  let j = i % HEAD_DIM;
  let row = params.first_row + local_row;
  let src = row * HEAD_DIM + j;
  let key = KV(k[src]);
  let value = KV(v[src]);
${meanLoad(s.sparq, "local_row")}  let pos = positions[row / KV_HEADS];
  if (pos >= MAX_SEQ) { return; }
${cacheStores(s.sparq, "local_row")}}
`;
  return computeKernel(
    `kv_append_${s.sparq ? "sparq" : "dense"}`,
    "kv_append",
    source,
    ["k", "v", "positions", ...cache].map((name, i) => [name, i < 3 ? "read" : "read_write"]),
  );
}

/**
 * Rotary embedding of q and k, and kv_append of the rotated k and of v, in one dispatch (at
 * batch 1 every dispatch costs a few µs whatever its size): invocations below B·H·d rotate q into
 * `q_out`; the rest take one (row, component) of the unsharded cache as {@link kvAppendKernel}
 * does, with the key rotated on the way. Bindings q, k, v, positions, the cache tensors, q_out.
 *
 * @example
 * ```ts
 * import { ropeAppendKernel } from "./kv_append.ts";
 * ropeAppendKernel(
 *   { batch: 1, kvHeads: 8, headDim: 128, maxSeq: 4096, kvDtype: "f16", sparq: false },
 *   { heads: 32, rotaryDims: 128, theta: 500000 },
 * ).name; // "rope_kv_append_dense"
 * ```
 */
export function ropeAppendKernel(
  s: {
    batch: number;
    kvHeads: number;
    headDim: number;
    maxSeq: number;
    kvDtype: KvDtype;
    sparq: boolean;
  },
  rope: Pick<RopeShape, "heads" | "rotaryDims" | "theta">,
): KernelSpec {
  const cache = s.sparq ? ["k_cache", "kt_cache", "v_cache", "v_mean"] : ["k_cache", "v_cache"];
  const names = ["q", "k", "v", "positions", ...cache, "q_out"];
  const typeOf = (name: string) =>
    name === "positions" ? "u32" : ["q", "k", "v", "v_mean", "q_out"].includes(name) ? "f32" : "KV";
  const accessOf = (name: string) =>
    ["q", "k", "v", "positions"].includes(name) ? "read" : "read_write";
  const decls = names.map((name, i) =>
    `@group(0) @binding(${i}) var<storage, ${accessOf(name)}> ${name}: array<${typeOf(name)}>;`
  );
  const qCount = s.batch * rope.heads * s.headDim;
  const workgroup = KV_APPEND_DEFAULT.workgroup;
  const source = `// sparqc rope of q and k, then kv_append of k and v (${
    s.sparq ? "SparQ: K, Kᵀ, V, V_mean" : "dense: K, V"
  })
${kvPrelude(s.kvDtype)}
const HEAD_DIM = ${s.headDim}u;
const KV_HEADS = ${s.kvHeads}u;
const MAX_SEQ = ${s.maxSeq}u;
const Q_COUNT = ${qCount}u;
const KV_COUNT = ${s.batch * s.kvHeads * s.headDim}u;
${s.sparq ? ktIndexWgsl(s.headDim, s.maxSeq) : ""}
const WG = ${workgroup}u;
${PARAMS_DECL}
${decls.join("\n")}
@group(0) @binding(${decls.length}) var<uniform> params: Params;
${
    ropeFunctions({ ...rope, headDim: s.headDim }, [{ name: "q", heads: rope.heads }, {
      name: "k",
      heads: s.kvHeads,
    }])
  }
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let i = flat * WG + tid;
  if (i < Q_COUNT) {
    q_out[i] = rotated_q(i);
    return;
  }
  let e = i - Q_COUNT;
  if (e >= KV_COUNT) { return; }
  let row = e / HEAD_DIM;
  let j = e % HEAD_DIM;
  let key = KV(rotated_k(e));
  let value = KV(v[e]);
${meanLoad(s.sparq, "row")}  let pos = positions[row / KV_HEADS];
  if (pos >= MAX_SEQ) { return; }
${cacheStores(s.sparq, "row")}}
`;
  return computeKernel(
    `rope_kv_append_${s.sparq ? "sparq" : "dense"}`,
    "kv_append",
    source,
    names.map((name) => [name, accessOf(name)]),
  );
}

/**
 * The rotary embedding that a SparQ attention kernel applies itself when it also appends the new
 * token (rope of q and k and kv_append folded into attention): q arrives unrotated, and the new
 * key (unrotated) and value come as `k_new` and `v_new`.
 */
export type RopeFold = Pick<RopeShape, "rotaryDims" | "theta">;

/**
 * The bindings a kernel that appends the new token adds, or makes writable (Kᵀ typed `ktType`).
 *
 * @example
 * ```ts
 * import { appendBindings } from "./kv_append.ts";
 * appendBindings("vec4<u32>").map(([name]) => name); // k_new, v_new, k_cache, kt_cache, v_cache, v_mean
 * ```
 */
export function appendBindings(ktType: string): Binding[] {
  return [
    ["k_new", "read", "vec4<f32>"],
    ["v_new", "read", "vec4<f32>"],
    ["k_cache", "read_write", "KV4"],
    ["kt_cache", "read_write", ktType],
    ["v_cache", "read_write", "KV4"],
    ["v_mean", "read_write", "vec4<f32>"],
  ];
}

/**
 * WGSL for a SparQ kernel that folds rope and the append in: `fn rotated_q4` and `fn
 * rotated_k_new4` (elementwise.ts' `ropeQuadFunctions`) and {@link appendNewWgsl}'s `fn
 * append_new`.
 *
 * @example
 * ```ts
 * import { appendInKernelWgsl } from "./kv_append.ts";
 * appendInKernelWgsl(128, { rotaryDims: 128, theta: 1e4 }, "vec4<u32>").includes("fn rotated_q4"); // true
 * ```
 */
export function appendInKernelWgsl(
  headDim: number,
  rope: RopeFold,
  ktType: "vec4<u32>" | "KV4",
): string {
  return `${ropeQuadFunctions({ ...rope, headDim }, ["q", "k_new"])}\n${appendNewWgsl(ktType)}`;
}

/**
 * WGSL for a kernel that appends the new token itself (SparQ attention folding rope and
 * kv_append in): `fn append_new(local_row, row, pos, tid)` stores the key of cache row `row`
 * (`k_new`, rotated by `fn rotated_k_new4` of elementwise.ts' `ropeQuadFunctions`) and its value
 * (`v_new`) at position `pos` as {@link kvAppendKernel} does — the K row, the Kᵀ column, the V
 * row and V_mean — one vec4 of components per invocation. Kᵀ holds a position beside others in
 * one load (`ktType`: 8 f16 positions as `vec4<u32>`, or 4 as `KV4`), so each component is a
 * read, a change and a write of that load (no other invocation writes it in the dispatch); the
 * four reads are issued before any write, one memory latency rather than four. Needs QUADS, WG,
 * MAX_SEQ and `fn kt_index` from the kernel.
 *
 * @example
 * ```ts
 * import { appendNewWgsl } from "./kv_append.ts";
 * appendNewWgsl("vec4<u32>").includes("fn append_new"); // true
 * ```
 */
export function appendNewWgsl(ktType: "vec4<u32>" | "KV4"): string {
  const perLoad = ktType === "vec4<u32>" ? 8 : 4;
  const ktWith = ktType === "vec4<u32>"
    ? `  var halves = unpack2x16float(out[slot / 2u]);
  halves[slot % 2u] = f32(KV(key));
  out[slot / 2u] = pack2x16float(halves);`
    : "  out[slot] = KV(key);";
  const components = [0, 1, 2, 3];
  return `// Kᵀ's load w with position slot \`slot\` of its ${perLoad} set to key.
fn kt_with(w: ${ktType}, slot: u32, key: f32) -> ${ktType} {
  var out = w;
${ktWith}
  return out;
}
fn append_new(local_row: u32, row: u32, pos: u32, tid: u32) {
  for (var c = tid; c < QUADS; c += WG) {
    let key = rotated_k_new4(row * QUADS, c, pos);
    let value = KV4(v_new[row * QUADS + c]);
    let mean = v_mean[local_row * QUADS + c];
${
    components.map((e) =>
      `    let at${e} = kt_index(local_row, c * 4u + ${e}u, pos) / ${perLoad}u;`
    ).join("\n")
  }
${components.map((e) => `    let w${e} = kt_cache[at${e}];`).join("\n")}
    let at = (local_row * MAX_SEQ + pos) * QUADS + c;
    k_cache[at] = KV4(key);
    v_cache[at] = value;
    v_mean[local_row * QUADS + c] = mean + (vec4<f32>(value) - mean) / f32(pos + 1u);
${
    components.map((e) => `    kt_cache[at${e}] = kt_with(w${e}, pos % ${perLoad}u, key[${e}]);`)
      .join("\n")
  }
  }
}`;
}
