"""Joins espeak-ng turn recordings into one mono 16 kHz recording with its turn list.

Usage: mono_turns.py WORK NAME
Reads WORK/turns.txt (`speaker|pause before the turn, s|grade|text`, one turn per line)
and WORK/t<i>.wav (turn i as espeak-ng spoke it); writes WORK/speech.wav (pauses of
silence, each turn trimmed to its loud part) and WORK/NAME.json: duration, per turn
speaker, text, speech start and end (seconds), label (the grade, -3..3 by
samples/ood/RUBRIC.md).
"""
import audioop
import json
import os
import struct
import sys
import wave

work, name = sys.argv[1], sys.argv[2]
rate = 16000
turns = [l.split("|", 3) for l in open(os.path.join(work, "turns.txt")).read().strip().split("\n")]
out = bytearray()
meta = []
for i, (who, pause, grade, text) in enumerate(turns):
    out += b"\0\0" * int(float(pause) * rate)
    w = wave.open(os.path.join(work, f"t{i}.wav"))
    pcm, _ = audioop.ratecv(w.readframes(w.getnframes()), 2, 1, w.getframerate(), rate, None)
    n = len(pcm) // 2
    samples = struct.unpack(f"<{n}h", pcm)
    hop = rate // 100
    loud = [k for k in range(0, n - hop, hop) if max(abs(s) for s in samples[k:k + hop]) > 328]
    s0, s1 = loud[0], loud[-1] + hop
    t0 = len(out) / 2 / rate
    meta.append({"speaker": who, "text": text, "start": round(t0, 3), "end": round(t0 + (s1 - s0) / rate, 3),
                 "label": int(grade)})
    out += pcm[2 * s0:2 * s1]
out += b"\0\0" * int(1.0 * rate)
with wave.open(os.path.join(work, "speech.wav"), "wb") as o:
    o.setnchannels(1)
    o.setsampwidth(2)
    o.setframerate(rate)
    o.writeframes(bytes(out))
dur = len(out) / 2 / rate
doc = {"duration": round(dur, 3), "turns": meta,
       "labels": "per-turn sentiment graded -3..3 by samples/ood/RUBRIC.md; never trained or selected on"}
json.dump(doc, open(os.path.join(work, f"{name}.json"), "w"), indent=1)
print(f"{name}: {dur:.1f} s, {len(meta)} turns")
