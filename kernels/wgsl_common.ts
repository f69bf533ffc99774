/**
 * WGSL pieces the attention kernels share: the KV element type, the params uniform, the flat
 * workgroup id of a folded grid, and workgroup reductions. Kernels are generated per shape, so
 * sizes that fix private arrays (query heads per KV group, lanes per row) are WGSL `const`s.
 *
 * Every `var` in these kernels has an explicit initializer: wgpu 29 (naga) zeroes a `var`
 * declared without one only once per invocation, not each time a loop body runs its
 * declaration, so a per-iteration accumulator silently carries the last iteration's value.
 *
 * @module
 */

/** The KV element type of a kernel. */
export type KvDtype = "f16" | "f32";

/**
 * The `enable` line and aliases for a KV element type.
 *
 * @example
 * ```ts
 * import { kvPrelude } from "./wgsl_common.ts";
 * kvPrelude("f16"); // "enable f16;\nalias KV = f16;\nalias KV4 = vec4<f16>;\n"
 * ```
 */
export function kvPrelude(dtype: KvDtype): string {
  return `${
    dtype === "f16" ? "enable f16;\n" : ""
  }alias KV = ${dtype};\nalias KV4 = vec4<${dtype}>;\n`;
}

/** The params uniform every kernel takes last: the rows this dispatch covers. */
export const PARAMS_DECL = "struct Params { first_row: u32, rows: u32, extra0: u32, extra1: u32 }";

/** Built-ins of `main` and the flat workgroup id of a grid folded into x·y. */
export const MAIN_ARGS = `@builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) tid: u32`;

/** The statement that defines `flat`, the workgroup's linear id. */
export const FLAT_ID = "let flat = wid.y * groups.x + wid.x;";

/** The workgroup memory of {@link lastArrivalGoesOn}: declare it once per kernel that uses it. */
export const LAST_ARRIVAL_DECL = "var<workgroup> last_arrival: u32;";

/**
 * WGSL by which the workgroups of one row (`row`, of `arrivals: array<atomic<u32>>` in a buffer
 * that lives from call to call, zero when made) hand over to the last of them to finish: each
 * releases what it wrote at device scope and counts itself among the row's `parts` (a WGSL
 * expression); all but the last return, after running `early` if given (WGSL made from their
 * order of arrival and their number, both uniform u32 expressions: spare work, such as a
 * prefetch); the last sets the counter back to zero for the next call and acquires the others'
 * writes. No workgroup waits for another.
 *
 * @example
 * ```ts
 * import { lastArrivalGoesOn } from "./wgsl_common.ts";
 * const wgsl = lastArrivalGoesOn("(len + CHUNK - 1u) / CHUNK");
 * ```
 */
export function lastArrivalGoesOn(
  parts: string,
  early?: (order: string, others: string) => string,
): string {
  // Without `early` the flag says last or not (the form measured before the hook came, kept: the
  // order kept by every invocation cost dense attention ~6 µs a call at B=1 S=16k on the H100).
  const count = early
    ? `  if (tid == 0u) { last_arrival = atomicAdd(&arrivals[row], 1u); }
  let row_parts = ${parts};
  let order = workgroupUniformLoad(&last_arrival);
  if (order != row_parts - 1u) {
    ${early("order", "(row_parts - 1u)")}
    return;
  }`
    : `  if (tid == 0u) {
    let row_parts = ${parts};
    last_arrival = select(0u, 1u, atomicAdd(&arrivals[row], 1u) == row_parts - 1u);
  }
  if (workgroupUniformLoad(&last_arrival) == 0u) { return; }`;
  return `  storageBarrier();
${count}
  if (tid == 0u) { atomicStore(&arrivals[row], 0u); }
  storageBarrier();`;
}

/** The smallest power of two ≥ n. */
export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** A number as a WGSL float literal. */
export function floatLiteral(x: number): string {
  const text = String(Math.fround(x));
  return /[.e]/.test(text) ? text : `${text}.0`;
}

