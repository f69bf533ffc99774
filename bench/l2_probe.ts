/**
 * The L2 probe behind the prefetch of kernels/l2_prefetch.ts: how much faster a matmul runs when
 * its weights sit in the L2, and whether a read of them overlaps a latency-bound attention
 * dispatch. It compiles llama2-7b's decode step (B=1) for the device, times layer 0's attention
 * and o_proj in passes of their own after an L2 scrub, with and without a read of o_proj's weights
 * (a separate dispatch) before or beside them, and writes one line per case (GPU µs, median).
 *
 * ```sh
 * source .gpu/env.sh && deno run -A bench/l2_probe.ts $OUT/l2-probe.txt
 * ```
 *
 * The H100's figures are in docs/performance.md (issue 7, version 22).
 *
 * @module
 */
import { defaultOptions } from "../compiler/build_options.ts";
import { compile } from "../compiler/compile.ts";
import { PRESETS } from "../compiler/presets.ts";
import { BUFFER_READ_KERNEL, bufferReadGrid } from "../kernels/buffer_read.ts";
import { Decoder } from "../runtime/decoder.ts";
import { openGpu } from "../runtime/device.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { L2Scrub } from "../runtime/l2_scrub.ts";
import { summarize } from "../runtime/stats.ts";
import { calibrateTicks, gpuProbe } from "../runtime/tick_calibration.ts";
import { timePasses } from "./timed_passes.ts";

/** Something encoded into a compute pass. */
type Encode = (pass: GPUComputePassEncoder) => void;

const REPS = 25;

const gpu = await openGpu();
const { device } = gpu;
const scrub = L2Scrub.create(device, 256 << 20);
const reader = device.createComputePipeline({
  label: "l2 probe read",
  layout: "auto",
  compute: { module: device.createShaderModule({ code: BUFFER_READ_KERNEL }), entryPoint: "main" },
});
const { nsPerTick } = await calibrateTicks(gpuProbe(device, gpu.info.isFallbackAdapter));
const out = Deno.args[0] ?? "out/l2-probe.txt";
const lines: string[] = [`# L2 probe: ${gpu.info.description || gpu.info.vendor}`, ""];
const report = (line: string) => {
  console.log(line);
  lines.push(line);
};

/**
 * A read of `bytes` of `buffer` from `offset`, into a sink made for each encoding: a sink new to
 * the command buffer brings no barrier, so the read may overlap the dispatch before it (all
 * repetitions share one command buffer, each with its own sinks).
 */
function read(buffer: GPUBuffer, offset: number, bytes: number): Encode {
  return (pass) => {
    const { groups, grid } = bufferReadGrid(bytes);
    const sink = device.createBuffer({ size: groups * 4, usage: GPUBufferUsage.STORAGE });
    pass.setPipeline(reader);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: reader.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer, offset, size: bytes } },
          { binding: 1, resource: { buffer: sink } },
        ],
      }),
    );
    pass.dispatchWorkgroups(...grid);
  };
}

/** GPU time of `timed` in one pass, after the scrub and an untimed pass of `before`: median µs. */
async function time(label: string, timed: Encode[], before: Encode[] = []): Promise<void> {
  const ticks = await timePasses(device, REPS, (encoder, timestampWrites) => {
    scrub.encode(encoder);
    if (before.length) {
      const pass = encoder.beginComputePass();
      for (const encode of before) encode(pass);
      pass.end();
    }
    const pass = encoder.beginComputePass({ timestampWrites });
    for (const encode of timed) encode(pass);
    pass.end();
  });
  // The first repetitions are left out as a warm-up.
  const ns = ticks.slice(3).map((t) => t * nsPerTick);
  report(`${label.padEnd(52)} ${(summarize(ns).median / 1000).toFixed(1).padStart(7)} µs`);
}

const llama = PRESETS.get("llama2-7b")!;
// Without the L2 size, so that the attention kernels read no weights themselves.
const { l2Bytes: _, ...target } = deviceTarget(gpu, 60 * 1024 ** 3);
for (const method of ["sparq", "dense"] as const) {
  const options = { ...defaultOptions(llama, method), batch: 1, maxSeq: 16384 };
  const plan = compile(llama, options, target);
  const decoder = await Decoder.create(gpu, plan);
  try {
    decoder.randomWeights(1);
    decoder.randomCache(2);
    decoder.executor.write("tokens", [7]);
    decoder.executor.write("positions", [16383]);
    // Whole steps for 0.2 s first: an idle GPU's clocks are down.
    await decoder.executor.warmUp(200e6, 7e6);
    const nodes = (id: string): Encode => (pass) => decoder.executor.encode(pass, new Set([id]));
    const attention = nodes("layers.0.attention");
    const oProj = nodes("layers.0.o_proj");
    const [weight] = decoder.executor.buffersOf("layers.0.o_proj.weight");
    const bytes = weight.count * 2;
    const all = read(weight.buffer, weight.first * 2, bytes);
    const half = read(weight.buffer, weight.first * 2, Math.floor(bytes / 512) * 256);
    const tag = `${method} S=16k:`;
    await time(`${tag} warm-up`, [attention, oProj]);
    await time(`${tag} o_proj`, [oProj]);
    await time(`${tag} o_proj after a read of its weights`, [oProj], [all]);
    await time(`${tag} o_proj after a read of half of them`, [oProj], [half]);
    await time(`${tag} a read of o_proj's weights`, [all]);
    await time(`${tag} attention`, [attention]);
    await time(`${tag} attention, read`, [attention, all]);
    await time(`${tag} attention, o_proj`, [attention, oProj]);
    await time(`${tag} attention, read, o_proj`, [attention, all, oProj]);
    await time(`${tag} read, attention, o_proj`, [all, attention, oProj]);
  } finally {
    decoder.destroy();
  }
}
await Deno.writeTextFile(out, lines.join("\n") + "\n");
device.destroy();
