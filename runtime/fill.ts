/**
 * Seeded pseudo-random tensor contents generated on the GPU, so that large KV caches need no
 * upload. Value i of a tensor is a uniform number in [−scale, scale) from a PCG hash of
 * (seed, i): the same on every device, and independent of how the tensor is sharded.
 *
 * @module
 */
import type { DType } from "../compiler/ir.ts";
import type { Executor } from "./executor.ts";

const WORKGROUP = 256;

function fillSource(dtype: "f16" | "f32"): string {
  return `${dtype === "f16" ? "enable f16;\n" : ""}
struct Fill { count: u32, first: u32, seed: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<${dtype}>;
@group(0) @binding(1) var<uniform> fill: Fill;

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * groups.x + wid.x) * ${WORKGROUP}u + tid;
  if (i >= fill.count) { return; }
  let h = pcg(pcg(fill.first + i) ^ fill.seed);
  out[i] = ${dtype}((f32(h) * 2.3283064365386963e-10 * 2.0 - 1.0) * fill.scale);
}
`;
}

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

function pipelineFor(device: GPUDevice, dtype: "f16" | "f32"): GPUComputePipeline {
  let byType = pipelines.get(device);
  if (!byType) pipelines.set(device, byType = new Map());
  let pipeline = byType.get(dtype);
  if (!pipeline) {
    const module = device.createShaderModule({ label: `fill-${dtype}`, code: fillSource(dtype) });
    pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    byType.set(dtype, pipeline);
  }
  return pipeline;
}

/**
 * Fills a float tensor of a program with seeded uniform values in [−scale, scale).
 *
 * @example
 * ```ts
 * import { fillUniform } from "./fill.ts";
 * // fillUniform(executor, "k_cache", 7);
 * ```
 */
export function fillUniform(executor: Executor, name: string, seed: number, scale = 1): void {
  const dtype = executor.program.tensors[name].dtype as DType;
  if (dtype !== "f16" && dtype !== "f32") throw new Error(`cannot fill ${dtype} tensor '${name}'`);
  const device = executor.gpu.device;
  const pipeline = pipelineFor(device, dtype);
  const encoder = device.createCommandEncoder();
  const uniforms: GPUBuffer[] = [];
  for (const { buffer, first, count } of executor.buffersOf(name)) {
    const uniform = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    const words = new ArrayBuffer(16);
    new Uint32Array(words, 0, 3).set([count, first, seed >>> 0]);
    new Float32Array(words, 12, 1)[0] = scale;
    device.queue.writeBuffer(uniform, 0, words);
    uniforms.push(uniform);
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer } }, {
          binding: 1,
          resource: { buffer: uniform },
        }],
      }),
    );
    const workgroups = Math.ceil(count / WORKGROUP);
    const x = Math.min(workgroups, 65535);
    pass.dispatchWorkgroups(x, Math.ceil(workgroups / x));
    pass.end();
  }
  device.queue.submit([encoder.finish()]);
  for (const uniform of uniforms) uniform.destroy();
}
