"""Cutting a video window into clips: done once, here, for every backbone."""

from __future__ import annotations

import torch

from aqakit.errors import AqakitError


def clip_starts(num_frames: int, clip_len: int, count: int | None = None, stride: int | None = None) -> list[int]:
    """Start frames of the clips cut from a window of ``num_frames``.

    Defaults: non-overlapping clips (``stride = clip_len``), as many as fit. With ``count`` and no
    ``stride``, the clips are spread evenly over the window (overlapping if they must).
    """
    if num_frames < clip_len:
        raise AqakitError(f"the video window has {num_frames} frames, fewer than one clip of {clip_len}")
    last = num_frames - clip_len
    if stride is None and count is not None:
        if count == 1:
            return [last // 2]
        return [round(i * last / (count - 1)) for i in range(count)]
    stride = stride or clip_len
    starts = list(range(0, last + 1, stride))
    if count is not None:
        if count > len(starts):
            raise AqakitError(
                f"{count} clips of {clip_len} frames with stride {stride} need "
                f"{(count - 1) * stride + clip_len} frames; the window has {num_frames}"
            )
        starts = starts[:count]
    return starts


def cut_clips(video: torch.Tensor, clip_len: int | None, count: int | None = None,
              stride: int | None = None) -> torch.Tensor:
    """``B x C x T x H x W`` -> ``B x N x C x clip_len x H x W``.

    ``clip_len=None`` (whole-video backbones) gives one clip of all ``T`` frames.
    """
    if video.dim() != 5:
        raise AqakitError(f"expected a B x C x T x H x W video batch, got shape {tuple(video.shape)}")
    if clip_len is None:
        return video.unsqueeze(1)
    starts = clip_starts(video.shape[2], clip_len, count, stride)
    return torch.stack([video[:, :, s:s + clip_len] for s in starts], dim=1)
