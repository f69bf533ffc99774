import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import { memoryIo } from "../compiler/cli.ts";
import { attentionCommand, exampleInput } from "./attention_main.ts";
import { decodeSafetensors, encodeSafetensors, type TensorToWrite } from "./safetensors.ts";

const dir = await Deno.makeTempDir();
const example = join(dir, "example.safetensors");
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
await Deno.writeFile(
  example,
  encodeSafetensors(exampleInput(crypto.getRandomValues(new Uint32Array(1))[0])),
);

async function run(args: string[]) {
  const io = memoryIo();
  const code = await attentionCommand(args, io);
  return { code, ...io };
}

/** The number after `label` in the output lines. */
function figure(lines: string[], label: string): number {
  const line = lines.find((l) => l.includes(label));
  ok(line, `no '${label}' in:\n${lines.join("\n")}`);
  return Number(line.split(label)[1].trim().split(/[ ,]/)[0]);
}

Deno.test("attention --method sparq --r 16 --k 64 --check on B=2, H=32, Hkv=8, S=4096, d=128", async () => {
  const out = join(dir, "y.safetensors");
  const { code, stdout } = await run([
    "--input",
    example,
    "--out",
    out,
    "--method",
    "sparq",
    "--r",
    "16",
    "--k",
    "64",
    "--check",
  ]);
  deepStrictEqual(code, 0);
  ok(figure(stdout, "y vs float64 reference: max abs") >= 0);
  ok(figure(stdout, "relative L2") <= 2e-3, stdout.join("\n"));
  ok(!stdout.join("\n").includes("MISMATCH"), stdout.join("\n"));
  ok(stdout.some((l) => l.startsWith("SparQ y vs dense attention (float64): relative L2")));
  const result = decodeSafetensors(await Deno.readFile(out), out);
  deepStrictEqual(result.get("y")!.shape, [2, 32, 128]);
  deepStrictEqual(result.get("y")!.dtype, "F32");
  deepStrictEqual(result.get("indices")!.shape, [2, 8, 64]);
  deepStrictEqual(result.get("indices")!.dtype, "I32");
  deepStrictEqual(result.get("alpha")!.shape, [2, 32]);
});

Deno.test("attention --method dense --kv-dtype f32 --check is within 1e-5", async () => {
  const { code, stdout } = await run([
    "--input",
    example,
    "--method",
    "dense",
    "--kv-dtype",
    "f32",
    "--check",
  ]);
  deepStrictEqual(code, 0);
  ok(figure(stdout, "relative L2") <= 1e-5, stdout.join("\n"));
});

Deno.test("indices are -1 past the length when k exceeds it", async () => {
  const file = join(dir, "short.safetensors");
  const t = (shape: number[], fill: (i: number) => number): TensorToWrite => ({
    dtype: "F32",
    shape,
    values: Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => fill(i)),
  });
  await Deno.writeFile(
    file,
    encodeSafetensors(
      new Map([
        ["q", t([1, 2, 8], (i) => Math.sin(i))],
        ["k", t([1, 1, 6, 8], (i) => Math.cos(i))],
        ["v", t([1, 1, 6, 8], (i) => i % 5)],
        ["lengths", { dtype: "I32", shape: [1], values: [3] }],
      ]),
    ),
  );
  const out = join(dir, "short-out.safetensors");
  deepStrictEqual((await run(["--input", file, "--out", out, "--k", "5", "--r", "2"])).code, 0);
  const indices = decodeSafetensors(await Deno.readFile(out), out).get("indices")!;
  deepStrictEqual(Array.from(new Int32Array(indices.bytes.slice().buffer)), [0, 1, 2, -1, -1]);
});

