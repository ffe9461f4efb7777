"""A tiny random-weight llama GGUF (about 0.5 MB) written at test time, so gpt4all can be tested
without downloading a model: 2 layers, 64-d, a SentencePiece-style vocabulary with byte fallback."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX = 64, 4, 128, 2, 8192
WORDS = ("▁", "▁the", "▁a", "▁is", "▁of", "▁and", "▁to", "▁in", "▁answer", "▁hello", "▁world")


def vocabulary(*, duplicate: bool = False) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
    pieces = list(WORDS) + [f"▁{c}" for c in "bcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    if duplicate:
        pieces.append("▁the")  # llama.cpp asserts on duplicate pieces and aborts the process
    for piece in pieces:
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, *, seed: int = 0, duplicate_token: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary(duplicate=duplicate_token)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    def ones(name: str) -> None:
        writer.add_tensor(name, np.ones(N_EMBD, dtype=np.float32))

    random("token_embd.weight", len(tokens), N_EMBD)
    ones("output_norm.weight")
    # Wide logits and a zero row for </s>: end-of-text is practically never sampled, so a
    # generation runs to max_tokens and tests can time it out.
    output = rng.standard_normal((len(tokens), N_EMBD)).astype(np.float32)
    output[2] = 0.0
    writer.add_tensor("output.weight", output)
    for i in range(N_LAYER):
        ones(f"blk.{i}.attn_norm.weight")
        for part in ("q", "k", "v", "output"):
            random(f"blk.{i}.attn_{part}.weight", N_EMBD, N_EMBD)
        ones(f"blk.{i}.ffn_norm.weight")
        random(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        random(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        random(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
