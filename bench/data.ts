/**
 * The bench's attention data, generated on the GPU from a seed (caches reach tens of GB, which
 * no host could upload quickly). Every value is a function of (seed, tensor, indices) through a
 * PCG hash, so a seed gives the same data on every device and for every sharding, and Kᵀ is
 * exactly the transpose of K.
 *
 * Two modes:
 * - `gaussian`: q, K and V standard normal. SparQ's worst case: no component of q stands out
 *   and attention is flat.
 * - `realistic`: what the SparQ paper observes in real models. Each KV head has a heavy-tailed
 *   scale per component, s_j = exp(z_j) with z_j standard normal, shared by its queries and
 *   keys: q_j and k_j are s_j times a standard normal, so a few components dominate q·k. One
 *   position in 64 (by hash) is a "heavy hitter" whose key also gets 0.5·√d·q̄/‖q̄‖, with q̄ the
 *   mean query of the group, so attention is peaked. V is standard normal.
 *
 * All sequences are full (length S). V_mean is computed exactly from the generated V.
 *
 * @module
 */
import { ktTile } from "../kernels/kt_layout.ts";
import { ATTENTION_TENSORS as T } from "../compiler/build_attention_graph.ts";
import type { Executor } from "../runtime/executor.ts";

/** The data modes. */
export const DATA_MODES = ["realistic", "gaussian"] as const;
/** A data mode. */
export type DataMode = typeof DATA_MODES[number];

/** The shape of one attention call. */
export interface DataShape {
  batch: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  seq: number;
}

const KIND = { q: 0, k: 1, kt: 2, v: 3 } as const;

function generatorSource(out: "f16" | "f32"): string {
  return `${out === "f16" ? "enable f16;\n" : ""}
struct Gen {
  kind: u32, count: u32, first: u32, seed: u32,
  mode: u32, heads: u32, kv_heads: u32, seq: u32,
  head_dim: u32, kt_tile: u32, pad1: u32, pad2: u32,
}
@group(0) @binding(0) var<storage, read_write> out: array<${out}>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<uniform> gen: Gen;

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn uniform01(a: u32, b: u32) -> f32 {
  return (f32(pcg(pcg(a ^ gen.seed) ^ b) >> 8u) + 0.5) * (1.0 / 16777216.0);
}
// A standard normal from (stream, index), Box-Muller.
fn normal(stream: u32, index: u32) -> f32 {
  let u1 = uniform01(stream * 2u + 1u, index);
  let u2 = uniform01(stream * 2u + 2u, index);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
// The heavy-tailed scale of component j of KV head g (realistic mode).
fn scale(g: u32, j: u32) -> f32 {
  if (gen.mode == 0u) { return 1.0; }
  return exp(normal(7u, g * gen.head_dim + j));
}
fn query(b: u32, h: u32, j: u32) -> f32 {
  let g = h / (gen.heads / gen.kv_heads);
  return scale(g, j) * normal(1u, (b * gen.heads + h) * gen.head_dim + j);
}
// Key component j of position pos of (sequence b, KV head g).
fn key(b: u32, g: u32, pos: u32, j: u32) -> f32 {
  let row = b * gen.kv_heads + g;
  var k = scale(g, j) * normal(2u, (row * gen.seq + pos) * gen.head_dim + j);
  if (gen.mode == 1u && (pcg(pos ^ pcg(row ^ gen.seed)) & 63u) == 0u) {
    let group = gen.heads / gen.kv_heads;
    var norm = 0.0;
    var qj = 0.0;
    for (var i = 0u; i < gen.head_dim; i++) {
      var mean = 0.0;
      for (var h = 0u; h < group; h++) { mean += q[(b * gen.heads + g * group + h) * gen.head_dim + i]; }
      norm += mean * mean;
      if (i == j) { qj = mean; }
    }
    k += 0.5 * sqrt(f32(gen.head_dim)) * qj / max(sqrt(norm), 1e-20);
  }
  return k;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) n: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * n.x + wid.x) * 256u + tid;
  if (i >= gen.count) { return; }
  let e = gen.first + i;
  let d = gen.head_dim;
  var value = 0.0;
  if (gen.kind == 0u) {
    let j = e % d;
    let bh = e / d;
    value = query(bh / gen.heads, bh % gen.heads, j);
  } else if (gen.kind == 1u) {
    let j = e % d;
    let pos = (e / d) % gen.seq;
    let row = e / (d * gen.seq);
    value = key(row / gen.kv_heads, row % gen.kv_heads, pos, j);
  } else if (gen.kind == 2u) {
    // The tiled Kᵀ layout of kernels/kt_layout.ts; padding past the capacity stays 0.
    let tile = gen.kt_tile;
    let tiles = (gen.seq + tile - 1u) / tile;
    let pos = ((e / (tile * d)) % tiles) * tile + e % tile;
    let j = (e / tile) % d;
    let row = e / (tile * d * tiles);
    if (pos < gen.seq) { value = key(row / gen.kv_heads, row % gen.kv_heads, pos, j); }
  } else {
    value = normal(3u, e);
  }
  out[i] = ${out}(value);
}
`;
}

