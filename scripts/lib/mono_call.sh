# Renders a scripted mono call: WORK/turns.txt (`speaker|pause before the turn, s|grade|text`)
# becomes samples/NAME.ogg (Opus in Ogg) and samples/NAME.json (turns with boundaries and
# grades, scripts/lib/mono_turns.py). Each turn is spoken by espeak-ng with the voice the
# caller's `voice_of SPEAKER` prints as "VOICE RATE PITCH".
# Usage (from the repository root): . scripts/lib/mono_call.sh; render_mono_call WORK NAME
render_mono_call() {
  local work="$1" name="$2" i=0 who pause grade text voice rate pitch
  while IFS='|' read -r who pause grade text; do
    read -r voice rate pitch <<< "$(voice_of "$who")"
    espeak-ng -v "$voice" -s "$rate" -p "$pitch" -w "$work/t$i.wav" "$text"
    i=$((i + 1))
  done < "$work/turns.txt"
  python3 -W ignore::DeprecationWarning scripts/lib/mono_turns.py "$work" "$name"
  gst-launch-1.0 -q filesrc location="$work/speech.wav" ! wavparse ! audioconvert ! audioresample \
    ! opusenc bitrate=32000 ! oggmux ! filesink location="samples/$name.ogg"
  cp "$work/$name.json" "samples/$name.json"
  ls -l "samples/$name.ogg" "samples/$name.json"
}
