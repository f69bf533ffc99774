/**
 * An error in a graph, naming the node where it was found.
 *
 * @module
 */
import type { Node } from "../ir.ts";
import { UserError } from "../user_error.ts";

/**
 * A {@link UserError} about one node: `node 'layers.0.attention' (attention): ...`.
 *
 * @example
 * ```ts
 * import { NodeError } from "./graph_error.ts";
 * const node = { id: "n", op: "add", inputs: [], outputs: ["n"], attrs: {} } as const;
 * throw new NodeError(node, "needs 2 inputs, got 0");
 * ```
 */
export class NodeError extends UserError {
  constructor(node: Pick<Node, "id" | "op">, message: string) {
    super(`node '${node.id}' (${node.op}): ${message}`);
  }
}
