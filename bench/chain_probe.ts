/**
 * A probe of chaining dependent matmuls inside one dispatch, for the performance notes. A decode
 * step at batch 1 is a chain of dependent GEMVs, each its own dispatch; between two, the GPU
 * drains the first (its last workgroups run on a few SMs) and ramps up the second (its first
 * loads are in flight only after the barrier). Here the matmuls of a llama2-7b layer's shapes
 * (q/k/v 12288 rows, o 4096, gate/up 22016, a 4096-row down, every row 4096 f16 weights) run
 * in turn, each on the previous one's first 4096 outputs:
 *
 * - `separate`: one dispatch per matmul, as the executor runs a step;
 * - `chained`: all in one dispatch — each matmul's workgroups load their first weights, wait
 *   until every workgroup of the matmul before has counted itself done (one atomic per
 *   matmul), then read x. It relies on workgroups starting in order of their index, so that a
 *   waiting workgroup never holds the place of one it waits for;
 * - `pairs`: two matmuls per dispatch, chained so;
 * - chained with more weights loaded before the wait, those loads forced to land (the first 4,
 *   8 or all 16 pieces of each invocation), a quarter or half of each row copied into workgroup
 *   memory first (`staged`), each team's rows read into the L2 first, or the counter polled less
 *   often;
 * - `quarters waited for`: chained, whole rows per workgroup, but each quarter of the inputs
 *   waited for just before its pieces are used (the matmul before counts its final outputs per
 *   quarter), so a workgroup that starts in the previous matmul's tail works on the quarters
 *   already final;
 * - `unchained`: one dispatch without the waits (wrong results; the time the bytes alone take);
 * - `sliced`: each matmul split over its inputs into slices (split-K), slice by slice or (`by
 *   rows`) a row block's slices one after another: a workgroup of slice s waits only until the
 *   previous matmul's outputs of slice s are final, and the last of a row block's slices to
 *   finish adds their sums and writes the rows. So the next matmul's first slices could run in
 *   the previous one's tail, where a whole-matmul wait leaves the bandwidth of the slots its
 *   workgroups vacate unused; or (`summed on read`) by rows with no merge at all: the next
 *   matmul adds the slices' partial sums as it reads x (its outputs are partial sums: timing
 *   only);
 * - separate and unchained with 8 or 4 rows per workgroup (workgroups that live shorter).
 *
 * Every variant's outputs are compared with those of the separate dispatches that load as it
 * does. Run: `deno run -A bench/chain_probe.ts [out.txt]` (GPU time from timestamp queries in
 * calibrated ticks, median of 20, in µs).
 *
 * @module
 */
import { uniformStream } from "../kernels/random_problem.ts";
import { openGpu } from "../runtime/device.ts";
import { summarize } from "../runtime/stats.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { timePasses } from "./timed_passes.ts";

/** Output rows per workgroup by default (teams of 32 invocations, one team per row). */
const ROWS = 16;
/** Inputs of every matmul; a row is INNER / 8 sixteen-byte pieces. */
const INNER = 4096;
const PIECES = INNER / 8;
/** Output rows of one layer's matmuls, in order. */
const LAYER_ROWS = [12288, 4096, 22016, 4096];
/** Spins before a waiting workgroup gives up (the results then differ: no hang). */
const SPIN_LIMIT = 1 << 22;

/** Weight pieces each invocation of a row's team takes. */
const PER_LANE = PIECES / 32;

/**
 * Every variant's matmul table and bindings: weights, the activations (x of the first matmul,
 * then each matmul's outputs), the counters, the segment of each matmul, the launch's matmuls.
 */
const SEGMENT_BINDINGS =
  `struct Segment { first_wg: u32, rows: u32, w_piece: u32, x_at: u32, y_at: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> act: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> done: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read> segments: array<Segment>;
@group(0) @binding(4) var<uniform> launch: vec4<u32>;`;

/** WGSL finding the segment (matmul) `seg`, index `s`, of workgroup `wg` of the launch. */
const SEGMENT_LOOKUP = `  let first = launch.x;
  let last = launch.x + launch.y - 1u;
  let wg = segments[first].first_wg + wid.x;
  var s = first;
  while (s < last && wg >= segments[s + 1u].first_wg) { s++; }
  let seg = segments[s];`;

