/**
 * Pass 1: structural validation. Checks the schema, that every node has the operands its op
 * needs, that tensors are defined before use and assigned once, that the KV cache is appended
 * before it is attended, and that attributes are in range. Errors name the node.
 *
 * @module
 */
import { Graph, type Node } from "../ir.ts";
import { UserError, zodErrorLine } from "../user_error.ts";
import { NodeError } from "./graph_error.ts";

function expectedInputs(node: Node): number[] {
  switch (node.op) {
    case "embedding":
    case "rms_norm":
    case "rope":
    case "add":
    case "mul":
    case "logits":
      return [2];
    case "layer_norm":
      return [3];
    case "matmul":
      return [2, 3];
    case "kv_append":
      return [node.attrs.sparq ? 7 : 5];
    case "attention":
      return [node.attrs.method.kind === "sparq" ? 6 : 4];
    case "silu":
    case "gelu":
    case "gelu_tanh":
    case "argmax":
      return [1];
  }
}

function checkAttrs(node: Node): void {
  if (node.op === "attention") {
    const { heads, kvHeads, headDim, method } = node.attrs;
    if (heads % kvHeads !== 0) {
      throw new NodeError(node, `${heads} heads cannot be shared evenly by ${kvHeads} KV heads`);
    }
    if (headDim % 4 !== 0) {
      throw new NodeError(node, `head dimension ${headDim} must be a multiple of 4`);
    }
    if (method.kind === "sparq") {
      if (method.r > headDim) {
        throw new NodeError(node, `r = ${method.r} is outside 1..${headDim} (the head dimension)`);
      }
      if (method.localWindow > method.k) {
        throw new NodeError(
          node,
          `local window ${method.localWindow} is larger than k = ${method.k}; it counts towards k`,
        );
      }
    }
  }
  if (node.op === "rope") {
    const { rotaryDims, headDim } = node.attrs;
    if (rotaryDims % 2 !== 0 || rotaryDims > headDim) {
      throw new NodeError(
        node,
        `rotary dimensions ${rotaryDims} must be even and at most the head dimension ${headDim}`,
      );
    }
  }
}

/**
 * Validates a graph (already typed or raw JSON) and returns it typed.
 *
 * @example
 * ```ts
 * import { validate } from "./validate.ts";
 * import { buildDecodeGraph } from "../build_graph.ts";
 * import { defaultOptions } from "../build_options.ts";
 * import { PRESETS } from "../presets.ts";
 * const model = PRESETS.get("tiny-llama")!;
 * validate(buildDecodeGraph(model, defaultOptions(model, "dense")));
 * ```
 */
export function validate(raw: unknown): Graph {
  const parsed = Graph.safeParse(raw);
  if (!parsed.success) throw new UserError(zodErrorLine("graph", parsed.error));
  const graph = parsed.data;

  const defined = new Set(Object.keys(graph.tensors));
  // State that some kv_append writes must be appended before it is attended; state no node
  // writes (a cache filled beforehand, as in an attention-only graph) may be read at once.
  const appendTargets = new Set(
    graph.nodes.filter((n) => n.op === "kv_append").flatMap((n) => n.outputs),
  );
  const appended = new Set<string>();
  const ids = new Set<string>();
  for (const node of graph.nodes) {
    if (ids.has(node.id)) throw new NodeError(node, "duplicate node id");
    ids.add(node.id);

    const arity = expectedInputs(node);
    if (!arity.includes(node.inputs.length)) {
      throw new NodeError(
        node,
        `needs ${arity.join(" or ")} inputs, got ${node.inputs.length}`,
      );
    }
    for (const input of node.inputs) {
      if (!defined.has(input)) {
        throw new NodeError(node, `input '${input}' is not declared or computed before this node`);
      }
    }
    checkAttrs(node);

    if (node.op === "kv_append") {
      const state = node.inputs.slice(3);
      if (node.outputs.join() !== state.join()) {
        throw new NodeError(node, "must list the state tensors it updates as its outputs");
      }
      for (const name of state) {
        if (graph.tensors[name]?.role !== "state") {
          throw new NodeError(node, `'${name}' is not a declared state tensor`);
        }
        if (appended.has(name)) throw new NodeError(node, `'${name}' is appended to twice`);
        appended.add(name);
      }
      continue;
    }
    if (node.outputs.length !== 1) {
      throw new NodeError(node, `has ${node.outputs.length} outputs; it must have exactly 1`);
    }
    const output = node.outputs[0];
    if (defined.has(output)) {
      throw new NodeError(node, `output '${output}' is already defined; tensors are assigned once`);
    }
    defined.add(output);
    if (node.op === "attention") {
      for (const name of node.inputs.slice(2)) {
        if (appendTargets.has(name) && !appended.has(name)) {
          throw new NodeError(
            node,
            `reads '${name}' before any kv_append writes this step's token into it`,
          );
        }
      }
    }
  }
  for (const output of graph.outputs) {
    if (!defined.has(output)) throw new UserError(`graph output '${output}' is never computed`);
  }
  return graph;
}
