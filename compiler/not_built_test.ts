import { deepStrictEqual, ok } from "node:assert/strict";
import { memoryIo } from "./cli.ts";
import { notBuiltCommand } from "./not_built.ts";

Deno.test("a task that is not built says so and exits 2, printing no results", async () => {
  const io = memoryIo();
  deepStrictEqual(await notBuiltCommand("bench", "Benchmarks.", ["--quick"], io), 2);
  deepStrictEqual(io.stdout, []);
  deepStrictEqual(io.stderr, [
    "sparqc bench: error: 'deno task bench' is not built yet (see README.md, \"Status\"); " +
    "nothing was run",
  ]);
  const help = memoryIo();
  deepStrictEqual(await notBuiltCommand("bench", "Benchmarks.", ["--help"], help), 0);
  ok(help.stdout[0].includes("Not built yet"));
});