/** WGSL of one weight piece's product with x read from the activations at `x_at`. */
const PIECE_FROM_ACT = `fn piece(w: vec4<u32>, x_at: u32, p: u32) -> f32 {
  let xa = act[x_at / 4u + 2u * p];
  let xb = act[x_at / 4u + 2u * p + 1u];
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), xa) +
    dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), xb);
}`;

/**
 * WGSL of a workgroup waiting, after its first loads, until counter `counter` of `done` reaches
 * `need` (except in the launch's first matmul, whose inputs are ready): one invocation polls,
 * the rest wait at the barrier. Gives up after {@link SPIN_LIMIT} polls (wrong results, no hang).
 */
function waitFor(counter: string, need: string): string {
  return `  if (s > first) {
    if (tid == 0u) {
      var spins = 0u;
      while (atomicLoad(&done[${counter}]) < ${need} && spins < ${SPIN_LIMIT}u) {
        spins++;
      }
    }
    storageBarrier();
    workgroupBarrier();
  }`;
}

/**
 * WGSL of invocation `tid` < rows / 4 summing the 32 lanes' `partial` of 4 rows into `sums`.
 */
const ROW_SUMS = `    var sums = vec4<f32>(0.0);
    for (var l = 0u; l < 32u; l++) {
      sums += vec4<f32>(partial[(4u * tid) * 32u + l], partial[(4u * tid + 1u) * 32u + l],
        partial[(4u * tid + 2u) * 32u + l], partial[(4u * tid + 3u) * 32u + l]);
    }`;

/** WGSL loading groups g0 … g0 + n − 1 of 4 of an invocation's weight pieces. */
function loads(g0: number, n: number): string {
  return Array.from({ length: 4 * n }, (_, j) => {
    const p = (4 * g0 + j) * 32;
    return `  let w${4 * g0 + j} = weights[at + ${p}u];`;
  }).join("\n");
}

/** WGSL adding those pieces' products to acc. */
function uses(g0: number, n: number): string {
  return Array.from({ length: 4 * n }, (_, j) => {
    const k = 4 * g0 + j;
    return `  acc += piece(w${k}, seg.x_at, lane + ${k * 32}u);`;
  }).join("\n");
}

/**
 * A variant: matmuls per dispatch, whether each waits for the one before, the groups of 4 weight
 * pieces each invocation loads before that wait, whether those loads must land first, whether
 * the wait polls less often, and whether each team's rows are read into the L2 first.
 */
interface Variant {
  name: string;
  per: number;
  wait: boolean;
  early: number;
  landed?: boolean;
  backoff?: boolean;
  touch?: boolean;
  /** Output rows per workgroup (default {@link ROWS}). */
  rowsPerWg?: number;
  /**
   * Groups of 4 weight pieces each invocation copies into workgroup memory before the wait (the
   * loads land there, not in registers that the whole kernel would then hold).
   */
  staged?: number;
  /** Slices of each matmul's inputs (split-K), waited for one by one (`slicedSource`). */
  slices?: number;
  /** Sliced: a row block's slices in consecutive workgroups (else slice by slice). */
  rowMajor?: boolean;
  /**
   * Sliced by rows, no merge: each workgroup writes its slice's partial sums and counts itself
   * done; the next matmul adds the partials as it reads x (`summedSource`).
   */
  summed?: boolean;
  /**
   * Whole rows per workgroup, but each quarter of the inputs waited for on its own, just before
   * its pieces are used: the previous matmul counts its final outputs per quarter.
   */
  progressive?: boolean;
}

