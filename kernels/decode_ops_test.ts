/**
 * The decode step's kernels other than attention, each lowered from a one-node graph, run on the
 * local adapter and compared with the float64 reference on random inputs (f16 weights are
 * drawn as f16 values, so both sides see the same numbers).
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { compileGraph } from "../compiler/compile.ts";
import type { Graph, Node, TensorDecl } from "../compiler/ir.ts";
import { testGpu } from "../runtime/test_gpu.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { Executor } from "../runtime/executor.ts";
import { relativeL2 } from "./compare.ts";
import { uniformStream } from "./random_problem.ts";
import {
  ACTIVATION_REFERENCES,
  argmaxReference,
  layerNormReference,
  matmulReference,
  rmsNormReference,
  ropeReference,
} from "./decode_reference.ts";

const gpu = await testGpu();
const target = deviceTarget(gpu, 4 * 1024 ** 3);

const uniform = uniformStream(12345);
/** Uniform in [−scale, scale), rounded to f16 where asked. */
function random(n: number, dtype: "f16" | "f32" = "f32", scale = 1): Float64Array {
  return Float64Array.from({ length: n }, () => {
    const v = (uniform() * 2 - 1) * scale;
    return dtype === "f16" ? Math.f16round(v) : v;
  });
}

/**
 * Runs nodes on the adapter: writes the inputs, returns each output and the kernels dispatched.
 * A node's `outputs` name its tensors (which need no declaration).
 */
async function runGraph(
  tensors: Record<string, TensorDecl>,
  nodes: Node[],
  values: Record<string, ArrayLike<number>>,
  outputs: string[],
): Promise<{ values: (Float32Array | Uint32Array | Int32Array)[]; kernels: string[] }> {
  const graph: Graph = {
    version: 1,
    model: "op-test",
    batch: Object.values(tensors).find((t) => t.role === "input")!.shape[0],
    maxSeq: 1,
    tensors,
    nodes,
    outputs,
  };
  const program = compileGraph(graph, target);
  const executor = await Executor.create(gpu, program);
  try {
    for (const [name, v] of Object.entries(values)) executor.write(name, v);
    executor.run();
    const read = [];
    for (const name of outputs) read.push(await executor.read(name));
    return { values: read, kernels: program.schedule.map((d) => d.kernel) };
  } finally {
    executor.destroy();
  }
}

/** Runs one node on the adapter: writes the inputs, returns the output. */
async function runNode(
  tensors: Record<string, TensorDecl>,
  node: Omit<Node, "outputs">,
  values: Record<string, ArrayLike<number>>,
): Promise<Float32Array | Uint32Array | Int32Array> {
  const run = await runGraph(tensors, [{ ...node, outputs: ["out"] } as Node], values, ["out"]);
  return run.values[0];
}

const input = (shape: number[], dtype: TensorDecl["dtype"] = "f32"): TensorDecl => ({
  shape,
  dtype,
  role: "input",
});
const weight = (shape: number[], dtype: "f16" | "f32"): TensorDecl => ({
  shape,
  dtype,
  role: "weight",
});

for (
  const [batch, inner, outer, dtype, bias] of [
    [1, 64, 96, "f32", false],
    [3, 112, 160, "f16", true],
    [2, 37, 5, "f32", true],
    [4, 1024, 72, "f16", false],
    // Batch tiles of 4 with a remainder, and rows that end in a partial round of loads.
    [9, 1096, 13, "f16", true],
    [6, 520, 21, "f32", false],
  ] as const
) {
  Deno.test(`matmul B=${batch} ${inner}→${outer} ${dtype}${bias ? " +bias" : ""}`, async () => {
    const x = random(batch * inner);
    const w = random(outer * inner, dtype);
    const b = random(outer, dtype);
    const y = await runNode(
      {
        x: input([batch, inner]),
        w: weight([outer, inner], dtype),
        ...(bias ? { b: weight([outer], dtype) } : {}),
      },
      { op: "matmul", id: "mm", inputs: bias ? ["x", "w", "b"] : ["x", "w"], attrs: {} },
      bias ? { x, w, b } : { x, w },
    );
    const error = relativeL2(y, matmulReference(x, w, batch, inner, outer, bias ? b : undefined));
    ok(error <= 1e-5, `relative L2 ${error}`);
  });
}

