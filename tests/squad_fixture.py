"""A small synthetic SQuAD set and a WordPiece vocabulary that covers it, so
training tests need neither the network nor the real data."""

import json
import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PLACES = ["arda", "belor", "cirith", "dorwin", "eriador", "forlond", "gondor", "harad", "ithil", "lindon"]
THINGS = ["river", "tower", "forest", "bridge", "harbour", "market", "castle", "library"]
# The real SQuAD files beside the checkout (see its README); tests that read them skip without them.
SHARED_SQUAD = Path(__file__).resolve().parents[2] / "shared" / "squad"


def write_squad(folder: Path, articles: int = 6, with_negatives: bool = False) -> Path:
    """Writes `squad.json` (official format) and `vocab.txt` into `folder`; returns the JSON path."""
    rng = random.Random(0)
    data: list[dict] = []
    words: set[str] = set()
    for a in range(articles):
        paragraphs = []
        for p in range(3):
            facts = [(rng.choice(PLACES), thing, rng.choice(PLACES)) for thing in rng.sample(THINGS, 4)]
            sentences = [f"The {thing} of {owner} stands near {place}." for owner, thing, place in facts]
            context = " ".join(sentences)
            qas: list[dict] = []
            for q, (owner, thing, place) in enumerate(facts):
                start = context.index(sentences[q]) + sentences[q].rindex(place)
                qas.append(
                    {
                        "id": f"a{a}p{p}q{q}",
                        "question": f"Where does the {thing} of {owner} stand?",
                        "answers": [{"text": place, "answer_start": start}],
                    }
                )
            if with_negatives:
                qas.append(
                    {
                        "id": f"a{a}p{p}x",
                        "question": "Where does the moon of arda stand?",
                        "answers": [],
                        "is_impossible": True,
                        "plausible_answers": [],
                    }
                )
            paragraphs.append({"context": context, "qas": qas})
            words.update(context.lower().replace(".", " .").split())
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    words.update("where does the moon stand ?".split())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + sorted(words)) + "\n")
    path = folder / "squad.json"
    path.write_text(json.dumps({"version": "2.0" if with_negatives else "1.1", "data": data}))
    return path
