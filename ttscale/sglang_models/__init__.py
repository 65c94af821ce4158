"""ttscale's SGLang model package (SGLANG_EXTERNAL_MODEL_PACKAGE=ttscale.sglang_models): the MoE model
classes of the supported families with per-request router deltas. Only `table` and `processor`
import without sglang."""