Deno.test("corrupt or mismatched files give one clear line, exit 2, and no output", async () => {
  const good = await Deno.readFile(example);
  const headerLength = Number(new DataView(good.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(good.subarray(8, 8 + headerLength)));
  const withHeader = (h: unknown, data = good.subarray(8 + headerLength)) => {
    const json = new TextEncoder().encode(JSON.stringify(h));
    const out = new Uint8Array(8 + json.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(data, 8 + json.length);
    return out;
  };
  const edit = (name: string, change: Record<string, unknown>) => ({
    ...header,
    [name]: { ...header[name], ...change },
  });
  const { k: _k, ...noK } = header;
  const cases: [string, Uint8Array, string][] = [
    ["tiny", new Uint8Array([1, 2, 3]), "shorter than the 8-byte header length"],
    [
      "long-header",
      (() => {
        const b = good.slice(0, 64);
        new DataView(b.buffer).setBigUint64(0, 10n ** 12n, true);
        return b;
      })(),
      "runs past the end",
    ],
    ["not-json", withHeader("{oops"), "the header is not a JSON object"],
    [
      "bad-json",
      (() => {
        const b = good.slice();
        b[8] = 0x7b;
        b[9] = 0x7b;
        return b;
      })(),
      "the header is not JSON",
    ],
    ["dtype", withHeader(edit("q", { dtype: "F12" })), "tensor 'q' has unknown dtype 'F12'"],
    ["shape", withHeader(edit("q", { shape: [2, 32, 64] })), "but its data_offsets span"],
    ["offsets", withHeader(edit("v", { data_offsets: [1e12, 1e12 + 16777216] })), "ends at byte"],
    ["truncated", good.subarray(0, good.length - 100), "ends at byte"],
    ["missing", withHeader(noK), "no tensor 'k'"],
    ["mismatch", withHeader(edit("v", { shape: [2, 8, 2048, 256] })), "v must have k's shape"],
    ["int-q", withHeader(edit("q", { dtype: "I16" })), "q, k and v must be F32 or F16"],
  ];
  for (const [name, bytes, expected] of cases) {
    const input = join(dir, `${name}.safetensors`);
    const out = join(dir, `${name}-out.safetensors`);
    await Deno.writeFile(input, bytes);
    const { code, stdout, stderr } = await run(["--input", input, "--out", out]);
    deepStrictEqual(code, 2, `${name}: exit ${code}`);
    deepStrictEqual(stdout, [], name);
    deepStrictEqual(stderr.length, 1, `${name}: ${stderr.join("\n")}`);
    ok(stderr[0].includes(expected), `${name}: '${stderr[0]}' lacks '${expected}'`);
    ok(!(await Deno.stat(out).catch(() => undefined)), `${name}: wrote ${out}`);
  }
  const bad = [
    [["--input", join(dir, "nope.safetensors"), "--check"], "no such file"],
    [["--input", example], "give --out OUT.safetensors, or --check"],
    [["--input", example, "--check", "--r", "129"], "--r 129 is outside 1..128"],
    [
      ["--input", example, "--check", "--method", "dense", "--k", "4"],
      "apply to --method sparq only",
    ],
    [["--check"], "--input IN.safetensors is required"],
  ] as const;
  for (const [args, expected] of bad) {
    const { code, stderr } = await run([...args]);
    deepStrictEqual(code, 2, args.join(" "));
    ok(stderr.length === 1 && stderr[0].includes(expected), `${args.join(" ")}: ${stderr}`);
  }
});

Deno.test("safetensors round trip keeps dtypes, shapes and values", () => {
  const bytes = encodeSafetensors(
    new Map<string, TensorToWrite>([
      ["a", { dtype: "F16", shape: [3], values: [0.5, -2, 65504] }],
      ["ä", { dtype: "I32", shape: [1, 2], values: [-1, 7] }],
    ]),
  );
  const back = decodeSafetensors(bytes, "x");
  deepStrictEqual(new DataView(bytes.buffer).getBigUint64(0, true) % 8n, 0n);
  deepStrictEqual(Array.from(new Float16Array(back.get("a")!.bytes.slice().buffer)), [
    0.5,
    -2,
    65504,
  ]);
  deepStrictEqual(Array.from(new Int32Array(back.get("ä")!.bytes.slice().buffer)), [-1, 7]);
});
