/**
 * Writes files and directories so that readers see either the old version or the complete new
 * one, never a half-written mix: the data goes to a sibling temporary path that is then renamed
 * into place.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

/**
 * Replaces `dir` with a directory holding exactly `files` (name → content).
 *
 * @example
 * ```ts
 * import { writeDirAtomic } from "./write_dir.ts";
 * await writeDirAtomic("out/example", new Map([["a.txt", "hello\n"]]));
 * ```
 */
export async function writeDirAtomic(dir: string, files: Map<string, string>): Promise<void> {
  const parent = dirname(dir);
  await Deno.mkdir(parent, { recursive: true });
  const staging = await Deno.makeTempDir({ dir: parent, prefix: `.${basename(dir)}.tmp-` });
  let old: string | undefined;
  try {
    // makeTempDir creates 0700; the result is an ordinary, shareable folder.
    if (Deno.build.os !== "windows") await Deno.chmod(staging, 0o755);
    for (const [name, content] of files) await Deno.writeTextFile(join(staging, name), content);
    old = await moveAside(dir, parent);
    await Deno.rename(staging, dir);
  } catch (error) {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    if (old) await Deno.rename(old, dir).catch(() => {});
    throw error;
  }
  if (old) await Deno.remove(old, { recursive: true });
}

async function moveAside(dir: string, parent: string): Promise<string | undefined> {
  try {
    const info = await Deno.stat(dir);
    if (!info.isDirectory) return undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const aside = join(parent, `.${basename(dir)}.old-${crypto.randomUUID().slice(0, 8)}`);
  await Deno.rename(dir, aside);
  return aside;
}

/**
 * Replaces the file at `path` with `data`, atomically.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic_write.ts";
 * await writeFileAtomic("out/example.bin", new Uint8Array([1, 2, 3]));
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const parent = dirname(path);
  await Deno.mkdir(parent, { recursive: true });
  const staging = join(parent, `.${basename(path)}.tmp-${crypto.randomUUID().slice(0, 8)}`);
  try {
    if (typeof data === "string") await Deno.writeTextFile(staging, data);
    else await Deno.writeFile(staging, data);
    await Deno.rename(staging, path);
  } catch (error) {
    await Deno.remove(staging).catch(() => {});
    throw error;
  }
}
