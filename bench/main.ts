/**
 * `deno task bench`: dense against SparQ attention across sequence lengths and batch sizes.
 * Not built yet; it says so rather than print figures it did not measure.
 *
 * @module
 */
import { notBuiltCommand } from "../compiler/not_built.ts";

if (import.meta.main) {
  Deno.exit(
    await notBuiltCommand(
      "bench",
      "Runs dense against SparQ attention across sequence lengths and batch sizes on the GPU,\n" +
        "measuring latency and bandwidth, and writes a JSONL of results and an HTML report.",
      Deno.args,
    ),
  );
}
