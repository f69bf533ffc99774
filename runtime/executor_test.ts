import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import { memoryIo } from "../compiler/cli.ts";
import { compileCommand } from "../compiler/main.ts";
import { relativeL2 } from "../kernels/compare.ts";
import { randomProblem } from "../kernels/random_problem.ts";
import { sparqReference } from "../kernels/reference.ts";
import { openGpu } from "./device.ts";
import { deviceTarget } from "./device_target.ts";
import { UserError } from "../compiler/user_error.ts";
import { Executor } from "./executor.ts";
import { L2Scrub } from "./l2_scrub.ts";
import { transposeCache, valueMean } from "./run_attention.ts";

Deno.test("a compiled tiny model's plan runs, and its attention equals the float64 reference", async () => {
  const dir = await Deno.makeTempDir();
  const out = join(dir, "plan");
  const io = memoryIo();
  deepStrictEqual(
    await compileCommand(
      [
        "tiny-llama",
        "--attention",
        "sparq",
        "--r",
        "4",
        "--k",
        "8",
        "--max-seq",
        "48",
        "--batch",
        "2",
        // No fixed subgroup size: the plan runs on whatever adapter the tests have.
        "--target",
        "webgpu-default",
        "--out",
        out,
      ],
      io,
    ),
    0,
  );
  const gpu = await openGpu();
  const executor = await Executor.load(gpu, join(out, "plan.json"));
  try {
    // The whole decode step runs, several times in one submit, without validation errors.
    executor.write("tokens", [3, 5]);
    executor.write("positions", [10, 20]);
    executor.run(3);
    deepStrictEqual((await executor.read("next_tokens")).length, 2);

    // Layer 0's attention on known inputs: q from a random problem, its cache filled.
    const seed = crypto.getRandomValues(new Uint32Array(1))[0];
    const p = randomProblem({
      batch: 2,
      heads: 4,
      kvHeads: 2,
      seqCapacity: 48,
      headDim: 16,
      ragged: true,
      seed,
      kvDtype: "f16",
    });
    executor.write("layers.0.q_rope", p.q);
    executor.write("positions", p.lengths.map((L) => L - 1));
    executor.write("layers.0.k_cache", p.k);
    executor.write("layers.0.v_cache", p.v);
    executor.write("layers.0.kt_cache", transposeCache(p.k, 4, 48, 16));
    executor.write("layers.0.v_mean", valueMean(p.v, 2, 2, 48, 16, p.lengths));
    executor.run(1, new Set(["layers.0.attention"]));
    const y = await executor.read("layers.0.attention");
    const params = { r: 4, k: 8, localWindow: 0 };
    const error = relativeL2(y, sparqReference(p, params).y);
    ok(error <= 2e-3, `seed ${seed}: relative L2 ${error}`);

    // Timing: one pass per stage, n samples each.
    const profile = await executor.profile({
      reps: 4,
      nsPerTick: 1,
      nodes: new Set(["layers.0.attention"]),
      scrub: L2Scrub.create(gpu.device, 1 << 20),
    });
    deepStrictEqual(profile.stages.map((s) => s.stage), [
      "layers.0.attention sparq_scores",
      "layers.0.attention sparq_candidates",
      "layers.0.attention sparq_topk",
      "layers.0.attention sparq_attend",
    ]);
    ok(profile.stages.every((s) => s.samplesNs.length === 4 && s.samplesNs.every((x) => x > 0)));
    deepStrictEqual(gpu.uncaptured, []);
  } finally {
    executor.destroy();
    gpu.device.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validation errors are caught and name what was running", async () => {
  const gpu = await openGpu(() => {});
  try {
    gpu.doing("testing a bad dispatch");
    gpu.device.createBuffer({ size: 3, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.MAP_READ });
    await gpu.device.queue.onSubmittedWorkDone();
    await new Promise((resolve) => setTimeout(resolve, 50));
    let message = "";
    try {
      gpu.throwIfErrors();
    } catch (error) {
      message = String(error);
    }
    ok(message.includes("testing a bad dispatch"), message);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("a plan built for another subgroup size is refused, naming both sizes", async () => {
  const dir = await Deno.makeTempDir();
  const out = join(dir, "plan");
  const args = ["tiny-llama", "--attention", "sparq", "--max-seq", "48", "--out", out];
  deepStrictEqual(await compileCommand(args, memoryIo()), 0);
  const gpu = await openGpu();
  try {
    // The h100 target's kernels reduce in subgroups of 32 invocations.
    if (deviceTarget(gpu, 1 << 30).subgroupSize === 32) {
      (await Executor.load(gpu, join(out, "plan.json"))).destroy();
    } else {
      await rejects(Executor.load(gpu, join(out, "plan.json")), (error: Error) => {
        ok(error instanceof UserError && /subgroups of 32 invocations/.test(error.message));
        return true;
      });
    }
  } finally {
    gpu.device.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
