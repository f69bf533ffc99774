/**
 * `deno task report RUN.jsonl [--baseline OTHER.jsonl] [--out FILE] [--csv]`: the HTML report
 * of a bench run (the bench also writes it at the end of every run).
 *
 * @module
 */
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import { type Io, parseOptions, processIo, runCommand } from "../compiler/cli.ts";
import { UserError } from "../compiler/user_error.ts";
import { readRun, toCsv } from "../bench/results.ts";
import { writeReport } from "./write_report.ts";

const HELP = `Usage: deno task report RUN.jsonl [--baseline OTHER.jsonl] [--out FILE] [--csv]

Writes the self-contained HTML report of a bench run (charts by chart.js, inlined: it opens
with no network). With --baseline, the table shows each point's change in percent.

Options:
  --baseline FILE   another run to compare with, point by point
  --out FILE        the HTML file (default: RUN with .html)
  --csv             also write RUN with .csv
  -h, --help        this text

Example:
  deno task report out/bench/20261124-120000-nvidia-h100.jsonl --baseline docs/results/h100/bench.jsonl`;

/**
 * Runs the report command with `args`; returns the exit code.
 *
 * @example
 * ```ts
 * import { reportCommand } from "./main.ts";
 * // await reportCommand(["out/bench/run.jsonl"]);
 * ```
 */
export function reportCommand(args: string[], io: Io = processIo): Promise<number> {
  return runCommand("report", io, async () => {
    const { values, positionals } = parseOptions("report", args, {
      baseline: { type: "string" },
      out: { type: "string" },
      csv: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      io.out(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError("give one run file: deno task report RUN.jsonl");
    }
    const path = positionals[0];
    const run = await readRun(path);
    if (run.tornTail) {
      io.err(`sparqc report: note: ${path} ends in a cut-off line, which is left out`);
    }
    const baseline = values.baseline ? await readRun(values.baseline) : undefined;
    const html = values.out ?? path.replace(/(\.jsonl)?$/, ".html");
    await writeReport(run, html, baseline);
    io.out(`wrote ${html}`);
    if (values.csv) {
      const csv = path.replace(/(\.jsonl)?$/, ".csv");
      await writeFileAtomic(csv, toCsv(run.lines));
      io.out(`wrote ${csv}`);
    }
    return 0;
  });
}

if (import.meta.main) Deno.exit(await reportCommand(Deno.args));
