/**
 * What the compiler needs to know of a kernel: its WGSL, entry point, override constants and
 * the meaning of each binding. Binding `i` of the list is `@binding(i)` of group 0.
 *
 * @module
 */

/** How a kernel uses one binding. */
export interface KernelBinding {
  /** The WGSL variable's name. */
  name: string;
  access: "read" | "read_write" | "uniform";
}

/** One compiled kernel: a WGSL module plus the constants its pipeline is built with. */
export interface KernelSpec {
  /** A readable name, unique per source and constants within a plan (e.g. `matmul`). */
  name: string;
  /** The op this kernel implements, for reports. */
  op: string;
  source: string;
  entryPoint: string;
  /** Values of the module's `override` declarations. */
  constants: Record<string, number>;
  bindings: KernelBinding[];
  /** True for a stand-in that keeps the plan's shape but does not compute the op yet. */
  placeholder: boolean;
}

/** Words in a kernel's params uniform: [first row, rows, extra0, extra1]. */
export const PARAMS_WORDS = 4;

/** A storage binding of a kernel: its WGSL name and access (anything after them is ignored). */
export type StorageBinding = readonly [
  name: string,
  access: "read" | "read_write",
  ...rest: string[],
];

/**
 * The spec of a computing kernel with entry point `main` and no override constants: its storage
 * bindings in order, then the params uniform.
 *
 * @example
 * ```ts
 * import { computeKernel } from "./kernel_spec.ts";
 * computeKernel("add", "add", "/* WGSL *\/", [["a", "read"], ["b", "read"], ["y", "read_write"]])
 *   .bindings.at(-1); // { name: "params", access: "uniform" }
 * ```
 */
export function computeKernel(
  name: string,
  op: string,
  source: string,
  storage: readonly StorageBinding[],
): KernelSpec {
  return {
    name,
    op,
    source,
    entryPoint: "main",
    constants: {},
    bindings: [
      ...storage.map(([n, access]) => ({ name: n, access })),
      { name: "params", access: "uniform" as const },
    ],
    placeholder: false,
  };
}
