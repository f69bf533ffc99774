/**
 * Dense and SparQ attention on the local adapter against the float64 reference, over randomized
 * shapes that cover every value the acceptance lists. Each run draws fresh seeds; a failure
 * prints the case and its seed.
 */
import { ok } from "node:assert/strict";
import { ATTENTION_TENSORS as T, buildAttentionGraph } from "../compiler/build_attention_graph.ts";
import { compileGraph } from "../compiler/compile.ts";
import type { Target } from "../compiler/target.ts";
import { tuningBucket } from "../compiler/tuning.ts";
import { testGpu } from "../runtime/test_gpu.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { Executor } from "../runtime/executor.ts";
import {
  runAttention,
  transposeCache,
  valueMean,
  writeAttentionInputs,
} from "../runtime/run_attention.ts";
import { compareIndices, relativeL2 } from "./compare.ts";
import { type ProblemSpec, type RandomProblem, randomProblem } from "./random_problem.ts";
import {
  type AttentionProblem,
  denseReference,
  type SparqParams,
  sparqReference,
} from "./reference.ts";

const gpu = await testGpu();
const target = deviceTarget(gpu, 4 * 1024 ** 3);
const freshSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];

const tolerance = (kvDtype: "f16" | "f32") => (kvDtype === "f32" ? 1e-5 : 2e-3);

/** Asserts the kernel's index sets agree with the reference's up to ties; returns them. */
function checkIndices(
  p: AttentionProblem,
  params: SparqParams,
  gpuIndices: Int32Array,
  label: string,
): (b: number, g: number) => number[] {
  const comparison = compareIndices(p, params, gpuIndices);
  ok(comparison.faults.length === 0, `${label}: ${comparison.faults.join("; ")}`);
  return comparison.chosen;
}

/**
 * Runs SparQ, checks its index sets against the reference's and y against the reference on the
 * positions it chose; returns the run, the sets and that reference.
 */
async function checkSparq(
  t: Target,
  p: AttentionProblem,
  params: SparqParams,
  kvDtype: "f16" | "f32",
  tol: number,
  label: string,
) {
  const out = await runAttention(gpu, t, p, { kind: "sparq", ...params }, kvDtype);
  const chosen = checkIndices(p, params, out.indices!, label);
  const ref = sparqReference(p, params, chosen);
  const error = relativeL2(out.y, ref.y);
  ok(error <= tol, `${label}: SparQ relative L2 ${error}`);
  return { out, chosen, ref };
}

interface Case {
  batch: number;
  group: number;
  kvHeads: number;
  headDim: number;
  seq: number;
  r: (d: number) => number;
  rName: string;
  k: (s: number) => number;
  kName: string;
  ragged: boolean;
  kvDtype: "f16" | "f32";
}

/** Cycles each dimension through its listed values with different periods, so that 20 cases
 * cover every value, in varied combinations. */
function cases(): Case[] {
  const batches = [1, 2, 3, 4];
  const groups = [1, 2, 4, 7];
  const dims = [64, 128, 256];
  const seqs = [1, 7, 64, 1000, 4096];
  const rs: [string, (d: number) => number][] = [
    ["1", () => 1],
    ["d/8", (d) => d / 8],
    ["d/4", (d) => d / 4],
    ["d", (d) => d],
  ];
  const ks: [string, (s: number) => number][] = [
    ["1", () => 1],
    ["16", () => 16],
    ["S-1", (s) => Math.max(1, s - 1)],
    ["S", (s) => s],
    ["2S", (s) => 2 * s],
  ];
  return Array.from({ length: 20 }, (_, i) => {
    const seq = seqs[i % 5];
    const headDim = dims[(i + Math.floor(i / 5)) % 3];
    // Keep the biggest cases affordable for the float64 reference on two CPU cores.
    const big = seq * headDim >= 4096 * 128;
    return {
      batch: big ? 1 + (i % 2) : batches[i % 4],
      group: groups[Math.floor(i / 2) % 4],
      kvHeads: big ? 1 : 1 + (i % 3),
      headDim,
      seq,
      rName: rs[(i + 1) % 4][0],
      r: rs[(i + 1) % 4][1],
      kName: ks[(i + Math.floor(i / 5)) % 5][0],
      k: ks[(i + Math.floor(i / 5)) % 5][1],
      ragged: i % 3 !== 2,
      kvDtype: i % 2 === 0 ? "f16" : "f32",
    };
  });
}

