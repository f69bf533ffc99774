import { deepStrictEqual, rejects } from "node:assert/strict";
import { join } from "node:path";
import { writeDirAtomic, writeFileAtomic } from "./atomic_write.ts";

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

Deno.test("writeFileAtomic replaces a file and leaves no staging file", async () => {
  const root = await Deno.makeTempDir();
  const path = join(root, "a.bin");
  await writeFileAtomic(path, new Uint8Array([1]));
  await writeFileAtomic(path, "text");
  deepStrictEqual(await Deno.readTextFile(path), "text");
  deepStrictEqual([...Deno.readDirSync(root)].map((e) => e.name), ["a.bin"]);
  await Deno.remove(root, { recursive: true });
});
