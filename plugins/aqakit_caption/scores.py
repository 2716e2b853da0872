"""Caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Strings are lower-cased and whitespace-tokenised (re-joined with single spaces); pycocoevalcap's
PTBTokenizer is not used. Each sample has one reference. CIDEr's document frequencies come from the
references passed in, so it is a corpus-level score over the whole split.

METEOR runs ``meteor-1.5.jar`` in a JVM (about 10 s to start). One process is started per Python
process on first use, reused, and closed at exit; if ``java`` is missing or METEOR fails, the key
``meteor`` is omitted (one notice on stderr per process) and the other metrics are still returned.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading

from pycocoevalcap.meteor.meteor import Meteor

_lock = threading.Lock()
_meteor: _Meteor | None = None  # the live METEOR process wrapper (a forked child starts its own)
_meteor_disabled = False


def normalise(text: str) -> str:
    """Lower-case and collapse whitespace (also removes newlines, which METEOR's protocol forbids)."""
    return " ".join(text.lower().split())


def caption_scores(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """``bleu_1..bleu_4``, ``meteor`` (when Java works), ``rouge_l``, ``cider`` of one hypothesis per
    reference. Empty hypotheses score 0; an empty input gives all zeros."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    gts = {i: [normalise(r)] for i, r in enumerate(references)}
    res = {i: [normalise(h)] for i, h in enumerate(hypotheses)}
    if not gts:
        return {**{f"bleu_{n}": 0.0 for n in range(1, 5)}, "rouge_l": 0.0, "cider": 0.0}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    meteor = _meteor_score(gts, res)
    if meteor is not None:
        out["meteor"] = meteor
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    # CIDEr's idf needs at least one non-empty reference (pycocoevalcap raises otherwise)
    out["cider"] = float(Cider().compute_score(gts, res)[0]) if any(r[0] for r in gts.values()) else 0.0
    return out


def _meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float | None:
    """METEOR over the corpus, or None (with one notice per process) when it cannot run."""
    global _meteor_disabled
    # '|||' separates fields in METEOR's stdio protocol; pycocoevalcap strips it from hypotheses only
    gts = {i: [r.replace("|||", "") for r in refs] for i, refs in gts.items()}
    with _lock:
        if _meteor_disabled:
            return None
        try:
            return float(_meteor_instance().compute_score(gts, res)[0])
        except Exception as exc:  # JVM missing, failed to start, or died
            _close_meteor()
            _meteor_disabled = True
            print(f"aqakit: notice: METEOR is skipped in this process ({type(exc).__name__}: {exc}); "
                  "it needs a working Java ('java' on PATH)", file=sys.stderr)
            return None


def _meteor_instance() -> _Meteor:
    global _meteor
    if _meteor is not None and _meteor.owner == os.getpid():
        return _meteor
    _meteor = None  # one inherited through fork belongs to the parent; dropping it leaves its JVM alone
    if shutil.which("java") is None:
        raise RuntimeError("no 'java' on PATH")
    _meteor = _Meteor()
    return _meteor


def _close_meteor() -> None:
    global _meteor
    meteor, _meteor = _meteor, None
    if meteor is not None:
        meteor.close()


def close_meteor() -> None:
    """Stop this process's METEOR JVM now (it is restarted on the next use)."""
    with _lock:
        _close_meteor()


class _Meteor(Meteor):
    """pycocoevalcap's Meteor, stopped only by the process that started it, and without its lock
    (which a failed call leaves held, so the original ``__del__`` would deadlock)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        super().__init__()

    def close(self) -> None:
        proc = getattr(self, "meteor_p", None)
        if proc is None or os.getpid() != self.owner:
            return
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        proc.kill()
        proc.wait()
        self.meteor_p = None

    def __del__(self) -> None:
        self.close()


atexit.register(close_meteor)
