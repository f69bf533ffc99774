/**
 * A probe of how fast dense attention's access pattern alone reads, for the performance notes:
 * 256 MiB (llama2-7b B=1 S=16k's K and V, or llama3-8b B=16 S=4k's) read by workgroups that walk
 * their chunk as `attention_dense_partial_sg` does — teams of 32 invocations, each load
 * instruction 8 bytes per invocation over a 256-byte row, a few rows per round, K and V side by
 * side — against the bench's plain read of the same bytes. What the kernel takes beyond the
 * pattern's time is its own work: the query loads, the softmax, the teams' merge, the partials.
 *
 * Run: `deno run -A bench/read_shape_probe.ts [out.txt]` (prints a table; GPU time from timestamp
 * queries in calibrated ticks, each repetition after the bench's L2 scrub, median of 20, in µs).
 *
 * @module
 */
import { READ_SINK_TRIGGER } from "../kernels/buffer_read.ts";
import { BufferReader } from "../runtime/buffer_reader.ts";
import { openGpu } from "../runtime/device.ts";
import { L2Scrub } from "../runtime/l2_scrub.ts";
import { summarize } from "../runtime/stats.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { timePasses } from "./timed_passes.ts";

/** Bytes every variant reads. */
const TOTAL = 256 << 20;
/** Bytes of one row: a d = 128 f16 head. */
const ROW_BYTES = 256;

/** One way of reading {@link TOTAL} bytes in the dense kernel's shape. */
interface Shape {
  label: string;
  workgroups: number;
  /** 2: K and V rows side by side from two buffers (half of TOTAL each); 1: one buffer. */
  streams: 1 | 2;
  /** Rows each team loads per round before it uses any. */
  rounds: number;
}

/**
 * WGSL of a shape: workgroup g reads rows [g · rows, (g + 1) · rows) of each stream, team t of 8
 * the rows t, t + 8, … `rounds` at a time, XORing what it loads.
 */
function shapeKernel({ workgroups, streams, rounds }: Shape): string {
  const rows = TOTAL / ROW_BYTES / streams / workgroups;
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
const k = device.createBuffer({ size: TOTAL, usage: GPUBufferUsage.STORAGE });
const v = device.createBuffer({ size: TOTAL / 2, usage: GPUBufferUsage.STORAGE });
const sink = device.createBuffer({ size: 8192 * 4, usage: GPUBufferUsage.STORAGE });
const plain = BufferReader.create(device, TOTAL, "plain read");

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

const lines = [
  `# read-shape probe: ${gpu.info.description || gpu.info.vendor}`,
  "",
  `${TOTAL >> 20} MiB in 256-byte rows; teams of 32 invocations, 8-byte loads`,
  "",
  "variant | workgroups | µs | GB/s",
  "--- | --- | --- | ---",
];
const row = (label: string, workgroups: number, us: number) => {
  const line = `${label} | ${workgroups} | ${us.toFixed(1)} | ${(TOTAL / us / 1000).toFixed(0)}`;
  console.log(line);
  lines.push(line);
};
await time((pass) => plain.dispatch(pass)); // warm-up: clocks up, pipelines built
row("plain read (the bench's ceiling kernel)", TOTAL / 32768, await time((p) => plain.dispatch(p)));
for (const shape of SHAPES) {
  const module = device.createShaderModule({ label: shape.label, code: shapeKernel(shape) });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [k, sink, v].slice(0, shape.streams + 1).map((buffer, binding) => ({
      binding,
      resource: { buffer },
    })),
  });
  row(
    shape.label,
    shape.workgroups,
    await time((pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(shape.workgroups);
    }),
  );
}
gpu.throwIfErrors();
const out = Deno.args[0];
if (out) await Deno.writeTextFile(out, lines.join("\n") + "\n");
