/**
 * The summary `deno task compile` prints: what was compiled, its size, its memory, and the
 * bytes one decode step moves, dense against SparQ.
 *
 * @module
 */
import { formatBytes } from "./passes/plan_buffers.ts";
import type { Plan } from "./plan.ts";

/** Bytes moved, in decimal units like bandwidth: GB, MB or kB. */
const GB = (bytes: number) =>
  bytes >= 1e9
    ? `${(bytes / 1e9).toFixed(2)} GB`
    : bytes >= 1e6
    ? `${(bytes / 1e6).toFixed(2)} MB`
    : `${(bytes / 1e3).toFixed(1)} kB`;
/** "6.40× less", or "1.13× more" where SparQ moves more (k close to or above S). */
const ratio = (dense: number, sparq: number) =>
  dense >= sparq
    ? `${(dense / sparq).toFixed(2)}× less`
    : `SparQ moves ${(sparq / dense).toFixed(2)}× more`;
const us = (ns: number) => `${(ns / 1000).toFixed(1)} µs`;

/**
 * One line per fact, aligned for a terminal.
 *
 * @example
 * ```ts
 * import { summaryLines } from "./summary.ts";
 * // for (const line of summaryLines(plan)) console.log(line);
 * ```
 */
export function summaryLines(plan: Plan): string[] {
  const { stats, options, model } = plan;
  const { memory: m, transfer: t } = stats;
  const a = options.attention;
  const method = a.kind === "sparq"
    ? `sparq (r=${a.r}, k=${a.k}, local window ${a.localWindow})`
    : "dense";
  const sparqKv = a.kind === "sparq";
  const placeholders = stats.placeholderKernels
    ? ` (${stats.placeholderKernels} placeholders, not yet computing)`
    : "";
  const stepDense = t.weights + t.attentionDense;
  const stepSparq = t.weights + t.attentionSparq;
  const sparqLabel = sparqKv ? "SparQ" : `SparQ would (r=${t.sparq.r}, k=${t.sparq.k})`;
  return [
    `${model.name}: ${method}; batch ${options.batch}, max context ${options.maxSeq}, ` +
    `KV ${options.kvDtype}, weights ${options.weightDtype}; target ${plan.target.name}`,
    `  graph         ${stats.layers} layers, ${stats.nodes} nodes`,
    `  kernels       ${stats.kernels} kernels${placeholders}, ` +
    `${stats.dispatchesPerStep} dispatches per step`,
    `  memory        weights      ${formatBytes(m.weights)}`,
    `                KV cache     ${formatBytes(m.kCache + m.vCache + m.vMean)} ` +
    `(K ${formatBytes(m.kCache)}, V ${formatBytes(m.vCache)}` +
    `${sparqKv ? `, V mean ${formatBytes(m.vMean)}` : ""})`,
    ...(sparqKv
      ? [`                Kᵀ copy      ${formatBytes(m.ktCache)} (SparQ's second K layout)`]
      : []),
    `                activations  ${formatBytes(m.activations)} (reused by liveness)`,
    `                total        ${formatBytes(m.total)} of ${formatBytes(m.budget)} budget`,
    `  transfer per decode step at S=${t.seqLen} (SPARQ.md model):`,
    `                attention    dense ${GB(t.attentionDense)}, ${sparqLabel} ` +
    `${GB(t.attentionSparq)}: ${ratio(t.attentionDense, t.attentionSparq)}`,
    `                whole step   dense ${GB(stepDense)}, SparQ ${GB(stepSparq)} ` +
    `(weights ${GB(t.weights)}): ${ratio(stepDense, stepSparq)}`,
    ...plan.tuning.map((r, i) =>
      `  ${i === 0 ? "tuning        " : "              "}${r.bucket}: ` +
      `${Object.entries(r.choice).map(([k, v]) => `${k} ${v}`).join(", ")}, ` +
      `${us(r.bestNs)} against ${us(r.defaultNs)} by default ` +
      `(${r.source === "cache" ? "from the cache" : `measured ${r.candidates} candidates`})`
    ),
  ];
}