/** The kernel of a variant. */
function source(
  { wait, early, landed, backoff, touch, rowsPerWg = ROWS, staged = 0, progressive }: Variant,
  matmuls: number,
): string {
  const ROWS = rowsPerWg;
  // Staged pieces take the place of early loads; a staged variant names `early: 1` only to be
  // compared with the separate dispatches that sum in its order.
  if (staged > 0) early = 0;
  const invocations = ROWS * 32;
  const stage = Array.from({ length: staged }, (_, g) =>
    `${loads(g, 1)}\n${
      Array.from(
        { length: 4 },
        (_, j) => `  stash[${(4 * g + j) * invocations}u + tid] = w${4 * g + j};`,
      ).join("\n")
    }`).join("\n");
  const stashUses = Array.from(
    { length: 4 * staged },
    (_, k) => `  acc += piece(stash[${k * invocations}u + tid], seg.x_at, lane + ${k * 32}u);`,
  ).join("\n");
  // After the wait: the first unstaged group's loads go out before the staged pieces are used.
  const quarterWait = (g: number) =>
    waitFor(`${matmuls}u + (s - 1u) * 4u + ${g}u`, `${INNER / 4 / ROWS}u`);
  const afterWait = progressive
    ? Array.from(
      { length: PER_LANE / 4 },
      (_, g) =>
        `${g + early < PER_LANE / 4 ? loads(g + early, 1) : ""}\n${quarterWait(g)}\n${uses(g, 1)}`,
    ).join("\n")
    : staged > 0
    ? `${loads(staged, 1)}\n${stashUses}\n${uses(staged, 1)}\n${
      Array.from({ length: PER_LANE / 4 - staged - 1 }, (_, g) =>
        `${loads(staged + 1 + g, 1)}\n${uses(staged + 1 + g, 1)}`).join("\n")
    }`
    : `${uses(0, early)}\n${
      Array.from({ length: PER_LANE / 4 - early }, (_, g) =>
        `${loads(early + g, 1)}\n${uses(early + g, 1)}`).join("\n")
    }`;
  return `
${SEGMENT_BINDINGS}
var<workgroup> partial: array<f32, ${ROWS * 32}>;
${staged > 0 ? `var<workgroup> stash: array<vec4<u32>, ${4 * staged * invocations}>;` : ""}

${PIECE_FROM_ACT}

@compute @workgroup_size(${ROWS * 32})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
${SEGMENT_LOOKUP}
  let lane = tid % 32u;
  let row = min((wg - seg.first_wg) * ${ROWS}u + tid / 32u, seg.rows - 1u);
  let at = seg.w_piece + row * ${PIECES}u + lane;
${loads(0, early)}
${stage}
${
    touch
      ? `  // A word of every 16-byte piece the team will read, into the L2 before the wait: the
  // whole row's sectors, in 16 registers.
  var touched = 0u;
${
        Array.from({ length: PER_LANE }, (_, k) => `  touched ^= weights[at + ${k * 32}u].x;`)
          .join("\n")
      }
  if (touched == 0x9e3779b9u) { atomicAdd(&done[arrayLength(&done) - 1u], 1u); }`
      : ""
  }
${
    landed
      ? `  // Every early load used before the wait, so none is moved after it.
  let landed = ${Array.from({ length: 4 * early }, (_, k) => `w${k}.x`).join(" ^ ")};
  if (landed == 0x9e3779b9u) { atomicAdd(&done[arrayLength(&done) - 1u], 1u); }`
      : ""
  }
${
    wait && !progressive
      ? `  if (s > first) {
    if (tid == 0u) {
      let need = seg.first_wg - segments[s - 1u].first_wg;
      var spins = 0u;
      while (atomicLoad(&done[s - 1u]) < need && spins < ${SPIN_LIMIT}u) {
        spins++;${
        backoff
          ? `
        // Fewer polls of the one counter: ~100 dependent steps between two.
        var h = spins;
        for (var i = 0u; i < 100u; i++) { h = h * 1664525u + 1013904223u; }
        if (h == 0x9e3779b9u) { spins = 0u; }`
          : ""
      }
      }
    }
    storageBarrier();
    workgroupBarrier();
  }`
      : ""
  }
  var acc = 0.0;
${afterWait}
  partial[tid] = acc;
  workgroupBarrier();
  if (tid < ${ROWS / 4}u) {
${ROW_SUMS}
    act[(seg.y_at + (wg - seg.first_wg) * ${ROWS}u) / 4u + tid] = sums * 1.3; // keeps |y| near |x|
  }
  storageBarrier();
  if (tid == 0u) { atomicAdd(&done[s], 1u); }${
    progressive
      ? `
  let block = wg - seg.first_wg;
  if (tid == 0u && block * ${ROWS}u < ${INNER}u) {
    atomicAdd(&done[${matmuls}u + s * 4u + block / ${INNER / 4 / ROWS}u], 1u);
  }`
      : ""
  }
}
`;
}

