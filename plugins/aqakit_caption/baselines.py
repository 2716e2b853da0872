"""Two honest baselines for generated commentary, scored like the caption head's own output.

* **most frequent**: the training caption that occurs most often, given to every test sample. When every
  training caption is unique (MTL-AQA's commentary is), the tie is broken by consensus: the caption that
  shares the most words with the other training captions (mean unigram F1).
* **nearest by predicted code**: for each test sample, a training caption of a dive whose classes (e.g. the
  five dive-code fields) agree with the model's *predicted* classes in as many fields as possible; among
  those, the consensus caption of the group.

Both are cut to the head's ``max_len`` tokens, the length budget of the generated captions, and scored
against the same references (the first ``max_len`` tokens of each test caption).

    python -m aqakit_caption.baselines RUN_FOLDER [--examples N]

reads a finished run (``checkpoints/best.pt``, ``predictions/test.pt``, its dataset) and prints the model's
BLEU-4 / METEOR / ROUGE-L / CIDEr and how many distinct captions it said (1: collapsed) beside both
baselines, then example outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from aqakit_caption.scores import caption_scores

METRICS = ("bleu_4", "meteor", "rouge_l", "cider")


def _words(text: str) -> Counter[str]:
    return Counter(text.lower().split())


def _f1(a: Counter[str], b: Counter[str]) -> float:
    common = sum((a & b).values())
    if not common:
        return 0.0
    return 2 * common / (sum(a.values()) + sum(b.values()))


def consensus(captions: list[str]) -> str:
    """The most frequent caption; ties broken by the highest mean unigram F1 with the other captions,
    then by first occurrence."""
    if not captions:
        raise ValueError("consensus of no captions")
    counts = Counter(captions)
    top = max(counts.values())
    tied = list(dict.fromkeys(c for c in captions if counts[c] == top))
    if len(tied) == 1:
        return tied[0]
    bags = [_words(c) for c in captions]

    def agreement(candidate: str) -> float:
        own = _words(candidate)
        return sum(_f1(own, bag) for bag in bags) / len(bags)

    return max(tied, key=agreement)


def nearest_by_code(train_codes: list[tuple[Any, ...]], train_captions: list[str],
                    predicted: list[tuple[Any, ...]]) -> list[str]:
    """Per predicted code, the consensus caption of the training samples agreeing in the most fields."""
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for code, caption in zip(train_codes, train_captions):
        groups[code].append(caption)
    best_of = {code: consensus(caps) for code, caps in groups.items()}
    out = []
    for code in predicted:
        match = max(groups, key=lambda g: (sum(a == b for a, b in zip(g, code)), len(groups[g])))
        out.append(best_of[match])
    return out


def compare(run: str | Path, examples: int = 5) -> dict[str, Any]:
    """Model vs both baselines on a finished run's test split: ``{"rows": {name: metrics}, "examples": [...],
    "code_head": head id or None}``."""
    import torch

    from aqakit import plugins
    from aqakit.engine.data import build_dataset, resolve_splits, training_labels
    from aqakit.engine.loading import find_checkpoint, recipe_from_state
    from aqakit.errors import AqakitError
    from aqakit.media import checkpoint
    from aqakit_caption.tokenizer import CaptionTokenizer

    run = Path(run)
    state = checkpoint.load(find_checkpoint(run))
    recipe = recipe_from_state(state, plugins.current())
    heads = recipe.model.heads
    caption_id = next((h for h, c in heads.items() if c.name == "caption"), None)
    if caption_id is None:
        raise AqakitError(f"{run}: the run has no caption head")
    pred_path = run / "predictions" / "test.pt"
    if not pred_path.is_file():
        raise AqakitError(f"{pred_path}: missing; the run has no test predictions (finish it, or train with a test split)")
    predictions = torch.load(pred_path, weights_only=True)
    tok = CaptionTokenizer.from_state(state["head_state"][caption_id]["tokenizer"])
    max_len = predictions[caption_id]["generated"].shape[1]  # the head's max_len: generated rows are padded to it

    def cut(text: str) -> str:
        return tok.decode(tok.encode(text)[:max_len])

    dataset = build_dataset(recipe, plugins.registry())
    splits = resolve_splits(dataset, recipe.data.val_fraction, recipe.seed, recipe.data.train_size,
                            recipe.data.train_size_seed)
    train = [row for row in training_labels(dataset, splits) if row.get("caption")]
    order = [int(i) for i in predictions["index"]]
    references = [tok.decode(row) for row in predictions[caption_id]["reference"].tolist()]
    generated = [tok.decode(row) for row in predictions[caption_id]["generated"].tolist()]
    systems = {"model": generated,
               "most frequent training caption": [cut(consensus([r["caption"] for r in train]))] * len(order)}
    code_head = next((h for h in heads if _class_fields(predictions.get(h))), None)
    if code_head is not None:
        fields = _class_fields(predictions[code_head])
        names = state["head_state"].get(code_head, {}).get("class_names") or {}

        def index(field: str, value: Any) -> Any:
            return names[field].index(str(value)) if field in names and str(value) in names[field] else value

        train_codes = [tuple(index(f, row.get(f)) for f in fields) for row in train]
        predicted = list(zip(*(predictions[code_head][f"pred_{f}"].tolist() for f in fields)))
        systems[f"nearest training caption by predicted {code_head}"] = [
            cut(c) for c in nearest_by_code(train_codes, [r["caption"] for r in train], predicted)]
    rows = {name: {**caption_scores(references, hyps), "distinct": len(set(hyps))} for name, hyps in systems.items()}
    shown = [{"index": order[i], "reference": references[i], **{n: h[i] for n, h in systems.items()}}
             for i in range(min(examples, len(order)))]
    return {"rows": rows, "examples": shown, "code_head": code_head}


def _class_fields(collected: Any) -> list[str]:
    """Fields a head predicted classes for: integer ``pred_<field>`` with a ``target_<field>`` beside it."""
    if not isinstance(collected, dict):
        return []
    return [k[len("pred_"):] for k, v in collected.items() if k.startswith("pred_")
            and f"target_{k[len('pred_'):]}" in collected and not v.is_floating_point()]


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table of ``METRICS`` and the number of distinct outputs per system."""
    lines = ["| System | " + " | ".join(METRICS) + " | distinct outputs |", "|---|" + "---|" * (len(METRICS) + 1)]
    for name, metrics in rows.items():
        cells = [f"{metrics[m]:.3f}" if metrics.get(m) is not None else "n/a" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {metrics.get('distinct', 'n/a')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from aqakit.errors import AqakitError

    parser = argparse.ArgumentParser(prog="python -m aqakit_caption.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--examples", type=int, default=5, help="example outputs to print (default 5)")
    args = parser.parse_args(argv)
    try:
        result = compare(args.run, args.examples)
    except AqakitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result["rows"]))
    for row in result["examples"]:
        print(f"\n[test sample {row.pop('index')}]")
        for name, text in row.items():
            print(f"  {name}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
