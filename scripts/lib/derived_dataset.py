"""A dataset derived from an MMSA-layout one by rewriting label.csv (scripts/voice-holdout,
scripts/make-opinions): the media (Raw/) and the feature cache are symlinked, not copied."""
import os


def link_media(src, out):
    """Creates `out` and links src's Raw/ and .sentistream-cache into it (relative links)."""
    os.makedirs(out, exist_ok=True)
    for name in ("Raw", ".sentistream-cache"):
        target = os.path.relpath(os.path.abspath(os.path.join(src, name)), os.path.abspath(out))
        link = os.path.join(out, name)
        if os.path.exists(os.path.join(src, name)) and not os.path.lexists(link):
            os.symlink(target, link)
