"""The no-op custom logit processor every ttscale request carries: with it, SGLang fills
`sampling_info.custom_params`, which is how a request's router deltas reach the model.

Importable without sglang (an HTTP client needs only its serialised form): the processor travels as
a reference to this class, which the server resolves where sglang and ttscale are installed."""

import json
import pickle

try:
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor as _Base
except ImportError:          # a client of a remote server
    _Base = object


class PassThrough(_Base):
    def __call__(self, logits, custom_param_list=None):
        return logits


def serialized() -> str:
    """`PassThrough` in the form of SGLang's `CustomLogitProcessor.to_str` (JSON of a hex pickle,
    read back with `dill.loads`)."""
    return json.dumps({"callable": pickle.dumps(PassThrough).hex()})