/**
 * The kernel of a sliced variant: workgroup `wg` of a matmul takes slice `wg / blocks` of its
 * inputs for row block `wg % blocks`, so a matmul's workgroups start slice by slice. Counters in
 * `done`: per matmul and slice of its first INNER outputs, the row blocks made final
 * (`FINAL + matmul · slices + slice`); per row block, its slices summed (`ARRIVED + block`).
 * Each (slice, row block)'s partial sums get a 128-byte line of their own, so that no SM can
 * hold a stale copy of a line another workgroup writes.
 */
function slicedSource(
  { wait, slices, rowsPerWg = ROWS, rowMajor }: Variant,
  matmuls: number,
): string {
  const ROWS = rowsPerWg;
  const perSlice = PER_LANE / slices!;
  const load = loads(0, perSlice / 4);
  const use = Array.from(
    { length: perSlice },
    (_, j) => `  acc += piece(w${j}, seg.x_at, first_piece + ${j * 32}u);`,
  ).join("\n");
  return `
${SEGMENT_BINDINGS}
@group(0) @binding(5) var<storage, read_write> parts: array<vec4<f32>>;
const SLICES = ${slices}u;
const FINAL = ${matmuls}u;
const ARRIVED = FINAL + ${matmuls * slices!}u;
const BLOCKS_PER_SLICE = ${INNER / slices! / ROWS}u;
var<workgroup> partial: array<f32, ${ROWS * 32}>;
var<workgroup> last_slice: u32;

${PIECE_FROM_ACT}

@compute @workgroup_size(${ROWS * 32})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
${SEGMENT_LOOKUP}
  let blocks = seg.rows / ${ROWS}u;
  let slice = (wg - seg.first_wg) ${rowMajor ? "% SLICES" : "/ blocks"};
  let block = (wg - seg.first_wg) ${rowMajor ? "/ SLICES" : "% blocks"};
  let lane = tid % 32u;
  let row = block * ${ROWS}u + tid / 32u;
  let first_piece = slice * ${perSlice * 32}u + lane;
  let at = seg.w_piece + row * ${PIECES}u + first_piece;
${load}
${wait ? waitFor("FINAL + (s - 1u) * SLICES + slice", "BLOCKS_PER_SLICE") : ""}
  var acc = 0.0;
${use}
  partial[tid] = acc;
  workgroupBarrier();
  let global_block = (seg.y_at - ${INNER}u) / ${ROWS}u + block;
  if (tid < ${ROWS / 4}u) {
${ROW_SUMS}
    parts[(global_block * SLICES + slice) * 8u + tid] = sums;
  }
  storageBarrier();
  workgroupBarrier();
  if (tid == 0u) {
    last_slice = select(0u, 1u, atomicAdd(&done[ARRIVED + global_block], 1u) == SLICES - 1u);
  }
  if (workgroupUniformLoad(&last_slice) == 0u) { return; }
  storageBarrier();
  if (tid < ${ROWS / 4}u) {
    var y = vec4<f32>(0.0);
    for (var t = 0u; t < SLICES; t++) { y += parts[(global_block * SLICES + t) * 8u + tid]; }
    act[(seg.y_at + block * ${ROWS}u) / 4u + tid] = y * 1.3; // keeps |y| near |x|
  }
  storageBarrier();
  workgroupBarrier();
  if (tid == 0u && block * ${ROWS}u < ${INNER}u) {
    atomicAdd(&done[FINAL + s * SLICES + block / BLOCKS_PER_SLICE], 1u);
  }
}
`;
}

/**
 * The kernel of a sliced variant whose partial sums nobody merges: workgroup `wg` of a matmul
 * takes slice `wg % SLICES` of its inputs for row block `wg / SLICES`, writes its rows' partial
 * sums (`parts`, [slice][row]) and counts itself done for the slice of outputs its rows lie in.
 * The next matmul waits until every workgroup of its input slice's rows is done, then adds the
 * SLICES partials of that slice of x once, into workgroup memory, which its teams read. No
 * arrival count per row block and no merge at the end of it: what a split costs at least.
 */
