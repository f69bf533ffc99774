/**
 * A probe of what a dispatch costs besides its bytes, for the performance notes: the bench's read
 * kernel over R bytes as one dispatch in a pass of its own, and as each of 1 GiB / R dispatches
 * back to back in one pass (each over its own region, as a decode step's kernels read their own
 * weights). A decode step at batch 1 is a chain of ~260 such dependent dispatches; the difference
 * between a chain's time per dispatch and R at the roofline is what each costs in ramp and drain.
 *
 * Run: `deno run -A bench/dispatch_probe.ts [out.txt]` (prints a table; GPU time from timestamp
 * queries in calibrated ticks, median, in µs).
 *
 * @module
 */
import { BUFFER_READ_KERNEL, bufferReadGrid } from "../kernels/buffer_read.ts";
import { openGpu } from "../runtime/device.ts";
import { summarize } from "../runtime/stats.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { timePasses } from "./timed_passes.ts";

const gpu = await openGpu();
const device = gpu.device;
const MiB = 1 << 20;
const TOTAL = 1024 * MiB;
const data = device.createBuffer({ size: TOTAL, usage: GPUBufferUsage.STORAGE });
const sink = device.createBuffer({ size: MiB, usage: GPUBufferUsage.STORAGE });
const module = device.createShaderModule({ label: "dispatch probe", code: BUFFER_READ_KERNEL });
const pipeline = device.createComputePipeline({
  layout: "auto",
  compute: { module, entryPoint: "main" },
});
const { nsPerTick } = await calibrateTicks(gpuProbe(device, gpu.info.isFallbackAdapter));
const median = (ticks: number[]) => summarize(ticks.map((t) => t * nsPerTick)).median / 1000;

const lines = [
  `# dispatch probe: ${gpu.info.description || gpu.info.vendor}`,
  "",
  "R | alone µs | each of a chain µs | chain GB/s",
  "--- | --- | --- | ---",
];
for (const mib of [4, 8, 16, 32, 64, 128, 256, 1024]) {
  const bytes = mib * MiB;
  if (bytes > device.limits.maxStorageBufferBindingSize) break;
  const count = TOTAL / bytes;
  const regions = Array.from({ length: count }, (_, i) =>
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: data, offset: i * bytes, size: bytes } },
        { binding: 1, resource: { buffer: sink } },
      ],
    }));
  const { grid } = bufferReadGrid(bytes);
  const read = (pass: GPUComputePassEncoder, region: GPUBindGroup) => {
    pass.setBindGroup(0, region);
    pass.dispatchWorkgroups(...grid);
  };
  // Alone: one dispatch per pass, each repetition over the next region (not a cached one).
  const alone = median(
    await timePasses(device, 40, (encoder, timestampWrites, rep) => {
      const pass = encoder.beginComputePass({ timestampWrites });
      pass.setPipeline(pipeline);
      read(pass, regions[rep % count]);
      pass.end();
    }),
  );
  const chain = median(
    await timePasses(device, 5, (encoder, timestampWrites) => {
      const pass = encoder.beginComputePass({ timestampWrites });
      pass.setPipeline(pipeline);
      for (const region of regions) read(pass, region);
      pass.end();
    }),
  );
  gpu.throwIfErrors();
  const line = `${mib} MiB | ${alone.toFixed(1)} | ${(chain / count).toFixed(2)} | ${
    (TOTAL / chain / 1000).toFixed(0)
  }`;
  console.log(line);
  lines.push(line);
}
const out = Deno.args[0];
if (out) Deno.writeTextFileSync(out, lines.join("\n") + "\n");