Deno.test("logits and argmax (ties to the lower index)", async () => {
  const [batch, hidden, vocab] = [3, 64, 300];
  const x = random(batch * hidden);
  const table = random(vocab * hidden, "f16");
  const tensors = { x: input([batch, hidden]), table: weight([vocab, hidden], "f16") };
  const logits = await runNode(tensors, {
    op: "logits",
    id: "logits",
    inputs: ["x", "table"],
    attrs: {},
  }, { x, table });
  const expected = matmulReference(x, table, batch, hidden, vocab);
  ok(relativeL2(logits, expected) <= 1e-5);
  const tied = Float64Array.from(expected);
  tied[2 * vocab + 7] = tied[2 * vocab + 250] = 100;
  const next = await runNode(
    { l: input([batch, vocab]) },
    { op: "argmax", id: "argmax", inputs: ["l"], attrs: {} },
    { l: tied },
  );
  deepStrictEqual([...next], argmaxReference(tied, vocab));
  deepStrictEqual(next[2], 7);
});

// Vocabularies of whole vec4s over several rounds of loads, and one that is not.
for (const vocab of [20000, 9001]) {
  Deno.test(`argmax over ${vocab} logits: the largest, ties to the lower index`, async () => {
    const logits = random(2 * vocab);
    logits[vocab - 1] = logits[vocab - 2] = 5;
    logits[vocab + 4099] = logits[vocab + 4098] = logits[2 * vocab - 1] = 5;
    const next = await runNode(
      { l: input([2, vocab]) },
      { op: "argmax", id: "argmax", inputs: ["l"], attrs: {} },
      { l: logits },
    );
    deepStrictEqual([...next], [vocab - 2, 4098]);
  });
}

for (const [hidden, dtype] of [[64, "f32"], [112, "f16"], [1000, "f32"]] as const) {
  Deno.test(`rms_norm and layer_norm, D=${hidden} ${dtype}`, async () => {
    const batch = 3;
    const x = random(batch * hidden, "f32", 3);
    const w = random(hidden, dtype);
    const b = random(hidden, dtype);
    const rms = await runNode(
      { x: input([batch, hidden]), w: weight([hidden], dtype) },
      { op: "rms_norm", id: "n", inputs: ["x", "w"], attrs: { eps: 1e-6, weightOffset: 1 } },
      { x, w },
    );
    ok(relativeL2(rms, rmsNormReference(x, w, hidden, 1e-6, 1)) <= 1e-5);
    const ln = await runNode(
      { x: input([batch, hidden]), w: weight([hidden], dtype), b: weight([hidden], dtype) },
      { op: "layer_norm", id: "n", inputs: ["x", "w", "b"], attrs: { eps: 1e-5 } },
      { x, w, b },
    );
    ok(relativeL2(ln, layerNormReference(x, w, b, hidden, 1e-5)) <= 1e-5);
  });
}

