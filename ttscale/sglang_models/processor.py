"""The no-op custom logit processor every ttscale request carries: with it, SGLang fills
`sampling_info.custom_params`, which is how a request's router deltas reach the model."""

from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor


class PassThrough(CustomLogitProcessor):
    def __call__(self, logits, custom_param_list):
        return logits
