"""espeak-ng voices of the held-out renders, as (voice, words per minute, pitch 0-99).

The training corpus (scripts/make-corpus) uses piper joe, espeak en-us, en-us+m3, en-us+f3,
en+m5 and en-gb+f4; these two sets use none of them.
TEST: the out-of-domain test set (scripts/make-ood).
VALID: the conversational validation set (scripts/make-ood --valid, scripts/make-valid-calls);
en-us-nyc+f2 at pitch 60 is also the rep's voice of the test sales call (samples/sales.ogg).
"""
TEST = [("en-gb-x-rp+f2", 160, 62), ("en-029+m4", 150, 40), ("en-us-nyc+m6", 185, 50),
        ("en-gb-scotland+f5", 150, 72), ("en-gb-x-gbcwmd+m2", 170, 35), ("en-gb-x-gbclan+f1", 175, 56)]
VALID = [("en-gb-x-rp+m3", 165, 45), ("en-029+f4", 155, 66), ("en-us-nyc+f2", 175, 60),
         ("en-gb-scotland+m1", 160, 38), ("en-gb-x-gbcwmd+f3", 170, 70), ("en-gb-x-gbclan+m7", 180, 30)]
