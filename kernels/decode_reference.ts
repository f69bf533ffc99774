/**
 * Float64 references of the decode step's ops other than attention (row-major, batch first),
 * the yardstick of the kernels in elementwise.ts, norm.ts, matmul.ts and argmax.ts.
 *
 * @module
 */

type Values = ArrayLike<number>;

/**
 * y[b, n] = Σ_k x[b, k] · w[n, k] (+ bias[n]).
 *
 * @example
 * ```ts
 * import { matmulReference } from "./decode_reference.ts";
 * matmulReference([1, 2], [3, 4, 5, 6], 1, 2, 2); // Float64Array [11, 17]
 * ```
 */
export function matmulReference(
  x: Values,
  w: Values,
  batch: number,
  inner: number,
  outer: number,
  bias?: Values,
): Float64Array {
  const y = new Float64Array(batch * outer);
  for (let b = 0; b < batch; b++) {
    for (let n = 0; n < outer; n++) {
      let sum = bias ? bias[n] : 0;
      for (let k = 0; k < inner; k++) sum += x[b * inner + k] * w[n * inner + k];
      y[b * outer + n] = sum;
    }
  }
  return y;
}

/**
 * RMSNorm of each row: x / sqrt(mean(x²) + eps) · (weight + offset).
 *
 * @example
 * ```ts
 * import { rmsNormReference } from "./decode_reference.ts";
 * rmsNormReference([3, 4], [1, 1], 2, 0, 0); // ≈ [0.8485, 1.1314]
 * ```
 */
export function rmsNormReference(
  x: Values,
  weight: Values,
  hidden: number,
  eps: number,
  offset: number,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let at = 0; at < x.length; at += hidden) {
    let squares = 0;
    for (let j = 0; j < hidden; j++) squares += x[at + j] ** 2;
    const inv = 1 / Math.sqrt(squares / hidden + eps);
    for (let j = 0; j < hidden; j++) y[at + j] = x[at + j] * inv * (weight[j] + offset);
  }
  return y;
}

/**
 * LayerNorm of each row: (x − mean) / sqrt(var + eps) · weight + bias.
 *
 * @example
 * ```ts
 * import { layerNormReference } from "./decode_reference.ts";
 * layerNormReference([1, 3], [1, 1], [0, 0], 2, 0); // [-1, 1]
 * ```
 */
export function layerNormReference(
  x: Values,
  weight: Values,
  bias: Values,
  hidden: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let at = 0; at < x.length; at += hidden) {
    let mean = 0;
    for (let j = 0; j < hidden; j++) mean += x[at + j] / hidden;
    let variance = 0;
    for (let j = 0; j < hidden; j++) variance += (x[at + j] - mean) ** 2 / hidden;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let j = 0; j < hidden; j++) y[at + j] = (x[at + j] - mean) * inv * weight[j] + bias[j];
  }
  return y;
}

/**
 * Rotary embedding, rotate-half, on the first `rotaryDims` components of each head.
 *
 * @example
 * ```ts
 * import { ropeReference } from "./decode_reference.ts";
 * ropeReference([1, 0], [0], 1, 2, 2, 10000); // [1, 0] at position 0
 * ```
 */
export function ropeReference(
  x: Values,
  positions: Values,
  heads: number,
  headDim: number,
  rotaryDims: number,
  theta: number,
): Float64Array {
  const y = Float64Array.from(x);
  const half = rotaryDims / 2;
  for (let b = 0; b < positions.length; b++) {
    for (let h = 0; h < heads; h++) {
      const at = (b * heads + h) * headDim;
      for (let j = 0; j < half; j++) {
        const angle = positions[b] * theta ** ((-2 * j) / rotaryDims);
        const [x1, x2] = [x[at + j], x[at + j + half]];
        y[at + j] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
        y[at + j + half] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
      }
    }
  }
  return y;
}

/** The error function (float64, by its series and continued fraction: |error| < 1e-14). */
function erf(z: number): number {
  const a = Math.abs(z);
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 100; n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(z) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let fraction = 0;
  for (let n = 60; n >= 1; n--) fraction = (n / 2) / (a + fraction);
  return Math.sign(z) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + fraction));
}

/** The activations, float64. */
export const ACTIVATION_REFERENCES: Record<"silu" | "gelu" | "gelu_tanh", (x: number) => number> = {
  silu: (x) => x / (1 + Math.exp(-x)),
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
};

/**
 * The index of each row's largest value, ties to the lower index.
 *
 * @example
 * ```ts
 * import { argmaxReference } from "./decode_reference.ts";
 * argmaxReference([1, 3, 3, 0], 4); // [1]
 * ```
 */
export function argmaxReference(logits: Values, vocab: number): number[] {
  const out: number[] = [];
  for (let at = 0; at < logits.length; at += vocab) {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (logits[at + j] > logits[at + best]) best = j;
    out.push(best);
  }
  return out;
}
