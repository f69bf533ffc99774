/**
 * The layout of SparQ's Kᵀ cache: for each (sequence, KV head) row, positions in tiles of
 * {@link KT_TILE} (see {@link ktTile}), each tile holding every component's run of its positions —
 * [B, Hkv, tiles, d, tile]. Stage 1 still reads runs of consecutive positions of one
 * component (256 bytes in f16: whole cache lines), and appending a position writes its d values
 * within one 32 KB tile instead of d places a whole row (64 KB at S = 32k) apart: on the H100 that
 * column write was 21 of kv_append's 30 µs per call at B = 1, S = 32k (docs/performance.md).
 *
 * @module
 */

/** Positions per tile (a shorter capacity is one tile of its own length, rounded up to 8). */
export const KT_TILE = 128;

/**
 * Positions per tile for a capacity: {@link KT_TILE}, or a short capacity rounded up to a
 * multiple of 8 (so that small caches are not padded to a whole tile).
 *
 * @example
 * ```ts
 * import { ktTile } from "./kt_layout.ts";
 * [ktTile(4096), ktTile(40), ktTile(7)]; // [128, 40, 8]
 * ```
 */
export function ktTile(maxSeq: number): number {
  return Math.min(KT_TILE, Math.ceil(maxSeq / 8) * 8);
}

/**
 * Tiles per row: the capacity rounded up to whole tiles (the padding is never read).
 *
 * @example
 * ```ts
 * import { ktTiles } from "./kt_layout.ts";
 * ktTiles(300); // 3
 * ```
 */
export function ktTiles(maxSeq: number): number {
  return Math.ceil(maxSeq / ktTile(maxSeq));
}

/**
 * The Kᵀ cache's shape.
 *
 * @example
 * ```ts
 * import { ktShape } from "./kt_layout.ts";
 * ktShape(1, 8, 128, 4096); // [1, 8, 32, 128, 128]
 * ```
 */
export function ktShape(batch: number, kvHeads: number, headDim: number, maxSeq: number): number[] {
  return [batch, kvHeads, ktTiles(maxSeq), headDim, ktTile(maxSeq)];
}

/**
 * Where component j of position pos of row `row` (sequence · kvHeads + KV head) lies.
 *
 * @example
 * ```ts
 * import { ktIndex } from "./kt_layout.ts";
 * ktIndex(0, 1, 130, 64, 256); // ((0 · 2 + 1) · 64 + 1) · 128 + 2 = 8322
 * ```
 */
export function ktIndex(row: number, j: number, pos: number, headDim: number, maxSeq: number) {
  const t = ktTile(maxSeq);
  return ((row * ktTiles(maxSeq) + Math.floor(pos / t)) * headDim + j) * t + (pos % t);
}

/**
 * WGSL: `KT_TILE`, `KT_TILES` and `kt_index(row, j, pos)`, as {@link ktIndex}.
 *
 * @example
 * ```ts
 * import { ktIndexWgsl } from "./kt_layout.ts";
 * ktIndexWgsl(128, 4096).includes("fn kt_index"); // true
 * ```
 */
export function ktIndexWgsl(headDim: number, maxSeq: number): string {
  return `const KT_TILE = ${ktTile(maxSeq)}u;
const KT_TILES = ${ktTiles(maxSeq)}u;
fn kt_index(row: u32, j: u32, pos: u32) -> u32 {
  return ((row * KT_TILES + pos / KT_TILE) * ${headDim}u + j) * KT_TILE + pos % KT_TILE;
}`;
}
