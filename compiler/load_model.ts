/**
 * Resolves what the user typed as a model: a preset name, or a path to a Hugging Face
 * `config.json` (or to the folder holding one).
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { type ImportedConfig, importHfConfig } from "./hf_config.ts";
import { PRESETS } from "./presets.ts";
import { UserError } from "./user_error.ts";

function looksLikePath(spec: string): boolean {
  return spec.endsWith(".json") || spec.includes("/") || spec.includes("\\") ||
    spec.startsWith(".");
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : error instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new UserError(`cannot read ${path}: ${reason}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new UserError(`${path} is not valid JSON: ${detail}`);
  }
}

/**
 * Loads a preset by name, or a Hugging Face config from a path.
 *
 * @example
 * ```ts
 * import { loadModel } from "./load_model.ts";
 * const { config } = await loadModel("llama3-8b");
 * config.numKvHeads; // 8
 * ```
 */
export async function loadModel(spec: string): Promise<ImportedConfig> {
  const preset = PRESETS.get(spec);
  if (preset) return { config: preset, warnings: [] };
  if (!looksLikePath(spec)) {
    let isFile = false;
    try {
      isFile = (await Deno.stat(spec)).isFile;
    } catch { /* not a file either: an unknown preset */ }
    if (!isFile) {
      throw new UserError(
        `unknown model '${spec}': give a preset (${[...PRESETS.keys()].join(", ")}) ` +
          `or a path to a Hugging Face config.json`,
      );
    }
  }
  let path = spec;
  try {
    if ((await Deno.stat(spec)).isDirectory) path = join(spec, "config.json");
  } catch { /* readJson names the missing file */ }
  const raw = await readJson(path);
  const folder = basename(dirname(path));
  const fallbackName = basename(path) === "config.json" && folder && folder !== "."
    ? folder
    : basename(path).replace(/\.json$/, "");
  return importHfConfig(raw, fallbackName, path);
}