for (const c of cases()) {
  const name = `B=${c.batch} H=${c.group * c.kvHeads} Hkv=${c.kvHeads} d=${c.headDim} ` +
    `S=${c.seq} r=${c.rName} k=${c.kName} ${c.ragged ? "ragged" : "full"} ${c.kvDtype}`;
  Deno.test(`dense and SparQ match the float64 reference: ${name}`, async () => {
    const seed = freshSeed();
    const label = `${name} seed=${seed}`;
    const p = randomProblem({
      batch: c.batch,
      heads: c.group * c.kvHeads,
      kvHeads: c.kvHeads,
      seqCapacity: c.seq,
      headDim: c.headDim,
      ragged: c.ragged,
      seed,
      kvDtype: c.kvDtype,
    });
    const tol = tolerance(c.kvDtype);
    const dense = await runAttention(gpu, target, p, { kind: "dense" }, c.kvDtype);
    const denseError = relativeL2(dense.y, denseReference(p));
    ok(denseError <= tol, `${label}: dense relative L2 ${denseError}`);

    const params = { r: c.r(c.headDim), k: c.k(c.seq), localWindow: 0 };
    const { out: sparq, ref } = await checkSparq(target, p, params, c.kvDtype, tol, label);
    ok(relativeL2(sparq.alpha!, ref.alpha) <= 1e-5, `${label}: alpha differs`);
    if (params.k >= c.seq) {
      ok(sparq.alpha!.every((a) => a === 1), `${label}: k ≥ S must give alpha = 1`);
      ok(relativeL2(sparq.y, dense.y) <= 1e-6, `${label}: k ≥ S must equal dense`);
    }
  });
}

Deno.test("without subgroups (tree reductions, the tiled dense kernel) results match too", async () => {
  const plain: Target = { ...target, subgroupSize: null };
  for (const [group, kvDtype] of [[1, "f16"], [4, "f32"]] as const) {
    const seed = freshSeed();
    const label = `no subgroups group=${group} ${kvDtype} seed=${seed}`;
    const p = randomProblem({
      batch: 2,
      heads: 2 * group,
      kvHeads: 2,
      seqCapacity: 700,
      headDim: 128,
      ragged: true,
      seed,
      kvDtype,
    });
    const tol = tolerance(kvDtype);
    const dense = await runAttention(gpu, plain, p, { kind: "dense" }, kvDtype);
    const denseError = relativeL2(dense.y, denseReference(p));
    ok(denseError <= tol, `${label}: dense relative L2 ${denseError}`);
    const params = { r: 32, k: 50, localWindow: 0 };
    const { out, ref } = await checkSparq(plain, p, params, kvDtype, tol, label);
    ok(relativeL2(out.alpha!, ref.alpha) <= 1e-5, `${label}: alpha differs`);
  }
});

/** Dense attention over a `shape` with a cache of `maxSeq` positions, its K and V given. */
function denseGraph(
  shape: Omit<Parameters<typeof buildAttentionGraph>[0], "maxSeq" | "method" | "append">,
  maxSeq: number,
) {
  return buildAttentionGraph({ ...shape, maxSeq, method: { kind: "dense" }, append: false });
}

Deno.test("dense attention with the reduction in its partial kernel stays exact call after call", async () => {
  // One query head per KV head, few rows: the last chunk of each row reduces it and resets the
  // row's counter for the next call; a counter left behind would leave the second call's y unset.
  // d = 128, so that the subgroup kernel takes the rows on 32-wide subgroups too (the H100's).
  const shape = { batch: 2, heads: 3, kvHeads: 3, headDim: 128, kvDtype: "f16" as const };
  const program = compileGraph(denseGraph(shape, 700), target);
  ok(program.schedule.map((d) => d.kernel).join() === "attention_dense_partial_reduce");
  const executor = await Executor.create(gpu, program);
  try {
    for (let call = 0; call < 3; call++) {
      const seed = freshSeed();
      const p = randomProblem({ ...shape, seqCapacity: 700, ragged: true, seed });
      writeAttentionInputs(executor, p, { kind: "dense" });
      executor.run();
      const error = relativeL2(await executor.read(T.y) as Float32Array, denseReference(p));
      ok(error <= 2e-3, `call ${call} seed ${seed}: relative L2 ${error}`);
    }
  } finally {
    executor.destroy();
  }
});

