"""A tiny random-weight llama instruction model with a real tokenizer and chat template.

Used by the ``.test`` workflow and the tests, offline. Its LM head favours the letter tokens
A/B/C so that most first tokens are letters (and a minority needs continued decoding), and
its dimensions are multiples of 64 so every mlx_lm quantization applies.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": None, "model_max_length": 2048, "add_bos_token": False,
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2))
    return len(vocab)


def build_tiny_model(out: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2,
                     letter_gain: float = 0.5, letter_noise: float = 6.0, sharpness: float = 8.0) -> Path:
    """Write a tiny llama checkpoint (float32 safetensors, HF names) to ``out``; return it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vocab_size = _tokenizer(tmp)
    config = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size, "max_position_embeddings": 2048, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "eos_token_id": 2, "torch_dtype": "float32",
    }
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    for layer in model.model.layers:  # sharper attention: the last position sees the item
        layer.self_attn.q_proj.weight = layer.self_attn.q_proj.weight * sharpness
        layer.self_attn.k_proj.weight = layer.self_attn.k_proj.weight * sharpness
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    # Point the letter rows of the head along the typical final hidden state (so letters win
    # most first tokens) plus a random part (so which letter wins depends on the item).
    probe = tok.encode("<|im_start|>user\nQuestion: who?\nA) x\nB) y\nC) z<|im_end|>\n"
                       "<|im_start|>assistant\n").ids
    h = model.model(mx.array(probe)[None])[0, -1]
    h = h / mx.linalg.norm(h)
    letters = mx.array([tok.token_to_id(c) for c in "ABC"])
    rows = letter_gain * h + letter_noise * mx.random.normal((3, hidden)) / hidden
    model.lm_head.weight = model.lm_head.weight.at[letters].add(rows)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(tmp / "model.safetensors"), weights)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
