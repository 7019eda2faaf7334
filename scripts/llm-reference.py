#!/usr/bin/env python3
"""Independent reference for the LLM forward (tests/llm.rs): NumPy Llama over the GGUF.

Unlike src/models/llm.rs it un-permutes the q/k weights (undoing llama.cpp's conversion
permute) and applies the Hugging Face "rotate half" RoPE, dequantises with the `gguf`
package, and computes attention with repeated key/value heads. It prints a JSON fixture:
the token ids, their decoded text, and the last position's logits for a few tokens.

Usage: python3 scripts/llm-reference.py MODEL.gguf ID [ID ...] > tests/fixtures/llm_reference.json
Needs: pip install gguf numpy
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main():
    path, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
    r = GGUFReader(path)
    f = {k: v for k, v in r.fields.items()}

    def meta(k):
        fld = f[k]
        return fld.parts[fld.data[0]][0]

    n_layer = int(meta("llama.block_count"))
    n_head = int(meta("llama.attention.head_count"))
    n_kv = int(meta("llama.attention.head_count_kv"))
    base = float(meta("llama.rope.freq_base"))
    eps = float(meta("llama.attention.layer_norm_rms_epsilon"))
    tok_field = f["tokenizer.ggml.tokens"]
    vocab = [bytes(tok_field.parts[i]).decode("utf-8") for i in tok_field.data]
    T = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]
        T[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)

    def unpermute(w, heads):
        # llama.cpp: w.reshape(h, 2, d/h/2, in).swapaxes(1, 2).reshape(w.shape); undo it.
        out, inp = w.shape
        return w.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)

    emb = T["token_embd.weight"]
    x = emb[ids]
    n = len(ids)
    c = x.shape[1]
    hd = c // n_head
    inv = base ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], 1)
    sin = np.concatenate([np.sin(ang), np.sin(ang)], 1)

    def rot_half(v):
        h = v.shape[-1] // 2
        return np.concatenate([-v[..., h:], v[..., :h]], -1)

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, T[p + "attn_norm.weight"])
        q = h @ unpermute(T[p + "attn_q.weight"], n_head).T
        k = h @ unpermute(T[p + "attn_k.weight"], n_kv).T
        v = h @ T[p + "attn_v.weight"].T
        q = q.reshape(n, n_head, hd).transpose(1, 0, 2)
        k = k.reshape(n, n_kv, hd).transpose(1, 0, 2)
        v = v.reshape(n, n_kv, hd).transpose(1, 0, 2)
        q = q * cos + rot_half(q) * sin
        k = k * cos + rot_half(k) * sin
        rep = n_head // n_kv
        k = np.repeat(k, rep, 0)
        v = np.repeat(v, rep, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, c)
        x = x + o @ T[p + "attn_output.weight"].T
        h = rms(x, T[p + "ffn_norm.weight"])
        g = h @ T[p + "ffn_gate.weight"].T
        u = h @ T[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ T[p + "ffn_down.weight"].T
    x = rms(x, T["output_norm.weight"])
    logits = x[-1] @ emb.T
    top = np.argsort(-logits)[:10]
    probe = sorted(set(top.tolist()) | {0, 1, 2, 100, 1000, 20000})
    byte_dec = {ch: b for b, ch in _bytes_to_unicode().items()}
    text = bytes(byte_dec.get(ch, 0) for tok in (vocab[i] for i in ids) for ch in tok).decode("utf-8", "replace")
    json.dump({
        "model": path.split("/")[-1],
        "ids": ids,
        "text": text,
        "top10": top.tolist(),
        "logits": {str(i): float(logits[i]) for i in probe},
        "hidden_last_norm": float(np.linalg.norm(x[-1])),
    }, sys.stdout, indent=1)
    print()


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


if __name__ == "__main__":
    main()
