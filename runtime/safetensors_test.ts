import { deepStrictEqual } from "node:assert/strict";
import { join } from "node:path";
import { encodeSafetensors, openSafetensors, tensorValues } from "./safetensors.ts";

Deno.test("BF16 is written rounded to nearest even and reads back from a file, one tensor at a time", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "x.safetensors");
    await Deno.writeFile(
      path,
      encodeSafetensors(
        new Map(
          [
            ["a", { dtype: "F32", shape: [2], values: [0.5, -2] }],
            // 1 + 2⁻⁸ lies halfway between bfloat16 neighbours 1 and 1 + 2⁻⁷: even wins.
            ["b", { dtype: "BF16", shape: [2, 2], values: [1 + 2 ** -8, 3.14159, -1e-3, 65504] }],
          ] as const,
        ),
      ),
    );
    const file = await openSafetensors(path);
    try {
      deepStrictEqual([...file.entries.keys()], ["a", "b"]);
      deepStrictEqual([...tensorValues(await file.read("b"), "b")], [
        1,
        3.140625,
        -0.00099945068359375,
        65536,
      ]);
      deepStrictEqual([...tensorValues(await file.read("a"), "a")], [0.5, -2]);
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
