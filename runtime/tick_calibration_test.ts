import { deepStrictEqual, ok } from "node:assert/strict";
import { calibrateTicks } from "./tick_calibration.ts";
import { summarize } from "./stats.ts";

/** A fake GPU with its own clock: `nsPerTick`, a fixed round trip, and jitter. */
function fakeGpu(nsPerTick: number, repNs: number, latencyNs: number, seed = 1) {
  let state = seed;
  const jitter = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return (state / 2147483648 - 0.5) * 2e5; // ±0.1 ms of wall-clock noise
  };
  let calls = 0;
  const probe = (reps: number) => {
    calls++;
    const gpuNs = reps * repNs;
    return Promise.resolve({ ticks: gpuNs / nsPerTick, wallNs: latencyNs + gpuNs + jitter() });
  };
  return { probe, calls: () => calls };
}

Deno.test("calibration recovers the tick length and cancels the fixed round trip", async () => {
  // 0.4 ns per tick, 11 ms of round trip per batch, 3 ms of GPU work per repetition.
  const gpu = fakeGpu(0.4, 3e6, 11e6);
  const c = await calibrateTicks(gpu.probe);
  ok(Math.abs(c.measuredNsPerTick - 0.4) < 0.004, `measured ${c.measuredNsPerTick}`);
  deepStrictEqual(c.nsPerTick, c.measuredNsPerTick);
  ok(c.longBatchNs > 4 * 50e6, "the long batch is four times a batch of at least 50 ms");
});

Deno.test("ticks that are nanoseconds within 5% are taken as exactly nanoseconds", async () => {
  const c = await calibrateTicks(fakeGpu(1.02, 2e6, 11e6).probe);
  deepStrictEqual(c.nsPerTick, 1);
  ok(Math.abs(c.measuredNsPerTick - 1.02) < 0.01);
});

Deno.test("a short batch grows until it outlasts the round trip's noise", async () => {
  const gpu = fakeGpu(1, 1e5, 11e6);
  await calibrateTicks(gpu.probe, { minShortNs: 50e6, trials: 1 });
  // 1, 2, 4, …, 512 repetitions (0.1 ms each) until 50 ms: 10 probes, then one trial of 2.
  deepStrictEqual(gpu.calls(), 12);
});

Deno.test("summarize gives median, p10, p90 and n", () => {
  deepStrictEqual(summarize([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]), {
    median: 60,
    p10: 20,
    p90: 100,
    n: 11,
  });
});
