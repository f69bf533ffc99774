/**
 * Placeholder kernels: stand-ins for ops whose real WGSL arrives later (the attention kernels,
 * then the rest of the decode step). A placeholder declares the bindings and the params uniform
 * that the real kernel will have, so that plans keep their final shape, and writes zeros to its
 * activation outputs; it leaves KV state untouched. Plans mark these kernels `placeholder: true`.
 *
 * @module
 */
import type { KernelBinding, KernelSpec } from "./kernel_spec.ts";

/** The workgroup size of every placeholder. */
export const PLACEHOLDER_WORKGROUP = 256;

/** A binding of a placeholder and whether the placeholder zeroes it. */
export interface PlaceholderBinding extends KernelBinding {
  zero?: boolean;
}

/**
 * A placeholder for `op` with the given storage bindings (a params uniform is appended).
 *
 * @example
 * ```ts
 * import { placeholderKernel } from "./placeholder.ts";
 * const spec = placeholderKernel("add", "add", [
 *   { name: "a", access: "read" },
 *   { name: "b", access: "read" },
 *   { name: "y", access: "read_write", zero: true },
 * ]);
 * spec.bindings.at(-1); // { name: "params", access: "uniform" }
 * ```
 */
export function placeholderKernel(
  name: string,
  op: string,
  storage: PlaceholderBinding[],
  constants: Record<string, number> = {},
): KernelSpec {
  const declarations = storage.map((b, i) =>
    `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<u32>;`
  );
  const zeroed = storage.filter((b) => b.zero).map((b) =>
    `  if (i < arrayLength(&${b.name})) { ${b.name}[i] = 0u; }`
  );
  const constantLines = Object.keys(constants).map((c) => `override ${c}: u32 = 1u;`);
  const source =
    `// sparqc placeholder for '${op}': same bindings and launch shape as the real kernel,
// but it only writes zeros to its outputs. Not a computation: the plan marks it placeholder.
override WORKGROUP_SIZE: u32 = ${PLACEHOLDER_WORKGROUP}u;
${constantLines.join("\n")}
struct Params { first_row: u32, rows: u32, extra0: u32, extra1: u32 }

${declarations.join("\n")}
@group(0) @binding(${storage.length}) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.y * groups.x + wid.x) * WORKGROUP_SIZE + lid;
${zeroed.join("\n")}
}
`;
  return {
    name,
    op,
    source,
    entryPoint: "main",
    constants: { WORKGROUP_SIZE: PLACEHOLDER_WORKGROUP, ...constants },
    bindings: [
      ...storage.map(({ name, access }) => ({ name, access })),
      { name: "params", access: "uniform" },
    ],
    placeholder: true,
  };
}
