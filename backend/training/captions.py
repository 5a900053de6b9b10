"""Captions of the "blocks" clips: a small grammar naming the colour, subject, motion, place and camera motion, with
a closed vocabulary. No bpy.
"""

from .clip_spec import ClipSpec

MAX_CAPTION_CHARS = 69

# Every word a caption can contain. Captions are lower case, words separated by single spaces, no punctuation, so
# `caption.split()` tokenises them and every token is in this tuple.
CAPTION_VOCABULARY: tuple[str, ...] = (
    "a", "an", "the", "in", "on", "at", "under", "as",
    "ball", "cube", "figure", "car",
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "grey",
    "grass", "grassy", "field", "sky", "snow", "snowy", "ground", "desert", "sand", "dark", "night",
    "water", "blockout", "room", "scene",
    "rolling", "sliding", "running", "driving", "flying", "jumping", "arcing", "zigzagging", "bouncing", "hopping",
    "walking", "moving", "resting", "standing", "still", "parked",
    "left", "right", "closer", "away", "arc",
    "camera", "pans", "tilts", "zooms", "up", "down", "out",
)  # fmt: skip

_NOUN = {"ball": "ball", "cube": "cube", "figure": "figure", "car": "car"}
_TRAVEL_VERB = {"ball": "rolling", "cube": "sliding", "figure": "running", "car": "driving"}
_DEPTH_VERB = {"ball": "rolling", "cube": "sliding", "figure": "walking", "car": "driving"}
_STILL_PHRASE = {"ball": "resting", "cube": "resting", "figure": "standing still", "car": "parked"}
_ARC_VERB = {"ball": "flying", "cube": "jumping", "figure": "jumping", "car": "jumping"}
# Preferred place phrases first (the clip's seed picks one of them); shorter fallbacks last for long captions.
_PLACES = {
    "grass": (("on grass under a blue sky", "in a grassy field", "on the grass"), ("on grass",)),
    "snow": (("in the snow", "on snowy ground"), ("in snow",)),
    "desert": (("in the desert", "on desert sand"), ("in a desert",)),
    "night": (("on a dark field at night", "at night"), ()),
    "water": (("on the water", "on blue water"), ("on water",)),
    "blockout": (("in a grey blockout room", "in a blockout room", "in a blockout scene"), ("in blockout",)),
}
_CAMERA_PHRASES = {
    "pan_left": "pans left",
    "pan_right": "pans right",
    "tilt_up": "tilts up",
    "tilt_down": "tilts down",
    "zoom_in": "zooms in",
    "zoom_out": "zooms out",
}


def _motion_phrases(spec: ClipSpec) -> list[str]:
    """Ways to say the subject's motion, most descriptive first."""
    side = "right" if spec.direction > 0 else "left"
    subject, motion = spec.subject, spec.motion
    if motion == "line":
        return [f"{_TRAVEL_VERB[subject]} {side}"]
    if motion == "arc":
        return [f"{_ARC_VERB[subject]} {side} in an arc", f"arcing {side}"]
    if motion == "zigzag":
        return [f"zigzagging {side}"]
    if motion == "bounce":
        return [f"{'hopping' if subject == 'figure' else 'bouncing'} {side}"]
    if motion == "walk":
        return [f"{'walking' if subject == 'figure' else 'moving'} {side}"]
    if motion == "depth":
        towards = "closer" if spec.direction > 0 else "away"
        return [f"{_DEPTH_VERB[subject]} {towards}", f"moving {towards}"]
    return [_STILL_PHRASE[subject]]


def _place_phrases(spec: ClipSpec) -> tuple[list[str], list[str]]:
    """Place phrases: the preferred ones (starting with the one the clip's seed picks), then short fallbacks."""
    preferred, fallbacks = _PLACES[spec.background]
    first = spec.seed % len(preferred)
    return [*preferred[first:], *preferred[:first]], list(fallbacks)


def caption_for(spec: ClipSpec) -> str:
    """A short caption (under 70 characters) naming the colour, subject, motion, place and camera motion.

    When the natural caption is too long, shorter wordings are tried in turn: another place phrase, then "as camera"
    for "as the camera", then a short fallback place, then a shorter motion phrase.
    """
    article = "an" if spec.colour[0] in "aeiou" else "a"
    subject = f"{article} {spec.colour} {_NOUN[spec.subject]}"
    cameras = [""]
    if spec.camera != "static":
        phrase = _CAMERA_PHRASES[spec.camera]
        cameras = [f" as the camera {phrase}", f" as camera {phrase}"]
    candidates = [
        f"{subject} {motion} {place}{camera}"
        for motion in _motion_phrases(spec)
        for places in _place_phrases(spec)
        for camera in cameras
        for place in places
    ]
    return next((c for c in candidates if len(c) <= MAX_CAPTION_CHARS), candidates[-1])


def caption_words() -> list[str]:
    """The caption vocabulary, sorted."""
    return sorted(CAPTION_VOCABULARY)
