"""The tokenizer routes, as vLLM defines them (lm-eval's remote tokenizer reads them): `/tokenize` (a
prompt's or chat messages' token ids), `/detokenize` (token ids to text), `/tokenizer_info`."""

from __future__ import annotations

from typing import Any

from ttscale.backends.base import Backend
from ttscale.serve.schemas import ApiError, get, messages, token_ids


def tokenize(data: dict[str, Any], backend: Backend) -> dict[str, Any]:
    """`prompt` (with `add_special_tokens`, default true) as /v1/completions runs it, or `messages` as
    /v1/chat/completions runs them (the chat template with its generation prompt)."""
    if "messages" in data:
        if not get(data, "add_generation_prompt", bool, True):
            raise ApiError(400, "add_generation_prompt=false is not supported: messages are tokenized as "
                           "/v1/chat/completions runs them", param="add_generation_prompt")
        tokens = backend.encode(messages(data))
    else:
        prompt = get(data, "prompt", str, None)
        if prompt is None:
            raise ApiError(400, "send a prompt (a string) or messages", param="prompt")
        tokens = backend.tokenizer(prompt, add_special_tokens=get(data, "add_special_tokens", bool, True)).input_ids
    strings = backend.tokenizer.convert_ids_to_tokens(tokens) if get(data, "return_token_strs", bool, False) else None
    return {"count": len(tokens), "max_model_len": backend.info.context_length, "tokens": tokens, "token_strs": strings}


def detokenize(data: dict[str, Any], backend: Backend) -> dict[str, Any]:
    tokens = token_ids(data.get("tokens"), "tokens", backend.info.vocab_size, empty=True)
    return {"prompt": backend.tokenizer.decode(tokens)}


def tokenizer_info(backend: Backend) -> dict[str, Any]:
    tokenizer = backend.tokenizer
    special = {name: getattr(tokenizer, name, None) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return {"tokenizer_class": type(tokenizer).__name__, **{k: v if v is None else str(v) for k, v in special.items()},
            "chat_template": tokenizer.chat_template, "model_max_length": backend.info.context_length,
            "vocab_size": len(tokenizer)}
