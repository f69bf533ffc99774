import { deepStrictEqual, rejects } from "node:assert/strict";
import { join } from "node:path";
import { writeDirAtomic } from "./write_dir.ts";

Deno.test("writeDirAtomic replaces a folder whole and leaves no staging folders", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "plan");
  await writeDirAtomic(dir, new Map([["a.txt", "1"], ["b.txt", "2"]]));
  await writeDirAtomic(dir, new Map([["c.txt", "3"]]));
  deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["c.txt"]);
  deepStrictEqual([...Deno.readDirSync(root)].map((e) => e.name), ["plan"]);
  await Deno.remove(root, { recursive: true });
});

Deno.test("a failed write keeps the old folder and removes the staging one", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "plan");
  await writeDirAtomic(dir, new Map([["a.txt", "1"]]));
  await rejects(writeDirAtomic(dir, new Map([["sub/x.txt", "no such subfolder"]])));
  deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.txt"]);
  deepStrictEqual([...Deno.readDirSync(root)].map((e) => e.name), ["plan"]);
  await Deno.remove(root, { recursive: true });
});
