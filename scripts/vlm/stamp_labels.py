"""One-word answers for Tux Paint stamps, from their English captions.

How a stamp gets its answer (``one_word_label``):

1. The caption is the first line of the stamp's ``.txt`` file (English); a ``*_mirror.png`` stamp has no
   text of its own and takes its original's caption.
2. ``OVERRIDES`` (keyed by the stamp's path without ``.png``) wins outright: a word, or ``None`` for a
   stamp whose caption names no object a one-word answer could give (sentences, symbols, letters).
3. Otherwise the head noun of the caption's first noun phrase: lower-cased, cut at the first
   punctuation or relative word ("with", "from", "that", ...), leading determiners and size words
   dropped, ``"a pair of X"``-style quantities reduced to ``X``, ``"X of Y"`` reduced to ``X``, and the
   last remaining word taken (English noun phrases are head-final: "a great blue heron" -> heron).
4. ``MERGE`` maps a word onto its class (bunny -> rabbit, headstone -> gravestone), so the stamps of one
   kind of object share one answer.

Evaluation accepts the class word, its plural, and the words ``SYNONYMS`` lists for it.
Every alphabet stamp (letters and the ASL hand-signs) and currency sign has no answer: they train the
vision tower only.
"""

from __future__ import annotations

import re

_DETERMINERS = {"a", "an", "the", "some", "two", "another", "our", "big", "very", "little", "small", "large",
                "huge", "colorful", "happy"}
_QUANTITIES = {"pair", "bunch", "cluster", "head", "string", "quarter", "couple", "piece", "slice"}
_CUT = re.compile(r"[.!?(—–,:;]| - | with | from | that | which | inside | making | playing | dancing | at | for "
                  r"| in | lets | means | is | are | carries | called ")

