/**
 * A probe of the GPU's address translation, for the performance notes: how long N scattered
 * 4-byte reads take, one per `stride` bytes of a 1 GiB buffer, with the translation caches
 * cold (after one read per 64 KiB of 24 other 1 GiB buffers: a decode step's weights and
 * cache span 20–30 GB) and warm (the same pages read a second time, another line of each). SparQ's gather reads k rows scattered over a layer's cache; if each
 * new page costs a serialized walk, the pages a stage touches bound its time, whatever its
 * bytes.
 *
 * Run: `deno run -A bench/translation_probe.ts [out.txt]` (prints a table; GPU time from
 * timestamp queries, median of 15, in µs).
 *
 * @module
 */
import { openGpu } from "../runtime/device.ts";
import { summarize } from "../runtime/stats.ts";
import { timePasses } from "./timed_passes.ts";

const SOURCE = `
struct Probe { count: u32, stride_words: u32, salt: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
@group(0) @binding(2) var<uniform> probe: Probe;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= probe.count) { return; }
  // A different 256-byte line of each page, so that the reads spread over memory channels.
  let lines = max(probe.stride_words / 64u, 1u);
  let line = ((i * 2654435761u) ^ probe.salt) % lines;
  let v = data[i * probe.stride_words + line * 64u];
  if (v == 0x9e3779b9u) { sink[i % 1024u] = v; }
}
`;

const gpu = await openGpu();
const device = gpu.device;
const MiB = 1 << 20;
const DATA = 1024 * MiB;
const EVICT_BUFFERS = 24;
const REPS = 15;

const storage = (size: number) => device.createBuffer({ size, usage: GPUBufferUsage.STORAGE });
const data = storage(DATA);
const others = Array.from({ length: EVICT_BUFFERS }, () => storage(DATA));
const sink = storage(4096);
const pipeline = (code: string) =>
  device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
const probe = pipeline(SOURCE);

function probeGroup(count: number, stride: number, salt: number, buffer = data): GPUBindGroup {
  const params = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(params, 0, new Uint32Array([count, stride / 4, salt, 0]));
  return device.createBindGroup({
    layout: probe.getBindGroupLayout(0),
    entries: [buffer, sink, params].map((b, binding) => ({ binding, resource: { buffer: b } })),
  });
}
const EVICT_READS = DATA / 65536;
const evictGroups = others.map((b) => probeGroup(EVICT_READS, 65536, 7, b));

/** The probe over each bind group in turn, `count` reads each. */
function dispatchAll(pass: GPUComputePassEncoder, groups: GPUBindGroup[], count: number) {
  pass.setPipeline(probe);
  for (const group of groups) {
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(Math.ceil(count / 64));
  }
}

/**
 * Median GPU µs of a pass that reads `count` words `stride` bytes apart, `times` times (or of
 * the evicting pass itself, with `times` 0).
 */
async function measure(count: number, stride: number, times: number): Promise<number> {
  const groups = [0, 0x5bd1e995].slice(0, times).map((salt) => probeGroup(count, stride, salt));
  const evicting = times === 0;
  const samples = await timePasses(device, REPS, (encoder, timestampWrites) => {
    const evict = encoder.beginComputePass(evicting ? { timestampWrites } : {});
    dispatchAll(evict, evictGroups, EVICT_READS);
    evict.end();
    if (evicting) return;
    const pass = encoder.beginComputePass({ timestampWrites });
    dispatchAll(pass, groups, count);
    pass.end();
  });
  gpu.throwIfErrors();
  return summarize(samples).median / 1000;
}

const evictUs = await measure(0, 0, 0);
const lines = [
  `# address translation probe: ${gpu.info.description || gpu.info.vendor}`,
  `the evicting pass: ${EVICT_BUFFERS} GiB, ${EVICT_BUFFERS * EVICT_READS} reads 64 KiB apart: ${
    evictUs.toFixed(1)
  } µs`,
  "",
  "stride | reads | bytes spanned | cold µs | cold ns per read | second pass µs (warm pages)",
  "--- | --- | --- | --- | --- | ---",
];
for (const stride of [256, 4096, 65536, 2 * MiB]) {
  for (const count of [256, 1024, 4096, 16384]) {
    if (count * stride > DATA) continue;
    const cold = await measure(count, stride, 1);
    const both = await measure(count, stride, 2);
    const line = `${stride} | ${count} | ${(count * stride / MiB).toFixed(1)} MiB | ${
      cold.toFixed(2)
    } | ${(cold * 1000 / count).toFixed(2)} | ${(both - cold).toFixed(2)}`;
    console.log(line);
    lines.push(line);
  }
}
const out = Deno.args[0];
if (out) Deno.writeTextFileSync(out, lines.join("\n") + "\n");
