/**
 * `deno task report RUN.jsonl`: the self-contained HTML performance report. Not built yet.
 *
 * @module
 */
import { notBuiltCommand } from "../compiler/not_built.ts";

if (import.meta.main) {
  Deno.exit(
    await notBuiltCommand(
      "report",
      "Writes a self-contained HTML performance report (charts by chart.js, opens offline)\n" +
        "from a bench run's JSONL.",
      Deno.args,
    ),
  );
}