#: stamp path (under ``stamps/``, no ``.png``) -> answer, or None for "not a one-word object"
OVERRIDES: dict[str, str | None] = {
    "animals/birds/cartoon/penguin_with_spider": "penguin",
    "animals/birds/cartoon/pengwin": "penguin",
    "animals/birds/cartoon/tux": "penguin",
    "animals/birds/guineafowl": "guineafowl",
    "animals/birds/helmeted_guineafowl": "guineafowl",
    "animals/birds/silver-gull": "seagull",
    "animals/fish/bluegroper": "fish",
    "animals/fish/stripedfish": "fish",
    "animals/fish/coraltrout": "fish",
    "animals/fish/moonwrasse": "fish",
    "animals/insects/cartoon/spider_computer": "spider",
    "animals/insects/cartoon/spider_fly": "spider",
    "animals/insects/cartoon/spider_football": "spider",
    "animals/insects/hoverfly": "hoverfly",
    "animals/mammals/aquatic/sea_lion": "seal",
    "animals/mammals/bears/cartoon/teddy_bear": "teddy",
    "animals/mammals/bears/toys/edward_bear": "teddy",
    "animals/mammals/bovines/gnu-baby-stand": "gnu",
    "animals/mammals/bovines/gnu-baby": "gnu",
    "animals/mammals/bovines/mountaingoat": "goat",
    "animals/mammals/wildboar": "boar",
    "clothes/armor/cartoon/knight_helmet": "helmet",
    "clothes/t_pants": "pants",
    "food/fruit/avocado": "avocado",
    "food/fruit/cherimoya": "cherimoya",
    "food/fruit/cartoon/apple_core": "apple",
    "food/fruit/cartoon/lemon_slice": "lemon",
    "food/fruit/sliced_lime": "lime",
    "food/fruit/cartoon/blueberry": "blueberry",
    "food/nuts/walnut_shelled": "walnut",
    "food/pizza": "pizza",
    "food/spices/ginger": "ginger",
    "food/vegetables/broccoli": "broccoli",
    "food/vegetables/garlic": "garlic",
    "food/vegetables/garlics": "garlic",
    "food/vegetables/tomato": "tomato",
    "food/vegetables/pumpkin_small": "pumpkin",
    "hobbies/music/percussion/drumkit": "drums",
    "household/arttools/highlighter": "pen",
    "household/arttools/pen_dryerase": "pen",
    "household/cylinder": "cylinder",
    "household/dishes/cartoon/pasta_pot": "pot",
    "household/dishes/utensils/pepper_grinder": "grinder",
    "household/toilet": "toilet",
    "household/tools/cementmixer": "mixer",
    "household/tools/measuring_tape": "tape",
    "household/tools/measuring_tape_mirror": "tape",
    "household/wheelie_bin": "bin",
    "household/rubberduck": "duck",
    "medical/stethoscope": "stethoscope",
    "military/ammunition/old_naval_shell": None,
    "military/final-roll-call": None,
    "military/vehicles/bradley": "tank",
    "military/vehicles/bradley_mirror": "tank",
    "military/vehicles/infantry-stryker": "tank",
    "military/vehicles/ww2_german_gun": "cannon",
    "military/vehicles/f22_raptor": "airplane",
    "naturalforces/explosion": "explosion",
    "naturalforces/fire": "fire",
    "naturalforces/lightningbolt": "lightning",
    "people/toys/grannysmith": "doll",
    "plants/eggplant": "eggplant",
    "plants/flowers/adeenia": "flower",
    "plants/flowers/anthoorium": "flower",
    "plants/flowers/appooppanthady": "flower",
    "plants/flowers/bolsom": "flower",
    "plants/flowers/chemparathi": "hibiscus",
    "plants/flowers/flower10": "hibiscus",
    "plants/flowers/flower4": "flower",
    "plants/flowers/flower7": "flower",
    "plants/flowers/flower9": "flower",
    "plants/flowers/plastic/chuvanna_plastic_poo": "flower",
    "plants/flowers/pigface": "flower",
    "plants/flowers/red-gazania": "flower",
    "plants/flowers/whitestar-petunia": "petunia",
    "plants/flowers/yellow-flower": "flower",
    "plants/lavender": "lavender",
    "plants/lettuce_bolted": "lettuce",
    "plants/mushrooms/cep-1": "mushroom",
    "plants/mushrooms/cep-2": "mushroom",
    "plants/mushrooms/cep": "mushroom",
    "plants/thyme": "thyme",
    "plants/trees/birch": "tree",
    "plants/trees/holly_leaves": "holly",
    "plants/trees/holm_oak": "tree",
    "plants/trees/rambutan": "tree",
    "seasonal/christmas/Candy_cane_photo_1": "candy",
    "seasonal/christmas/Candy_cane_photo_2": "candy",
    "seasonal/christmas/candy_cane": "candy",
    "seasonal/christmas/hard_candy": "candy",
    "seasonal/christmas/Christmas_pudding": "pudding",
    "seasonal/christmas/German_Christmas_toy": "toy",
    "seasonal/christmas/Mince_Pie": "pie",
    "seasonal/christmas/Roast_turkey": "turkey",
    "seasonal/christmas/Santa": "santa",
    "seasonal/christmas/santahat": "hat",
    "seasonal/christmas/lamp": "light",
    "seasonal/christmas/xmas_tp_bulb": "ornament",
    "seasonal/easter/bunny-egg": "rabbit",
    "seasonal/easter/chick-hatched": "chick",
    "seasonal/easter/chick-in-egg": "chick",
    "seasonal/easter/wrapped_chocolate_easter_egg": "egg",
    "seasonal/easter/wrapped_chocolate_easter_egg_2": "egg",
    "seasonal/halloween/grave-f": "gravestone",
    "seasonal/halloween/jackolantern_mean": "pumpkin",
    "seasonal/hanukkah/dreydl-gimmel": "dreidel",
    "seasonal/hanukkah/dreydl-gimmel_mirror": "dreidel",
    "seasonal/hanukkah/dreydl-hay": "dreidel",
    "seasonal/hanukkah/dreydl-hay_mirror": "dreidel",
    "seasonal/hanukkah/dreydl-nun": "dreidel",
    "seasonal/hanukkah/dreydl-nun_mirror": "dreidel",
    "seasonal/hanukkah/dreydl-shin": "dreidel",
    "seasonal/hanukkah/dreydl-shin_mirror": "dreidel",
    "seasonal/hanukkah/menorah": "menorah",
    "space/apollo_lander": "spacecraft",
    "space/moon/moon_crescent": "moon",
    "space/spacewalk": "astronaut",
    "space/voyager2": "spacecraft",
    "space/planets/1_mercury": "planet",
    "space/planets/2_venus": "planet",
    "space/planets/3_earth": "planet",
    "space/planets/4_mars": "planet",
    "space/planets/5_jupiter": "planet",
    "space/planets/6_saturn": "planet",
    "space/planets/7_uranus": "planet",
    "space/planets/8_neptune": "planet",
    "space/planets/9_pluto": "planet",
    "sports/australian_rules_football": "football",
    "sports/cartoon/football_helmet_front": "helmet",
    "sports/cartoon/football_helmet_side": "helmet",
    "sports/cricketball": "ball",
    "sports/soccer": "ball",
    "sports/tennis_ball": "ball",
    "sports/rugby_goal_posts": None,
    "sports/trophy_cup": "trophy",
    "symbols/clockface": "clock",
    "symbols/faces/excited": "face",
    "symbols/faces/happy": "face",
    "symbols/faces/mad": "face",
    "symbols/faces/sad": "face",
    "symbols/recycle": None,
    "symbols/math/operators/op3_divide": None,
    "symbols/math/operators/op5_notequals": None,
    "symbols/math/operators/op6_lessthan": None,
    "symbols/math/operators/op7_greaterthan": None,
    "symbols/math/operators/op8_lessthanequal": None,
    "symbols/math/operators/op9_greaterthanequal": None,
    "symbols/shapes/pawprint": "pawprint",
    "symbols/shapes/scream_balloon": None,
    "symbols/shapes/speech_balloon": None,
    "symbols/shapes/thought_balloon": None,
    "symbols/music/key_flat": None,
    "symbols/music/key_sharp": None,
    "symbols/music/rest_025": None,
    "town/cartoon/docks": "docks",
    "town/cartoon/ruins": "castle",
    "town/cartoon/watch_tower": "tower",
    "town/cartoon/wishing_well": "well",
    "town/flags/blue-and-yellowflag": "flag",
    "town/houses/cartoon/blacksmith": "house",
    "town/houses/cartoon/cave_entrance": "cave",
    "town/houses/cartoon/circus": "tent",
    "town/houses/cartoon/city": "city",
    "town/houses/cartoon/cityhouse": "house",
    "town/houses/cartoon/fairytale_castle": "castle",
    "town/houses/cartoon/hunter": "house",
    "town/houses/cartoon/tower_flag_red": "tower",
    "town/houses/cartoon/tower_round_flag": "tower",
    "town/houses/cartoon/townhall": "building",
    "town/houses/cartoon/university": "building",
    "town/houses/cartoon/warehouse": "building",
    "town/monuments/cartoon/eiffel_tower": "tower",
    "town/monuments/cartoon/magic_stones": "stones",
    "town/monuments/cartoon/sword_in_the_stone": "sword",
    "town/monuments/cartoon/totem": "totem",
    "town/monuments/inukshuk-outline": "inukshuk",
    "town/monuments/inukshuk-photo": "inukshuk",
    "town/roadsigns/dead_end_sign": "sign",
    "town/roadsigns/give_way_sign": "sign",
    "town/roadsigns/no_entry_sign": "sign",
    "town/roadsigns/no_uturn": "sign",
    "town/roadsigns/roundabout": "sign",
    "town/roadsigns/school_sign": "sign",
    "town/roadsigns/stop": "sign",
    "town/roadsigns/yield": "sign",
    "town/roadsigns/arrow": "sign",
    "town/roadsigns/crossroads": "sign",
    "town/roadsigns/hospital": "sign",
    "town/roadsigns/t-junction": "sign",
    "town/roadsigns/toilets": "sign",
    "town/roadsigns/railroad_crossing": "sign",
    "town/roadsigns/xing_ped": "sign",
    "town/roadsigns/xing_school": "sign",
    "town/roadsigns/xing_school_mirror": "sign",
    "town/roadsigns/stoplight_01_red": "stoplight",
    "town/roadsigns/stoplight_02_yellow": "stoplight",
    "town/roadsigns/stoplight_03_green": "stoplight",
    "town/uk_post_box": "mailbox",
    "vehicles/7spoke256": "wheel",
    "vehicles/auto/beetle": "car",
    "vehicles/auto/sedan": "car",
    "vehicles/emergency/sedan_police": "car",
    "vehicles/emergency/sedan_police_mirror": "car",
    "vehicles/construction/cartoon/cementMixer": "truck",
    "vehicles/construction/dumper": "truck",
    "vehicles/construction/dumper_mirror": "truck",
    "vehicles/farming/cartoon/tux_tractor": "tractor",
    "vehicles/flight/balloon360": "balloon",
    "vehicles/flight/cartoon/eddieCopter": "helicopter",
    "vehicles/flight/planes/cartoon/plane": "airplane",
    "vehicles/locomotive/cartoon/boxcar": "train",
    "vehicles/locomotive/cartoon/caboose": "train",
    "vehicles/locomotive/cartoon/carriage": "train",
    "vehicles/locomotive/cartoon/tanker": "train",
    "vehicles/locomotive/cartoon/tender": "train",
    "vehicles/locomotive/cartoon/tender_mirror": "train",
    "vehicles/locomotive/cartoon/toy_train": "train",
    "vehicles/locomotive/cartoon/trainSign": None,
    "vehicles/ship/cartoon/bathyscape": "submarine",
    "vehicles/ship/cartoon/tugboat": "boat",
    "vehicles/ship/cartoon/tugboat_mirror": "boat",
    "vehicles/ship/chineseJunk": "ship",
    "vehicles/ship/walnutBoat": "boat",
    "vehicles/wheel_tractor": "wheel",
}

