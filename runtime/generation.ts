/**
 * Greedy generation that stays on the GPU: after each decode step a one-workgroup kernel copies
 * `next_tokens` into `tokens`, advances `positions` and records the token in a history buffer;
 * the host reads the history back once every `readEvery` steps. Deno's map latency (about
 * 11 ms, ../shared/WEBGPU.md) is then paid once per `readEvery` tokens, not once per token.
 *
 * @module
 */
import { DECODE_TENSORS, type Decoder } from "./decoder.ts";

const FEED_WORKGROUP = 64;

function feedSource(batch: number): string {
  return `// sparqc generation feed: next_tokens → tokens, positions + 1, history[step]
@group(0) @binding(0) var<storage, read> next_tokens: array<u32>;
@group(0) @binding(1) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> history: array<u32>;
@group(0) @binding(4) var<storage, read_write> step: array<u32>;
const BATCH = ${batch}u;

@compute @workgroup_size(${FEED_WORKGROUP})
fn main(@builtin(local_invocation_index) tid: u32) {
  let slot = step[0];
  for (var b = tid; b < BATCH; b += ${FEED_WORKGROUP}u) {
    let token = next_tokens[b];
    tokens[b] = token;
    positions[b] = positions[b] + 1u;
    history[slot * BATCH + b] = token;
  }
  // Every invocation has read the slot before the first one moves it on.
  storageBarrier();
  if (tid == 0u) { step[0] = slot + 1u; }
}
`;
}

const feedPipelines = new WeakMap<GPUDevice, Map<number, GPUComputePipeline>>();

/** The feed kernel for a batch, built once per device. */
function feedPipeline(device: GPUDevice, batch: number): GPUComputePipeline {
  let byBatch = feedPipelines.get(device);
  if (!byBatch) feedPipelines.set(device, byBatch = new Map());
  let pipeline = byBatch.get(batch);
  if (!pipeline) {
    const module = device.createShaderModule({ label: "generation feed", code: feedSource(batch) });
    pipeline = device.createComputePipeline({
      label: "generation feed",
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    byBatch.set(batch, pipeline);
  }
  return pipeline;
}

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** The first token of each sequence. */
  tokens: readonly number[];
  /** Its position in each sequence (the cache holds the positions before it). */
  positions: readonly number[];
  /** Tokens to generate per sequence. */
  steps: number;
  /** Steps encoded between read-backs (1: read every token, as a host loop would). */
  readEvery: number;
}

/** What {@link generate} produced and how long it took. */
export interface GenerateResult {
  /** [steps][B]: the token each step chose for each sequence. */
  tokens: number[][];
  /** Wall-clock time from the first submit to the last token on the host, in ms. */
  wallMs: number;
  /** Read-backs made (ceil(steps / readEvery)). */
  readBacks: number;
}

/**
 * Generates `steps` greedy tokens per sequence with the GPU feeding each step's argmax to the
 * next step, reading tokens back every `readEvery` steps.
 *
 * @example
 * ```ts
 * import { generate } from "./generation.ts";
 * // const { tokens } = await generate(decoder, { tokens: [1], positions: [0], steps: 32, readEvery: 8 });
 * ```
 */
export async function generate(
  decoder: Decoder,
  options: GenerateOptions,
): Promise<GenerateResult> {
  const { executor, plan } = decoder;
  const { batch, maxSeq } = plan.options;
  const { steps, readEvery } = options;
  if (!(steps >= 1 && readEvery >= 1)) throw new Error("steps and readEvery must be at least 1");
  const last = Math.max(...options.positions) + steps - 1;
  if (last >= maxSeq) {
    throw new Error(`${steps} steps reach position ${last}, beyond the plan's context ${maxSeq}`);
  }
  const gpu = executor.gpu;
  const device = gpu.device;
  const only = (name: string) => executor.buffersOf(name)[0].buffer;
  const chunk = Math.min(readEvery, steps);
  const historyBytes = chunk * batch * 4;
  const history = device.createBuffer({
    label: "generation history",
    size: historyBytes,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const counter = device.createBuffer({
    label: "generation step",
    size: 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  const staging = device.createBuffer({
    size: historyBytes,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const pipeline = feedPipeline(device, batch);
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      only(DECODE_TENSORS.nextTokens),
      only(DECODE_TENSORS.tokens),
      only(DECODE_TENSORS.positions),
      history,
      counter,
    ].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });

  executor.write(DECODE_TENSORS.tokens, options.tokens);
  executor.write(DECODE_TENSORS.positions, options.positions);
  const tokens: number[][] = [];
  let readBacks = 0;
  gpu.doing(`generating ${steps} tokens, reading back every ${readEvery}`);
  const start = performance.now();
  try {
    for (let done = 0; done < steps; done += chunk) {
      const n = Math.min(chunk, steps - done);
      device.queue.writeBuffer(counter, 0, new Uint32Array([0]));
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (let i = 0; i < n; i++) {
        executor.encode(pass);
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(1);
      }
      pass.end();
      encoder.copyBufferToBuffer(history, 0, staging, 0, n * batch * 4);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ, 0, n * batch * 4);
      const values = new Uint32Array(staging.getMappedRange(0, n * batch * 4).slice(0));
      staging.unmap();
      readBacks++;
      for (let i = 0; i < n; i++) tokens.push([...values.subarray(i * batch, (i + 1) * batch)]);
    }
    const wallMs = performance.now() - start;
    gpu.throwIfErrors();
    return { tokens, wallMs, readBacks };
  } finally {
    history.destroy();
    counter.destroy();
    staging.destroy();
  }
}
