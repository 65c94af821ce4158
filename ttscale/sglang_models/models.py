"""SGLang's MoE model classes of the supported families with per-request router deltas.

Each keeps its built-in class name, so SGLang's registry picks it instead of the built-in when this
package is the external model package; all they add is the `Rerouted` mixin.
"""

from sglang.srt.models import mixtral, olmoe, qwen2_moe, qwen3_moe

from ttscale.sglang_models.runtime import Rerouted


class OlmoeForCausalLM(Rerouted, olmoe.OlmoeForCausalLM):
    family = "olmoe"


class Qwen2MoeForCausalLM(Rerouted, qwen2_moe.Qwen2MoeForCausalLM):
    family = "qwen2_moe"


class Qwen3MoeForCausalLM(Rerouted, qwen3_moe.Qwen3MoeForCausalLM):
    family = "qwen3_moe"


class MixtralForCausalLM(Rerouted, mixtral.MixtralForCausalLM):
    family = "mixtral"


EntryClass = [OlmoeForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM]
