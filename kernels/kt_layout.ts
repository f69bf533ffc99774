/**
 * The layout of SparQ's Kᵀ cache: for each (sequence, KV head) row, positions in tiles of
 * {@link KT_TILE} (see {@link ktTile}), each tile holding every component's run of its positions —
 * [B, Hkv, tiles, d, tile]. Stage 1 still reads runs of consecutive positions of one component
 * (2 KB in f16), and appending a position writes its d values within one tile (256 KB at d = 128)
 * instead of d places a whole row apart (64 KB each at S = 32k). On the H100 at B = 1, S = 32k,
 * that took kv_append from 29.9 to 10.3 µs per call for 32.7 → 38.0 µs of stage 1; tiles of
 * 128, 256, 512 and 2048 positions measured the same append and a stage 1 up to 6% slower at
 * B = 16 (docs/performance.md).
 *
 * @module
 */

/** Positions per tile (a shorter capacity is one tile of its own length, rounded up to 8). */
export const KT_TILE = 1024;

/**
 * Positions per tile for a capacity: {@link KT_TILE}, or a short capacity rounded up to a
 * multiple of 8 (so that small caches are not padded to a whole tile).
 *
 * @example
 * ```ts
 * import { ktTile } from "./kt_layout.ts";
 * [ktTile(4096), ktTile(40), ktTile(7)]; // [1024, 40, 8]
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
 * ktShape(1, 8, 128, 4096); // [1, 8, 4, 128, 1024]
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
 * ktIndex(0, 1, 1030, 64, 4096); // ((0 · 4 + 1) · 64 + 1) · 1024 + 6 = 66566
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
