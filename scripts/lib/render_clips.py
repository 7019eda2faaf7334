"""Renders planned clips in the MMSA raw layout (shared by scripts/make-ood, make-zh-corpus
and make-zh-test): each clip is one espeak-ng utterance (voice, words per minute, pitch
0-99) with 0.3 s of silence around it, 16 kHz mono, over the talking-face frames from
scripts/lib/faces.sh, as OUT/Raw/<video_id>/<clip_id>.mp4 (H.264 + AAC). Existing clips
are kept, so an interrupted run resumes.

Usage: python3 scripts/lib/render_clips.py PLAN.json OUT WORK JOBS
PLAN.json: a list of {"video_id", "clip_id", "text", "voice", "rate", "pitch", "face"}.
"""
import json, os, subprocess, sys, wave
from concurrent.futures import ThreadPoolExecutor

plan_path, out, work, jobs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
plan = json.load(open(plan_path, encoding="utf-8"))


def render(p):
    d = os.path.join(out, "Raw", p["video_id"])
    dest = os.path.join(d, p["clip_id"] + ".mp4")
    if os.path.exists(dest):
        return
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(out, f".tmp_{p['video_id']}_{p['clip_id']}")
    # The text goes in on stdin: one starting with "-" would be read as an option.
    subprocess.run(["espeak-ng", "-v", p["voice"], "-s", str(p["rate"]), "-p", str(p["pitch"]),
                    "-w", tmp + "_raw.wav", "--stdin"], input=p["text"].encode("utf-8"), check=True)
    subprocess.run(["sox", "-q", "-V1", tmp + "_raw.wav", "-r", "16000", "-c", "1", tmp + ".wav",
                    "pad", "0.3", "0.3"], check=True)
    with wave.open(tmp + ".wav") as w:
        secs = w.getnframes() / w.getframerate()
    first = p["face"]
    subprocess.run(["gst-launch-1.0", "-q", "multifilesrc", f"location={work}/faces/l%05d.png", f"index={first}",
                    f"stop-index={first + int(secs * 15) + 1}", "caps=image/png,framerate=15/1", "!", "pngdec", "!",
                    "videoconvert", "!", "video/x-raw,format=I420", "!", "x264enc", "speed-preset=ultrafast",
                    "bitrate=150", "!", "h264parse", "!", "queue", "!", "m.", "filesrc", f"location={tmp}.wav", "!",
                    "wavparse", "!", "audioconvert", "!", "avenc_aac", "bitrate=32000", "!", "aacparse", "!", "queue",
                    "!", "mp4mux", "name=m", "!", "filesink", f"location={dest}.partial"], check=True)
    os.rename(dest + ".partial", dest)
    for f in (tmp + "_raw.wav", tmp + ".wav"):
        os.remove(f)


done = 0
with ThreadPoolExecutor(jobs) as ex:
    for _ in ex.map(render, plan):
        done += 1
        if done % 200 == 0:
            print(f"  {done}/{len(plan)} clips", flush=True)
print(f"{len(plan)} clips in {out}")
