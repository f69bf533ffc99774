/**
 * A safetensors reader and writer. The format: an 8-byte little-endian header length N, N bytes
 * of JSON mapping each tensor name to its dtype, shape and data offsets (relative to the end of
 * the header), then the raw little-endian data. The reader checks everything a corrupt or
 * foreign file could get wrong — header length, JSON, known dtypes, shapes that match their
 * byte ranges, ranges inside the file — and names the fault.
 *
 * @module
 */
import { z } from "zod";
import { UserError, zodErrorLine } from "../compiler/user_error.ts";

/** Element sizes of the safetensors dtypes. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

/** A safetensors dtype name. */
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

const HeaderEntry = z.strictObject({
  dtype: z.string(),
  shape: z.array(z.int().nonnegative()),
  data_offsets: z.tuple([z.int().nonnegative(), z.int().nonnegative()]),
});
const Header = z.record(z.string(), z.unknown());

/** One tensor of a file. */
export interface SafeTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The raw little-endian bytes. */
  bytes: Uint8Array;
}

/**
 * Parses a safetensors file's bytes; `source` names the file in errors.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors(new Map([["x", { dtype: "F32", shape: [2], values: [1, 2] }]]));
 * decodeSafetensors(bytes, "x.safetensors").get("x")!.shape; // [2]
 * ```
 */
export function decodeSafetensors(file: Uint8Array, source: string): Map<string, SafeTensor> {
  const fail = (why: string): never => {
    throw new UserError(`${source}: not a valid safetensors file: ${why}`);
  };
  if (file.byteLength < 8) fail(`${file.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(file.byteLength - 8)) {
    fail(`header length ${headerLength} runs past the end of the ${file.byteLength}-byte file`);
  }
  const headerEnd = 8 + Number(headerLength);
  let json: unknown;
  try {
    json = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(file.subarray(8, headerEnd)),
    );
  } catch (error) {
    fail(`the header is not JSON (${error instanceof Error ? error.message : error})`);
  }
  const header = Header.safeParse(json);
  if (!header.success) fail("the header is not a JSON object");
  const dataLength = file.byteLength - headerEnd;
  const tensors = new Map<string, SafeTensor>();
  for (const [name, raw] of Object.entries(header.data!)) {
    if (name === "__metadata__") continue;
    const entry = HeaderEntry.safeParse(raw);
    if (!entry.success) fail(zodErrorLine(`tensor '${name}'`, entry.error));
    const { dtype, shape, data_offsets: [begin, end] } = entry.data!;
    if (!(dtype in SAFETENSORS_DTYPES)) {
      fail(`tensor '${name}' has unknown dtype '${dtype}'`);
    }
    const size = SAFETENSORS_DTYPES[dtype as SafetensorsDtype];
    const expected = shape.reduce((a, b) => a * b, 1) * size;
    if (end < begin) fail(`tensor '${name}' ends (${end}) before it begins (${begin})`);
    if (end - begin !== expected) {
      fail(
        `tensor '${name}' is ${dtype} [${shape.join(", ")}], ${expected} bytes, but its ` +
          `data_offsets span ${end - begin}`,
      );
    }
    if (end > dataLength) {
      fail(`tensor '${name}' ends at byte ${end} of a ${dataLength}-byte data section`);
    }
    tensors.set(name, {
      dtype: dtype as SafetensorsDtype,
      shape,
      bytes: file.subarray(headerEnd + begin, headerEnd + end),
    });
  }
  return tensors;
}

/**
 * A tensor's values as numbers (F16, BF16, F32, F64, and the integer types up to 32 bits).
 *
 * @example
 * ```ts
 * import { tensorValues } from "./safetensors.ts";
 * tensorValues({ dtype: "F16", shape: [1], bytes: new Uint8Array([0, 60]) }, "x"); // [1]
 * ```
 */
export function tensorValues(t: SafeTensor, name: string): Float64Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const aligned = t.bytes.slice().buffer;
  switch (t.dtype) {
    case "F16":
      return Float64Array.from(new Float16Array(aligned, 0, n));
    case "BF16": {
      const raw = new Uint16Array(aligned, 0, n);
      const widened = new Uint32Array(n);
      for (let i = 0; i < n; i++) widened[i] = raw[i] << 16;
      return Float64Array.from(new Float32Array(widened.buffer));
    }
    case "F32":
      return Float64Array.from(new Float32Array(aligned, 0, n));
    case "F64":
      return new Float64Array(aligned, 0, n);
    case "I32":
      return Float64Array.from(new Int32Array(aligned, 0, n));
    case "U32":
      return Float64Array.from(new Uint32Array(aligned, 0, n));
    case "I16":
      return Float64Array.from(new Int16Array(aligned, 0, n));
    case "U16":
      return Float64Array.from(new Uint16Array(aligned, 0, n));
    case "I8":
      return Float64Array.from(new Int8Array(aligned, 0, n));
    case "U8":
    case "BOOL":
      return Float64Array.from(new Uint8Array(aligned, 0, n));
    case "I64":
      return Float64Array.from(new BigInt64Array(aligned, 0, n), Number);
    default:
      throw new UserError(`tensor '${name}' has dtype ${t.dtype}, which sparqc cannot read`);
  }
}

/** A tensor to write: values in one of the writable dtypes. */
export interface TensorToWrite {
  dtype: "F32" | "F16" | "I32";
  shape: number[];
  values: ArrayLike<number>;
}

/**
 * Encodes tensors as a safetensors file; the header is padded with spaces to a multiple of 8.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "./safetensors.ts";
 * encodeSafetensors(new Map([["y", { dtype: "F32", shape: [1], values: [0.5] }]]));
 * ```
 */
export function encodeSafetensors(tensors: Map<string, TensorToWrite>): Uint8Array {
  const header: Record<string, unknown> = {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const typed = t.dtype === "F32"
      ? Float32Array.from(t.values)
      : t.dtype === "F16"
      ? Float16Array.from(t.values)
      : Int32Array.from(t.values);
    const bytes = new Uint8Array(typed.buffer);
    header[name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.length],
    };
    chunks.push(bytes);
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  headerBytes.set(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
