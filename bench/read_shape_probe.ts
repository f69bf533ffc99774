/**
 * A probe of how fast attention's access patterns alone read, for the performance notes:
 *
 * - dense: 256 MiB (llama2-7b B=1 S=16k's K and V, or llama3-8b B=16 S=4k's) read by workgroups
 *   that walk their chunk as `attention_dense_partial_sg` does — teams of 32 invocations, each load
 *   instruction 8 bytes per invocation over a 256-byte row, a few rows per round, K and V side by
 *   side — against the bench's plain read of the same bytes. What the kernel takes beyond the
 *   pattern's time is its own work: the query loads, the softmax, the teams' merge, the partials.
 * - SparQ's stage 3: 128 random rows of each 4096-row (1 MiB) region of a K and a V cache, one
 *   workgroup per region (llama2-7b B=64 S=4k: 2048 (sequence, head) rows, 128 MiB gathered out of
 *   4 GiB), in stage 3's order and in others, against a plain read of 128 MiB.
 * - SparQ's stage 1: 32 random components' runs of 1024 f16 positions (2 KiB) of each 256 KiB
 *   Kᵀ tile, 16 bytes per invocation, in stage 1's blocks (2048 or 4096 positions a workgroup)
 *   and other ways, against a plain read of as many bytes.
 *
 * Each section reads what one storage binding of the adapter holds, up to its size here
 * (lavapipe: 128 MiB), with fewer workgroups where it holds less.
 * Run: `deno run -A bench/read_shape_probe.ts [out.txt]` (prints a table; GPU time from timestamp
 * queries in calibrated ticks, each repetition after the bench's L2 scrub, median of 20, in µs).
 *
 * @module
 */
import { READ_SINK_TRIGGER } from "../kernels/buffer_read.ts";
import { KT_TILE } from "../kernels/kt_layout.ts";
import { BufferReader } from "../runtime/buffer_reader.ts";
import { openGpu } from "../runtime/device.ts";
import { L2Scrub } from "../runtime/l2_scrub.ts";
import { summarize } from "../runtime/stats.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { timePasses } from "./timed_passes.ts";

/** Bytes every dense variant reads where the adapter binds that much (workgroups scale down). */
const DENSE_BYTES = 256 << 20;
/** Bytes of one row: a d = 128 f16 head. */
const ROW_BYTES = 256;

/** One way of reading the dense section's bytes in the dense kernel's shape. */
interface Shape {
  label: string;
  workgroups: number;
  /** 2: K and V rows side by side from two buffers (half the bytes each); 1: one buffer. */
  streams: 1 | 2;
  /** Rows each team loads per round before it uses any. */
  rounds: number;
}

/**
 * WGSL of a shape reading `total` bytes: workgroup g reads rows [g · rows, (g + 1) · rows) of each
 * stream, team t of 8 the rows t, t + 8, … `rounds` at a time, XORing what it loads.
 */
function shapeKernel({ workgroups, streams, rounds }: Shape, total: number): string {
  const rows = total / ROW_BYTES / streams / workgroups;
  const loads = [...Array(rounds).keys()].map((u) => {
    const row = `(base + t0 + ${u}u * TEAMS + team)`;
    return streams === 2
      ? `acc ^= k[${row} * 32u + lane] ^ v[${row} * 32u + lane];`
      : `acc ^= k[${row} * 32u + lane];`;
  });
  return `
@group(0) @binding(0) var<storage, read> k: array<vec2<u32>>;
${streams === 2 ? "@group(0) @binding(2) var<storage, read> v: array<vec2<u32>>;" : ""}
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
const ROWS = ${rows}u;
const TEAMS = 8u;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let team = tid / 32u;
  let lane = tid % 32u;
  let base = wid.x * ROWS;
  var acc = vec2<u32>(0u);
  for (var t0 = 0u; t0 < ROWS; t0 += TEAMS * ${rounds}u) {
    ${loads.join("\n    ")}
  }
  if (all(acc == vec2<u32>(${READ_SINK_TRIGGER}u))) { sink[wid.x] = acc.x; }
}`;
}

