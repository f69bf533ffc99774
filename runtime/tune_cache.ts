/**
 * The tuning cache: a JSON file of measured launch choices, keyed by the adapter (vendor,
 * architecture, device, description), the tuned kernels' source hash and the shape bucket.
 * A corrupt or foreign file is reported and ignored — the next save replaces it — never fatal.
 *
 * @module
 */
import { z } from "zod";
import { writeFileAtomic } from "../compiler/atomic_write.ts";
import { zodErrorLine } from "../compiler/user_error.ts";

/** What identifies an adapter across runs. */
export const AdapterId = z.strictObject({
  vendor: z.string(),
  architecture: z.string(),
  device: z.string(),
  description: z.string(),
});
/** What identifies an adapter across runs. */
export type AdapterId = z.infer<typeof AdapterId>;

/** One measured choice. */
export const TuneEntry = z.strictObject({
  adapter: AdapterId,
  bucket: z.string(),
  sourceHash: z.string(),
  choice: z.record(z.string(), z.number()),
  defaultNs: z.number().positive(),
  bestNs: z.number().positive(),
  kernelsNs: z.strictObject({
    default: z.record(z.string(), z.number()),
    best: z.record(z.string(), z.number()),
  }),
  candidates: z.int().positive(),
  measuredAt: z.string(),
});
/** One measured choice. */
export type TuneEntry = z.infer<typeof TuneEntry>;

const CacheFile = z.strictObject({
  format: z.literal("sparqc-tune-cache"),
  version: z.literal(1),
  entries: z.array(TuneEntry),
});

/**
 * The identity of an adapter.
 *
 * @example
 * ```ts
 * import { adapterId } from "./tune_cache.ts";
 * adapterId({ vendor: "nvidia", architecture: "hopper", device: "", description: "H100" });
 * ```
 */
export function adapterId(info: Pick<GPUAdapterInfo, keyof AdapterId>): AdapterId {
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
  };
}

/** A tuning cache backed by a file. */
export class TuneCache {
  private constructor(readonly path: string, private entries: TuneEntry[]) {}

  /**
   * Opens the cache at `path`; a missing file is an empty cache, a corrupt or foreign one is
   * reported through `warn` and treated as empty.
   *
   * @example
   * ```ts
   * import { TuneCache } from "./tune_cache.ts";
   * const cache = await TuneCache.open("out/tune-cache.json", console.error);
   * ```
   */
  static async open(path: string, warn: (line: string) => void): Promise<TuneCache> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        warn(`cannot read tuning cache ${path} (${error}); ignoring it`);
      }
      return new TuneCache(path, []);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      warn(`tuning cache ${path} is not valid JSON; ignoring it (it will be replaced)`);
      return new TuneCache(path, []);
    }
    const parsed = CacheFile.safeParse(raw);
    if (!parsed.success) {
      warn(
        `${zodErrorLine(`tuning cache ${path} is not a sparqc cache`, parsed.error)}; ignoring it`,
      );
      return new TuneCache(path, []);
    }
    return new TuneCache(path, parsed.data.entries);
  }

  /**
   * The entry for an adapter, bucket and source hash, if measured before.
   *
   * @example
   * ```ts
   * // cache.lookup(adapter, "attention_sparq B1 H32/8 d128 S8192 f16 r32 k128 l0", hash)
   * ```
   */
  lookup(adapter: AdapterId, bucket: string, sourceHash: string): TuneEntry | undefined {
    const key = JSON.stringify(adapter);
    return this.entries.find((e) =>
      JSON.stringify(e.adapter) === key && e.bucket === bucket && e.sourceHash === sourceHash
    );
  }

  /** Adds or replaces an entry (in memory; {@link save} writes). */
  store(entry: TuneEntry): void {
    const key = JSON.stringify(entry.adapter);
    this.entries = this.entries.filter((e) =>
      !(JSON.stringify(e.adapter) === key && e.bucket === entry.bucket)
    );
    this.entries.push(entry);
  }

  /** Writes the cache atomically. */
  async save(): Promise<void> {
    const file = { format: "sparqc-tune-cache", version: 1, entries: this.entries };
    await writeFileAtomic(this.path, JSON.stringify(file, null, 1) + "\n");
  }
}
