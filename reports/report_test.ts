import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import type { DecodeLine, PointLine, Run } from "../bench/results.ts";
import { memoryIo } from "../compiler/cli.ts";
import { reportCommand } from "./main.ts";
import { escapeHtml, reportHtml, reportTitle } from "./report_html.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const stats = (median: number) => ({ median, p10: median * 0.9, p90: median * 1.1, n: 20 });

/** A run of made-up points, with hostile strings where a config or file could put them. */
function fakeRun(model: string, isFallbackAdapter: boolean): Run {
  const lines: Run["lines"] = [];
  for (const batch of [1, 4]) {
    for (const seq of [4096, 16384, 65536]) {
      const base = {
        model,
        heads: 32,
        kvHeads: 8,
        headDim: 128,
        batch,
        seq,
        kvDtype: "f16" as const,
      };
      const denseNs = seq * batch * 10;
      const point = (method: "dense" | "sparq", r?: number): PointLine => ({
        type: "point",
        key: `${model} B${batch} S${seq} ${method}${r ? ` r${r}` : ""}`,
        ...base,
        method,
        ...(r ? { r, k: 128 } : {}),
        time: stats(method === "dense" ? denseNs : denseNs / 5),
        stages: r
          ? {
            sparq_scores: stats(denseNs / 10),
            sparq_topk: stats(denseNs / 20),
            sparq_attend: stats(denseNs / 20),
          }
          : {},
        bytes: 1e9,
        achievedGBps: 2900,
        denseEquivalentGBps: r ? 14000 : 2900,
        rooflinePercent: 93,
        speedup: r ? 5 : 1,
        theoreticalSpeedup: r ? 6.4 : 1,
        errorVsDense: r ? { realistic: 0.01, gaussian: 0.5 } : {},
        shards: 1,
        scrubL2Bytes: 256 << 20,
      });
      lines.push(point("dense"), point("sparq", 32));
    }
  }
  lines.push({
    type: "skipped",
    key: `${model} B64 S131072 dense`,
    model,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    batch: 64,
    seq: 131072,
    method: "dense",
    kvDtype: "f16",
    reason: "needs <b>137</b> GiB",
  });
  return {
    header: {
      type: "header",
      format: "sparqc-bench",
      version: 1,
      runId: "test-run",
      createdAt: "2026-11-24T00:00:00Z",
      adapter: {
        vendor: "nvidia",
        architecture: "hopper",
        device: "0",
        description: isFallbackAdapter
          ? "llvmpipe"
          : 'NVIDIA H100 </script><script>alert("x")</script>',
        isFallbackAdapter,
        features: ["shader-f16"],
      },
      deno: "2.9.6",
      commit: "abc1234",
      options: {
        models: [model],
        seqs: [4096, 16384, 65536],
        batches: [1, 4],
        methods: ["dense", "sparq"],
        rs: [32],
        ks: [128],
        kvDtype: "f16",
        data: "realistic",
        memoryBudget: 2 ** 36,
      },
      nsPerTick: 1,
      roofline: { bytes: 2 ** 30, time: stats(340000), gbps: 3150 },
    },
    lines,
    tornTail: false,
  };
}

const HOSTILE = '<img src=x onerror="alert(1)">';

Deno.test("every string from a config or a file is escaped", () => {
  const html = reportHtml(fakeRun(HOSTILE, false), "/* chart.js */");
  ok(!html.includes(HOSTILE), "the raw tag must not appear");
  ok(html.includes(escapeHtml(HOSTILE)));
  ok(!html.includes("<b>137</b>"));
  ok(
    !html.includes('</script><script>alert("x")'),
    "a description cannot close the script element",
  );
  const json = html.slice(
    html.indexOf('id="run-data">'),
    html.indexOf("</script>", html.indexOf('id="run-data">')),
  );
  ok(!json.slice(14).includes("<"), "embedded JSON has no raw '<'");
});

Deno.test("the title says when figures come from a CPU", () => {
  ok(reportTitle(fakeRun("m", true).header).includes("CPU figures from a software adapter"));
  ok(!reportTitle(fakeRun("m", false).header).includes("CPU"));
});