const SHAPES: Shape[] = [
  {
    label: "K and V, 4 rows a round (llama2-7b B=1 S=16k)",
    workgroups: 1024,
    streams: 2,
    rounds: 4,
  },
  {
    label: "K and V, 4 rows a round (llama3-8b B=16 S=4k)",
    workgroups: 512,
    streams: 2,
    rounds: 4,
  },
  { label: "K and V, 4 rows a round", workgroups: 2048, streams: 2, rounds: 4 },
  { label: "K and V, 4 rows a round", workgroups: 8192, streams: 2, rounds: 4 },
  { label: "K and V, 2 rows a round", workgroups: 1024, streams: 2, rounds: 2 },
  { label: "K and V, 8 rows a round", workgroups: 1024, streams: 2, rounds: 8 },
  { label: "one buffer, 4 rows a round", workgroups: 1024, streams: 1, rounds: 4 },
  { label: "one buffer, 4 rows a round", workgroups: 8192, streams: 1, rounds: 4 },
  { label: "one buffer, 16 rows a round", workgroups: 8192, streams: 1, rounds: 16 },
];

const gpu = await openGpu();
const device = gpu.device;
const { nsPerTick } = await calibrateTicks(gpuProbe(device, gpu.info.isFallbackAdapter));
const scrub = L2Scrub.create(device, 256 << 20);
/** The largest power of two the adapter binds, up to {@link DENSE_BYTES} (lavapipe: 128 MiB). */
const total = Math.min(
  DENSE_BYTES,
  2 ** Math.floor(Math.log2(device.limits.maxStorageBufferBindingSize)),
);
/** A smaller total keeps each workgroup's rows and so its pattern: fewer workgroups. */
const scaled = (workgroups: number) => Math.max(1, workgroups * total / DENSE_BYTES);
const k = device.createBuffer({ size: total, usage: GPUBufferUsage.STORAGE });
const v = device.createBuffer({ size: total / 2, usage: GPUBufferUsage.STORAGE });
const sink = device.createBuffer({ size: 8192 * 4, usage: GPUBufferUsage.STORAGE });
const plain = BufferReader.create(device, total, "plain read");

/** Median µs of 20 timed passes of `dispatch`, each after the scrub. */
async function time(dispatch: (pass: GPUComputePassEncoder) => void): Promise<number> {
  const ticks = await timePasses(device, 20, (encoder, timestampWrites) => {
    scrub.encode(encoder);
    const pass = encoder.beginComputePass({ timestampWrites });
    dispatch(pass);
    pass.end();
  });
  return summarize(ticks.map((t) => t * nsPerTick)).median / 1000;
}

/**
 * Times `code` (entry point `main`) over `workgroups` workgroups, `buffers` bound at bindings 0,
 * 1, … in order: median µs, as {@link time}.
 */
async function timeKernel(
  label: string,
  code: string,
  buffers: GPUBuffer[],
  workgroups: number,
): Promise<number> {
  const module = device.createShaderModule({ label, code });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return await time((pass) => {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(workgroups);
  });
}

const lines = [`# read-shape probe: ${gpu.info.description || gpu.info.vendor}`];
/** Starts a table titled `title` whose rows read `bytes` each; returns its row writer. */
function table(title: string, bytes: number) {
  lines.push("", title, "", "variant | workgroups | µs | GB/s", "--- | --- | --- | ---");
  return (label: string, workgroups: number, us: number) => {
    const line = `${label} | ${workgroups} | ${us.toFixed(1)} | ${(bytes / us / 1000).toFixed(0)}`;
    console.log(line);
    lines.push(line);
  };
}

/** {@link table}, its first row a plain read of as many bytes (the ceiling to compare with). */
async function tableAgainstPlainRead(title: string, bytes: number) {
  const row = table(title, bytes);
  const plainRead = BufferReader.create(device, bytes, `plain read, ${bytes >> 20} MiB`);
  row("plain read of as many bytes", bytes / 32768, await time((p) => plainRead.dispatch(p)));
  return row;
}