Deno.test("SparQ's stages give the same results chained, paired and apart", async () => {
  // 14 storage buffers chain stages 2a–3 in one kernel (rows this few warm the caches), 13 pair
  // 2b with 3, 8 keep the four stages apart. With one query head per KV head stage 2a runs inside
  // stage 1 where S is a multiple of 4 (9000), as a stage of its own where not (8999).
  for (const limit of [target.limits.maxStorageBuffersPerShaderStage, 13, 8]) {
    const t: Target = {
      ...target,
      limits: { ...target.limits, maxStorageBuffersPerShaderStage: limit },
    };
    for (const [group, seq] of [[1, 9000], [1, 8999], [4, 9000]]) {
      const seed = freshSeed();
      const label = `storage buffers=${limit} group=${group} S=${seq} seed=${seed}`;
      const p = randomProblem({
        batch: 2,
        heads: 2 * group,
        kvHeads: 2,
        seqCapacity: seq,
        headDim: 64,
        ragged: true,
        seed,
        kvDtype: "f16",
      });
      const params = { r: 16, k: 100, localWindow: 0 };
      const { out, ref } = await checkSparq(t, p, params, "f16", 2e-3, label);
      ok(relativeL2(out.alpha!, ref.alpha) <= 1e-5, `${label}: alpha differs`);
    }
  }
});

Deno.test("the local window always keeps the newest positions", async () => {
  // Two query heads per KV head, and one (stage 2a inside stage 1, which writes only the window's
  // scores: alpha's window terms come from them, the rest from the candidates' keys).
  for (const heads of [4, 2]) {
    const seed = freshSeed();
    const p = randomProblem({
      batch: 2,
      heads,
      kvHeads: 2,
      seqCapacity: 300,
      headDim: 64,
      ragged: true,
      seed,
      kvDtype: "f16",
    });
    const params = { r: 8, k: 32, localWindow: 8 };
    const label = `heads=${heads} seed=${seed}`;
    const { out, chosen, ref } = await checkSparq(target, p, params, "f16", 2e-3, label);
    ok(relativeL2(out.alpha!, ref.alpha) <= 1e-5, `${label}: alpha differs`);
    for (let b = 0; b < 2; b++) {
      const L = p.lengths[b];
      for (let g = 0; g < 2; g++) {
        const recent = Array.from({ length: Math.min(8, L) }, (_, i) => L - 1 - i);
        ok(recent.every((pos) => chosen(b, g).includes(pos)), `${label}: window missing`);
      }
    }
  }
});

Deno.test("the selection stays exact where ranking scores tie or bunch", async () => {
  // Rows repeating three patterns tie ~S/3 positions on each score; a 512× outlier row squeezes
  // the rest into a few value bins. Both overflow the binned selection's boundary bin, so the
  // radix fallback must give the same sets as the reference.
  const shapes: [string, (k: Float64Array, S: number, d: number, rows: number) => void][] = [
    ["ties", (k, S, d, rows) => {
      for (let row = 0; row < rows; row++) {
        for (let pos = 3; pos < S; pos++) {
          k.copyWithin(
            (row * S + pos) * d,
            (row * S + (pos % 3)) * d,
            (row * S + (pos % 3) + 1) * d,
          );
        }
      }
    }],
    ["outlier", (k, S, d, rows) => {
      for (let row = 0; row < rows; row++) {
        for (let j = 0; j < d; j++) k[(row * S + 5) * d + j] *= 512;
      }
    }],
  ];
  for (const [name, shape] of shapes) {
    for (const group of [1, 2]) {
      const seed = freshSeed();
      const p = randomProblem({
        batch: 2,
        heads: 2 * group,
        kvHeads: 2,
        seqCapacity: 1000,
        headDim: 64,
        ragged: false,
        seed,
        kvDtype: "f32",
      });
      shape(p.k as Float64Array, 1000, 64, 4);
      const params = { r: 16, k: 40, localWindow: 0 };
      const label = `${name} group=${group} seed=${seed}`;
      await checkSparq(target, p, params, "f32", 1e-5, label);
    }
  }
});