#: word the caption rule gives -> the class it belongs to
MERGE: dict[str, str] = {
    "bunny": "rabbit", "headstone": "gravestone", "tombstone": "gravestone", "marker": "gravestone",
    "dromedary": "camel", "doe": "deer", "wapiti": "deer", "caribou": "deer", "drake": "duck", "gander": "goose",
    "peahen": "peacock", "gull": "seagull", "rhino": "rhinoceros", "blueberries": "blueberry",
    "cherries": "cherry", "kiwifruit": "kiwi", "mandarin": "orange",
    "sedan": "car", "locomotive": "train", "sailboat": "boat", "tugboat": "boat", "mailbox": "mailbox",
    "fedora": "hat", "sombrero": "hat", "cap": "hat", "tophat": "hat", "cep": "mushroom", "boars": "boar",
    "fireworks": "fireworks", "stones": "stones", "coins": "coin", "yen": "coin", "dollar": "coin",
    "flowers": "flower", "chimpanzee": "chimpanzee", "t": "shirt", "houses": "house", "stable": "stable",
    "piece": "coin", "hippopotamus": "hippo", "mountaingoat": "goat", "ram": "sheep", "lamb": "sheep",
}

#: class word -> other answers accepted as correct
SYNONYMS: dict[str, tuple[str, ...]] = {
    "rabbit": ("bunny", "hare"), "gravestone": ("tombstone", "headstone", "grave", "stone"),
    "seagull": ("gull", "bird"), "penguin": ("bird",), "coin": ("money", "penny", "cent", "yen"),
    "truck": ("lorry",), "car": ("automobile", "vehicle"), "airplane": ("plane", "aeroplane", "jet"),
    "train": ("locomotive", "railway"), "boat": ("ship",), "ship": ("boat",), "hat": ("cap",),
    "teddy": ("bear",), "sign": ("roadsign",), "stoplight": ("light", "traffic"), "face": ("smiley", "emoji"),
    "flower": ("blossom",), "mushroom": ("fungus",), "hippo": ("hippopotamus",), "seal": ("lion",),
    "planet": ("globe",), "spacecraft": ("satellite", "probe", "spaceship"), "tank": ("vehicle",),
    "chick": ("chicken",), "hen": ("chicken",), "rooster": ("chicken", "cock"), "candy": ("sweet", "sweets"),
    "drums": ("drum",), "pen": ("marker",), "bin": ("trashcan", "garbage"), "can": ("bin", "trashcan"),
    "pumpkin": ("lantern",), "building": ("house",), "house": ("home", "building"), "tower": ("castle",),
    "castle": ("tower", "fortress", "fort"), "deer": ("elk",), "sheep": ("lamb", "ram"),
    "orange": ("mandarin", "tangerine"), "cat": ("kitten",), "kiwi": ("kiwifruit",), "lightbulb": ("bulb", "light"),
}


