/**
 * The HTML performance report of a bench run: one self-contained file (chart.js inlined, the
 * data embedded). For attention sweeps: latency against context, speedup against the byte
 * ratio, achieved bandwidth against the measured ceiling, SparQ's stage breakdown, error against
 * compression. For decode runs (`--decode`): tokens per second against context, speedup of the
 * whole step, where a step's time goes, and generation with and without per-token read-backs.
 * Then a sortable table of every point, and the run's metadata. Every string from a config or a
 * file is escaped.
 *
 * @module
 */
import type { DecodeLine, PointLine, Run } from "../bench/results.ts";

/**
 * Escapes text for HTML.
 *
 * @example
 * ```ts
 * import { escapeHtml } from "./report_html.ts";
 * escapeHtml('<b a="1">'); // "&lt;b a=&quot;1&quot;&gt;"
 * ```
 */
export function escapeHtml(text: unknown): string {
  return String(text).replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}

/**
 * The report's title: it says plainly when the figures come from a CPU.
 *
 * @example
 * ```ts
 * import { reportTitle } from "./report_html.ts";
 * // reportTitle(run.header)
 * ```
 */
export function reportTitle(header: Run["header"]): string {
  const device = header.adapter.description || header.adapter.vendor || "unknown adapter";
  const what = header.options.decode ? "decode steps" : "attention";
  return header.adapter.isFallbackAdapter
    ? `sparqc: dense vs SparQ ${what} — CPU figures from a software adapter (${device}), not a GPU`
    : `sparqc: dense vs SparQ ${what} on ${device}`;
}

const us = (ns: number) => (ns / 1000).toFixed(1);

/** A table cell, sorted by `sortValue` where given (else by its text). */
const cell = (value: unknown, sortValue?: number) =>
  `<td${sortValue === undefined ? "" : ` data-v="${sortValue}"`}>${escapeHtml(value ?? "")}</td>`;

/** The cells that say which point a row is: model, batch, context, method. */
const pointCells = (l: Run["lines"][number]) =>
  cell(l.model) + cell(l.batch, l.batch) + cell(l.seq, l.seq) +
  cell(l.method === "dense" ? "dense" : `SparQ r=${l.r} k=${l.k}`);

function tableRows(run: Run, baseline?: Map<string, PointLine>): string {
  return run.lines.map((l) => {
    const p = l.type === "point" ? l : undefined;
    const base = p && baseline?.get(l.key);
    const change = base ? (100 * (p.time.median - base.time.median)) / base.time.median : undefined;
    return `<tr class="${l.type}">` +
      pointCells(l) +
      cell(p ? us(p.time.median) : "skipped", p?.time.median ?? Infinity) +
      cell(p ? `${us(p.time.p10)}–${us(p.time.p90)}` : "", p?.time.p10) +
      cell(p?.time.n, p?.time.n) +
      cell(p ? p.achievedGBps.toFixed(0) : "", p?.achievedGBps) +
      cell(p ? p.rooflinePercent.toFixed(1) : "", p?.rooflinePercent) +
      cell(p ? p.denseEquivalentGBps.toFixed(0) : "", p?.denseEquivalentGBps) +
      cell(p ? p.speedup.toFixed(2) : "", p?.speedup) +
      cell(p ? p.theoreticalSpeedup.toFixed(2) : "", p?.theoreticalSpeedup) +
      cell(p?.errorVsDense.realistic?.toExponential(2), p?.errorVsDense.realistic) +
      cell(p?.errorVsDense.gaussian?.toExponential(2), p?.errorVsDense.gaussian) +
      cell(p?.shards, p?.shards) +
      (baseline
        ? cell(change === undefined ? "" : `${change >= 0 ? "+" : ""}${change.toFixed(1)}%`, change)
        : "") +
      cell(l.type === "skipped" ? l.reason : "") +
      "</tr>";
  }).join("\n");
}

