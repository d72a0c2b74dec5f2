"""A small, varied English corpus for evaluating text-embedding models, generated (no download).

Everyday sentences across ten topics, built from sentence frames and word lists with a seeded
generator, so the same seed always writes the same file:

    python examples/data/make_sentences.py examples/data/sentences.jsonl --count 300

Each line is {"text": ...}. Lengths vary from a few words to two clauses, so evaluation
covers short queries and longer passages alike.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "who": ["my grandmother", "the chef", "a student", "our neighbour", "the baker"],
        "did": ["roasted", "simmered", "seasoned", "burned", "served", "sliced"],
        "what": [
            "the tomato soup",
            "a loaf of rye bread",
            "the garlic",
            "fresh pasta",
            "a lemon tart",
            "the onions",
        ],
        "where": [
            "in a cast-iron pan",
            "over a low flame",
            "for the whole family",
            "before the guests arrived",
            "without a recipe",
        ],
    },
    "travel": {
        "who": ["the backpackers", "a tired pilot", "my cousin", "the tour guide", "two friends"],
        "did": ["missed", "booked", "boarded", "cancelled", "photographed", "crossed"],
        "what": [
            "the night train",
            "a cheap flight",
            "the old bridge",
            "the ferry to the island",
            "a room with a view",
            "the mountain pass",
        ],
        "where": [
            "during the storm",
            "at dawn",
            "near the border",
            "after a long delay",
            "in the middle of July",
        ],
    },
    "science": {
        "who": [
            "the researchers",
            "a young chemist",
            "the lab assistant",
            "an astronomer",
            "the biology class",
        ],
        "did": ["measured", "observed", "published", "replicated", "questioned", "analysed"],
        "what": [
            "the reaction rate",
            "a distant comet",
            "the bacterial growth",
            "the results",
            "the magnetic field",
            "a new enzyme",
        ],
        "where": [
            "with a cheap microscope",
            "over three years",
            "in a cold room",
            "using open data",
            "despite the noise",
        ],
    },
    "sports": {
        "who": [
            "the goalkeeper",
            "our team",
            "the marathon runner",
            "a teenage swimmer",
            "the coach",
        ],
        "did": ["won", "lost", "trained for", "celebrated", "watched", "dominated"],
        "what": [
            "the final match",
            "the relay race",
            "the championship",
            "a penalty shootout",
            "the qualifying round",
            "the derby",
        ],
        "where": [
            "in heavy rain",
            "in front of a full stadium",
            "after extra time",
            "for the first time",
            "with an injured knee",
        ],
    },
    "weather": {
        "who": [
            "the forecast",
            "the farmers",
            "the city council",
            "a local radio host",
            "the fishermen",
        ],
        "did": ["predicted", "feared", "warned about", "ignored", "prepared for", "described"],
        "what": [
            "a heat wave",
            "freezing fog",
            "the first snow",
            "a violent thunderstorm",
            "weeks of drought",
            "strong coastal winds",
        ],
        "where": [
            "along the coast",
            "for the weekend",
            "in the northern valleys",
            "late in the evening",
            "across the region",
        ],
    },
    "finance": {
        "who": [
            "the bank",
            "a small business owner",
            "the investors",
            "my accountant",
            "the central bank",
        ],
        "did": ["raised", "reviewed", "cut", "questioned", "approved", "delayed"],
        "what": [
            "interest rates",
            "the quarterly budget",
            "the loan application",
            "a risky investment",
            "the annual report",
            "the tax return",
        ],
        "where": [
            "without warning",
            "at the end of the year",
            "after a long meeting",
            "to everyone's surprise",
            "for the second time",
        ],
    },
    "health": {
        "who": ["the doctor", "a nurse", "my father", "the patient", "the pharmacist"],
        "did": ["recommended", "prescribed", "checked", "explained", "postponed", "scheduled"],
        "what": [
            "a short walk every day",
            "the blood test",
            "more sleep",
            "the vaccine",
            "a lighter diet",
            "the knee surgery",
        ],
        "where": [
            "at the clinic",
            "over the phone",
            "after the holidays",
            "in plain words",
            "before winter",
        ],
    },
    "technology": {
        "who": [
            "the engineers",
            "my laptop",
            "a security researcher",
            "the startup",
            "the operations team",
        ],
        "did": ["updated", "crashed during", "patched", "released", "migrated", "tested"],
        "what": [
            "the operating system",
            "the database",
            "a new phone",
            "the web server",
            "the backup script",
            "the wireless router",
        ],
        "where": [
            "overnight",
            "on a Friday afternoon",
            "without downtime",
            "in the cloud",
            "after the outage",
        ],
    },
    "music": {
        "who": ["the orchestra", "a street musician", "my sister", "the jazz trio", "the choir"],
        "did": ["rehearsed", "recorded", "performed", "rewrote", "sang", "improvised"],
        "what": [
            "an old folk song",
            "the second movement",
            "a new album",
            "the opening number",
            "a lullaby",
            "the national anthem",
        ],
        "where": [
            "in an empty church",
            "for a small crowd",
            "late at night",
            "in one take",
            "on the radio",
        ],
    },
    "history": {
        "who": [
            "the historians",
            "a museum curator",
            "the archaeologists",
            "the old sailor",
            "our teacher",
        ],
        "did": ["uncovered", "restored", "described", "catalogued", "studied", "translated"],
        "what": [
            "a Roman coin",
            "the medieval map",
            "the ship's logbook",
            "a forgotten treaty",
            "the ruins of a fort",
            "letters from the war",
        ],
        "where": [
            "in a flooded cellar",
            "after decades of searching",
            "with great care",
            "in the national archive",
            "near the river",
        ],
    },
}

FRAMES = [
    "{Who} {did} {what} {where}.",
    "{Who} {did} {what}.",
    "Yesterday {who} {did} {what} {where}.",
    "Why {do_word} {who} always talk about {what}?",
    "{What} was {did} by {who} {where}.",
    "I heard that {who} {did} {what}, but nobody believed it.",
    "{Who} {did} {what} {where}, and then everyone went home.",
    "Is it true that {who} {did} {what}?",
    "Nobody expected that {who} would have {did} {what} {where}.",
    "{What}!",
]


def sentence(rng: random.Random) -> str:
    words = TOPICS[rng.choice(sorted(TOPICS))]
    values = {key: rng.choice(options) for key, options in words.items()}
    frame = rng.choice(FRAMES)
    text = frame.format(
        who=values["who"],
        Who=values["who"][0].upper() + values["who"][1:],
        did=values["did"],
        what=values["what"],
        What=values["what"][0].upper() + values["what"][1:],
        where=values["where"],
        do_word="does" if not values["who"].endswith("s") else "do",
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seen: set[str] = set()
    lines = []
    while len(lines) < args.count:
        text = sentence(rng)
        if text not in seen:
            seen.add(text)
            lines.append(json.dumps({"text": text}))
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
