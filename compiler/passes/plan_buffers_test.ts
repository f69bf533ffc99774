import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { defaultOptions } from "../build_options.ts";
import { compile } from "../compile.ts";
import { PRESETS } from "../presets.ts";
import { TARGETS, withBudget } from "../target.ts";
import { UserError } from "../user_error.ts";
import { formatBytes } from "./plan_buffers.ts";

const h100 = TARGETS.get("h100")!;

Deno.test("activations share pool buffers, and no two live tensors share one", () => {
  for (const name of ["tiny-llama", "tiny-neox", "llama3-8b"]) {
    const model = PRESETS.get(name)!;
    const plan = compile(model, { ...defaultOptions(model, "sparq"), maxSeq: 256 }, h100);
    const pooled = Object.entries(plan.tensors).filter(([, t]) =>
      t.role === "activation" || t.role === "scratch"
    );
    const pool = plan.buffers.filter((b) => b.role === "activation");
    ok(pool.length < pooled.length / 3, `${name}: ${pool.length} buffers for ${pooled.length}`);

    // A buffer's tenant may change only after the last dispatch that binds the old tenant.
    const lifetimes = new Map<string, [number, number]>();
    plan.schedule.forEach((d, step) => {
      for (const { tensor } of d.bindings) {
        const life = lifetimes.get(tensor);
        lifetimes.set(tensor, [life?.[0] ?? step, step]);
      }
    });
    for (const output of plan.graph.outputs) {
      lifetimes.set(output, [lifetimes.get(output)![0], Infinity]);
    }
    for (const [a, ta] of pooled) {
      ok(ta.shards[0].bytes <= plan.buffers[ta.shards[0].buffer].bytes);
      for (const [b, tb] of pooled) {
        if (a >= b || ta.shards[0].buffer !== tb.shards[0].buffer) continue;
        const [a0, a1] = lifetimes.get(a)!;
        const [b0, b1] = lifetimes.get(b)!;
        ok(a1 < b0 || b1 < a0, `${name}: ${a} and ${b} overlap in one buffer`);
      }
    }
  }
});

Deno.test("a plan over the memory budget says how much it needs and has", () => {
  const model = PRESETS.get("llama2-7b")!;
  throws(
    () =>
      compile(
        model,
        { ...defaultOptions(model, "sparq"), batch: 64, maxSeq: 4096 },
        h100,
      ),
    (error: unknown) =>
      error instanceof UserError &&
      /^the plan needs 204\.\d GiB \(weights 12\.6 GiB, KV cache 192\.0 GiB, activations [\d.]+ MiB\) but target h100 has 78\.6 GiB; lower --batch or --max-seq, or set --memory-budget$/
        .test(error.message),
  );
  const small = withBudget(h100, 1024 ** 3);
  throws(() => compile(model, defaultOptions(model, "dense"), small), /has 1.00 GiB/);
});

Deno.test("formatBytes uses binary units", () => {
  deepStrictEqual(
    [formatBytes(512), formatBytes(1536), formatBytes(5 * 1024 ** 3), formatBytes(300 * 1024 ** 2)],
    ["512 B", "1.50 KiB", "5.00 GiB", "300.0 MiB"],
  );
});
