"""Random-weight llama instruction models with a real tokenizer and chat template.

``build_tiny_model`` writes the tiny model the ``.test`` workflow and the tests use, offline.
``build_random_model`` writes any llama shape (a 7B one for GPU benchmarks) with a given
tokenizer. Their LM heads favour the letter tokens A/B/C so that most first tokens are letters
(and a minority needs continued decoding), as with a real instruction model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from compbias.io import atomic_dir

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROBE = "<|im_start|>user\nQuestion: who?\nA) x\nB) y\nC) z<|im_end|>\n<|im_start|>assistant\n"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")

#: Llama shapes of the study's 7B models (attention/MLP dimensions; vocabulary from the tokenizer).
SHAPES = {
    "mistral-7b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rope_theta": 1e6,
    },
    "qwen2.5-7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "rope_theta": 1e6,
    },
}


def _byte_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "chat_template": CHATML,
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "model_max_length": 2048,
                "add_bos_token": False,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2)
    )


def _letter_scale(logits, boost, letters, mass: float, temperature: float) -> float:
    """Scale s so that adding ``s * boost`` to the letter logits gives mean letter mass ``mass``
    at the sampling ``temperature``."""
    import mlx.core as mx

    def mean_mass(s: float) -> float:
        z = logits.at[:, letters].add(s * boost) / temperature
        return float(mx.softmax(z, axis=-1)[:, letters].sum(axis=-1).mean())

    lo, hi = 0.0, 1.0
    while mean_mass(hi) < mass and hi < 1e6:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_mass(mid) < mass else (lo, mid)
    return hi


def build_random_model(
    out: str | Path,
    config: dict,
    *,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
    probes: Sequence[str | Sequence[int]] = (PROBE,),
    letter_gain: float = 0.5,
    letter_mass: float | None = None,
    temperature: float = 1.0,
    letter_noise: float = 6.0,
    sharpness: float = 1.0,
    dtype: str = "float32",
) -> Path:
    """Write a random-weight llama checkpoint (safetensors, HF names) to ``out``; return it.

    ``config`` gives the llama dimensions (``vocab_size`` is the tokenizer's). The letter rows
    of the LM head point along the mean final hidden state of the ``probes`` (chat-templated
    prompts, text or token ids), scaled by ``letter_gain`` or, with ``letter_mass``, by the
    gain that gives that mean first-token letter probability on the probes when sampling at
    ``temperature``, plus a random part
    (``letter_noise``) so that which letter wins depends on the item. ``tokenizer_dir``: copy
    that tokenizer and chat template (default: a byte-level one with a ChatML template).
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs
    from tokenizers import Tokenizer

    with atomic_dir(out) as tmp:
        tmp.mkdir()
        if tokenizer_dir is None:
            _byte_tokenizer(tmp)
        else:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).exists():
                    shutil.copy(Path(tokenizer_dir) / name, tmp / name)
        tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
        config = {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "eos_token_id": tok.token_to_id("<|im_end|>") or 2,
            **config,
            "vocab_size": tok.get_vocab_size(),
            "torch_dtype": dtype,
        }
        mx.random.seed(seed)
        model = Model(ModelArgs.from_dict(config))
        if sharpness != 1.0:  # sharper attention: the last position sees the item
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight = layer.self_attn.q_proj.weight * sharpness
                layer.self_attn.k_proj.weight = layer.self_attn.k_proj.weight * sharpness
        hidden = config["hidden_size"]
        ids = [tok.encode(p).ids if isinstance(p, str) else list(p) for p in probes]
        h = mx.stack([model.model(mx.array(p)[None])[0, -1] for p in ids])
        direction = (h / mx.linalg.norm(h, axis=-1, keepdims=True)).mean(axis=0)
        direction = direction / mx.linalg.norm(direction)
        letters = mx.array([tok.token_to_id(c) for c in "ABC"])
        noise = letter_noise * mx.random.normal((3, hidden)) / hidden
        if letter_mass is not None:
            logits = model.lm_head(h).at[:, letters].add(h @ noise.T)
            letter_gain = _letter_scale(logits, (h @ direction)[:, None], letters, letter_mass, temperature)
        rows = letter_gain * direction + noise
        model.lm_head.weight = model.lm_head.weight.at[letters].add(rows)
        model.set_dtype(getattr(mx, dtype))
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": config["eos_token_id"]}))
    return Path(out)


def build_tiny_model(out: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write the tiny test llama (float32, byte-level tokenizer, dimensions multiples of 64)."""
    return build_random_model(
        out,
        {
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
        },
        seed=seed,
        sharpness=8.0,
    )
