/**
 * Command-line plumbing shared by every task: strict argument parsing on `node:util`, number
 * options that reject "1.5", "-3" and "7abc", and the wrapper that turns a {@link UserError}
 * into one line on stderr and exit code 2.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UserError } from "./user_error.ts";

/** Where a command writes; tests pass their own to capture the output. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** The process's stdout and stderr. */
export const processIo: Io = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

/**
 * Parses `args` strictly: an unknown option or a missing value becomes a {@link UserError}.
 *
 * @example
 * ```ts
 * import { parseOptions } from "./cli.ts";
 * const { values, positionals } = parseOptions("compile", ["llama2-7b", "--batch", "4"], {
 *   batch: { type: "string" },
 * });
 * ```
 */
export function parseOptions<T extends NonNullable<ParseArgsConfig["options"]>>(
  task: string,
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new UserError(`${message} (see 'deno task ${task} --help')`);
  }
}

/**
 * Reads an integer option: undefined stays undefined, anything but a plain decimal integer at or
 * above `min` is a {@link UserError} naming the option.
 *
 * @example
 * ```ts
 * import { integerOption } from "./cli.ts";
 * integerOption("--batch", "4", 1); // 4
 * ```
 */
export function integerOption(
  name: string,
  raw: string | undefined,
  min: number,
): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^[+]?\d+$/.test(raw.trim())) {
    throw new UserError(`${name} must be a whole number, got '${raw}'`);
  }
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) throw new UserError(`${name} is too large: ${raw}`);
  if (value < min) throw new UserError(`${name} must be at least ${min}, got ${value}`);
  return value;
}

/**
 * Reads a positive decimal option (e.g. a size in GiB).
 *
 * @example
 * ```ts
 * import { positiveNumberOption } from "./cli.ts";
 * positiveNumberOption("--memory-budget", "79.5"); // 79.5
 * ```
 */
export function positiveNumberOption(name: string, raw: string | undefined): number | undefined {
  return decimalOption(name, raw, (value) => value > 0, "a positive number");
}

/** A plain decimal (no sign but +, no hex, no words) meeting `valid`, or one line naming `what`. */
function decimalOption(
  name: string,
  raw: string | undefined,
  valid: (value: number) => boolean,
  what: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(raw.trim()) || !valid(value)) {
    throw new UserError(`${name} must be ${what}, got '${raw}'`);
  }
  return value;
}

/**
 * Reads an option that is a number ≥ 0 (a size that may be none).
 *
 * @example
 * ```ts
 * import { nonNegativeNumberOption } from "./cli.ts";
 * nonNegativeNumberOption("--l2", "0"); // 0
 * ```
 */
export function nonNegativeNumberOption(name: string, raw: string | undefined): number | undefined {
  return decimalOption(name, raw, (value) => value >= 0, "a number ≥ 0");
}

/**
 * Reads an option restricted to a list of words.
 *
 * @example
 * ```ts
 * import { choiceOption } from "./cli.ts";
 * choiceOption("--kv-dtype", "f16", ["f16", "f32"] as const); // "f16"
 * ```
 */
export function choiceOption<T extends string>(
  name: string,
  raw: string | undefined,
  choices: readonly T[],
): T | undefined {
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) {
    throw new UserError(`${name} must be one of ${choices.join(", ")}; got '${raw}'`);
  }
  return raw as T;
}

/**
 * Runs a command: its return value is the exit code; a {@link UserError} prints
 * `sparqc <task>: error: <message>` as one line and gives 2; anything else is a bug and
 * propagates with its stack.
 *
 * @example
 * ```ts
 * import { runCommand, processIo } from "./cli.ts";
 * const code = await runCommand("compile", processIo, () => Promise.resolve(0));
 * ```
 */
export async function runCommand(
  task: string,
  io: Io,
  command: () => Promise<number>,
): Promise<number> {
  try {
    return await command();
  } catch (error) {
    if (error instanceof UserError) {
      io.err(`sparqc ${task}: error: ${error.message.replaceAll("\n", " ")}`);
      return 2;
    }
    throw error;
  }
}

/**
 * An {@link Io} that keeps what is written, for tests.
 *
 * @example
 * ```ts
 * import { memoryIo } from "./cli.ts";
 * const io = memoryIo();
 * io.err("x");
 * io.stderr; // ["x"]
 * ```
 */
export function memoryIo(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (l) => void stdout.push(l), err: (l) => void stderr.push(l) };
}