/** Runs kv_append then attention; compares the cache it wrote and y with the reference. */
async function appendThenAttend(p: RandomProblem, sparq: boolean, t: Target, label: string) {
  const { batch, heads, kvHeads, headDim: d, seqCapacity: S } = p;
  const method = sparq ? { kind: "sparq" as const, r: d / 4, k: 16, localWindow: 0 } : {
    kind: "dense" as const,
  };
  const graph = buildAttentionGraph({
    batch,
    heads,
    kvHeads,
    headDim: d,
    maxSeq: S,
    kvDtype: "f32",
    method,
    append: true,
  });
  const executor = await Executor.create(gpu, compileGraph(graph, t));
  try {
    // The cache holds positions < L − 1; the token at L − 1 arrives through kv_append.
    const before = p.lengths.map((L) => L - 1);
    const kOld = Float64Array.from(p.k);
    const vOld = Float64Array.from(p.v);
    const kNew = new Float64Array(batch * kvHeads * d);
    const vNew = new Float64Array(batch * kvHeads * d);
    for (let b = 0; b < batch; b++) {
      for (let g = 0; g < kvHeads; g++) {
        const row = b * kvHeads + g;
        const at = (row * S + before[b]) * d;
        kNew.set(p.k.subarray(at, at + d), row * d);
        vNew.set(p.v.subarray(at, at + d), row * d);
        kOld.fill(0, at, at + d);
        vOld.fill(0, at, at + d);
      }
    }
    executor.write(T.q, p.q);
    executor.write(T.positions, before);
    executor.write(T.kNew, kNew);
    executor.write(T.vNew, vNew);
    executor.write(T.kCache, kOld);
    executor.write(T.vCache, vOld);
    if (sparq) {
      executor.write(T.ktCache, transposeCache(kOld, batch * kvHeads, S, d));
      executor.write(T.vMean, valueMean(vOld, batch, kvHeads, S, d, before));
    }
    executor.run();
    ok(relativeL2(await executor.read(T.kCache), p.k) === 0, `${label}: K cache`);
    ok(relativeL2(await executor.read(T.vCache), p.v) === 0, `${label}: V cache`);
    if (sparq) {
      const kt = transposeCache(p.k, batch * kvHeads, S, d);
      ok(relativeL2(await executor.read(T.ktCache), kt) === 0, `${label}: Kᵀ cache`);
      const mean = valueMean(p.v, batch, kvHeads, S, d, p.lengths);
      const meanError = relativeL2(await executor.read(T.vMean), mean);
      ok(meanError <= 1e-6, `${label}: V_mean relative L2 ${meanError}`);
    }
    const y = await executor.read(T.y);
    const expected = sparq ? sparqReference(p, method as SparqParams).y : denseReference(p);
    ok(relativeL2(y, expected) <= 1e-5, `${label}: y after append`);
  } finally {
    executor.destroy();
  }
}

Deno.test("kv_append writes K, Kᵀ, V and V_mean at each sequence's own position", async () => {
  const seed = freshSeed();
  const p = randomProblem({
    batch: 3,
    heads: 4,
    kvHeads: 2,
    seqCapacity: 40,
    headDim: 64,
    ragged: true,
    seed,
  });
  // Positions ≥ each length stay zero in the reference, as an unwritten cache would be.
  for (let b = 0; b < 3; b++) {
    for (let g = 0; g < 2; g++) {
      const row = b * 2 + g;
      p.k.fill(0, (row * 40 + p.lengths[b]) * 64, (row + 1) * 40 * 64);
      p.v.fill(0, (row * 40 + p.lengths[b]) * 64, (row + 1) * 40 * 64);
    }
  }
  await appendThenAttend(p, true, target, `sparq seed=${seed}`);
  await appendThenAttend(p, false, target, `dense seed=${seed}`);
});

Deno.test("caches split over several bindings give the same results", async () => {
  const seed = freshSeed();
  const problem = (heads: number) =>
    randomProblem({
      batch: 3,
      heads,
      kvHeads: 2,
      seqCapacity: 64,
      headDim: 64,
      ragged: true,
      seed,
      kvDtype: "f32",
    });
  const p = problem(4);
  // Room for two (sequence, KV head) rows of 64 × 64 f32 per binding: 3 shards of 6 rows.
  const small = {
    ...target,
    limits: { ...target.limits, maxStorageBufferBindingSize: 2 * 64 * 64 * 4 },
  };
  const graph = buildAttentionGraph({
    batch: 3,
    heads: 4,
    kvHeads: 2,
    headDim: 64,
    maxSeq: 64,
    kvDtype: "f32",
    method: { kind: "sparq", r: 16, k: 8, localWindow: 0 },
    append: false,
  });
  ok(compileGraph(graph, small).tensors[T.kCache].shards.length === 3);
  const params = { r: 16, k: 8, localWindow: 0 };
  await checkSparq(small, p, params, "f32", 1e-5, `seed=${seed}`);
  // One query head per KV head: stage 1, with stage 2a in it, writes each shard's candidates.
  await checkSparq(small, problem(2), params, "f32", 1e-5, `one head per KV head seed=${seed}`);
  const dense = await runAttention(gpu, small, p, { kind: "dense" }, "f32");
  ok(relativeL2(dense.y, denseReference(p)) <= 1e-5, `seed=${seed}: dense`);
  await appendThenAttend(p, true, small, `sharded append seed=${seed}`);
});

