"""Paper-size C3D-AVG-MTL train step and evaluation: aqakit vs the authors' released code, one run.

Both sides run the network of ``recipes/diving_mtl.yaml`` (the release's C3D + fc6 + score + dive code +
S2VT caption), the caption head fitted on synthetic 70-word captions (5,779 ids, as the release's vocabulary).
The authors' step mirrors ``train_test_C3DAVG.py``: fp32, one clip at a time through the C3D, the S2VT
teacher-forced one token per call for all 99 steps (``S2VTModel.py``), summed losses, Adam. Their test phase:
the same clip loop under ``no_grad`` plus the S2VT's 99-step greedy decoding (``test_phase`` itself skips
captions; added so that both sides produce the same outputs). Ratios are measured in ONE run (absolute
times drift on shared machines). Usage:

    python benchmarks/bench_train_step.py [--batch 3] [--steps 2] [--width 1.0] [--frame-size 112]
        [--clips 6] [--skip-compile] [--skip-eval] [--reference]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from aqakit_caption import CaptionHead

from aqakit import plugins
from aqakit.engine import throughput
from aqakit.engine.model import AQAModel, build_model
from aqakit.engine.runtime import autocast, resolve_amp
from aqakit.engine.train import build_optimizer
from aqakit.interfaces import Representation
from aqakit.recipe import Recipe, load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "diving_mtl.yaml"
WORDS = [f"w{i}" for i in range(5776)]  # + <eos>, <sos>, <unk>: 5,779 ids (the release's opts.py vocab_size)
CAPTIONS = [" ".join(WORDS[i:i + 70]) for i in range(0, len(WORDS), 70)]
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
GOALS = {"train step": 2.5, "eval": 2.0}
CPU = torch.device("cpu")


def paper_recipe(width: float = 1.0, frame_size: int = 112, clips: int = 6) -> Recipe:
    """The paper recipe, its C3D and fc6 scaled by ``width`` and the input by ``frame_size`` / ``clips``."""
    return load_recipe(RECIPE, [f"model.backbone.width={width}", f"model.backbone.frame_size={frame_size}",
                                f"model.aggregator.proj_dim={round(4096 * width)}", f"model.clips.count={clips}"])


def paper_model(recipe: Recipe) -> AQAModel:
    torch.manual_seed(0)
    model = build_model(recipe, plugins.registry())
    model.fit_heads([{"caption": c} for c in CAPTIONS])
    return model


def make_batch(model: AQAModel, b: int, clips: int, size: int) -> dict:
    batch = {k: v for head in model.heads.values() for k, v in head.example_batch(b).items()}
    batch["caption"] = [CAPTIONS[i % (len(CAPTIONS) - 1)] for i in range(b)]  # the last one is short
    batch["video"] = torch.randint(0, 255, (b, 3, 16 * clips, size, size), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
    return batch


def release_features(model: AQAModel, batch: dict) -> Representation:
    """``train_test_C3DAVG.py``'s clip loop: each 16-frame clip through the CNN, then fc6 over their mean."""
    x = model.prepare(batch["video"])
    feats = torch.stack([model.backbone(x[:, :, i:i + 16]) for i in range(0, x.shape[2], 16)], dim=1)
    return model.aggregator(feats)


