import { SPARQ_ARRANGEMENTS } from "../kernels/sparq.ts";
import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import { memoryIo } from "../compiler/cli.ts";
import { benchCommand } from "./main.ts";
import { readRun, toCsv } from "./results.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

// A sweep small enough for the software adapter: tiny models, short contexts.
const SWEEP = [
  "--model",
  "tiny-llama,tiny-qwen2",
  "--seq",
  "64,256",
  "--batch",
  "1,2",
  "--r",
  "4,8",
  "--k",
  "16",
];

Deno.test("the bench writes a header, one line per point, the HTML report and the CSV", async () => {
  const out = join(dir, "full");
  const io = memoryIo();
  deepStrictEqual(
    await benchCommand([...SWEEP, "--out", out, "--csv"], io),
    0,
    io.stderr.join("\n"),
  );
  const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  deepStrictEqual(files.map((f) => f.replace(/^.*\./, "")), ["csv", "html", "jsonl"]);
  const run = await readRun(join(out, files.find((f) => f.endsWith(".jsonl"))!));
  deepStrictEqual(run.header.options.models, ["tiny-llama", "tiny-qwen2"]);
  // No L2 size is known for the software adapter: none recorded, no kernel reads ahead.
  deepStrictEqual(run.header.options.l2Bytes, 0);
  ok(run.header.roofline.gbps > 0);
  ok(run.header.commit.length > 0);
  // 2 models × 2 contexts × 2 batches × (dense + 2 SparQ) points, each once.
  deepStrictEqual(run.lines.length, 24);
  deepStrictEqual(new Set(run.lines.map((l) => l.key)).size, 24);
  for (const line of run.lines) {
    ok(line.type === "point", `${line.key}: ${line.type === "skipped" ? line.reason : ""}`);
    ok(line.time.median > 0 && line.time.n >= 3);
    ok(line.bytes > 0 && line.achievedGBps > 0);
    if (line.method === "sparq") {
      const stages = Object.keys(line.stages).join();
      ok(SPARQ_ARRANGEMENTS.some((a) => a.join() === stages), `${line.key}: ${stages}`);
      deepStrictEqual(Object.keys(line.errorVsDense).sort(), ["gaussian", "realistic"]);
      ok(line.theoreticalSpeedup > 0 && line.speedup > 0);
    } else {
      deepStrictEqual(line.speedup, 1);
    }
  }
  // At S = 64 SparQ keeps 16 of 64 positions, so it differs from dense attention.
  const sparq64 = run.lines.find((l) => l.type === "point" && l.method === "sparq" && l.seq === 64);
  ok(sparq64 && sparq64.type === "point" && sparq64.errorVsDense.gaussian > 0);
  const csv = await Deno.readTextFile(join(out, files.find((f) => f.endsWith(".csv"))!));
  deepStrictEqual(csv.trim().split("\n").length, 25);
  deepStrictEqual(toCsv(run.lines), csv);
});

Deno.test("killing the bench mid-sweep and resuming yields every point exactly once", async () => {
  const out = join(dir, "resume");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run=git",
      "--allow-sys=systemMemoryInfo",
      "bench/main.ts",
      ...SWEEP,
      "--out",
      out,
    ],
    stdout: "null",
    stderr: "null",
    env: { XDG_RUNTIME_DIR: "/tmp" },
  }).spawn();
  // Wait for a few points, then kill it without warning.
  let path = "";
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 100));
    let name: string | undefined;
    try {
      for (const entry of Deno.readDirSync(out)) {
        if (entry.name.endsWith(".jsonl")) name = entry.name;
      }
    } catch { /* not created yet */ }
    if (!name) continue;
    path = join(out, name);
    const lines = (await Deno.readTextFile(path)).split("\n").filter(Boolean).length;
    if (lines >= 6) break;
  }
  child.kill("SIGKILL");
  await child.status;
  const partial = await readRun(path);
  ok(
    partial.lines.length >= 5 && partial.lines.length < 24,
    `${partial.lines.length} points before the kill`,
  );

  const io = memoryIo();
  deepStrictEqual(await benchCommand(["--resume", path], io), 0, io.stderr.join("\n"));
  ok(io.stderr.some((l) => l.includes(`${partial.lines.length} points done`)));
  const run = await readRun(path);
  deepStrictEqual(run.lines.length, 24);
  deepStrictEqual(new Set(run.lines.map((l) => l.key)).size, 24, "every point exactly once");
  deepStrictEqual(run.lines.slice(0, partial.lines.length), partial.lines, "earlier points kept");
  deepStrictEqual(run.header, partial.header);
});

