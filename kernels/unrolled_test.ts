import { equal, ok } from "node:assert/strict";

const includes = (text: string, part: string) => ok(text.includes(part), `missing: ${part}`);
import { rowDots, unroll, valueRows } from "./unrolled.ts";

Deno.test("unroll writes one indented line per index", () => {
  equal(unroll(3, (i) => `a${i};`, " "), " a0;\n a1;\n a2;");
});

Deno.test("rowDots loads every lane once and accumulates every head", () => {
  const wgsl = rowDots({
    group: 2,
    lanes: 20,
    row: "k[t * 20u + {lane}]",
    store: (h, v) => `out[${h}u] = ${v};`,
  });
  for (let l = 0; l < 20; l++) {
    includes(wgsl, `let k${l} = vec4<f32>(k[t * 20u + ${l}u]);`);
  }
  includes(wgsl, "d1 += dot(q_sh[39u], k19);");
  includes(wgsl, "out[1u] = d1;");
  // The second batch of loads comes after the first batch's products.
  equal(wgsl.indexOf("let k16") > wgsl.indexOf("dot(q_sh[15u], k15)"), true);
});

Deno.test("valueRows guards every row past the tile's end", () => {
  const wgsl = valueRows(1, "TILE", "(base + ROW) * LANES + lane", "count");
  includes(wgsl, "min(t + 3u * SLICES, count - 1u)");
  includes(wgsl, "if (t + 3u * SLICES < count)");
});
