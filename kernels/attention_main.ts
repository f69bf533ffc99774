/**
 * `deno task attention --input in.safetensors --out out.safetensors`: one attention call on the
 * user's own tensors. Not built yet.
 *
 * @module
 */
import { notBuiltCommand } from "../compiler/not_built.ts";

if (import.meta.main) {
  Deno.exit(
    await notBuiltCommand(
      "attention",
      "Runs one dense or SparQ attention call on tensors from a safetensors file and checks it\n" +
        "against the float64 reference.",
      Deno.args,
    ),
  );
}
