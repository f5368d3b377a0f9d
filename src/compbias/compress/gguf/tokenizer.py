"""The tokenizer of a GGUF file, rebuilt from its ``tokenizer.ggml.*`` metadata: a ``tokenizers``
byte-level BPE tokenizer and the HF tokenizer/generation config files."""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

_DIGIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva", "command-r"}
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """Build a ``tokenizers`` byte-level BPE tokenizer from GGUF ``tokenizer.ggml.*`` metadata."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {model!r} is not supported (only 'gpt2' byte-level BPE)")
    pre = meta.get("tokenizer.ggml.pre", "default")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    llama3 = pre in ("llama-bpe", "llama3")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not llama3)
    if pre in ("default", "gpt2"):
        pre_tok = byte_level
    elif pre in _DIGIT_PRE:
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif llama3:
        split = pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated")
        pre_tok = pre_tokenizers.Sequence([split, byte_level])
    else:
        raise ValueError(f"tokenizer.ggml.pre {pre!r} is not supported")
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=llama3))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    tok.add_tokens(
        [
            AddedToken(t, special=ty == _TOKEN_CONTROL, normalized=False)
            for t, ty in zip(tokens, types)
            if ty in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
        ]
    )
    edges = {
        key: meta[f"tokenizer.ggml.{key}_token_id"]
        for key in ("bos", "eos")
        if meta.get(f"tokenizer.ggml.add_{key}_token") and f"tokenizer.ggml.{key}_token_id" in meta
    }
    if edges:
        bos = [tokens[edges["bos"]]] if "bos" in edges else []
        eos = [tokens[edges["eos"]]] if "eos" in edges else []

        def seq(piece: str, type_id: int) -> str:
            return " ".join(f"{t}:{type_id}" for t in [*bos, piece, *eos])

        tok.post_processor = processors.TemplateProcessing(
            single=seq("$A", 0),
            pair=f"{seq('$A', 0)} {seq('$B', 1)}",
            special_tokens=[(tokens[i], i) for i in edges.values()],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _tokenizer_files(meta: dict[str, Any], max_length: int) -> dict[str, dict[str, Any]]:
    tokens = meta["tokenizer.ggml.tokens"]
    special = {
        f"{role}_token": tokens[i]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))
        if (i := meta.get(f"tokenizer.ggml.{key}_token_id")) is not None
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    generation = {
        k: meta[f"tokenizer.ggml.{g}_token_id"]
        for k, g in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding"))
        if f"tokenizer.ggml.{g}_token_id" in meta
    }
    return {
        "tokenizer_config.json": config,
        "special_tokens_map.json": special,
        "generation_config.json": generation,
    }
