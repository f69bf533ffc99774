/**
 * chart.js's UMD build, read from the npm package so that reports can inline it and open with
 * no network. The package's `exports` map hides the UMD file, so we resolve the package's entry
 * and read the file beside it.
 *
 * @module
 */
// A static import makes Deno fetch and cache the package with the rest of the module graph.
import { Chart } from "chart.js";
import { fileURLToPath } from "node:url";

void Chart;

/**
 * The minified UMD source of chart.js (it defines `window.Chart`).
 *
 * @example
 * ```ts
 * import { chartJsSource } from "./chart_js.ts";
 * (await chartJsSource()).length > 100_000; // true
 * ```
 */
export async function chartJsSource(): Promise<string> {
  const entry = import.meta.resolve("chart.js");
  const umd = new URL("./chart.umd.min.js", entry);
  return await Deno.readTextFile(umd.protocol === "file:" ? fileURLToPath(umd) : umd);
}