/** Runs headless Chromium on a file; returns the page's self-check, and saves a screenshot. */
async function inChromium(html: string, screenshot: string) {
  const flags = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    `--user-data-dir=${await Deno.makeTempDir({ dir })}`,
  ];
  const url = `file://${html}`;
  const dom = await new Deno.Command("chromium", {
    args: [...flags, "--virtual-time-budget=10000", "--dump-dom", url],
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(dom.stdout);
  const check = /<pre id="self-check">([^<]*)<\/pre>/.exec(text)?.[1];
  await new Deno.Command("chromium", {
    args: [
      ...flags,
      "--hide-scrollbars",
      "--window-size=1300,2400",
      `--screenshot=${screenshot}`,
      url,
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  return check ? JSON.parse(check.replaceAll("&quot;", '"')) : undefined;
}

/** Whether Debian's chromium is installed (spawning a missing binary throws at once). */
async function hasChromium(): Promise<boolean> {
  try {
    const probe = new Deno.Command("chromium", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    });
    return (await probe.output()).success;
  } catch {
    return false;
  }
}
const chromium = await hasChromium();

Deno.test({
  name: "the report opens in headless Chromium: no console errors, every chart drawn, every row",
  // CI installs chromium; elsewhere the test runs where it is installed.
  ignore: !chromium && Deno.env.get("CI") !== "true",
  fn: async () => {
    const runPath = join(dir, "run.jsonl");
    const run = fakeRun(HOSTILE, false);
    await Deno.writeTextFile(
      runPath,
      [run.header, ...run.lines].map((l) => JSON.stringify(l)).join("\n") + "\n",
    );
    const io = memoryIo();
    deepStrictEqual(
      await reportCommand([runPath, "--baseline", runPath], io),
      0,
      io.stderr.join("\n"),
    );
    const html = join(dir, "run.html");
    await Deno.mkdir("out", { recursive: true });
    const screenshot = join(Deno.cwd(), "out", "report-screenshot.png");
    const check = await inChromium(html, screenshot);
    ok(check, "the page ran its script");
    deepStrictEqual(check.errors, []);
    // Latency and bandwidth: one panel per batch (2); speedup, stages: one; error: one.
    deepStrictEqual(check.canvases, 2 + 2 + 1 + 1 + 1);
    deepStrictEqual(check.drawn, check.canvases, "every canvas has pixels");
    deepStrictEqual(check.rows, run.lines.length);
    ok((await Deno.stat(screenshot)).size > 10_000, "a screenshot was saved");
    const text = await Deno.readTextFile(html);
    ok(text.includes("vs baseline") && text.includes("+0.0%"), "the baseline column is there");
    ok(!/src=["']https?:/.test(text), "nothing is fetched from the network");
  },
});

/** A decode run of made-up steps: two batches, three contexts, dense and SparQ, one skipped. */
function fakeDecodeRun(): Run {
  const base = fakeRun("llama2-7b", false);
  const lines: Run["lines"] = [];
  for (const batch of [1, 4]) {
    for (const seq of [4096, 16384, 32768]) {
      const step = (method: "dense" | "sparq"): DecodeLine => {
        const kv = (method === "dense" ? 2 : 0.5) * seq * batch * 1e4;
        const ns = (13.5e9 + kv) / 2.8;
        return {
          type: "decode",
          key: `decode llama2-7b B${batch} S${seq} f16 ${method}`,
          model: "llama2-7b",
          heads: 32,
          kvHeads: 32,
          headDim: 128,
          batch,
          seq,
          method,
          ...(method === "sparq" ? { r: 32, k: 128 } : {}),
          kvDtype: "f16",
          layers: 32,
          weightDtype: "f16",
          time: stats(ns),
          stages: {
            matmul: stats(ns * 0.6),
            attention: stats(ns * 0.35),
            other: stats(ns * 0.05),
          },
          attentionShare: 0.35,
          tokensPerSecond: batch * 1e9 / ns,
          bytes: { weights: 13.5e9, kv },
          achievedGBps: 2800,
          rooflinePercent: 89,
          speedup: method === "dense" ? 1 : 1.5,
          theoreticalSpeedup: method === "dense" ? 1 : 1.7,
          generation: [
            { readEvery: 1, steps: 32, wallMs: 900, tokensPerSecond: 35 },
            { readEvery: 32, steps: 32, wallMs: 300, tokensPerSecond: 105 },
          ],
        };
      };
      lines.push(step("dense"), step("sparq"));
    }
  }
  const { type: _, ...skipped } = lines[0] as DecodeLine;
  lines.push({
    type: "skipped",
    key: "decode llama2-7b B64 S131072 f16 dense",
    model: skipped.model,
    heads: 32,
    kvHeads: 32,
    headDim: 128,
    batch: 64,
    seq: 131072,
    method: "dense",
    kvDtype: "f16",
    reason: "the plan needs 2060 GiB but target adapter has 78.6 GiB",
  });
  return {
    ...base,
    header: {
      ...base.header,
      options: {
        ...base.header.options,
        decode: { weights: null, weightDtype: "f16", generateSteps: 32 },
      },
    },
    lines,
  };
}

Deno.test({
  name: "a decode run's report: tokens/s, step speedup, breakdown, generation, every row",
  ignore: !chromium && Deno.env.get("CI") !== "true",
  fn: async () => {
    const run = fakeDecodeRun();
    ok(reportTitle(run.header).includes("decode steps"));
    const runPath = join(dir, "decode.jsonl");
    await Deno.writeTextFile(
      runPath,
      [run.header, ...run.lines].map((l) => JSON.stringify(l)).join("\n") + "\n",
    );
    const io = memoryIo();
    deepStrictEqual(await reportCommand([runPath], io), 0, io.stderr.join("\n"));
    await Deno.mkdir("out", { recursive: true });
    const check = await inChromium(
      join(dir, "decode.html"),
      join(Deno.cwd(), "out", "decode-report-screenshot.png"),
    );
    ok(check, "the page ran its script");
    deepStrictEqual(check.errors, []);
    // Tokens/s and speedup: one panel per batch (2 each); breakdown and generation: one each.
    deepStrictEqual(check.canvases, 2 + 2 + 1 + 1);
    deepStrictEqual(check.drawn, check.canvases, "every canvas has pixels");
    deepStrictEqual(check.rows, run.lines.length);
    const text = await Deno.readTextFile(join(dir, "decode.html"));
    ok(text.includes("the plan needs 2060 GiB"), "the skipped point says why");
    ok(!text.includes('id="points"'), "no attention sections in a decode run");
  },
});