/**
 * Workgroup reductions over `wg` invocations: `reduce_max`, `reduce_sum`, `reduce_max_pair`
 * (two maxima at once), `reduce_softmax` and `reduce_softmax_in` (merge (max, Σexp) pairs) and
 * `scan_exclusive` (u32, returns (prefix, total)). Each must be called by the whole workgroup in
 * uniform control flow; each leaves a barrier behind so that the next call may reuse the
 * scratch. Where the target's subgroups have a fixed size and `wg` is a power-of-two number of
 * them, each reduces within subgroups and then across their partial results: two barriers a
 * call instead of a tree's 2 + log₂ wg (a scan's 2 + 2·log₂ wg). Subgroup s is taken to hold
 * invocations s·size … (s+1)·size − 1, as on the H100 and lavapipe.
 *
 * @example
 * ```ts
 * import { reductions } from "./wgsl_common.ts";
 * const tree = reductions(256);
 * const bySubgroups = reductions(256, 32);
 * ```
 */
export function reductions(wg: number, subgroupSize: number | null = null): string {
  const parts = subgroupSize === null ? 0 : wg / subgroupSize;
  // Whole subgroups, a power of two of them (softmax merges them by butterfly).
  if (parts >= 1 && Number.isInteger(parts) && nextPowerOfTwo(parts) === parts) {
    return subgroupReductions(wg, subgroupSize!);
  }
  return treeReductions(wg);
}

/** {@link reductions} by trees in workgroup memory. */
function treeReductions(wg: number): string {
  const half = nextPowerOfTwo(wg) / 2;
  return `const RED_WG = ${wg}u;
const RED_HALF = ${half}u;
const NEG = -3.0e38;
var<workgroup> red_a: array<f32, RED_WG>;
var<workgroup> red_b: array<f32, RED_WG>;
var<workgroup> scan_u: array<u32, RED_WG>;

fn reduce_max(x: f32, tid: u32) -> f32 {
  red_a[tid] = x;
  workgroupBarrier();
  for (var s = RED_HALF; s > 0u; s = s >> 1u) {
    if (tid < s && tid + s < RED_WG) { red_a[tid] = max(red_a[tid], red_a[tid + s]); }
    workgroupBarrier();
  }
  let result = red_a[0];
  workgroupBarrier();
  return result;
}

fn reduce_sum(x: f32, tid: u32) -> f32 {
  red_a[tid] = x;
  workgroupBarrier();
  for (var s = RED_HALF; s > 0u; s = s >> 1u) {
    if (tid < s && tid + s < RED_WG) { red_a[tid] = red_a[tid] + red_a[tid + s]; }
    workgroupBarrier();
  }
  let result = red_a[0];
  workgroupBarrier();
  return result;
}

fn reduce_max_pair(a: f32, b: f32, tid: u32) -> vec2<f32> {
  red_a[tid] = a;
  red_b[tid] = b;
  workgroupBarrier();
  for (var s = RED_HALF; s > 0u; s = s >> 1u) {
    if (tid < s && tid + s < RED_WG) {
      red_a[tid] = max(red_a[tid], red_a[tid + s]);
      red_b[tid] = max(red_b[tid], red_b[tid + s]);
    }
    workgroupBarrier();
  }
  let result = vec2<f32>(red_a[0], red_b[0]);
  workgroupBarrier();
  return result;
}

// Merges softmax statistics (running max m, Σ exp(x - m)) within each segment of \`lanes\`
// consecutive invocations (a power of two, uniform); every invocation gets its segment's.
fn reduce_softmax_in(m: f32, s: f32, tid: u32, lanes: u32) -> vec2<f32> {
  red_a[tid] = m;
  red_b[tid] = s;
  workgroupBarrier();
  let lane = tid % lanes;
  for (var st = lanes / 2u; st > 0u; st = st >> 1u) {
    if (lane < st && tid + st < RED_WG) {
      let m1 = red_a[tid];
      let m2 = red_a[tid + st];
      let top = max(m1, m2);
      red_b[tid] = red_b[tid] * exp(m1 - top) + red_b[tid + st] * exp(m2 - top);
      red_a[tid] = top;
    }
    workgroupBarrier();
  }
  let result = vec2<f32>(red_a[tid - lane], red_b[tid - lane]);
  workgroupBarrier();
  return result;
}

// Merges softmax statistics (running max m, Σ exp(x - m)) across the workgroup.
fn reduce_softmax(m: f32, s: f32, tid: u32) -> vec2<f32> {
  return reduce_softmax_in(m, s, tid, RED_HALF * 2u);
}

// Exclusive prefix sum of x over the workgroup: (sum of x over lower tids, total).
fn scan_exclusive(x: u32, tid: u32) -> vec2<u32> {
  scan_u[tid] = x;
  workgroupBarrier();
  for (var off = 1u; off < RED_WG; off = off << 1u) {
    var add = 0u;
    if (tid >= off) { add = scan_u[tid - off]; }
    workgroupBarrier();
    scan_u[tid] = scan_u[tid] + add;
    workgroupBarrier();
  }
  let inclusive = scan_u[tid];
  let total = scan_u[RED_WG - 1u];
  workgroupBarrier();
  return vec2<u32>(inclusive - x, total);
}
`;
}