Deno.test("bad bench options give one line and exit 2", async () => {
  const cases: [string[], string][] = [
    [["--seq", "4x"], "--seq: '4x' is not a positive whole number"],
    [["--batch", "0"], "--batch: '0' is not a positive whole number"],
    [["--method", "sparse"], "--method must be one of dense, sparq"],
    [["--method", "sparq"], "--method must include dense"],
    [["--resume", join(dir, "nothing.jsonl")], "no such file"],
    [["--model", "gpt-9"], "unknown model 'gpt-9'"],
    [["--decode", "tiny-llama", "--model", "tiny-llama"], "--decode names its models"],
    [["--weights", "x"], "--weights needs --decode"],
    [["--decode", "tiny-llama", "--generate", "many"], "--generate: 'many' is not a whole number"],
    [["--decode", "tiny-llama", "--weight-dtype", "bf16"], "--weight-dtype must be one of"],
    [["--l2=-1"], "--l2 must be a number ≥ 0, got '-1'"],
    [["--l2", "big"], "--l2 must be a number ≥ 0, got 'big'"],
  ];
  for (const [args, expected] of cases) {
    const io = memoryIo();
    deepStrictEqual(
      await benchCommand([...args, "--out", join(dir, "bad")], io),
      2,
      args.join(" "),
    );
    const errors = io.stderr.filter((l) => l.includes("error:"));
    deepStrictEqual(errors.length, 1, io.stderr.join("\n"));
    ok(errors[0].includes(expected), `${errors[0]} lacks ${expected}`);
  }
});

Deno.test("bench --decode times whole steps, dense and SparQ, and skips what does not fit", async () => {
  const out = join(dir, "decode");
  const io = memoryIo();
  const args = ["--decode", "tiny-neox", "--seq", "32,128", "--batch", "1,2", "--r", "4"];
  deepStrictEqual(
    await benchCommand([...args, "--k", "8", "--generate", "5", "--out", out], io),
    0,
    io.stderr.join("\n"),
  );
  const path = join(out, [...Deno.readDirSync(out)].find((e) => e.name.endsWith(".jsonl"))!.name);
  const run = await readRun(path);
  deepStrictEqual(run.lines.length, 8);
  for (const line of run.lines) {
    ok(line.type === "decode", `${line.key}: ${line.type === "skipped" ? line.reason : ""}`);
    ok(line.key.startsWith("decode tiny-neox"));
    ok(line.time.median > 0 && line.tokensPerSecond > 0);
    // The cache append is a stage of its own only where the attention kernel does not fold it in
    // (here SparQ, all four stages in one kernel, does; dense's tiled kernel does not).
    const appendApart = Object.keys(line.kernels!).some((k) => k.includes("kv_append"));
    deepStrictEqual(appendApart, line.method === "dense", Object.keys(line.kernels!).join());
    deepStrictEqual(
      Object.keys(line.stages).sort(),
      ["attention", ...(appendApart ? ["kv_append"] : []), "matmul", "other"],
    );
    ok(line.attentionShare > 0 && line.attentionShare < 1);
    const kernels = Object.values(line.kernels!);
    ok(kernels.every((k) => k.ns > 0 && k.calls >= 1));
    deepStrictEqual(line.kernels!.argmax.calls, 1);
    ok(line.bytes.weights > 0 && line.bytes.kv > 0 && line.achievedGBps > 0);
    deepStrictEqual(line.generation.map((g) => [g.readEvery, g.steps]), [[1, 5], [5, 5]]);
    ok(line.generation.every((g) => g.tokensPerSecond > 0));
    // Three timed runs of each loop; the line's time is their median.
    for (const g of line.generation) {
      deepStrictEqual(g.runsMs?.length, 3);
      deepStrictEqual(g.wallMs, [...g.runsMs!].sort((a, b) => a - b)[1]);
    }
    if (line.method === "dense") deepStrictEqual(line.speedup, 1);
    else ok(line.theoreticalSpeedup > 1 && line.speedup > 0);
  }
  ok((await Deno.readTextFile(path.replace(/jsonl$/, "html"))).includes("Every decode point"));

  // A budget too small for the plan: each point is skipped with what it needs, nothing allocated.
  const small = memoryIo();
  const tiny = ["--memory-budget", "0.0001", "--generate", "0", "--out", join(dir, "decode-small")];
  deepStrictEqual(await benchCommand([...args, ...tiny], small), 0, small.stderr.join("\n"));
  const skipped = small.stderr.filter((l) => l.includes("skipped: the plan needs"));
  deepStrictEqual(skipped.length, 8, small.stderr.join("\n"));
});
