import { deepStrictEqual } from "node:assert/strict";
import { ktIndex, ktShape, ktTile } from "./kt_layout.ts";

Deno.test("the tiled Kᵀ layout places every (row, component, position) once, padding last", () => {
  for (const [rows, d, seq] of [[2, 16, 300], [3, 8, 40], [1, 4, 7], [2, 4, 2500]]) {
    const shape = ktShape(1, rows, d, seq);
    const size = shape.reduce((a, b) => a * b);
    const seen = new Set<number>();
    for (let row = 0; row < rows; row++) {
      for (let pos = 0; pos < seq; pos++) {
        for (let j = 0; j < d; j++) seen.add(ktIndex(row, j, pos, d, seq));
      }
    }
    deepStrictEqual(seen.size, rows * d * seq, `${rows}×${d}×${seq}: no two share a slot`);
    deepStrictEqual([...seen].every((i) => i >= 0 && i < size), true);
    // Consecutive positions of one component are adjacent within a tile.
    deepStrictEqual(ktIndex(1, 3, 5, d, seq) - ktIndex(1, 3, 4, d, seq), 1);
    deepStrictEqual(size, rows * d * Math.ceil(seq / ktTile(seq)) * ktTile(seq));
  }
  deepStrictEqual(ktShape(1, 32, 128, 32768), [1, 32, 32, 128, 1024]);
});
