#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2, computed once by an independent
NumPy implementation of BERT (not the Rust/tch one under test), for tests/text_encoder.rs.

Needs: pip install numpy safetensors tokenizers; the installed models/all-MiniLM-L6-v2.
Run:   python3 scripts/minilm-reference.py > tests/fixtures/minilm_reference.json
"""
import json, math, os, sys
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

root = os.path.join(os.path.dirname(__file__), "..", "models", "all-MiniLM-L6-v2")
W = load_file(os.path.join(root, "model.safetensors"))
tok = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
tok.no_padding()

SENTENCES = [
    "I really love how this project turned out.",
    "The delivery was late and the support was terrible.",
    "The meeting is on Tuesday.",
]

def ln(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b

def lin(x, name):
    return x @ W[name + ".weight"].T + W[name + ".bias"]

def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))

def embed(text):
    ids = np.array(tok.encode(text).ids)
    n = len(ids)
    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:n] \
        + W["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
    heads, d = 12, 384 // 12
    for l in range(6):
        p = f"encoder.layer.{l}."
        q = lin(x, p + "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, 384)
        x = ln(lin(ctx, p + "attention.output.dense") + x, W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"])
        h = gelu(lin(x, p + "intermediate.dense"))
        x = ln(lin(h, p + "output.dense") + x, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])
    e = x.mean(0)
    return (e / np.linalg.norm(e)).tolist(), ids.tolist()

out = []
for s in SENTENCES:
    e, ids = embed(s)
    out.append({"text": s, "ids": ids, "embedding": [round(v, 7) for v in e]})
json.dump(out, sys.stdout)
