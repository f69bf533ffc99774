/**
 * The one error type that means "the input is wrong": the CLI prints its message as a single
 * line and exits with code 2. Any other exception is a bug in sparqc and keeps its stack trace.
 *
 * @example
 * ```ts
 * import { UserError } from "./user_error.ts";
 * throw new UserError("--batch must be a positive integer, got '0'");
 * ```
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserError";
  }
}

/**
 * Turns the first issue of a zod error into one readable line, prefixed by where the data came
 * from, e.g. `config.json: num_attention_heads: expected number, received string`.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { zodErrorLine } from "./user_error.ts";
 * const r = z.object({ n: z.number() }).safeParse({ n: "x" });
 * if (!r.success) console.log(zodErrorLine("input", r.error));
 * ```
 */
export function zodErrorLine(
  source: string,
  error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] },
): string {
  const issue = error.issues[0];
  if (!issue) return `${source}: invalid`;
  const path = issue.path.map(String).join(".");
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : "";
  return `${source}: ${path ? `${path}: ` : ""}${issue.message}${more}`;
}