function summedSource({ wait, slices, rowsPerWg = ROWS }: Variant, matmuls: number): string {
  const ROWS = rowsPerWg;
  const perSlice = PER_LANE / slices!;
  const load = loads(0, perSlice / 4);
  const use = Array.from(
    { length: perSlice },
    (_, j) => `  acc += piece(w${j}, lane + ${j * 32}u);`,
  ).join("\n");
  const inputs = INNER / slices!;
  return `
${SEGMENT_BINDINGS}
@group(0) @binding(5) var<storage, read_write> parts: array<vec4<f32>>;
const SLICES = ${slices}u;
const FINAL = ${matmuls}u;
const ROW_TOTAL = ${rowTotal}u;
const INPUTS = ${inputs}u;
// Workgroups that must be done before a slice of outputs is whole: its row blocks × the slices.
const SLICE_DONE = ${(inputs / ROWS) * slices!}u;
var<workgroup> partial: array<f32, ${ROWS * 32}>;
var<workgroup> xs: array<vec4<f32>, ${inputs / 4}>;

fn piece(w: vec4<u32>, p: u32) -> f32 {
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), xs[2u * p]) +
    dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), xs[2u * p + 1u]);
}

@compute @workgroup_size(${ROWS * 32})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
${SEGMENT_LOOKUP}
  let slice = (wg - seg.first_wg) % SLICES;
  let block = (wg - seg.first_wg) / SLICES;
  let lane = tid % 32u;
  let row = block * ${ROWS}u + tid / 32u;
  let at = seg.w_piece + row * ${PIECES}u + slice * ${perSlice * 32}u + lane;
${load}
${wait ? waitFor("FINAL + (s - 1u) * SLICES + slice", "SLICE_DONE") : ""}
  // This slice of x: the input itself for the first matmul, else the sum of the partials.
  for (var i = tid; i < INPUTS / 4u; i += ${ROWS * 32}u) {
    if (s == 0u) {
      xs[i] = act[(seg.x_at + slice * INPUTS) / 4u + i];
    } else {
      var x = vec4<f32>(0.0);
      for (var t = 0u; t < SLICES; t++) {
        x += parts[(t * ROW_TOTAL + seg.x_at - ${INNER}u + slice * INPUTS) / 4u + i];
      }
      xs[i] = x * 1.3; // keeps |y| near |x|
    }
  }
  workgroupBarrier();
  var acc = 0.0;
${use}
  partial[tid] = acc;
  workgroupBarrier();
  if (tid < ${ROWS / 4}u) {
${ROW_SUMS}
    parts[(slice * ROW_TOTAL + seg.y_at - ${INNER}u + block * ${ROWS}u) / 4u + tid] = sums;
  }
  storageBarrier();
  if (tid == 0u && block * ${ROWS}u < ${INNER}u) {
    atomicAdd(&done[FINAL + s * SLICES + block * ${ROWS}u / INPUTS], 1u);
  }
}
`;
}

const gpu = await openGpu();
const device = gpu.device;
const limit = device.limits.maxStorageBufferBindingSize;
// Up to 4 layers in one weight binding; on a small limit (the software adapter), rows ÷ 2ⁿ.
let shrink = 1;
while (LAYER_ROWS.reduce((a, r) => a + r, 0) / shrink * INNER * 2 > limit) shrink *= 2;
const layerRows = LAYER_ROWS.map((r) => r / shrink);
const layerBytes = layerRows.reduce((a, r) => a + r, 0) * INNER * 2;
const layers = Math.max(1, Math.min(4, Math.floor(limit / layerBytes)));
const rows = Array.from({ length: layers }, () => layerRows).flat();

