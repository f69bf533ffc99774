import { deepStrictEqual, ok } from "node:assert/strict";
import { type AttentionProblem, denseReference, sparqReference } from "./reference.ts";
import { randomProblem } from "./random_problem.ts";

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number) =>
  Array.from(a).every((x, i) => Math.abs(x - b[i]) <= tol);

Deno.test("dense reference on a hand-worked example", () => {
  // Scores 1/2 and 0 (q·k / sqrt(4)): weights e^0.5 / (e^0.5 + 1) and 1 / (e^0.5 + 1).
  const p: AttentionProblem = {
    batch: 1,
    heads: 1,
    kvHeads: 1,
    seqCapacity: 3,
    headDim: 4,
    q: [1, 0, 0, 0],
    k: [1, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9],
    v: [1, 1, 1, 1, 3, 3, 3, 3, 7, 7, 7, 7],
    lengths: [2],
  };
  const w = Math.exp(0.5) / (Math.exp(0.5) + 1);
  ok(close(denseReference(p), [1, 1, 1, 1].map(() => w + 3 * (1 - w)), 1e-15));
  // SparQ with k = 1 keeps position 0, alpha = its approximate score, the rest to the mean (2).
  const s = sparqReference(p, { r: 1, k: 1, localWindow: 0 });
  deepStrictEqual(Array.from(s.indices), [0]);
  // r = 1 picks component 0; tau = sqrt(4 · 1/1) = 2, so ŝ = softmax([0.5, 0]) as above.
  ok(Math.abs(s.alpha[0] - w) < 1e-15);
  ok(close(s.y, [1, 1, 1, 1].map(() => w * 1 + (1 - w) * 2), 1e-15));
});

Deno.test("SparQ with k ≥ length is dense attention exactly, alpha = 1", () => {
  const p = randomProblem({
    batch: 2,
    heads: 8,
    kvHeads: 2,
    seqCapacity: 50,
    headDim: 16,
    ragged: true,
    seed: 7,
  });
  const s = sparqReference(p, { r: 4, k: 50, localWindow: 0 });
  deepStrictEqual(s.y, denseReference(p));
  ok(s.alpha.every((a) => a === 1));
});

Deno.test("SparQ keeps the local window and pads indices with -1", () => {
  const p = randomProblem({
    batch: 1,
    heads: 2,
    kvHeads: 1,
    seqCapacity: 40,
    headDim: 8,
    ragged: false,
    seed: 3,
  });
  const lengths = [5];
  const short = { ...p, lengths };
  const full = sparqReference(short, { r: 2, k: 8, localWindow: 2 });
  deepStrictEqual(Array.from(full.indices), [0, 1, 2, 3, 4, -1, -1, -1]);
  const s = sparqReference(p, { r: 2, k: 6, localWindow: 3 });
  const picked = Array.from(s.indices);
  ok([37, 38, 39].every((pos) => picked.includes(pos)));
  deepStrictEqual(picked, [...picked].sort((a, b) => a - b));
  ok(s.alpha.every((a) => a > 0 && a < 1));
});
