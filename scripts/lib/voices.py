"""espeak-ng voices of the held-out renders, as (voice, words per minute, pitch 0-99).

The training corpus (scripts/make-corpus) uses piper joe, espeak en-us, en-us+m3, en-us+f3,
en+m5 and en-gb+f4; these two sets use none of them.
TEST: the out-of-domain test set (scripts/make-ood).
VALID: the conversational validation set (scripts/make-ood --valid, scripts/make-valid-calls);
en-us-nyc+f2 at pitch 60 is also the rep's voice of the test sales call (samples/sales.ogg).
CORPUS_*: `scripts/make-corpus --held-out`, one list per split, no voice (base + variant) in
two of them and none with an accent of TEST or VALID; each video draws its own base pitch
and rate on top.
"""
TEST = [("en-gb-x-rp+f2", 160, 62), ("en-029+m4", 150, 40), ("en-us-nyc+m6", 185, 50),
        ("en-gb-scotland+f5", 150, 72), ("en-gb-x-gbcwmd+m2", 170, 35), ("en-gb-x-gbclan+f1", 175, 56)]
VALID = [("en-gb-x-rp+m3", 165, 45), ("en-029+f4", 155, 66), ("en-us-nyc+f2", 175, 60),
         ("en-gb-scotland+m1", 160, 38), ("en-gb-x-gbcwmd+f3", 170, 70), ("en-gb-x-gbclan+m7", 180, 30)]

CORPUS_TRAIN = ["piper:joe", "espeak:en-us", "espeak:en-us+m3", "espeak:en-us+f3", "espeak:en+m5",
                "espeak:en-gb+f4", "espeak:en-us+m1", "espeak:en-gb+m2", "espeak:en+f1"]
# `make-corpus --held-out --many-voices`: each training video draws from these instead (the
# nine above plus espeak-ng's named variants on the three training accents; no variant of
# CORPUS_VALID or CORPUS_TEST, none without pitch such as whisper, none robotic).
_NAMED = ["adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
          "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo",
          "iven", "Jacky", "john", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel",
          "miguel", "Mike", "Mr", "Nguyen", "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph",
          "Storm", "Tweaky", "zac", "anika", "AnxiousAndy", "grandpa", "grandma", "norbert", "sandro",
          "shelby", "travis", "victor", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "m8"]
CORPUS_TRAIN_MANY = CORPUS_TRAIN + [f"espeak:{('en-us', 'en-gb', 'en')[i % 3]}+{v}" for i, v in enumerate(_NAMED)]
CORPUS_VALID = ["espeak:en-us+m6", "espeak:en-gb+f2", "espeak:en+m4"]
CORPUS_TEST = ["espeak:en-us+m7", "espeak:en-gb+f5", "espeak:en-us+klatt"]
