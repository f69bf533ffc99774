import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import { memoryIo } from "./cli.ts";
import { compileCommand } from "./main.ts";
import { Plan } from "./plan.ts";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function run(args: string[]) {
  const io = memoryIo();
  const code = await compileCommand(args, io);
  return { code, ...io };
}

Deno.test("compile writes plan.json and one .wgsl per kernel, and prints the summary", async () => {
  const dir = await Deno.makeTempDir();
  const out = join(dir, "plan");
  const { code, stdout, stderr } = await run([
    "tiny-llama",
    "--attention",
    "sparq",
    "--r",
    "4",
    "--k",
    "8",
    "--max-seq",
    "64",
    "--out",
    out,
  ]);
  deepStrictEqual([code, stderr], [0, []]);
  const plan = Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json"))));
  deepStrictEqual(plan.options.attention, { kind: "sparq", r: 4, k: 8, localWindow: 0 });
  deepStrictEqual(plan.target.l2Bytes, 50 * 2 ** 20);
  const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  deepStrictEqual(files, ["plan.json", ...plan.kernels.map((k) => k.file)].sort());
  for (const kernel of plan.kernels) {
    deepStrictEqual(await Deno.readTextFile(join(out, kernel.file)), kernel.source);
  }
  const text = stdout.join("\n");
  for (
    const expected of [
      "2 layers",
      "dispatches per step",
      "weights",
      "KV cache",
      "Kᵀ copy",
      "activations",
      "attention    dense",
      "whole step",
    ]
  ) ok(text.includes(expected), `summary lacks '${expected}':\n${text}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--l2 states the L2's size in MiB; 0 takes the target's away", async () => {
  const dir = await Deno.makeTempDir();
  const l2Of = async (mib: string) => {
    const out = join(dir, mib);
    const { code, stderr } = await run(["tiny-llama", "--l2", mib, "--out", out]);
    deepStrictEqual([code, stderr], [0, []]);
    return Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json")))).target.l2Bytes;
  };
  deepStrictEqual(await l2Of("40"), 40 * 2 ** 20);
  deepStrictEqual(await l2Of("0"), undefined);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("compile replaces an earlier plan in the same folder whole", async () => {
  const dir = await Deno.makeTempDir();
  const out = join(dir, "plan");
  deepStrictEqual((await run(["tiny-llama", "--attention", "sparq", "--out", out])).code, 0);
  deepStrictEqual((await run(["tiny-llama", "--attention", "dense", "--out", out])).code, 0);
  const files = [...Deno.readDirSync(out)].map((e) => e.name);
  ok(files.includes("attention_dense_partial.wgsl"));
  ok(!files.includes("sparq_scores.wgsl"), "files of the old plan must not linger");
  deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["plan"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a Hugging Face config.json path compiles", async () => {
  const dir = await Deno.makeTempDir();
  const model = join(dir, "qwen-tiny");
  await Deno.mkdir(model);
  await Deno.writeTextFile(
    join(model, "config.json"),
    JSON.stringify({
      architectures: ["Qwen2ForCausalLM"],
      hidden_size: 112,
      intermediate_size: 160,
      num_attention_heads: 7,
      num_key_value_heads: 1,
      num_hidden_layers: 2,
      vocab_size: 96,
      max_position_embeddings: 128,
    }),
  );
  const out = join(dir, "out");
  const { code, stdout } = await run([join(model, "config.json"), "--out", out]);
  deepStrictEqual(code, 0);
  ok(stdout[0].startsWith("qwen-tiny: sparq"));
  const plan = Plan.parse(JSON.parse(await Deno.readTextFile(join(out, "plan.json"))));
  deepStrictEqual([plan.model.numHeads / plan.model.numKvHeads, plan.model.qkvBias], [7, true]);
  // A folder holding config.json works too.
  deepStrictEqual((await run([model, "--out", out])).code, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("each bad input gives one line naming the fault, exit 2, and writes nothing", async () => {
  const dir = await Deno.makeTempDir();
  const bad = (name: string, text: string) => {
    const path = join(dir, name);
    Deno.writeTextFileSync(path, text);
    return path;
  };
  const llama = {
    architectures: ["LlamaForCausalLM"],
    hidden_size: 64,
    intermediate_size: 128,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    vocab_size: 100,
  };
  const { hidden_size: _, ...noHidden } = llama;
  const cases: [string[], string][] = [
    [["llama9-70b"], "unknown model 'llama9-70b': give a preset (llama2-7b, llama2-13b,"],
    [[join(dir, "missing.json")], `cannot read ${join(dir, "missing.json")}: no such file`],
    [[bad("broken.json", "{ not json")], "broken.json is not valid JSON:"],
    [[bad("nohidden.json", JSON.stringify(noHidden))], "missing field 'hidden_size'"],
    [
      [bad("falcon.json", JSON.stringify({ ...llama, architectures: ["FalconForCausalLM"] }))],
      "architecture 'FalconForCausalLM' is not supported",
    ],
    [["llama2-7b", "--r", "0"], "--r must be at least 1, got 0"],
    [["llama2-7b", "--r", "129"], "--r 129 is outside 1..128 (the head dimension of llama2-7b)"],
    [["llama2-7b", "--k", "0"], "--k must be at least 1, got 0"],
    [["llama2-7b", "--batch", "0"], "--batch must be at least 1, got 0"],
    [["llama2-7b", "--batch", "2.5"], "--batch must be a whole number, got '2.5'"],
    [["llama2-7b", "--max-seq", "-4"], "--max-seq"],
    [["llama2-7b", "--k", "12abc"], "--k must be a whole number, got '12abc'"],
    [["llama2-7b", "--kv-dtype", "bf16"], "--kv-dtype must be one of f16, f32; got 'bf16'"],
    [["llama2-7b", "--attention", "sparse"], "--attention must be one of dense, sparq"],
    [["llama2-7b", "--attention", "dense", "--r", "8"], "apply to --attention sparq only"],
    [["llama2-7b", "--local-window", "200"], "--local-window 200 is larger than --k 128"],
    [["llama2-7b", "--frobnicate"], "Unknown option '--frobnicate'"],
    [["llama2-7b", "--target", "tpu"], "unknown --target 'tpu'"],
    [["llama2-7b", "--memory-budget", "lots"], "--memory-budget must be a positive number"],
    [["llama2-7b", "--l2=-50"], "--l2 must be a number ≥ 0, got '-50'"],
    [
      ["llama2-7b", "--batch", "64", "--max-seq", "4096"],
      "GiB (weights 12.6 GiB, KV cache 192.0 GiB",
    ],
    [[], "name a model"],
  ];
  for (const [args, expected] of cases) {
    const out = join(dir, "out");
    const { code, stdout, stderr } = await run([...args, "--out", out]);
    deepStrictEqual(code, 2, `${args.join(" ")}: exit ${code}`);
    deepStrictEqual(stdout, [], args.join(" "));
    deepStrictEqual(stderr.length, 1, `${args.join(" ")}: ${stderr.join("\n")}`);
    ok(stderr[0].startsWith("sparqc compile: error: "), stderr[0]);
    ok(stderr[0].includes(expected), `${args.join(" ")}: '${stderr[0]}' lacks '${expected}'`);
    ok(!(await exists(out)), `${args.join(" ")} left ${out} behind`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the real process prints one line, no stack trace, and exits 2", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "compiler/main.ts", "gpt-5"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(output.stderr).trim().split("\n");
  deepStrictEqual(output.code, 2);
  deepStrictEqual(stderr.length, 1);
  ok(stderr[0].startsWith("sparqc compile: error: unknown model 'gpt-5'"));
  ok(!stderr[0].includes("    at "));
});

Deno.test("--help describes every option", async () => {
  const { code, stdout } = await run(["--help"]);
  deepStrictEqual(code, 0);
  for (
    const option of ["--attention", "--r", "--k", "--batch", "--max-seq", "--kv-dtype", "--out"]
  ) {
    ok(stdout[0].includes(option));
  }
});
