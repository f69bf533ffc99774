/**
 * The answer of a task that does not exist yet: it says so plainly and exits 2, rather than
 * printing anything that could pass for a result.
 *
 * @module
 */
import { type Io, processIo, runCommand } from "./cli.ts";
import { UserError } from "./user_error.ts";

/**
 * Runs a task that is not built yet; `--help` still describes what it will do.
 *
 * @example
 * ```ts
 * import { notBuiltCommand } from "./not_built.ts";
 * const code = await notBuiltCommand("bench", "Benchmarks dense against SparQ attention.", []);
 * // code === 2
 * ```
 */
export function notBuiltCommand(
  task: string,
  purpose: string,
  args: string[],
  io: Io = processIo,
): Promise<number> {
  return runCommand(task, io, () => {
    if (args.includes("--help") || args.includes("-h")) {
      io.out(`Usage: deno task ${task}\n\n${purpose}\n\nNot built yet: see README.md, "Status".`);
      return Promise.resolve(0);
    }
    throw new UserError(
      `'deno task ${task}' is not built yet (see README.md, "Status"); nothing was run`,
    );
  });
}
