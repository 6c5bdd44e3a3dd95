"""The training losses of the three tasks, matched to what inference does with the network's output: softmax over
classes (segmentation), heatmap peaks read against ``decoding.peak_scale`` (landmarks), a sigmoid or softmax over
logits (classification)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_ce_loss(logits, target, smooth=1e-5):
    """Cross-entropy + (1 - soft Dice averaged over the foreground classes). ``logits`` (B, C, K, J, I), ``target``
    (B, K, J, I) integer labels. Dice is pooled over the batch so that a class missing from one patch does not
    dominate; background is left out of Dice because it would reward the trivial all-background answer."""
    ce = F.cross_entropy(logits, target)
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(probabilities.dtype)
    axes = (0, 2, 3, 4)
    intersection = (probabilities * one_hot).sum(axes)
    denominator = probabilities.sum(axes) + one_hot.sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return ce + (1 - dice.mean())


HEATMAP_WEIGHTINGS = ("every-landmark", "own")


def heatmap_loss(output, target, peak_scale, weighting="every-landmark"):
    """MSE between ``output / peak_scale`` and unit-peak Gaussian ``target``, with landmark neighbourhoods weighted up
    so that they count as much as the background: plain MSE is minimised by answering 0 everywhere (six small peaks
    in a 64^3 volume are 0.3 % of it), and a network stuck there finds no landmark.

    ``every-landmark`` weights the places of all landmarks in every channel; ``own`` (the first demo recipe) only a
    channel's own peak. Under ``own`` a channel pays little for lighting up on another landmark's place: the optimum
    there is near 1 even when that place is rarely its own, and the first demo model lit every channel on every
    cerebellar point. With all places weighted, the optimum at each is the channel's probability of being that
    landmark. The network learns heatmaps whose peak is ``peak_scale``, which the decoder reports as full confidence."""
    scaled = output / float(peak_scale)
    balance = target.numel() / target.sum().clamp_min(1.0)
    if weighting == "own":
        weighted = target
    elif weighting == "every-landmark":
        weighted = target.amax(dim=1, keepdim=True)
    else:
        raise ValueError(f"heatmap weighting must be one of {', '.join(HEATMAP_WEIGHTINGS)}, not {weighting!r}.")
    return (((scaled - target) ** 2) * (1 + balance * weighted)).mean()


def classification_loss(logits, labels):
    """BCE-with-logits for a single logit (p(class 1) = sigmoid), cross-entropy for several (softmax)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())