function decodeRows(run: Run): string {
  const ms = (ns: number) => (ns / 1e6).toFixed(3);
  const gb = (bytes: number) => (bytes / 1e9).toFixed(2);
  const generationOf = (d: DecodeLine | undefined, every: "one" | "many") => {
    const g = every === "one" ? d?.generation[0] : d?.generation.at(-1);
    return g && (every === "one" || g.readEvery > 1) ? g : undefined;
  };
  return run.lines.filter((l) => l.type === "decode" || l.key.startsWith("decode ")).map((l) => {
    const d = l.type === "decode" ? l : undefined;
    const one = generationOf(d, "one");
    const many = generationOf(d, "many");
    return `<tr class="${l.type}">` +
      pointCells(l) +
      cell(d ? ms(d.time.median) : "skipped", d?.time.median ?? Infinity) +
      cell(d ? `${ms(d.time.p10)}–${ms(d.time.p90)}` : "", d?.time.p10) +
      cell(d?.tokensPerSecond.toFixed(1), d?.tokensPerSecond) +
      cell(d ? gb(d.bytes.weights) : "", d?.bytes.weights) +
      cell(d ? gb(d.bytes.kv) : "", d?.bytes.kv) +
      cell(d?.achievedGBps.toFixed(0), d?.achievedGBps) +
      cell(d?.rooflinePercent.toFixed(1), d?.rooflinePercent) +
      cell(d ? (100 * d.attentionShare).toFixed(1) : "", d?.attentionShare) +
      cell(d?.speedup.toFixed(2), d?.speedup) +
      cell(d?.theoreticalSpeedup.toFixed(2), d?.theoreticalSpeedup) +
      cell(one?.tokensPerSecond.toFixed(1), one?.tokensPerSecond) +
      cell(
        many ? `${many.tokensPerSecond.toFixed(1)} (every ${many.readEvery})` : "",
        many?.tokensPerSecond,
      ) +
      cell(l.type === "skipped" ? l.reason : "") +
      "</tr>";
  }).join("\n");
}

