/**
 * Writes a run's HTML report, atomically.
 *
 * @module
 */
import type { Run } from "../bench/results.ts";
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import { chartJsSource } from "./chart_js.ts";
import { reportHtml } from "./report_html.ts";

/**
 * Writes the report of `run` (optionally against `baseline`) to `path`.
 *
 * @example
 * ```ts
 * import { writeReport } from "./write_report.ts";
 * // await writeReport(await readRun("out/bench/x.jsonl"), "out/bench/x.html");
 * ```
 */
export async function writeReport(run: Run, path: string, baseline?: Run): Promise<void> {
  await writeFileAtomic(path, reportHtml(run, await chartJsSource(), baseline));
}
