"""Per-task gradient agreement on the shared layers of a multitask run (a diagnostic for Table 4 / 8).

For a finished run, on training batches without augmentation (the model in train mode as in training; its
BatchNorm statistics are not updated), the gradient of each head's *weighted* loss with respect to the
shared parameters (backbone + aggregator) is taken separately; the script prints, per auxiliary head, the
cosine between its gradient and the score head's (mean and sd over batches) and the ratio of their norms.
With ``--at-init`` the same is measured on a freshly initialised model of the run's recipe (the
start of training). A cosine near 0 with a tiny norm ratio means the auxiliary task barely moves the shared layers; a negative
cosine means it pulls them against the score.

    python benchmarks/task_gradients.py RUN_FOLDER [--batches 20] [--score score]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    from aqakit import plugins
    from aqakit.engine.distributed import DistInfo
    from aqakit.engine.data import build_dataset, make_loader, resolve_splits, to_device, video_transform
    from aqakit.engine.loading import load_model
    from aqakit.errors import AqakitError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--score", default="score", help="the head the others are compared with")
    parser.add_argument("--at-init", action="store_true",
                        help="measure a freshly initialised model of the run's recipe (seeded) instead of its weights")
    args = parser.parse_args(argv)
    try:
        loaded = load_model(args.run, plugins.current(), device="cpu")
    except AqakitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model, recipe = loaded.model, loaded.recipe
    if args.at_init:
        from aqakit.engine.model import build_model

        torch.manual_seed(recipe.seed)
        model = build_model(recipe, plugins.registry())
        model.restore_heads(loaded.state.get("head_state") or {})
    heads = list(model.heads)
    if args.score not in heads or len(heads) < 2:
        print(f"error: the run needs the head '{args.score}' and at least one other (has {', '.join(heads)})",
              file=sys.stderr)
        return 2
    torch.manual_seed(recipe.seed)
    dataset = build_dataset(recipe, plugins.registry())
    splits = resolve_splits(dataset, recipe.data.val_fraction, recipe.seed, recipe.data.train_size,
                            recipe.data.train_size_seed)
    loader = make_loader(splits.sets["train"], batch_size=recipe.data.batch_size, num_workers=0, shuffle=True,
                         seed=recipe.seed, epoch=0, dist=DistInfo(), transform=video_transform(
                             recipe, model.backbone.spec.frame_size, augment=False))
    shared = [p for p in (*model.backbone.parameters(), *model.aggregator.parameters()) if p.requires_grad]
    model.train()
    for module in model.modules():  # train-mode dropout, but leave the BatchNorm statistics alone
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    cosines: dict[str, list[float]] = {h: [] for h in heads if h != args.score}
    ratios: dict[str, list[float]] = {h: [] for h in cosines}
    for i, batch in enumerate(loader):
        if i == args.batches:
            break
        batch = to_device(batch, torch.device("cpu"))
        _, parts = model.loss(model(batch), batch)
        grads = {}
        for head, loss in parts.items():
            g = torch.autograd.grad(model.weights[head] * loss, shared, retain_graph=True, allow_unused=True)
            grads[head] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                     for x, p in zip(g, shared)])
        ref = grads[args.score]
        for head in cosines:
            cosines[head].append(float(torch.nn.functional.cosine_similarity(grads[head], ref, dim=0)))
            ratios[head].append(float(grads[head].norm() / ref.norm().clamp_min(1e-12)))
    print(f"{args.run}{' (at initialisation)' if args.at_init else ''}: {len(next(iter(cosines.values())))} training batches of {recipe.data.batch_size}, "
          f"{sum(p.numel() for p in shared):,} shared parameters")
    print(f"| head | cosine with {args.score} (mean ± sd) | norm ratio to {args.score} (median) |")
    print("|---|---|---|")
    for head in cosines:
        c = cosines[head]
        sd = statistics.stdev(c) if len(c) > 1 else 0.0
        print(f"| {head} | {statistics.mean(c):+.3f} ± {sd:.3f} | {statistics.median(ratios[head]):.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