// The RMSNorm folded into the matmuls it feeds, against the plain ops in float64.
for (
  const [batch, inner, outer, dtype, bias] of [
    [1, 64, 96, "f32", false],
    [5, 1096, 21, "f16", true], // a batch tile and a remainder; a partial round of loads
    [2, 520, 40, "f32", true],
  ] as const
) {
  Deno.test(
    `rms_norm folded into matmuls B=${batch} ${inner}→${outer} ${dtype}${
      bias ? " +bias" : ""
    }: q/k/v and logits`,
    async () => {
      const x = random(batch * inner, "f32", 3);
      const gain = random(inner, dtype);
      const eps = 1e-5;
      const offset = dtype === "f16" ? 1 : 0; // Gemma's (1 + w)
      const normed = rmsNormReference(x, gain, inner, eps, offset);
      const rows = [outer, outer + 8, outer + 3];
      const weights = rows.map((n) => random(n * inner, dtype));
      const biases = rows.map((n) => random(n, dtype));
      const tensors: Record<string, TensorDecl> = {
        x: input([batch, inner]),
        gain: weight([inner], dtype),
        ...Object.fromEntries(rows.map((n, i) => [`w${i}`, weight([n, inner], dtype)])),
        ...(bias ? Object.fromEntries(rows.map((n, i) => [`b${i}`, weight([n], dtype)])) : {}),
      };
      const values = {
        x,
        gain,
        ...Object.fromEntries(weights.map((w, i) => [`w${i}`, w])),
        ...(bias ? Object.fromEntries(biases.map((b, i) => [`b${i}`, b])) : {}),
      };
      const norm: Node = {
        op: "rms_norm",
        id: "norm",
        inputs: ["x", "gain"],
        outputs: ["h"],
        attrs: { eps, weightOffset: offset },
      };
      const matmul = (i: number): Node => ({
        op: "matmul",
        id: `m${i}`,
        inputs: bias ? ["h", `w${i}`, `b${i}`] : ["h", `w${i}`],
        outputs: [`y${i}`],
        attrs: {},
      });
      const reference = (i: number) =>
        matmulReference(normed, weights[i], batch, inner, rows[i], bias ? biases[i] : undefined);

      // q, k, v: one grouped dispatch with the norm in it.
      const grouped = await runGraph(
        tensors,
        [norm, matmul(0), matmul(1), matmul(2)],
        values,
        ["y0", "y1", "y2"],
      );
      deepStrictEqual(grouped.kernels, [`rms_matmul${bias ? "_bias" : ""}_vec_x3`]);
      grouped.values.forEach((y, i) => {
        const error = relativeL2(y, reference(i));
        ok(error <= 1e-5, `part ${i}: relative L2 ${error}`);
      });

      // The final norm and the logits.
      const logits = await runGraph(
        tensors,
        [norm, {
          op: "logits",
          id: "logits",
          inputs: ["h", "w0"],
          outputs: ["out"],
          attrs: {},
        }],
        values,
        ["out"],
      );
      deepStrictEqual(logits.kernels, ["rms_logits_vec"]);
      const logitsError = relativeL2(
        logits.values[0],
        matmulReference(normed, weights[0], batch, inner, outer),
      );
      ok(logitsError <= 1e-5, `logits: relative L2 ${logitsError}`);
    },
  );
}

for (const [heads, headDim, rotary] of [[4, 16, 16], [4, 32, 8], [7, 64, 64]] as const) {
  Deno.test(`rope: ${heads} heads, d=${headDim}, ${rotary} rotary dims`, async () => {
    const batch = 3;
    const positions = [0, 17, 311];
    const x = random(batch * heads * headDim);
    const attrs = { heads, headDim, theta: 10000, rotaryDims: rotary };
    const y = await runNode(
      { x: input([batch, heads * headDim]), positions: input([batch], "u32") },
      { op: "rope", id: "rope", inputs: ["x", "positions"], attrs },
      { x, positions },
    );
    const error = relativeL2(y, ropeReference(x, positions, heads, headDim, rotary, 10000));
    ok(error <= 1e-5, `relative L2 ${error}`);
  });
}

Deno.test("add, mul and the activations", async () => {
  const n = 3 * 700;
  const a = random(n, "f32", 6);
  const b = random(n);
  const tensors = { a: input([3, 700]), b: input([3, 700]) };
  for (const op of ["add", "mul"] as const) {
    const y = await runNode(tensors, { op, id: op, inputs: ["a", "b"], attrs: {} }, { a, b });
    const expected = a.map((v, i) => op === "add" ? v + b[i] : v * b[i]);
    ok(relativeL2(y, expected) <= 1e-6, op);
  }
  for (const op of ["silu", "gelu", "gelu_tanh"] as const) {
    const y = await runNode({ a: tensors.a }, { op, id: op, inputs: ["a"], attrs: {} }, { a });
    const error = relativeL2(y, a.map(ACTIVATION_REFERENCES[op]));
    ok(error <= 1e-5, `${op}: relative L2 ${error}`);
  }
});

Deno.test("embedding looks up and scales each token's row", async () => {
  const [vocab, hidden] = [50, 24];
  const table = random(vocab * hidden, "f16");
  const tokens = [3, 49, 0, 3];
  const y = await runNode(
    { tokens: input([4], "u32"), table: weight([vocab, hidden], "f16") },
    { op: "embedding", id: "embed", inputs: ["tokens", "table"], attrs: { scale: 2 } },
    { tokens, table },
  );
  const expected = tokens.flatMap((t) =>
    [...table.subarray(t * hidden, (t + 1) * hidden)].map((v) => v * 2)
  );
  deepStrictEqual([...y], expected);
});
