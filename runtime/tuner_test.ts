import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import { buildDecodeGraph } from "../compiler/build_graph.ts";
import { defaultOptions } from "../compiler/build_options.ts";
import { memoryIo } from "../compiler/cli.ts";
import { compileCommand } from "../compiler/main.ts";
import { Plan } from "../compiler/plan.ts";
import { PRESETS } from "../compiler/presets.ts";
import { tuningBucket, tuningProblems } from "../compiler/tuning.ts";
import { openGpu } from "./device.ts";
import { deviceTarget } from "./device_target.ts";
import { TuneCache } from "./tune_cache.ts";
import { tune } from "./tuner.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const model = PRESETS.get("tiny-llama")!;

Deno.test("tuning over a small space picks a candidate, checks it, and writes the cache", async () => {
  const gpu = await openGpu();
  try {
    const graph = buildDecodeGraph(model, { ...defaultOptions(model, "dense"), maxSeq: 128 });
    const problems = tuningProblems(graph);
    deepStrictEqual(problems.map((p) => p.family).sort(), ["attention_dense", "kv_append"]);
    const path = join(dir, "small.json");
    const warnings: string[] = [];
    const cache = await TuneCache.open(path, (w) => warnings.push(w));
    let calibrations = 0;
    const { choices, records } = await tune(gpu, problems, {
      target: deviceTarget(gpu, 1 << 30),
      cache,
      reps: 3,
      nsPerTick: () => Promise.resolve(++calibrations && 1),
      spaces: {
        kv_append: [{ workgroup: 64 }, { workgroup: 256 }],
        attention_dense: [{ chunk: 64, workgroup: 128 }, { chunk: 256, workgroup: 256 }],
      },
    });
    deepStrictEqual(warnings.length, 0, warnings.join("; "));
    deepStrictEqual(calibrations, 1);
    deepStrictEqual(records.map((r) => r.source), ["measured", "measured"]);
    for (const r of records) {
      deepStrictEqual(r.rejected, []);
      ok(r.bestNs <= r.defaultNs, `${r.bucket}: the choice is no slower than the default`);
      ok(Object.keys(r.kernelsNs.best).length >= 1);
      deepStrictEqual(choices.get(r.bucket), r.choice);
    }
    const attention = records.find((r) => r.bucket.startsWith("attention_dense"))!;
    deepStrictEqual(Object.keys(attention.kernelsNs.default).sort(), [
      "attention_dense_partial",
      "attention_dense_reduce_few",
    ]);
    const file = JSON.parse(await Deno.readTextFile(path));
    deepStrictEqual(file.format, "sparqc-tune-cache");
    deepStrictEqual(
      file.entries.map((e: { bucket: string }) => e.bucket).sort(),
      problems.map(tuningBucket).sort(),
    );
    deepStrictEqual(file.entries[0].adapter.description, gpu.info.description);

    // The same problems again: every answer from the cache, nothing measured or calibrated.
    const again = await tune(gpu, problems, {
      target: deviceTarget(gpu, 1 << 30),
      cache: await TuneCache.open(path, (w) => warnings.push(w)),
      nsPerTick: () => Promise.reject(new Error("must not calibrate")),
    });
    deepStrictEqual(again.records.map((r) => r.source), ["cache", "cache"]);
    deepStrictEqual(again.choices, choices);
  } finally {
    gpu.device.destroy();
  }
});

async function compileTuned(args: string[]) {
  const io = memoryIo();
  const code = await compileCommand(
    ["tiny-llama", "--max-seq", "64", "--tune", ...args],
    io,
  );
  return { code, ...io };
}

Deno.test("compile --tune measures once; the next compile for the adapter measures nothing", async () => {
  const cache = join(dir, "cli.json");
  const out = join(dir, "plan");
  const first = await compileTuned(["--tune-cache", cache, "--out", out]);
  deepStrictEqual(first.code, 0, first.stderr.join("\n"));
  ok(first.stderr.some((l) => l.includes("candidate")), "progress shows on stderr");
  ok(first.stdout.some((l) => l.startsWith("  tuning ")), "the summary lists the choices");
  const plan = Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json"))));
  deepStrictEqual(plan.tuning.map((r) => r.source), ["measured", "measured"]);
  deepStrictEqual(plan.target.name, "adapter");

  const second = await compileTuned(["--tune-cache", cache, "--out", out]);
  deepStrictEqual(second.code, 0);
  ok(!second.stderr.some((l) => /candidate|calibrating/.test(l)), second.stderr.join("\n"));
  const again = Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json"))));
  deepStrictEqual(again.tuning.map((r) => r.source), ["cache", "cache"]);
  deepStrictEqual(again.kernels, plan.kernels);
});

Deno.test("a corrupt or foreign tuning cache gives a warning and exit 0", async () => {
  for (const [name, text] of [["corrupt", "{ not json"], ["foreign", '{"entries": 3}']]) {
    const cache = join(dir, `${name}.json`);
    await Deno.writeTextFile(cache, text);
    const { code, stderr } = await compileTuned(["--tune-cache", cache, "--out", join(dir, name)]);
    deepStrictEqual(code, 0, stderr.join("\n"));
    const warnings = stderr.filter((l) => l.includes("warning:"));
    deepStrictEqual(warnings.length, 1, stderr.join("\n"));
    ok(warnings[0].includes(cache) && warnings[0].includes("ignoring it"), warnings[0]);
    // The replaced cache is valid now.
    deepStrictEqual(JSON.parse(await Deno.readTextFile(cache)).format, "sparqc-tune-cache");
  }
});

Deno.test("--tune and --no-tune together are refused; --no-tune compiles the defaults", async () => {
  const io = memoryIo();
  deepStrictEqual(await compileCommand(["tiny-llama", "--tune", "--no-tune"], io), 2);
  deepStrictEqual(io.stderr, ["sparqc compile: error: give --tune or --no-tune, not both"]);
  const plain = memoryIo();
  const out = join(dir, "plain");
  deepStrictEqual(await compileCommand(["tiny-llama", "--no-tune", "--out", out], plain), 0);
  const plan = Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json"))));
  deepStrictEqual(plan.tuning, []);
});

Deno.test("configurations that compile to the same kernels are measured once", async () => {
  const gpu = await openGpu();
  try {
    // One query head per KV head: stage 2a runs inside stage 1, whose block the lowering sets, so
    // candidates that differ only in stage 1's block compile to the same program.
    const problem = {
      family: "attention_sparq" as const,
      batch: 1,
      heads: 2,
      kvHeads: 2,
      headDim: 64,
      maxSeq: 256,
      kvDtype: "f16" as const,
      sparq: { r: 16, k: 8, localWindow: 0 },
    };
    const lines: string[] = [];
    const cache = await TuneCache.open(join(dir, "same.json"), () => {});
    const { records } = await tune(gpu, [problem], {
      target: deviceTarget(gpu, 1 << 30),
      cache,
      reps: 3,
      nsPerTick: () => Promise.resolve(1),
      spaces: {
        attention_sparq: [
          { block: 256, attendWorkgroup: 64 },
          { block: 512, attendWorkgroup: 64 },
          { block: 1024, attendWorkgroup: 128 },
        ],
      },
      progress: (line) => lines.push(line),
    });
    deepStrictEqual(records.map((r) => r.source), ["measured"]);
    const skipped = lines.filter((l) => l.includes("not measured again"));
    deepStrictEqual(skipped, [
      "  the same kernels and dispatches as block 256, attendWorkgroup 64: not measured again",
    ]);
  } finally {
    gpu.device.destroy();
  }
});