Deno.test("dense with grouped heads in chunks of 2048 positions matches the reference", async () => {
  // The default takes 2048-position chunks only where they leave ≥ 512 workgroups, which no
  // test-sized problem reaches: choose them here (three chunks, the last partial; two heads per
  // KV head, so that the tiled kernel's scores of a chunk fit a software adapter's 32 KiB).
  const shape = { batch: 2, heads: 4, kvHeads: 2, headDim: 64, kvDtype: "f16" as const };
  const bucket = tuningBucket({ family: "attention_dense", ...shape, maxSeq: 5000 });
  const program = compileGraph(
    denseGraph(shape, 5000),
    target,
    new Map([[bucket, { chunk: 2048, workgroup: 256 }]]),
  );
  ok(program.kernels.some((k) => k.source.includes("const CHUNK = 2048u;")), "not 2048");
  const executor = await Executor.create(gpu, program);
  try {
    const seed = freshSeed();
    const p = randomProblem({ ...shape, seqCapacity: 5000, ragged: true, seed });
    p.lengths[0] = 5000;
    writeAttentionInputs(executor, p, { kind: "dense" });
    executor.run();
    const error = relativeL2(await executor.read(T.y) as Float32Array, denseReference(p));
    ok(error <= 1e-5, `seed ${seed}: relative L2 ${error}`);
  } finally {
    executor.destroy();
  }
});

/**
 * Runs `program` (dense, B=3, capacity 1000) twice: full rows, then rows of 1, 300 and 1000
 * positions, whose chunks past their ends still hold the first call's partials; y must match the
 * reference both times.
 */
async function denseTwoCalls(program: ReturnType<typeof compileGraph>, shape: RandomShape) {
  const executor = await Executor.create(gpu, program);
  try {
    for (const lengths of [[1000, 1000, 1000], [1, 300, 1000]]) {
      const seed = freshSeed();
      const p = randomProblem({ ...shape, seqCapacity: 1000, ragged: false, seed });
      p.lengths.splice(0, 3, ...lengths);
      writeAttentionInputs(executor, p, { kind: "dense" });
      executor.run();
      const error = relativeL2(await executor.read(T.y) as Float32Array, denseReference(p));
      ok(error <= 2e-3, `seed ${seed}, lengths ${lengths}: relative L2 ${error}`);
    }
  } finally {
    executor.destroy();
  }
}

/** A problem's shape as `randomProblem` takes it, less capacity, raggedness and seed. */
type RandomShape = Omit<ProblemSpec, "seqCapacity" | "ragged" | "seed">;

Deno.test("dense merges a few chunks per row in registers, unwritten chunks left out", async () => {
  // Four chunks of 256 positions per row, which the reduction of few chunks merges (without
  // subgroups: with them, grouped heads reduce in the partial kernel, as the next test checks).
  const shape = { batch: 3, heads: 6, kvHeads: 2, headDim: 64, kvDtype: "f16" as const };
  const program = compileGraph(denseGraph(shape, 1000), { ...target, subgroupSize: null });
  ok(program.kernels.some((k) => k.name === "attention_dense_reduce_few"), "no few-chunk reduce");
  await denseTwoCalls(program, shape);
});

Deno.test("dense with grouped heads merges in its partial kernel, unwritten chunks left out", async () => {
  // Three query heads per KV head (the teams publish all heads' statistics at once); the last
  // chunk of each row merges all its heads' chunks in registers, and resets the row's counter.
  // d = 128, so that the subgroup kernel takes the rows on 32-wide subgroups too (the H100's).
  const shape = { batch: 3, heads: 6, kvHeads: 2, headDim: 128, kvDtype: "f16" as const };
  const program = compileGraph(denseGraph(shape, 1000), target);
  ok(program.schedule.map((d) => d.kernel).join() === "attention_dense_partial_reduce");
  await denseTwoCalls(program, shape);
});