def release_word(head: CaptionHead, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``S2VTModel.py`` decoding call: ``rnn1`` reads a zero frame (its full input product computed),
    ``rnn2`` [``rnn1`` output, word embedding]; logits and the new state (aqakit skips the zero product)."""
    emb = head.embedding(tokens)
    out1, state1 = head.encoder(emb.new_zeros(*emb.shape[:2], head.encoder.input_size), state[: head.layers])
    out2, state2 = head.decoder(torch.cat([out1, emb], dim=-1), state[head.layers:])
    return head.out(out2), torch.cat([state1, state2])


def release_caption_nll(head: CaptionHead, rep: Representation, captions: list[str]) -> torch.Tensor:
    """``S2VTModel.py`` train mode + ``LanguageModelCriterion``: 99 one-token steps on captions padded to
    full length, log-softmax per step, masked NLL summed over tokens and averaged over the batch."""
    _, state = head._start(head(rep))
    inputs, targets, mask = head.teacher_forcing(captions)
    pad = head.max_len - inputs.shape[1]
    inputs, targets, mask = (torch.cat([t, t.new_zeros(t.shape[0], pad)], 1) for t in (inputs, targets, mask))
    log_probs = []
    for i in range(head.max_len):  # pad_id == 0 in word mode, as in the release
        logits, state = release_word(head, inputs[:, i:i + 1], state)
        log_probs.append(logits.log_softmax(-1))
    nll = -torch.cat(log_probs, 1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (nll * mask).sum() / len(captions)


def release_greedy(head: CaptionHead, rep: Representation) -> torch.Tensor:
    """``S2VTModel.py`` inference mode: 99 greedy steps, no early stop."""
    _, state = head._start(head(rep))
    tokens = torch.full((state.shape[1], 1), head.tokenizer.bos_id, dtype=torch.long)
    words = []
    for _ in range(head.max_len):
        logits, state = release_word(head, tokens, state)
        tokens = logits.log_softmax(-1).argmax(-1)
        words.append(tokens)
    return torch.cat(words, 1)


def authors_step(model: AQAModel, opt: torch.optim.Optimizer, batch: dict) -> None:
    model.train()
    rep = release_features(model, batch)
    heads = model.heads
    total = sum(model.weights[h] * heads[h].loss(heads[h](rep), batch) for h in heads if h != "caption")
    total = total + model.weights["caption"] * release_caption_nll(heads["caption"], rep, batch["caption"])
    opt.zero_grad()
    total.backward()
    opt.step()


def aqakit_step(model: AQAModel, opt: torch.optim.Optimizer, batch: dict, amp: torch.dtype | None) -> None:
    """As ``aqakit train``'s step: one forward of all clips, the heads' losses, backward, optimizer step."""
    model.train()
    with autocast(CPU, amp):
        total, _ = model.loss(model(batch), batch)
    total.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@torch.no_grad()
def authors_eval(model: AQAModel, batch: dict) -> None:
    model.eval()
    rep = release_features(model, batch)
    outputs = {h: head(rep) for h, head in model.heads.items() if h != "caption"}
    outputs["caption"] = release_greedy(model.heads["caption"], rep)


@torch.inference_mode()
def aqakit_eval(model: AQAModel, batch: dict, amp: torch.dtype | None = None) -> None:
    """As ``aqakit evaluate``: one forward, then each head's predictions (the caption generated greedily)."""
    model.eval()
    with autocast(CPU, amp):
        out = model(batch)
    for h, head in model.heads.items():
        head.collect(out[h], batch)


def timed(fn: Callable[[], None], steps: int) -> float:
    fn()  # warm-up (and compilation)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def convolution_seconds(fn: Callable[[], None]) -> float:
    """Seconds one call of ``fn`` spends inside convolutions (forward and backward), by torch's profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if "convolution" in e.key) / 1e6


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "unknown"
    return next((line.partition(":")[2].strip() for line in lines if line.startswith("model name")), "unknown")


def row(name: str, sec: float, base: float, unit: str, per: int = 0) -> float:
    """Print one timed row (s/step, or dives/s when ``per`` dives) and return its ratio to ``base``."""
    rate = f"{per / sec:8.2f} dives/s" if per else f"{sec:8.3f} s/step "
    print(f"{name:<50} {rate}   x{base / sec:.2f} the authors' {unit}")
    return base / sec


def skipped(name: str, why: str) -> None:
    print(f"{name:<50} skipped: {why}")


def bound(name: str, fn: Callable[[], None], base: float, unit: str) -> None:
    """The most ``fn``'s precision can give with these convolution kernels: everything else taking no time."""
    conv = convolution_seconds(fn)
    print(f"{name:<50} {conv:8.3f} s in convolutions: at most x{base / conv:.2f} the authors' {unit} "
          "if all else took no time")


def train_rows(args: argparse.Namespace, recipe: Recipe) -> dict[str, float]:
    """The authors' step; aqakit's as shipped, then adding channels_last_3d, bf16 (where fast) and compile."""
    model = paper_model(recipe)
    batch = make_batch(model, args.batch, args.clips, args.frame_size)
    authors_opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # train_test_C3DAVG.py: optim.Adam(..., lr=0.0001)
    base = timed(lambda: authors_step(model, authors_opt, batch), args.steps)
    row("authors' step (fp32, clip loop, S2VT 99 steps)", base, base, "step")
    opt, ratios = build_optimizer(recipe, model), {}

    def variant(name: str, amp: torch.dtype | None = None) -> None:
        ratios[name] = row(name, timed(lambda: aqakit_step(model, opt, batch, amp), args.steps), base, "step")

    with throughput.freed_memory_kept(True):  # as aqakit train on the CPU (train.keep_freed_memory)
        if args.reference:
            row("  authors' step, freed memory kept too", timed(lambda: authors_step(model, authors_opt, batch),
                                                                  args.steps), base, "step")
        variant("aqakit (fp32, one forward)")
        model.use_channels_last()
        variant("aqakit + channels_last_3d")
        bound("  fp32 convolutions of that step", lambda: aqakit_step(model, opt, batch, None), base, "step")
        if throughput.cpu_bf16_fast():
            variant("aqakit + channels_last_3d + bf16", resolve_amp("bf16", CPU))
        else:
            skipped("aqakit + channels_last_3d + bf16", f"no fast bf16 on this CPU ({throughput.cpu_isa()})")
        missing = "--skip-compile" if args.skip_compile else throughput.compiler_missing(CPU)
        if missing:
            skipped("aqakit + channels_last_3d + compile", missing if args.skip_compile
                    else f"torch.compile needs {missing}")
        else:
            throughput.compile_backbone(model, CPU)
            variant("aqakit + channels_last_3d + compile")
    return ratios


def eval_rows(args: argparse.Namespace, recipe: Recipe) -> dict[str, float]:
    """The authors' test phase; aqakit's evaluation as shipped, then adding channels_last_3d and bf16 (where fast)."""
    model = paper_model(recipe)
    batch = make_batch(model, args.batch, args.clips, args.frame_size)
    base = timed(lambda: authors_eval(model, batch), args.steps)
    row("authors' test phase (no_grad, clip loop)", base, base, "eval", args.batch)
    ratios = {}

    def variant(name: str, amp: torch.dtype | None = None) -> None:
        ratios[name] = row(name, timed(lambda: aqakit_eval(model, batch, amp), args.steps), base, "eval", args.batch)

    with throughput.freed_memory_kept(True):
        if args.reference:
            row("  authors' test phase, freed memory kept too", timed(lambda: authors_eval(model, batch), args.steps),
                base, "eval", args.batch)
        variant("aqakit eval (inference_mode, one forward)")
        model.use_channels_last()
        variant("aqakit eval + channels_last_3d")
        bound("  fp32 convolutions of that evaluation", lambda: aqakit_eval(model, batch), base, "eval")
        if throughput.cpu_bf16_fast():
            variant("aqakit eval + channels_last_3d + bf16", resolve_amp("bf16", CPU))
        else:
            skipped("aqakit eval + channels_last_3d + bf16", f"no fast bf16 on this CPU ({throughput.cpu_isa()})")
    return ratios


def verdict(part: str, ratios: dict[str, float]) -> None:
    best = max(ratios, key=ratios.get)
    met = "MET" if ratios[best] >= GOALS[part] else "MISSED"
    print(f"goal: {part} >= x{GOALS[part]:g} the authors': {met} (best: {best}, x{ratios[best]:.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0, help="C3D channels and fc6 size (1 = paper)")
    parser.add_argument("--frame-size", type=int, default=112)
    parser.add_argument("--clips", type=int, default=6, help="16-frame clips per dive")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="also time the authors' code with the memory setting aqakit train uses")
    args = parser.parse_args(argv)
    flags = throughput.cpu_flags()
    print(f"cpu: {cpu_name()}; isa: {throughput.cpu_isa()}; flags: "
          + " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ATen CPU kernels {torch.backends.cpu.get_cpu_capability()}")
    recipe = paper_recipe(args.width, args.frame_size, args.clips)
    print(f"C3D-AVG-MTL ({RECIPE.name}) width {args.width}: batch {args.batch} dives x {args.clips} clips x "
          f"16x{args.frame_size}x{args.frame_size}, caption vocabulary {len(WORDS) + 3}, Adam")
    verdicts = {"train step": train_rows(args, recipe)}
    if not args.skip_eval:
        verdicts["eval"] = eval_rows(args, recipe)
    for part, ratios in verdicts.items():
        verdict(part, ratios)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
