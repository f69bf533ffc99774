/**
 * Builds the graph of one decode step of every layer from a model config and build options.
 *
 * @module
 */
import { ktShape } from "../kernels/kt_layout.ts";
import type { BuildOptions } from "./build_options.ts";
import type { DType, Graph, Node, TensorDecl } from "./ir.ts";
import { type ModelConfig, rotaryDims } from "./model_config.ts";

class GraphBuilder {
  readonly tensors: Record<string, TensorDecl> = {};
  readonly nodes: Node[] = [];

  declare(name: string, role: TensorDecl["role"], shape: number[], dtype: DType): string {
    this.tensors[name] = { shape, dtype, role };
    return name;
  }

  /** Adds a node whose single output is named after the node. */
  add<N extends Node>(node: Omit<N, "outputs">): string {
    const output = node.id;
    this.nodes.push({ ...node, outputs: [output] } as unknown as Node);
    return output;
  }
}

/**
 * The decode-step graph: embedding, then per layer norm → q/k/v projections → rope →
 * kv_append → attention → output projection → MLP with the family's residual layout; then the
 * final norm, logits and argmax.
 *
 * @example
 * ```ts
 * import { buildDecodeGraph } from "./build_graph.ts";
 * import { defaultOptions } from "./build_options.ts";
 * import { PRESETS } from "./presets.ts";
 * const model = PRESETS.get("tiny-llama")!;
 * const graph = buildDecodeGraph(model, defaultOptions(model, "sparq"));
 * graph.outputs; // ["logits", "next_tokens"]
 * ```
 */
export function buildDecodeGraph(config: ModelConfig, options: BuildOptions): Graph {
  const g = new GraphBuilder();
  const { batch: B, maxSeq: S, weightDtype: wd, kvDtype } = options;
  const D = config.hiddenSize;
  const d = config.headDim;
  const H = config.numHeads;
  const Hkv = config.numKvHeads;
  const sparq = options.attention.kind === "sparq";

  const tokens = g.declare("tokens", "input", [B], "u32");
  const positions = g.declare("positions", "input", [B], "u32");
  const embedTable = g.declare("embed.weight", "weight", [config.vocabSize, D], wd);

  const norm = (id: string, x: string, prefix: string): string => {
    const weight = g.declare(`${prefix}.weight`, "weight", [D], wd);
    if (config.norm === "rms_norm") {
      return g.add({
        op: "rms_norm",
        id,
        inputs: [x, weight],
        attrs: { eps: config.normEps, weightOffset: config.normWeightOffset },
      });
    }
    const bias = g.declare(`${prefix}.bias`, "weight", [D], wd);
    return g.add({
      op: "layer_norm",
      id,
      inputs: [x, weight, bias],
      attrs: { eps: config.normEps },
    });
  };
  const linear = (id: string, x: string, inDim: number, outDim: number, bias: boolean) => {
    const inputs = [x, g.declare(`${id}.weight`, "weight", [outDim, inDim], wd)];
    if (bias) inputs.push(g.declare(`${id}.bias`, "weight", [outDim], wd));
    return g.add({ op: "matmul", id, inputs, attrs: {} });
  };
  const binary = (op: "add" | "mul", id: string, a: string, b: string) =>
    g.add({ op, id, inputs: [a, b], attrs: {} });

  let h = g.add({
    op: "embedding",
    id: "embed",
    inputs: [tokens, embedTable],
    attrs: { scale: config.embeddingScale },
  });

  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `layers.${layer}`;
    const x1 = norm(`${p}.attn_norm`, h, `${p}.attn_norm`);
    const q = linear(`${p}.q_proj`, x1, D, H * d, config.qkvBias);
    const k = linear(`${p}.k_proj`, x1, D, Hkv * d, config.qkvBias);
    const v = linear(`${p}.v_proj`, x1, D, Hkv * d, config.qkvBias);
    const ropeAttrs = { headDim: d, theta: config.ropeTheta, rotaryDims: rotaryDims(config) };
    const qr = g.add({
      op: "rope",
      id: `${p}.q_rope`,
      inputs: [q, positions],
      attrs: { ...ropeAttrs, heads: H },
    });
    const kr = g.add({
      op: "rope",
      id: `${p}.k_rope`,
      inputs: [k, positions],
      attrs: { ...ropeAttrs, heads: Hkv },
    });

    const cache = [g.declare(`${p}.k_cache`, "state", [B, Hkv, S, d], kvDtype)];
    if (sparq) cache.push(g.declare(`${p}.kt_cache`, "state", ktShape(B, Hkv, d, S), kvDtype));
    cache.push(g.declare(`${p}.v_cache`, "state", [B, Hkv, S, d], kvDtype));
    if (sparq) cache.push(g.declare(`${p}.v_mean`, "state", [B, Hkv, d], "f32"));
    g.nodes.push({
      op: "kv_append",
      id: `${p}.kv_append`,
      inputs: [kr, v, positions, ...cache],
      outputs: cache,
      attrs: { kvHeads: Hkv, headDim: d, sparq },
    });
    const attn = g.add({
      op: "attention",
      id: `${p}.attention`,
      inputs: [qr, positions, ...cache],
      attrs: {
        heads: H,
        kvHeads: Hkv,
        headDim: d,
        scale: 1 / Math.sqrt(d),
        method: options.attention,
      },
    });
    const o = linear(`${p}.o_proj`, attn, H * d, D, config.outBias);

    const mlp = (x: string): string => {
      const I = config.intermediateSize;
      const act = config.activation;
      if (config.gatedMlp) {
        const gate = linear(`${p}.gate_proj`, x, D, I, config.mlpBias);
        const up = linear(`${p}.up_proj`, x, D, I, config.mlpBias);
        const a = g.add({ op: act, id: `${p}.mlp_act`, inputs: [gate], attrs: {} });
        return linear(
          `${p}.down_proj`,
          binary("mul", `${p}.mlp_gated`, a, up),
          I,
          D,
          config.mlpBias,
        );
      }
      const up = linear(`${p}.up_proj`, x, D, I, config.mlpBias);
      const a = g.add({ op: act, id: `${p}.mlp_act`, inputs: [up], attrs: {} });
      return linear(`${p}.down_proj`, a, I, D, config.mlpBias);
    };

    if (config.parallelResidual) {
      const m = mlp(norm(`${p}.mlp_norm`, h, `${p}.mlp_norm`));
      h = binary("add", `${p}.residual`, binary("add", `${p}.attn_residual`, h, o), m);
    } else {
      const h1 = binary("add", `${p}.attn_residual`, h, o);
      const m = mlp(norm(`${p}.mlp_norm`, h1, `${p}.mlp_norm`));
      h = binary("add", `${p}.residual`, h1, m);
    }
  }

  const final = norm("final_norm", h, "final_norm");
  const head = config.tieWordEmbeddings
    ? embedTable
    : g.declare("lm_head.weight", "weight", [config.vocabSize, D], wd);
  const logits = g.add({ op: "logits", id: "logits", inputs: [final, head], attrs: {} });
  const next = g.add({ op: "argmax", id: "next_tokens", inputs: [logits], attrs: {} });

  return {
    version: 1,
    model: config.name,
    batch: B,
    maxSeq: S,
    tensors: g.tensors,
    nodes: g.nodes,
    outputs: [logits, next],
  };
}
