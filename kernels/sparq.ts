/**
 * SparQ attention in four stages (../shared/SPARQ.md), one file each:
 *
 * 1. `sparq_scores` (sparq_scores.ts) — per (block of positions, sequence, KV head): i1, the r
 *    largest components of Σ_group |q|, and each head's q[i1] / tau (every workgroup selects
 *    them itself), then the approximate logits q[i1]·Kᵀ[i1, pos] / tau from the contiguous Kᵀ
 *    rows; writes the logits and each block's softmax statistics (max, Σexp).
 * 2. `sparq_candidates` (sparq_select.ts) — per (block of 2048 or 4096 positions, sequence, KV head):
 *    ranks the block's positions by a value monotone in Σ_group ŝ (the logit itself with one
 *    query head per KV head, log Σ_group ŝ otherwise; the newest `localWindow` positions get the
 *    largest key) and keeps its local top k: one counting round over value bins, the boundary
 *    bin ranked in workgroup memory, a radix select as the exact fallback.
 * 3. `sparq_topk` (sparq_select.ts) — per (sequence, KV head): the top k among the candidates
 *    the same way (ties go to the lower position), written as indices, and each head's kept
 *    mass alpha (1 exactly when k ≥ length).
 * 4. `sparq_attend` (sparq_attend.ts) — per (sequence, KV head): exact softmax attention over
 *    the gathered K and V rows for every head of the group, y = alpha · attention + (1 − alpha) ·
 *    V_mean.
 *
 * With one query head per KV head stages 1 and 2a run as one kernel (`sparq_scores_candidates`,
 * sparq_scores.ts), and at few rows and positions all four (`sparq_scores_attend`). Where the
 * target allows, stages 2b and 3 run as one kernel and, at few blocks, 2a–3 as one
 * (sparq_attend.ts; {@link SPARQ_ARRANGEMENTS}). What they share is in
 * sparq_common.ts.
 *
 * @module
 */
export {
  CANDIDATE_BLOCK,
  SPARQ_ARRANGEMENTS,
  SPARQ_DEFAULT,
  SPARQ_SPACE,
  SPARQ_TOPK_WORKGROUP,
  type SparqConfig,
  type SparqKernelParams,
  sparqScratch,
} from "./sparq_common.ts";
export {
  scoresCandidatesFits,
  scoresLayout,
  scoresWidth,
  sparqScoresCandidatesKernel,
  sparqScoresKernel,
  sparqScoresVec4Kernel,
} from "./sparq_scores.ts";
export {
  candidatesBytes,
  sparqCandidatesKernel,
  sparqTopkKernel,
  WARM_PAGE_BYTES,
  WARM_PAGES_PER_WORKGROUP,
  warmWorkgroups,
} from "./sparq_select.ts";
export {
  attendLayout,
  scoresAttendFits,
  selectAttendFits,
  sparqAttendKernel,
  sparqScoresAttendKernel,
  sparqSelectAttendKernel,
  sparqTopkAttendKernel,
  topkAttendFits,
} from "./sparq_attend.ts";
