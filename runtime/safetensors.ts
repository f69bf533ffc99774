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

/** Where a tensor's bytes lie in its file, and what they hold. */
export interface SafeTensorEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range in the file (not relative to the data section). */
  begin: number;
  end: number;
}

/**
 * Parses and checks a header: `headerJson` is the JSON after the 8-byte length, `fileLength`
 * the whole file's size; `source` names the file in errors.
 */
function parseHeader(
  headerJson: Uint8Array,
  fileLength: number,
  source: string,
): Map<string, SafeTensorEntry> {
  const fail = (why: string): never => {
    throw new UserError(`${source}: not a valid safetensors file: ${why}`);
  };
  const headerEnd = 8 + headerJson.byteLength;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerJson));
  } catch (error) {
    fail(`the header is not JSON (${error instanceof Error ? error.message : error})`);
  }
  const header = Header.safeParse(json);
  if (!header.success) fail("the header is not a JSON object");
  const dataLength = fileLength - headerEnd;
  const entries = new Map<string, SafeTensorEntry>();
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
    entries.set(name, {
      dtype: dtype as SafetensorsDtype,
      shape,
      begin: headerEnd + begin,
      end: headerEnd + end,
    });
  }
  return entries;
}

/** The header length a file's first 8 bytes state, checked against the file's size. */
function headerLength(first8: Uint8Array, fileLength: number, source: string): number {
  if (fileLength < 8) {
    throw new UserError(
      `${source}: not a valid safetensors file: ${fileLength} bytes, shorter than the 8-byte ` +
        "header length",
    );
  }
  const length = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(fileLength - 8)) {
    throw new UserError(
      `${source}: not a valid safetensors file: header length ${length} runs past the end of ` +
        `the ${fileLength}-byte file`,
    );
  }
  return Number(length);
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
  const length = headerLength(file, file.byteLength, source);
  const entries = parseHeader(file.subarray(8, 8 + length), file.byteLength, source);
  const tensors = new Map<string, SafeTensor>();
  for (const [name, e] of entries) {
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes: file.subarray(e.begin, e.end) });
  }
  return tensors;
}

/** A safetensors file opened for reading one tensor at a time (model files are gigabytes). */
export interface SafetensorsFile {
  path: string;
  entries: Map<string, SafeTensorEntry>;
  /** Reads one tensor's bytes. */
  read(name: string): Promise<SafeTensor>;
  close(): void;
}

/**
 * Opens a safetensors file and reads its header only; tensors are read on demand.
 *
 * @example
 * ```ts
 * import { openSafetensors } from "./safetensors.ts";
 * // const file = await openSafetensors("model.safetensors");
 * // const embed = await file.read("model.embed_tokens.weight");
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "no such file" : String(error);
    throw new UserError(`cannot read ${path}: ${reason}`);
  }
  try {
    const size = (await file.stat()).size;
    const readAt = async (at: number, length: number): Promise<Uint8Array<ArrayBuffer>> => {
      const bytes = new Uint8Array(length);
      await file.seek(at, Deno.SeekMode.Start);
      let done = 0;
      while (done < length) {
        const n = await file.read(bytes.subarray(done));
        if (n === null) throw new UserError(`${path}: the file ended while reading it`);
        done += n;
      }
      return bytes;
    };
    const length = headerLength(await readAt(0, Math.min(8, size)), size, path);
    const entries = parseHeader(await readAt(8, length), size, path);
    return {
      path,
      entries,
      async read(name: string): Promise<SafeTensor> {
        const e = entries.get(name);
        if (!e) throw new Error(`${path} has no tensor '${name}'`);
        return { dtype: e.dtype, shape: e.shape, bytes: await readAt(e.begin, e.end - e.begin) };
      },
      close: () => file.close(),
    };
  } catch (error) {
    file.close();
    throw error;
  }
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

/** bfloat16 bits of each value: the upper half of its f32, rounded to nearest even. */
function toBfloat16(values: ArrayLike<number>): Uint16Array {
  const bits = new Uint32Array(Float32Array.from(values).buffer);
  return Uint16Array.from(bits, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
}

/** A tensor to write: values in one of the writable dtypes. */
export interface TensorToWrite {
  dtype: "F32" | "F16" | "BF16" | "I32";
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
      : t.dtype === "BF16"
      ? toBfloat16(t.values)
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
