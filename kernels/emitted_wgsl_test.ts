import { deepStrictEqual, ok } from "node:assert/strict";
import { defaultOptions } from "../compiler/build_options.ts";
import { compile } from "../compiler/compile.ts";
import { PRESETS } from "../compiler/presets.ts";
import { TARGETS } from "../compiler/target.ts";
import { checkKernel, openGpu } from "../runtime/device.ts";

Deno.test("every kernel any preset emits compiles on the local adapter, constants included", async () => {
  const kernels = new Map<string, Parameters<typeof checkKernel>[1]>();
  for (const model of PRESETS.values()) {
    for (const method of ["dense", "sparq"] as const) {
      for (const kvDtype of ["f16", "f32"] as const) {
        const options = { ...defaultOptions(model, method), maxSeq: 1024, kvDtype };
        const plan = compile(model, options, TARGETS.get("h100")!);
        for (const k of plan.kernels) {
          kernels.set(JSON.stringify([k.source, k.entryPoint, k.constants]), k);
        }
      }
    }
  }
  const gpu = await openGpu();
  try {
    // One at a time: error scopes are a stack, so concurrent checks would mix their errors.
    const errors: string[] = [];
    for (const kernel of kernels.values()) errors.push(...await checkKernel(gpu.device, kernel));
    deepStrictEqual(errors, []);
    ok(kernels.size > 10, `only ${kernels.size} kernels checked`);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("checkKernel reports WGSL errors with line and column", async () => {
  const gpu = await openGpu();
  try {
    const errors = await checkKernel(gpu.device, {
      name: "broken",
      source: "@compute @workgroup_size(1)\nfn main() { let x: u32 = 1.5; }",
      entryPoint: "main",
      constants: {},
    });
    deepStrictEqual(errors.length, 1);
    ok(errors[0].startsWith("broken.wgsl:2:"), errors[0]);
  } finally {
    gpu.device.destroy();
  }
});