Deno.test("dense over many chunks, and SparQ's top-k across several candidate blocks (S > 4096)", async () => {
  const seed = freshSeed();
  const p = randomProblem({
    batch: 2,
    heads: 4,
    kvHeads: 2,
    seqCapacity: 9000,
    headDim: 64,
    ragged: true,
    seed,
    kvDtype: "f16",
  });
  p.lengths[0] = 9000; // at least one sequence spans all three blocks
  // Dense over as many chunks: the reduction takes several rounds of loads, the last partial.
  const dense = await runAttention(gpu, target, p, { kind: "dense" }, "f16");
  ok(relativeL2(dense.y, denseReference(p)) <= 1e-5, `seed=${seed}: dense`);
  for (
    const params of [{ r: 8, k: 16, localWindow: 0 }, { r: 16, k: 300, localWindow: 40 }, {
      r: 4,
      k: 8999,
      localWindow: 0,
    }]
  ) {
    const label = `seed=${seed} k=${params.k}`;
    await checkSparq(target, p, params, "f16", 2e-3, label);
  }
  // The four kernels apart (8 storage buffers allow no fusion): stage 2a over three blocks of
  // 4096 positions (above, chained, five of 2048), stage 2b over their candidates.
  const apart = {
    ...target,
    limits: { ...target.limits, maxStorageBuffersPerShaderStage: 8 },
  };
  await checkSparq(apart, p, { r: 8, k: 300, localWindow: 0 }, "f16", 2e-3, `seed=${seed} apart`);
  // Long rows, one head per KV head: stage 1's blocks of 4096 positions, two slots of 2048 per
  // workgroup, keep their candidates (nine blocks, the last partial).
  const long = randomProblem({
    batch: 2,
    heads: 2,
    kvHeads: 2,
    seqCapacity: 33000,
    headDim: 32,
    ragged: true,
    seed,
    kvDtype: "f16",
  });
  long.lengths[0] = 33000;
  for (const params of [{ r: 8, k: 64, localWindow: 0 }, { r: 4, k: 200, localWindow: 20 }]) {
    await checkSparq(target, long, params, "f16", 2e-3, `seed=${seed} long k=${params.k}`);
  }
});

Deno.test("stage 2b hands stage 3 its indices in workgroup memory, candidates held or looped", async () => {
  // The fused kernels pass the indices and alpha to stage 3 in workgroup memory. With one query
  // head per KV head stage 2b's candidates are held in registers where each invocation has at
  // most four (k = 100 over two blocks) and looped over where it has more (k = 120 over nine
  // blocks); with two query heads per KV head they are looped over. Row 1 is shorter than k:
  // every position is kept. With subgroups and without.
  const cases = [
    { heads: 2, seq: 3000, k: 100, held: true },
    { heads: 2, seq: 33000, k: 120, held: false },
    { heads: 4, seq: 3000, k: 100, held: false },
  ];
  for (const subgroupSize of [target.subgroupSize, null]) {
    const t: Target = { ...target, subgroupSize };
    for (const { heads, seq, k, held } of cases) {
      const shape = { batch: 2, heads, kvHeads: 2, headDim: 64, kvDtype: "f16" as const };
      const method = { kind: "sparq" as const, r: 8, k, localWindow: 0 };
      const graph = buildAttentionGraph({ ...shape, maxSeq: seq, method, append: false });
      const sources = compileGraph(graph, t).kernels.map((kernel) => kernel.source).join("\n");
      const label = `subgroups=${subgroupSize} H=${heads} S=${seq} k=${k}`;
      ok(sources.includes("alpha_sh[0u] = total;"), `${label}: no hand-off`);
      ok(sources.includes("held_valid0") === held, `${label}: candidates held ≠ ${held}`);
      const seed = freshSeed();
      const p = randomProblem({ ...shape, seqCapacity: seq, ragged: true, seed });
      p.lengths[0] = seq;
      p.lengths[1] = k - 10;
      const { out, ref } = await checkSparq(t, p, method, "f16", 2e-3, `${label} seed=${seed}`);
      ok(relativeL2(out.alpha!, ref.alpha) <= 1e-5, `${label} seed=${seed}: alpha differs`);
    }
  }
});