/**
 * {@link reductions} within subgroups of `sg`, then across the workgroup's `wg / sg` parts:
 * sums and maxima read every part straight-line (the norm's 8.1 µs per call at B=1 on the H100
 * became 8.3 with a loop over the parts and 8.5 with a second subgroup reduction); softmax
 * statistics, whose merges each take two exps, by a second butterfly over the parts (a serial
 * merge of 32 parts made the dense reduction 2.3 µs slower than the tree).
 */
function subgroupReductions(wg: number, sg: number): string {
  const parts = wg / sg;
  // A balanced tree of the parts: shallow expressions, every load independent.
  const fold = (op: "max" | "+", array: string) => {
    let terms = Array.from({ length: parts }, (_, i) => `${array}[${i}]`);
    while (terms.length > 1) {
      terms = Array.from({ length: Math.ceil(terms.length / 2) }, (_, i) => {
        const [a, b] = terms.slice(2 * i, 2 * i + 2);
        if (b === undefined) return a;
        return op === "+" ? `(${a} + ${b})` : `max(${a}, ${b})`;
      });
    }
    return terms[0];
  };
  // One value per invocation: reduced in its subgroup, then over the parts.
  const single = (name: string, within: string, op: "max" | "+") =>
    `fn ${name}(x: f32, tid: u32) -> f32 {
  let part = ${within}(x);
  if (tid % RED_SG == 0u) { red_a[tid / RED_SG] = part; }
  workgroupBarrier();
  let result = ${fold(op, "red_a")};
  workgroupBarrier();
  return result;
}`;
  return `const RED_WG = ${wg}u;
const RED_SG = ${sg}u;
const RED_PARTS = ${wg / sg}u;
const NEG = -3.0e38;
var<workgroup> red_a: array<f32, RED_PARTS>;
var<workgroup> red_b: array<f32, RED_PARTS>;
var<workgroup> scan_u: array<u32, RED_PARTS>;

${single("reduce_max", "subgroupMax", "max")}

${single("reduce_sum", "subgroupAdd", "+")}

fn reduce_max_pair(a: f32, b: f32, tid: u32) -> vec2<f32> {
  let part_a = subgroupMax(a);
  let part_b = subgroupMax(b);
  if (tid % RED_SG == 0u) {
    red_a[tid / RED_SG] = part_a;
    red_b[tid / RED_SG] = part_b;
  }
  workgroupBarrier();
  let result = vec2<f32>(${fold("max", "red_a")}, ${fold("max", "red_b")});
  workgroupBarrier();
  return result;
}

fn merge_softmax(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let top = max(a.x, b.x);
  return vec2<f32>(top, a.y * exp(a.x - top) + b.y * exp(b.x - top));
}

// Merges the statistics of aligned runs of \`width\` lanes (a power of two ≤ RED_SG).
fn butterfly_softmax(stats: vec2<f32>, width: u32) -> vec2<f32> {
  var merged = stats;
  for (var st = width / 2u; st > 0u; st = st >> 1u) {
    merged = merge_softmax(merged, vec2<f32>(subgroupShuffleXor(merged.x, st),
      subgroupShuffleXor(merged.y, st)));
  }
  return merged;
}

// Merges softmax statistics (running max m, Σ exp(x - m)) within each segment of \`lanes\`
// consecutive invocations (a power of two, uniform); every invocation gets its segment's.
fn reduce_softmax_in(m: f32, s: f32, tid: u32, lanes: u32) -> vec2<f32> {
  var stats = butterfly_softmax(vec2<f32>(m, s), min(lanes, RED_SG));
  if (lanes > RED_SG) {
    if (tid % RED_SG == 0u) {
      red_a[tid / RED_SG] = stats.x;
      red_b[tid / RED_SG] = stats.y;
    }
    workgroupBarrier();
    // The segment's parts, each held by one lane of every aligned run of min(per, RED_SG).
    let per = lanes / RED_SG;
    let first = (tid / lanes) * per;
    stats = vec2<f32>(NEG, 0.0);
    for (var i = (tid % RED_SG) % per; i < per; i += RED_SG) {
      stats = merge_softmax(stats, vec2<f32>(red_a[first + i], red_b[first + i]));
    }
    stats = butterfly_softmax(stats, min(per, RED_SG));
  }
  workgroupBarrier();
  return stats;
}

// Merges softmax statistics (running max m, Σ exp(x - m)) across the workgroup.
fn reduce_softmax(m: f32, s: f32, tid: u32) -> vec2<f32> {
  return reduce_softmax_in(m, s, tid, RED_WG);
}

// Exclusive prefix sum of x over the workgroup: (sum of x over lower tids, total).
fn scan_exclusive(x: u32, tid: u32) -> vec2<u32> {
  let inclusive = subgroupInclusiveAdd(x);
  if (tid % RED_SG == RED_SG - 1u) { scan_u[tid / RED_SG] = inclusive; }
  workgroupBarrier();
  let part = tid / RED_SG;
  var before = 0u;
  var total = 0u;
  for (var i = 0u; i < RED_PARTS; i++) {
    let v = scan_u[i];
    before += select(0u, v, i < part);
    total += v;
  }
  workgroupBarrier();
  return vec2<u32>(before + inclusive - x, total);
}
`;
}