const DECODE_HEADERS = [
  "model",
  "B",
  "S",
  "method",
  "GPU ms / step",
  "p10–p90 ms",
  "tokens/s (GPU)",
  "weights GB / step",
  "KV GB / step",
  "achieved GB/s",
  "% of ceiling",
  "attention %",
  "speedup",
  "byte ratio",
  "generation tokens/s, read every token",
  "generation tokens/s, read every N",
  "note",
];

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; color: #1d2330; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #dde; padding-bottom: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #e3e6ee; border-radius: 6px; padding: 8px; background: #fff; }
figcaption { font-size: 12px; color: #556; text-align: center; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { border-bottom: 1px solid #eceef4; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f4f6fa; position: sticky; top: 0; }
td:first-child, th:first-child, td:nth-child(4), td:last-child { text-align: left; }
tr.skipped { color: #99a; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 13px; }
dt { color: #556; } dd { margin: 0; word-break: break-all; }
.note { color: #556; font-size: 13px; }
#self-check { display: none; }
`;

const CLIENT = `
(function () {
  const data = JSON.parse(document.getElementById("run-data").textContent);
  Chart.defaults.animation = false;
  Chart.defaults.responsive = false;
  Chart.defaults.font.size = 11;
  const points = data.lines.filter((l) => l.type === "point");
  const models = [...new Set(points.map((l) => l.model))];
  const label = (p) => p.method === "dense" ? "dense" : "SparQ r=" + p.r + " k=" + p.k;
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const colorOf = new Map();
  const color = (key) => { if (!colorOf.has(key)) colorOf.set(key, colors[colorOf.size % colors.length]); return colorOf.get(key); };
  const bySeq = (a, b) => a.seq - b.seq;
  function figure(section, caption, config, width) {
    const fig = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = width || 300; canvas.height = 240;
    fig.appendChild(canvas);
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(cap);
    document.getElementById(section).appendChild(fig);
    new Chart(canvas, config);
  }
  const logX = { type: "logarithmic", title: { display: true, text: "context S (positions)" } };
  const line = (name, data, extra) => Object.assign({ label: name, data, borderColor: color(name), backgroundColor: color(name), pointRadius: 2, borderWidth: 1.5, showLine: true }, extra || {});
  for (const model of models) {
    const mine = points.filter((p) => p.model === model);
    const batches = [...new Set(mine.map((p) => p.batch))].sort((a, b) => a - b);
    const methods = [...new Set(mine.map(label))];
    for (const b of batches) {
      const at = mine.filter((p) => p.batch === b);
      figure("latency", model + ", batch " + b, {
        type: "scatter",
        data: { datasets: methods.map((m) => line(m, at.filter((p) => label(p) === m).sort(bySeq).map((p) => ({ x: p.seq, y: p.time.median / 1000 })))) },
        options: { scales: { x: logX, y: { type: "logarithmic", title: { display: true, text: "GPU time per call (µs)" } } } },
      });
      const roof = data.header.roofline.gbps;
      const seqs = at.map((p) => p.seq);
      figure("bandwidth", model + ", batch " + b, {
        type: "scatter",
        data: { datasets: methods.map((m) => line(m, at.filter((p) => label(p) === m).sort(bySeq).map((p) => ({ x: p.seq, y: p.achievedGBps }))))
          .concat([line("read ceiling", seqs.length ? [{ x: Math.min(...seqs), y: roof }, { x: Math.max(...seqs), y: roof }] : [], { borderDash: [6, 4], pointRadius: 0, borderColor: "#777", backgroundColor: "#777" })]) },
        options: { scales: { x: logX, y: { min: 0, title: { display: true, text: "achieved GB/s" } } } },
      });
    }
    const sparq = mine.filter((p) => p.method === "sparq");
    const variants = [...new Set(sparq.map(label))];
    const smallest = batches[0];
    figure("speedup", model, {
      type: "scatter",
      data: { datasets: variants.flatMap((v) => batches.map((b) => line(v + ", B=" + b, sparq.filter((p) => label(p) === v && p.batch === b).sort(bySeq).map((p) => ({ x: p.seq, y: p.speedup })))))
        .concat(variants.map((v) => line(v + ": byte ratio", sparq.filter((p) => label(p) === v && p.batch === smallest).sort(bySeq).map((p) => ({ x: p.seq, y: p.theoreticalSpeedup })), { borderDash: [6, 4], pointRadius: 0 }))) },
      options: { scales: { x: logX, y: { min: 0, title: { display: true, text: "speedup over dense" } } }, plugins: { legend: { labels: { boxWidth: 10 } } } },
    }, 620);
    const counts = variants.map((v) => sparq.filter((p) => label(p) === v).length);
    const main = variants[counts.indexOf(Math.max(...counts, 0))];
    const staged = sparq.filter((p) => label(p) === main).sort((a, b) => a.batch - b.batch || a.seq - b.seq);
    const stages = [...new Set(staged.flatMap((p) => Object.keys(p.stages)))];
    figure("stages", model + ", " + (main || "no SparQ points"), {
      type: "bar",
      data: { labels: staged.map((p) => "B" + p.batch + " S" + p.seq), datasets: stages.map((s) => ({ label: s, data: staged.map((p) => p.stages[s] ? p.stages[s].median / 1000 : 0), backgroundColor: color(s) })) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "GPU time (µs)" } } } },
    }, 620);
  }
  const steps = data.lines.filter((l) => l.type === "decode");
  for (const model of [...new Set(steps.map((l) => l.model))]) {
    const mine = steps.filter((p) => p.model === model);
    const batches = [...new Set(mine.map((p) => p.batch))].sort((a, b) => a - b);
    const methods = [...new Set(mine.map(label))];
    for (const b of batches) {
      const at = mine.filter((p) => p.batch === b);
      figure("decode-tokens", model + ", batch " + b, {
        type: "scatter",
        data: { datasets: methods.map((m) => line(m, at.filter((p) => label(p) === m).sort(bySeq).map((p) => ({ x: p.seq, y: p.tokensPerSecond })))) },
        options: { scales: { x: logX, y: { min: 0, title: { display: true, text: "tokens/s (GPU time per step)" } } } },
      });
      const sparqSteps = at.filter((p) => p.method === "sparq");
      const variants = [...new Set(sparqSteps.map(label))];
      figure("decode-speedup", model + ", batch " + b, {
        type: "scatter",
        data: { datasets: variants.map((v) => line(v, sparqSteps.filter((p) => label(p) === v).sort(bySeq).map((p) => ({ x: p.seq, y: p.speedup }))))
          .concat(variants.map((v) => line(v + ": byte ratio", sparqSteps.filter((p) => label(p) === v).sort(bySeq).map((p) => ({ x: p.seq, y: p.theoreticalSpeedup })), { borderDash: [6, 4], pointRadius: 0 }))) },
        options: { scales: { x: logX, y: { min: 0, title: { display: true, text: "step speedup over dense" } } } },
      });
    }
    const ordered = [...mine].sort((a, b) => a.batch - b.batch || a.seq - b.seq || label(a).localeCompare(label(b)));
    const names = (p) => (p.method === "dense" ? "dense" : "SparQ") + " B" + p.batch + " S" + p.seq;
    const kinds = [...new Set(ordered.flatMap((p) => Object.keys(p.stages)))];
    figure("decode-stages", model, {
      type: "bar",
      data: { labels: ordered.map(names), datasets: kinds.map((s) => ({ label: s, data: ordered.map((p) => p.stages[s] ? p.stages[s].median / 1e6 : 0), backgroundColor: color(s) })) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "GPU ms per step" } } } },
    }, 620);
    const timed = ordered.filter((p) => p.generation.length);
    const everies = ["every token", "every N tokens"];
    figure("decode-generation", model, {
      type: "bar",
      data: { labels: timed.map(names), datasets: everies.map((e, i) => ({ label: "read back " + e, data: timed.map((p) => (i === 0 ? p.generation[0] : p.generation[p.generation.length - 1]).tokensPerSecond), backgroundColor: color(e) })) },
      options: { scales: { y: { min: 0, title: { display: true, text: "tokens/s, wall clock" } } } },
    }, 620);
  }

  const modes = [...new Set(points.flatMap((p) => Object.keys(p.errorVsDense)))];
  if (points.length) figure("error", "SparQ's output against dense attention", {
    type: "scatter",
    data: { datasets: modes.map((m) => line(m + " data", points.filter((p) => p.method === "sparq").map((p) => ({ x: p.theoreticalSpeedup, y: Math.max(p.errorVsDense[m], 1e-9) })), { showLine: false, pointRadius: 3 })) },
    options: { scales: { x: { title: { display: true, text: "compression (dense bytes / SparQ bytes)" } }, y: { type: "logarithmic", title: { display: true, text: "relative L2 error of y" } } } },
  }, 620);

  // Sortable tables: click a header; numbers sort by their data-v value.
  const tables = [...document.querySelectorAll("table")];
  for (const table of tables) table.querySelectorAll("th").forEach((th, column) => {
    th.addEventListener("click", () => {
      const body = table.tBodies[0];
      const dir = th.dataset.dir === "asc" ? -1 : 1;
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      const key = (row) => { const c = row.cells[column]; return c.dataset.v !== undefined ? Number(c.dataset.v) : c.textContent; };
      [...body.rows].sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * dir; }).forEach((r) => body.appendChild(r));
    });
  });

  const canvases = [...document.querySelectorAll("canvas")];
  const drawn = canvases.filter((c) => {
    const pixels = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
    return false;
  }).length;
  document.getElementById("self-check").textContent = JSON.stringify({
    canvases: canvases.length, drawn, rows: tables.reduce((n, t) => n + t.tBodies[0].rows.length, 0), errors: window.__sparqcErrors,
  });
})();
`;

/**
 * Builds the report's HTML.
 *
 * @example
 * ```ts
 * import { reportHtml } from "./report_html.ts";
 * // const html = reportHtml(run, await chartJsSource());
 * ```
 */
export function reportHtml(run: Run, chartJs: string, baseline?: Run): string {
  const h = run.header;
  const title = reportTitle(h);
  const measured = run.lines.filter((l) => l.type !== "skipped").length;
  const decode = run.header.options.decode !== undefined;
  const attention = !decode;
  const skipped = run.lines.length - measured;
  const baseMap = baseline
    ? new Map(
      baseline.lines.filter((l): l is PointLine => l.type === "point").map((l) => [l.key, l]),
    )
    : undefined;
  const changes = baseMap
    ? run.lines.filter((l): l is PointLine => l.type === "point" && baseMap.has(l.key))
      .map((l) =>
        (100 * (l.time.median - baseMap.get(l.key)!.time.median)) / baseMap.get(l.key)!.time.median
      )
      .sort((a, b) => a - b)
    : [];
  const meta: [string, unknown][] = [
    ["run", h.runId],
    ["date", h.createdAt],
    [
      "adapter",
      `${h.adapter.description} (vendor ${h.adapter.vendor}, architecture ${h.adapter.architecture}, device ${h.adapter.device})`,
    ],
    ["features", h.adapter.features.join(", ")],
    [
      "read ceiling",
      `${
        h.roofline.gbps.toFixed(1)
      } GB/s (${h.roofline.bytes} bytes read by the roofline kernel, median of ${h.roofline.time.n})`,
    ],
    ["timestamp ticks", `${h.nsPerTick} ns per tick`],
    ["Deno", h.deno],
    ["sparqc commit", h.commit],
    ["models", h.options.models.join(", ")],
    ["contexts", h.options.seqs.join(", ")],
    ["batches", h.options.batches.join(", ")],
    ["SparQ", `r ∈ {${h.options.rs.join(", ")}}, k ∈ {${h.options.ks.join(", ")}}`],
    ["KV", h.options.kvDtype],
    ...(h.options.decode
      ? [
        [
          "weights",
          `${h.options.decode.weights ?? "seeded random"} (${h.options.decode.weightDtype})`,
        ],
        ["generation", `${h.options.decode.generateSteps} tokens per point`],
      ] as [string, unknown][]
      : [["timing data", `${h.options.data} (errors on both data modes)`] as [string, unknown]]),
    ["memory budget", `${(h.options.memoryBudget / 2 ** 30).toFixed(1)} GiB`],
    ...(h.options.l2Bytes !== undefined
      ? [[
        "L2 prefetch",
        h.options.l2Bytes > 0
          ? `SparQ reads the next weights into the L2 (${
            (h.options.l2Bytes / 2 ** 20).toFixed(0)
          } MiB)`
          : "none (L2 size unknown)",
      ] as [string, unknown]]
      : []),
    ...(baseline
      ? [
        ["baseline", `${baseline.header.runId} (${baseline.header.adapter.description})`] as [
          string,
          unknown,
        ],
      ]
      : []),
  ];
  const headers = [
    "model",
    "B",
    "S",
    "method",
    "median µs",
    "p10–p90 µs",
    "n",
    "achieved GB/s",
    "% of ceiling",
    "dense-equiv. GB/s",
    "speedup",
    "byte ratio",
    "error (realistic)",
    "error (gaussian)",
    "shards",
    ...(baseline ? ["vs baseline"] : []),
    "note",
  ];
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
<script>
window.__sparqcErrors = [];
window.addEventListener("error", (e) => window.__sparqcErrors.push(String(e.message)));
(function () { const original = console.error; console.error = function () { window.__sparqcErrors.push([...arguments].map(String).join(" ")); original.apply(console, arguments); }; })();
</script>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="note">${measured} points measured, ${skipped} skipped. ${
    decode
      ? `Times are GPU time per decode step from timestamp queries (median; p10–p90 in the table):
