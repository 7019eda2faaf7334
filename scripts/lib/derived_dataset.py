"""A dataset derived from MMSA-layout ones by rewriting label.csv (scripts/voice-holdout,
scripts/make-opinions, scripts/two-voice-corpus): the media (Raw/) and the feature cache
are symlinked, not copied."""
import os


def link(src, dst):
    """A relative symlink dst -> src (parents created), unless dst exists."""
    if not os.path.lexists(dst):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        os.symlink(os.path.relpath(os.path.abspath(src), os.path.dirname(os.path.abspath(dst))), dst)


def link_media(src, out):
    """Creates `out` and links src's Raw/ and .sentistream-cache into it."""
    os.makedirs(out, exist_ok=True)
    for name in ("Raw", ".sentistream-cache"):
        if os.path.exists(os.path.join(src, name)):
            link(os.path.join(src, name), os.path.join(out, name))


def link_video(src, out, video, new_video):
    """Links one video of src into out as `new_video`: its clips and every cached feature
    folder of it."""
    link(os.path.join(src, "Raw", video), os.path.join(out, "Raw", new_video))
    cache = os.path.join(src, ".sentistream-cache")
    for kind in os.listdir(cache) if os.path.isdir(cache) else []:
        if os.path.isdir(os.path.join(cache, kind, video)):
            link(os.path.join(cache, kind, video), os.path.join(out, ".sentistream-cache", kind, new_video))