const meanSource = (dtype: "f16" | "f32") =>
  `${dtype === "f16" ? "enable f16;" : ""}
struct Mean { rows: u32, seq: u32, head_dim: u32, first: u32 }
@group(0) @binding(0) var<storage, read> v: array<${dtype}>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<uniform> m: Mean;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let i = id.x;
  if (i >= m.rows * m.head_dim) { return; }
  let row = i / m.head_dim;
  let j = i % m.head_dim;
  var sum = 0.0;
  for (var pos = 0u; pos < m.seq; pos++) { sum += f32(v[(row * m.seq + pos) * m.head_dim + j]); }
  mean[m.first * m.head_dim + i] = sum / f32(m.seq);
}
`;

function uniformBuffer(device: GPUDevice, words: number[]): GPUBuffer {
  const buffer = device.createBuffer({
    size: Math.ceil(words.length / 4) * 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(
    buffer,
    0,
    new Uint32Array([...words, 0, 0, 0].slice(0, buffer.size / 4)),
  );
  return buffer;
}

/** Encodes one pass of `pipeline` over `count` invocations, binding `buffers` in order. */
function encodePass(
  device: GPUDevice,
  encoder: GPUCommandEncoder,
  pipeline: GPUComputePipeline,
  buffers: GPUBuffer[],
  count: number,
  workgroupSize: number,
): void {
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    }),
  );
  const groups = Math.ceil(count / workgroupSize);
  const x = Math.min(groups, 65535);
  pass.dispatchWorkgroups(x, Math.ceil(groups / x));
  pass.end();
}

/**
 * Fills an attention program's q, K, (Kᵀ), V, (V_mean) and positions (all sequences full).
 *
 * @example
 * ```ts
 * import { generateAttentionData } from "./data.ts";
 * // generateAttentionData(executor, shape, "realistic", 1);
 * ```
 */
export function generateAttentionData(
  executor: Executor,
  shape: DataShape,
  mode: DataMode,
  seed: number,
): void {
  const device = executor.gpu.device;
  const tensors = executor.program.tensors;
  const pipelines = new Map<string, GPUComputePipeline>();
  const pipeline = (dtype: "f16" | "f32") => {
    let p = pipelines.get(dtype);
    if (!p) {
      const module = device.createShaderModule({
        label: `bench-data-${dtype}`,
        code: generatorSource(dtype),
      });
      p = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      pipelines.set(dtype, p);
    }
    return p;
  };
  const [qBuffer] = executor.buffersOf(T.q);
  const scratch: GPUBuffer[] = [];
  const dummy = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  scratch.push(dummy);
  // q first: the realistic keys read it.
  for (
    const [name, kind] of [[T.q, KIND.q], [T.kCache, KIND.k], [T.ktCache, KIND.kt], [
      T.vCache,
      KIND.v,
    ]] as const
  ) {
    if (!tensors[name]) continue;
    const dtype = tensors[name].dtype as "f16" | "f32";
    const encoder = device.createCommandEncoder();
    for (const part of executor.buffersOf(name)) {
      const uniform = uniformBuffer(device, [
        kind,
        part.count,
        part.first,
        seed >>> 0,
        mode === "realistic" ? 1 : 0,
        shape.heads,
        shape.kvHeads,
        shape.seq,
        shape.headDim,
        ktTile(shape.seq),
      ]);
      scratch.push(uniform);
      encodePass(
        device,
        encoder,
        pipeline(dtype),
        [
          part.buffer,
          name === T.q ? dummy : qBuffer.buffer,
          uniform,
        ],
        part.count,
        256,
      );
    }
    device.queue.submit([encoder.finish()]);
  }
  if (tensors[T.vMean]) {
    const dtype = tensors[T.vCache].dtype as "f16" | "f32";
    const module = device.createShaderModule({ label: "bench-v-mean", code: meanSource(dtype) });
    const p = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const means = executor.buffersOf(T.vMean);
    const encoder = device.createCommandEncoder();
    executor.buffersOf(T.vCache).forEach((part, i) => {
      const rows = part.count / (shape.seq * shape.headDim);
      const firstRow = part.first / (shape.seq * shape.headDim);
      const mean = means.length > 1 ? means[i] : means[0];
      const local = means.length > 1 ? 0 : firstRow;
      const uniform = uniformBuffer(device, [rows, shape.seq, shape.headDim, local]);
      scratch.push(uniform);
      encodePass(device, encoder, p, [part.buffer, mean.buffer, uniform], rows * shape.headDim, 64);
    });
    device.queue.submit([encoder.finish()]);
  }
  executor.write(T.positions, Array(shape.batch).fill(shape.seq - 1));
  device.queue.onSubmittedWorkDone().then(() => scratch.forEach((b) => b.destroy()));
}