the whole step in one compute pass, and again split by kind of kernel for the breakdown. Bytes per step
are every weight once (only the batch's embedding rows) plus the KV traffic of the SparQ paper's transfer
model; achieved bandwidth is those bytes over the median time, against the read ceiling that this run
measured with a plain read kernel. Weights: ${
        escapeHtml(run.header.options.decode!.weights ?? "seeded random")
      } (${run.header.options.decode!.weightDtype}); the KV cache holds generated data.</p>`
      : `Times are GPU time per attention call from
timestamp queries (median; p10–p90 and n in the table), with the inputs rotated so that no repetition
finds them in the L2. Bytes follow the SparQ paper's transfer model; achieved bandwidth is those bytes over
the median time, against the read ceiling that this run measured with a plain read kernel. The byte
ratio is the speedup SparQ could reach if time followed bytes.${
        changes.length
          ? ` Against the baseline: median change ${
            changes[Math.floor(changes.length / 2)].toFixed(1)
          }% over ${changes.length} matched points.`
          : ""
      }</p>`
  }
${
    attention
      ? `<h2>GPU time against context</h2><div class="grid" id="latency"></div>
<h2>Speedup against context, with the byte ratio</h2><div class="grid" id="speedup"></div>
<h2>Achieved bandwidth against the read ceiling</h2><div class="grid" id="bandwidth"></div>
<h2>SparQ's stages</h2><div class="grid" id="stages"></div>
<h2>Error against compression</h2><div class="grid" id="error"></div>
<h2>Every point</h2>
<table id="points"><thead><tr>${
        headers.map((x) => `<th>${escapeHtml(x)}</th>`).join("")
      }</tr></thead>
<tbody>
${tableRows(run, baseMap)}
</tbody></table>`
      : ""
  }${
    decode
      ? `<h2>Decode step: tokens per second against context</h2><div class="grid" id="decode-tokens"></div>
<h2>Decode step: SparQ's speedup of the whole step, with the byte ratio</h2><div class="grid" id="decode-speedup"></div>
<h2>Decode step: where the GPU time goes</h2><div class="grid" id="decode-stages"></div>
<h2>Generation: tokens read back every token against every N tokens</h2>
<p class="note">Wall-clock tokens per second of greedy generation. Reading the chosen tokens back costs
a map round trip (milliseconds under Deno); with the token feed on the GPU it is paid once per N tokens.</p>
<div class="grid" id="decode-generation"></div>
<h2>Every decode point</h2>
<table id="decode-points"><thead><tr>${
        DECODE_HEADERS.map((x) => `<th>${escapeHtml(x)}</th>`).join("")
      }</tr></thead>
<tbody>
${decodeRows(run)}
</tbody></table>`
      : ""
  }
<h2>Run</h2>
<dl>${meta.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("")}</dl>
<pre id="self-check"></pre>
<script>${chartJs.replaceAll("</script", "<\\/script")}</script>
<script type="application/json" id="run-data">${
    scriptJson({ header: run.header, lines: run.lines })
  }</script>
<script>${CLIENT}</script>
</body>
</html>
`;
}
