/**
 * Conversion between host numbers and the bytes of a tensor's dtype.
 *
 * @module
 */
import type { DType } from "../compiler/ir.ts";

/** Host values of a tensor: any array of numbers. */
export type HostValues = ArrayLike<number>;

/**
 * Encodes values as `dtype`, padded to a whole 4-byte word (as buffer writes require).
 *
 * @example
 * ```ts
 * import { encodeValues } from "./tensor_bytes.ts";
 * encodeValues([1, 2, 3], "f16").byteLength; // 8
 * ```
 */
export function encodeValues(values: HostValues, dtype: DType): Uint8Array<ArrayBuffer> {
  const padded = (bytes: number) => Math.ceil(bytes / 4) * 4;
  const n = values.length;
  switch (dtype) {
    case "f16": {
      const out = new Float16Array(padded(n * 2) / 2);
      out.set(values);
      return new Uint8Array(out.buffer);
    }
    case "f32":
      return new Uint8Array(Float32Array.from(values).buffer);
    case "u32":
      return new Uint8Array(Uint32Array.from(values).buffer);
    case "i32":
      return new Uint8Array(Int32Array.from(values).buffer);
  }
}

/**
 * Decodes `count` values of `dtype` from bytes into a Float32Array (f16, f32) or a
 * Uint32Array/Int32Array (u32, i32).
 *
 * @example
 * ```ts
 * import { decodeValues, encodeValues } from "./tensor_bytes.ts";
 * decodeValues(encodeValues([0.5, 2], "f16").buffer, "f16", 2); // Float32Array [0.5, 2]
 * ```
 */
export function decodeValues(
  bytes: ArrayBuffer,
  dtype: DType,
  count: number,
): Float32Array | Uint32Array | Int32Array {
  switch (dtype) {
    case "f16":
      return Float32Array.from(new Float16Array(bytes, 0, count));
    case "f32":
      return new Float32Array(bytes, 0, count).slice();
    case "u32":
      return new Uint32Array(bytes, 0, count).slice();
    case "i32":
      return new Int32Array(bytes, 0, count).slice();
  }
}
