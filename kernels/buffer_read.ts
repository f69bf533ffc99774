/**
 * A plain read of a whole buffer: the bench's read ceiling, the dispatch probe and the L2 scrub
 * between timed repetitions all run it. 256 invocations per workgroup, each XORing 8 coalesced
 * 16-byte loads; the result is written only when it equals a constant no real data produce, so
 * the loads stay alive and the kernel writes (almost) nothing.
 *
 * @module
 */

/** Invocations per workgroup of {@link BUFFER_READ_KERNEL}. */
const WORKGROUP = 256;
/** 16-byte loads per invocation. */
const LOADS = 8;
/** Bytes one workgroup reads. */
export const BYTES_PER_READ_GROUP = WORKGROUP * LOADS * 16;
/** The value whose appearance writes the sink. */
export const READ_SINK_TRIGGER = 0x9e3779b9;

/**
 * The read kernel (bindings `data`: read storage, `sink`: one u32 per workgroup). Workgroup
 * `g` (row-major over a 2-D grid) reads bytes `[g, g + 1) · BYTES_PER_READ_GROUP`.
 *
 * @example
 * ```ts
 * import { BUFFER_READ_KERNEL } from "./buffer_read.ts";
 * // device.createShaderModule({ code: BUFFER_READ_KERNEL });
 * ```
 */
export const BUFFER_READ_KERNEL = `
@group(0) @binding(0) var<storage, read> data: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
const WG = ${WORKGROUP}u;
const LOADS = ${LOADS}u;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) n: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let group = wid.y * n.x + wid.x;
  let base = group * WG * LOADS + tid;
  var acc = vec4<u32>(0u);
  for (var i = 0u; i < LOADS; i++) {
    let at = base + i * WG;
    if (at < arrayLength(&data)) { acc ^= data[at]; }
  }
  if (all(acc == vec4<u32>(${READ_SINK_TRIGGER}u))) { sink[group] = acc.x; }
}
`;

/**
 * Workgroups that read `bytes` and the 2-D grid that dispatches them (x at most 32768).
 *
 * @example
 * ```ts
 * import { bufferReadGrid } from "./buffer_read.ts";
 * const { groups, grid } = bufferReadGrid(256 << 20); // 8192 groups, [8192, 1]
 * ```
 */
export function bufferReadGrid(bytes: number): { groups: number; grid: [number, number] } {
  const groups = Math.ceil(bytes / BYTES_PER_READ_GROUP);
  const x = Math.min(groups, 32768);
  return { groups, grid: [x, Math.ceil(groups / x)] };
}