/** A storage buffer holding `data`. */
function storageWith(data: Uint32Array<ArrayBuffer>): GPUBuffer {
  const buffer = device.createBuffer({
    size: data.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, data);
  return buffer;
}

const row = table(
  `${total >> 20} MiB in 256-byte rows; teams of 32 invocations, 8-byte loads`,
  total,
);
await time((pass) => plain.dispatch(pass)); // warm-up: clocks up, pipelines built
row("plain read (the bench's ceiling kernel)", total / 32768, await time((p) => plain.dispatch(p)));
for (const shape of SHAPES) {
  const buffers = shape.streams === 2 ? [k, sink, v] : [k, sink];
  const workgroups = scaled(shape.workgroups);
  const code = shapeKernel({ ...shape, workgroups }, total);
  row(shape.label, workgroups, await timeKernel(shape.label, code, buffers, workgroups));
}

/** Rows gathered from each region, and rows per region (4096 positions of 256 bytes). */
const KEPT = 128;
const REGION_ROWS = 4096;

/** One way of gathering stage 3's rows. */
interface Gather {
  label: string;
  /** WGSL of the workgroup's loads, each through {@link gathered}. */
  body: string;
}

/** A load of the gathered row `i` (WGSL u32) of `cache` by this invocation's lane. */
const gathered = (cache: string, i: string) =>
  `acc ^= ${cache}[(base + idx[region * ${KEPT}u + ${i}]) * 32u + lane];`;

const GATHERS: Gather[] = [
  {
    label: "K 4 rows a round per team, barrier, V 16 rows per team (stage 3's order)",
    body: `for (var u0 = 0u; u0 < ${KEPT}u; u0 += 32u) {
${[0, 1, 2, 3].map((u) => `    ${gathered("k", `u0 + ${u}u * 8u + team`)}`).join("\n")}
  }
  workgroupBarrier();
${[...Array(16).keys()].map((u) => `  ${gathered("v", `team + ${u}u * 8u`)}`).join("\n")}`,
  },
  {
    label: "K 16 rows per team at once, barrier, V 16 rows per team",
    body: `${[...Array(16).keys()].map((u) => `  ${gathered("k", `team + ${u}u * 8u`)}`).join("\n")}
  workgroupBarrier();
${[...Array(16).keys()].map((u) => `  ${gathered("v", `team + ${u}u * 8u`)}`).join("\n")}`,
  },
  {
    label: "K and V rows together, 16 + 16 per team at once",
    body: [...Array(16).keys()].flatMap((u) => [
      `  ${gathered("k", `team + ${u}u * 8u`)}`,
      `  ${gathered("v", `team + ${u}u * 8u`)}`,
    ]).join("\n"),
  },
];

/** `kept` random distinct numbers below `of` for each of `groups`, in random order (seeded). */
function randomPicks(groups: number, kept: number, of: number): Uint32Array<ArrayBuffer> {
  const picks = new Uint32Array(groups * kept);
  let state = 0x2545f491;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  const all = Uint32Array.from({ length: of }, (_, i) => i);
  for (let g = 0; g < groups; g++) {
    for (let i = 0; i < kept; i++) {
      const j = i + (next() % (of - i));
      [all[i], all[j]] = [all[j], all[i]];
      picks[g * kept + i] = all[i];
    }
  }
  return picks;
}

const regions = Math.min(
  2048,
  Math.floor(device.limits.maxStorageBufferBindingSize / (REGION_ROWS * ROW_BYTES)),
);
const cacheBytes = regions * REGION_ROWS * ROW_BYTES;
const gatheredBytes = 2 * regions * KEPT * ROW_BYTES;
const kCache = device.createBuffer({ size: cacheBytes, usage: GPUBufferUsage.STORAGE });
const vCache = device.createBuffer({ size: cacheBytes, usage: GPUBufferUsage.STORAGE });
const idx = storageWith(randomPicks(regions, KEPT, REGION_ROWS));
const gatherRow = await tableAgainstPlainRead(
  `${KEPT} random rows of each of ${regions} regions of ${REGION_ROWS} rows, from K and from V: ` +
    `${gatheredBytes >> 20} MiB gathered`,
  gatheredBytes,
);
for (const { label, body } of GATHERS) {
  const code = `
@group(0) @binding(0) var<storage, read> k: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> v: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let region = wid.x;
  let team = tid / 32u;
  let lane = tid % 32u;
  let base = region * ${REGION_ROWS}u;
  var acc = vec2<u32>(0u);
${body}
  if (all(acc == vec2<u32>(${READ_SINK_TRIGGER}u))) { sink[region] = acc.x; }
}`;
  gatherRow(label, regions, await timeKernel(label, code, [kCache, vCache, idx, sink], regions));
}

/** Components each row's stage 1 reads (r), of d = 128, in f16 runs of KT_TILE positions. */
const R = 32;
const HEAD_DIM = 128;
/** Bytes of one Kᵀ tile: every component's run of its KT_TILE positions. */
const TILE_BYTES = HEAD_DIM * KT_TILE * 2;
/** 16-byte loads per component run of a tile. */
const RUN_LOADS = KT_TILE / 8;

/** One way of reading stage 1's Kᵀ runs. */
interface Stage1 {
  label: string;
  /** Tiles of a (sequence, KV head) row: S / KT_TILE. */
  tilesPerRow: number;
  /** Tiles each 256-invocation workgroup reads (stage 1's block / KT_TILE). */
  tilesPerWorkgroup: number;
  /** Runs whose loads are issued before any is used. */
  inFlight: number;
  /** Components 0 … R − 1 (one contiguous stretch per tile) instead of the row's random R. */
  contiguous?: boolean;
}

const STAGE1: Stage1[] = [
  {
    label: "blocks of 2048 positions, 8 runs in flight (stage 1 at llama2-7b B=64 S=4k)",
    tilesPerRow: 4,
    tilesPerWorkgroup: 2,
    inFlight: 8,
  },
  {
    label: "blocks of 2048 positions, 32 runs in flight",
    tilesPerRow: 4,
    tilesPerWorkgroup: 2,
    inFlight: 32,
  },
  {
    label: "blocks of 4096 positions, 8 runs in flight",
    tilesPerRow: 4,
    tilesPerWorkgroup: 4,
    inFlight: 8,
  },
  {
    label: "blocks of 2048 positions, 8 runs in flight, components 0-31 (contiguous)",
    tilesPerRow: 4,
    tilesPerWorkgroup: 2,
    inFlight: 8,
    contiguous: true,
  },
  {
    label: "S=128k rows, blocks of 4096 positions, 8 runs in flight (stage 1 at B=1 S=128k)",
    tilesPerRow: 128,
    tilesPerWorkgroup: 4,
    inFlight: 8,
  },
  {
    label: "S=128k rows, blocks of 2048 positions, 8 runs in flight",
    tilesPerRow: 128,
    tilesPerWorkgroup: 2,
    inFlight: 8,
  },
  {
    label: "S=128k rows, blocks of 4096 positions, 32 runs in flight",
    tilesPerRow: 128,
    tilesPerWorkgroup: 4,
    inFlight: 32,
  },
];

/**
 * WGSL of a stage-1 shape: workgroup w reads tiles [w · tiles, (w + 1) · tiles), invocation i
 * the 16 bytes i, i + 256, … of each of its row's R runs in them, `inFlight` runs at a time; the
 * row's components come from `picks` through workgroup memory, as stage 1 keeps i1.
 */
function stage1Kernel({ tilesPerRow, tilesPerWorkgroup, inFlight }: Stage1): string {
  const rounds = [];
  for (let i0 = 0; i0 < R; i0 += inFlight) {
    const runs = [...Array(inFlight).keys()].map((u) => i0 + u);
    rounds.push(
      ...runs.map((i) =>
        `let k${i} = kt[(tile * ${HEAD_DIM}u + i1[${i}u]) * ${RUN_LOADS}u + column];`
      ),
      `acc ^= ${runs.map((i) => `k${i}`).join(" ^ ")};`,
    );
  }
  return `
@group(0) @binding(0) var<storage, read> kt: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> picks: array<u32>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;
var<workgroup> i1: array<u32, ${R}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let first = wid.x * ${tilesPerWorkgroup}u;
  let row = first / ${tilesPerRow}u;
  if (tid < ${R}u) { i1[tid] = picks[row * ${R}u + tid]; }
  workgroupBarrier();
  var acc = vec4<u32>(0u);
  for (var slot = 0u; slot < ${(tilesPerWorkgroup * RUN_LOADS) / 256}u; slot++) {
    let load = slot * 256u + tid;
    let tile = first + load / ${RUN_LOADS}u;
    let column = load % ${RUN_LOADS}u;
    ${rounds.join("\n    ")}
  }
  if (all(acc == vec4<u32>(${READ_SINK_TRIGGER}u))) { sink[wid.x] = acc.x; }
}`;
}

/** Whole S = 128k rows of tiles that one binding holds, at most 2 GiB of Kᵀ. */
const tiles = Math.min(
  8192,
  Math.floor(device.limits.maxStorageBufferBindingSize / TILE_BYTES / 128) * 128,
);
const runBytes = tiles * R * KT_TILE * 2;
const kt = device.createBuffer({ size: tiles * TILE_BYTES, usage: GPUBufferUsage.STORAGE });
const stage1Row = await tableAgainstPlainRead(
  `${R} of ${HEAD_DIM} components' runs of ${KT_TILE} f16 positions from each of ${tiles} Kᵀ tiles ` +
    `(stage 1's reads): ${runBytes >> 20} MiB`,
  runBytes,
);
for (const shape of STAGE1) {
  const rows = tiles / shape.tilesPerRow;
  const picks = storageWith(
    shape.contiguous
      ? Uint32Array.from({ length: rows * R }, (_, i) => i % R)
      : randomPicks(rows, R, HEAD_DIM),
  );
  const workgroups = tiles / shape.tilesPerWorkgroup;
  const us = await timeKernel(shape.label, stage1Kernel(shape), [kt, picks, sink], workgroups);
  stage1Row(shape.label, workgroups, us);
}
gpu.throwIfErrors();
const out = Deno.args[0];
if (out) await Deno.writeTextFile(out, lines.join("\n") + "\n");