/** The shape of one attention call: what graphs, tuning and kernels all describe. */
export interface AttentionShape {
  batch: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** KV capacity in positions. */
  maxSeq: number;
  kvDtype: KvDtype;
}

/** An attention shape plus the target limit the kernel generators size tiles by. */
export interface AttentionKernelShape extends AttentionShape {
  /** The target's workgroup memory limit, in bytes. */
  workgroupStorage: number;
  /** The target's fixed subgroup size: workgroup reductions go through subgroups. */
  subgroupSize?: number | null;
}

/**
 * Lanes (vec4s per row), slices and the workgroup size for a head dimension: a workgroup of
 * about `target` invocations as lanes × slices, so each slice reads whole rows.
 *
 * @example
 * ```ts
 * import { rowLayout } from "./wgsl_common.ts";
 * rowLayout(128); // { lanes: 32, slices: 8, workgroup: 256 }
 * rowLayout(80); // { lanes: 20, slices: 12, workgroup: 240 }
 * rowLayout(128, 512); // { lanes: 32, slices: 16, workgroup: 512 }
 * ```
 */
export function rowLayout(
  headDim: number,
  target = 256,
): { lanes: number; slices: number; workgroup: number } {
  const lanes = headDim / 4;
  const slices = Math.max(1, Math.floor(target / lanes));
  return { lanes, slices, workgroup: lanes * slices };
}

/**
 * The largest tile from `candidates` whose workgroup memory fits `limit`; throws a RangeError
 * naming the kernel when none does.
 */
export function fitTile(
  kernel: string,
  limit: number,
  bytesFor: (tile: number) => number,
  candidates = [256, 128, 64, 32, 16],
): number {
  for (const tile of candidates) if (bytesFor(tile) <= limit) return tile;
  throw new RangeError(
    `${kernel} needs ${bytesFor(candidates.at(-1)!)} bytes of workgroup memory; the target ` +
      `allows ${limit}`,
  );
}

/**
 * WGSL declarations of storage bindings 0…n−1 as arrays of the given element types, and of the
 * params uniform after them.
 *
 * @example
 * ```ts
 * import { bindingDeclarations } from "./wgsl_common.ts";
 * bindingDeclarations([["x", "read", "f32"], ["y", "read_write", "f32"]]);
 * ```
 */
export function bindingDeclarations(
  storage: readonly (readonly [name: string, access: "read" | "read_write", type: string])[],
): string {
  return [
    ...storage.map(([name, access, type], i) =>
      `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<${type}>;`
    ),
    `@group(0) @binding(${storage.length}) var<uniform> params: Params;`,
  ].join("\n");
}

/**
 * The `enable` line and the `W` alias of a weight dtype.
 *
 * @example
 * ```ts
 * import { weightPrelude } from "./wgsl_common.ts";
 * weightPrelude("f16"); // "enable f16;\nalias W = f16;\n"
 * ```
 */
export function weightPrelude(dtype: "f16" | "f32"): string {
  return `${dtype === "f16" ? "enable f16;\n" : ""}alias W = ${dtype};\n`;
}