/** The segment table for a workgroup's rows: workgroups, weight pieces and activation offsets. */
function segmentTable(rowsPerWg: number, slices: number): Uint32Array<ArrayBuffer> {
  const table = new Uint32Array(rows.length * 8);
  let firstWg = 0, at = 0, yAt = INNER;
  for (const [i, n] of rows.entries()) {
    // x of matmul i is the start of matmul i − 1's output (of the first, the first INNER floats).
    const xAt = i === 0 ? 0 : table[(i - 1) * 8 + 4];
    table.set([firstWg, n, at, xAt, yAt], i * 8);
    firstWg += n / rowsPerWg * slices;
    at += n * PIECES;
    yAt += n;
  }
  return table;
}
const rowTotal = rows.reduce((a, n) => a + n, 0);
const piece = rowTotal * PIECES;
const totalWorkgroups = rowTotal / ROWS;
const actFloats = INNER + rowTotal;

const storage = (size: number, usage = 0) =>
  device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | usage });
const weights = storage(piece * 16, GPUBufferUsage.COPY_DST);
const act = storage(actFloats * 4, GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC);
// One counter per matmul, the sliced variants' counters (up to 8 slices, 8 rows per workgroup),
// and a last one that no load ever lands on.
const done = storage((rows.length * 9 + rowTotal / 8 + 1) * 4, GPUBufferUsage.COPY_DST);
// The sliced variants' partial sums: a 128-byte line per (row block, slice).
const parts = storage(rowTotal / 8 * 8 * 128);
const tables = new Map<number, { table: Uint32Array<ArrayBuffer>; buffer: GPUBuffer }>();
function tableOf(rowsPerWg: number, slices: number) {
  const key = rowsPerWg * 100 + slices;
  if (!tables.has(key)) {
    const table = segmentTable(rowsPerWg, slices);
    const buffer = storage(table.byteLength, GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(buffer, 0, table);
    tables.set(key, { table, buffer });
  }
  return tables.get(key)!;
}

// Weights: f16 halves of small seeded values, written in 64 MiB pieces.
const CHUNK = 64 << 20;
const chunk = new Uint16Array(CHUNK / 2);
const next = uniformStream(12345);
for (let i = 0; i < chunk.length; i++) {
  const bits = (next() * 2 ** 32) >>> 0;
  chunk[i] = 0x2000 | (bits & 0x3ff) | (bits & 0x8000); // |w| in [2⁻⁷, 2⁻⁶), either sign
}
for (let at = 0; at < piece * 16; at += CHUNK) {
  device.queue.writeBuffer(weights, at, chunk, 0, Math.min(CHUNK, piece * 16 - at) / 2);
}
const x0 = new Float32Array(INNER).map((_, i) => Math.sin(i));

const pipelineCache = new Map<string, GPUComputePipeline>();
function pipelineOf(v: Variant): GPUComputePipeline {
  const key =
    `${v.wait} ${v.early} ${v.landed} ${v.backoff} ${v.touch} ${v.rowsPerWg} ${v.staged} ${v.slices} ${v.rowMajor} ${v.progressive} ${v.summed}`;
  if (!pipelineCache.has(key)) {
    const code = v.summed
      ? summedSource(v, rows.length)
      : v.slices
      ? slicedSource(v, rows.length)
      : source(v, rows.length);
    pipelineCache.set(
      key,
      device.createComputePipeline({
        layout: "auto",
        compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
      }),
    );
  }
  return pipelineCache.get(key)!;
}

/** One dispatch of a variant: its bind group (which names its first matmul) and workgroups. */
interface Launch {
  group: GPUBindGroup;
  workgroups: number;
}
function launches(v: Variant): Launch[] {
  const per = v.per;
  const { table, buffer: segments } = tableOf(v.rowsPerWg ?? ROWS, v.slices ?? 1);
  const total = rowTotal / (v.rowsPerWg ?? ROWS) * (v.slices ?? 1);
  const out: Launch[] = [];
  for (let first = 0; first < rows.length; first += per) {
    const count = Math.min(per, rows.length - first);
    const params = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(params, 0, new Uint32Array([first, count, 0, 0]));
    const end = first + count < rows.length ? table[(first + count) * 8] : total;
    out.push({
      workgroups: end - table[first * 8],
      group: device.createBindGroup({
        layout: pipelineOf(v).getBindGroupLayout(0),
        entries: [weights, act, done, segments, params, ...(v.slices ? [parts] : [])].map((
          buffer,
          binding,
        ) => ({
          binding,
          resource: { buffer },
        })),
      }),
    });
  }
  return out;
}

const all = rows.length;
const variants: Variant[] = [
  { name: "separate", per: 1, wait: false, early: 1 },
  { name: "chained", per: all, wait: true, early: 1 },
  { name: "pairs", per: 2, wait: true, early: 1 },
  { name: "separate, all pieces first", per: 1, wait: false, early: PER_LANE / 4 },
  { name: "chained, all pieces first", per: all, wait: true, early: PER_LANE / 4 },
  { name: "chained, all landed first", per: all, wait: true, early: PER_LANE / 4, landed: true },
  { name: "chained, polls spaced", per: all, wait: true, early: 1, backoff: true },
  { name: "separate, no loads first", per: 1, wait: false, early: 0 },
  { name: "chained, no loads first", per: all, wait: true, early: 0 },
  { name: "chained, rows touched first", per: all, wait: true, early: 0, touch: true },
  { name: "pairs, rows touched first", per: 2, wait: true, early: 0, touch: true },
  {
    name: "chained, rows touched first, polls spaced",
    per: all,
    wait: true,
    early: 0,
    touch: true,
    backoff: true,
  },
  { name: "separate, rows touched first", per: 1, wait: false, early: 0, touch: true },
  { name: "unchained", per: all, wait: false, early: 1 },
  { name: "separate, 8 rows per workgroup", per: 1, wait: false, early: 1, rowsPerWg: 8 },
  { name: "unchained, 8 rows per workgroup", per: all, wait: false, early: 1, rowsPerWg: 8 },
  { name: "separate, 4 rows per workgroup", per: 1, wait: false, early: 1, rowsPerWg: 4 },
  { name: "unchained, 4 rows per workgroup", per: all, wait: false, early: 1, rowsPerWg: 4 },
  { name: "separate, a quarter of each row staged", per: 1, wait: false, early: 1, staged: 1 },
  { name: "chained, a quarter of each row staged", per: all, wait: true, early: 1, staged: 1 },
  { name: "pairs, a quarter of each row staged", per: 2, wait: true, early: 1, staged: 1 },
  {
    name: "separate, 8 rows per workgroup, half of each row staged",
    per: 1,
    wait: false,
    early: 1,
    rowsPerWg: 8,
    staged: 2,
  },
  {
    name: "chained, 8 rows per workgroup, half of each row staged",
    per: all,
    wait: true,
    early: 1,
    rowsPerWg: 8,
    staged: 2,
  },
  {
    name: "chained, 8 rows per workgroup, a quarter of each row staged",
    per: all,
    wait: true,
    early: 1,
    rowsPerWg: 8,
    staged: 1,
  },
  { name: "chained, 8 rows per workgroup", per: all, wait: true, early: 1, rowsPerWg: 8 },
  { name: "chained, first 4 pieces landed", per: all, wait: true, early: 1, landed: true },
  { name: "separate, first 4 pieces landed", per: 1, wait: false, early: 1, landed: true },
  { name: "chained, first 8 pieces landed", per: all, wait: true, early: 2, landed: true },
  {
    name: "chained, 8 rows per workgroup, first 4 pieces landed",
    per: all,
    wait: true,
    early: 1,
    landed: true,
    rowsPerWg: 8,
  },
  // Slices sum in another order than the reference: |Δ| at float32 rounding counts as equal.
  { name: "sliced ×4, separate", per: 1, wait: false, early: 1, slices: 4 },
  { name: "sliced ×4, chained", per: all, wait: true, early: 1, slices: 4 },
  { name: "sliced ×4, unchained", per: all, wait: false, early: 1, slices: 4 },
  { name: "sliced ×2, chained", per: all, wait: true, early: 1, slices: 2 },
  { name: "sliced ×2, separate", per: 1, wait: false, early: 1, slices: 2 },
  { name: "sliced ×2, unchained", per: all, wait: false, early: 1, slices: 2 },
  { name: "quarters waited for, chained", per: all, wait: true, early: 1, progressive: true },
  {
    name: "quarters waited for, chained, 2 groups ahead",
    per: all,
    wait: true,
    early: 2,
    progressive: true,
  },
  {
    name: "quarters waited for, chained, 8 rows per workgroup",
    per: all,
    wait: true,
    early: 1,
    progressive: true,
    rowsPerWg: 8,
  },
  { name: "quarters waited for, pairs", per: 2, wait: true, early: 1, progressive: true },
  // Summed on read: the outputs stay partial sums, so they are not compared (timing only).
  {
    name: "sliced ×2, summed on read, chained",
    per: all,
    wait: true,
    early: 1,
    slices: 2,
    summed: true,
  },
  {
    name: "sliced ×2, summed on read, unchained",
    per: all,
    wait: false,
    early: 1,
    slices: 2,
    summed: true,
  },
  {
    name: "sliced ×4, summed on read, chained",
    per: all,
    wait: true,
    early: 1,
    slices: 4,
    summed: true,
  },
  {
    name: "sliced ×4, summed on read, unchained",
    per: all,
    wait: false,
    early: 1,
    slices: 4,
    summed: true,
  },
  { name: "sliced ×4 by rows, chained", per: all, wait: true, early: 1, slices: 4, rowMajor: true },
  { name: "sliced ×2 by rows, chained", per: all, wait: true, early: 1, slices: 2, rowMajor: true },

  {
    name: "sliced ×2, chained, 8 rows per workgroup",
    per: all,
    wait: true,
    early: 1,
    slices: 2,
    rowsPerWg: 8,
  },
];
const { nsPerTick } = await calibrateTicks(gpuProbe(device, gpu.info.isFallbackAdapter));
const readback = device.createBuffer({
  size: actFloats * 4,
  usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
});
const lines = [
  `# chain probe: ${gpu.info.description || gpu.info.vendor}`,
  "",
  `${rows.length} matmuls (${layers} layers of ${layerRows.join(", ")} rows × ${INNER}), ${
    (piece * 16 / 1e6).toFixed(0)
  } MB of weights, ${totalWorkgroups} workgroups of ${ROWS * 32}`,
  "",
  "variant | dispatches | µs (median of 20) | GB/s | max |Δ| against separate dispatches",
  "--- | --- | --- | --- | ---",
];
// Each run's results are compared with those of the separate dispatches that load as it does, or
// else with plain separate dispatches (every variant sums a row's pieces in the same order).
const references = new Map<number, Float32Array>();
for (const v of variants) {
  const plan = launches(v);
  const record = (encoder: GPUCommandEncoder, timestampWrites?: GPUComputePassTimestampWrites) => {
    encoder.clearBuffer(done);
    const pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : {});
    pass.setPipeline(pipelineOf(v));
    for (const l of plan) {
      pass.setBindGroup(0, l.group);
      pass.dispatchWorkgroups(l.workgroups);
    }
    pass.end();
  };
  // One untimed run from a fresh x, for the results.
  device.queue.writeBuffer(act, 0, new Float32Array(actFloats));
  device.queue.writeBuffer(act, 0, x0);
  const encoder = device.createCommandEncoder();
  record(encoder);
  encoder.copyBufferToBuffer(act, 0, readback, 0, actFloats * 4);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const result = new Float32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  if (v.per === 1 && !v.slices && !references.has(v.early)) references.set(v.early, result);
  const reference = references.get(v.early) ?? references.get(1)!;
  let worst = 0;
  for (let i = 0; i < actFloats; i++) worst = Math.max(worst, Math.abs(result[i] - reference[i]));
  const ticks = await timePasses(device, 20, (e, t) => record(e, t));
  gpu.throwIfErrors();
  const us = summarize(ticks.map((t) => t * nsPerTick)).median / 1000;
  const line = `${v.name} | ${plan.length} | ${us.toFixed(1)} | ${
    (piece * 16 / us / 1000).toFixed(0)
  } | ${v.summed ? "— (partial sums)" : worst.toExponential(2)}`;
  console.log(line);
  lines.push(line);
}
const out = Deno.args[0];
if (out) Deno.writeTextFileSync(out, lines.join("\n") + "\n");