def caption_head_noun(caption: str) -> str:
    """The rule of step 3 above: the head noun of the caption's first noun phrase ('' if none)."""
    c = caption.lower().replace("\u2019", "'").replace("\u201c", "").replace("\u201d", "").replace('"', "")
    c = _CUT.split(" " + c + " ", maxsplit=1)[0].strip()
    words = c.split()
    while words and words[0] in _DETERMINERS:
        words = words[1:]
    if "of" in words:
        k = words.index("of")
        words = words[k + 1:] if k > 0 and words[k - 1] in _QUANTITIES else words[:k]
    while words and words[0] in _DETERMINERS:
        words = words[1:]
    return words[-1].strip("'") if words else ""


def one_word_label(stamp: str, caption: str) -> str | None:
    """The one-word answer for the stamp at ``stamp`` (path under ``stamps/`` without ``.png``), or
    None when it has none (see the module docstring for the rule)."""
    if stamp.startswith(("symbols/alphabets/", "symbols/money/00_symbols/")):
        return None
    if stamp in OVERRIDES:
        return OVERRIDES[stamp]
    word = caption_head_noun(caption)
    if not word or not word.isalpha():
        return None
    return MERGE.get(word, word)


def accepted_answers(label: str) -> set[str]:
    """Answers that count as correct for ``label``: itself, simple plurals and its synonyms."""
    out = {label, label + "s", label + "es"}
    for s in SYNONYMS.get(label, ()):
        out |= {s, s + "s"}
    return out


def normalise_answer(text: str) -> str:
    """A generated answer reduced to its first word after any article, lower-cased, no punctuation."""
    words = [w.lower().strip("'") for w in re.findall(r"[a-zA-Z][a-zA-Z'-]*", text)]
    words = [w for w in words if w not in ("a", "an", "the")]
    return words[0] if words else ""
