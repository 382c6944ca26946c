"""Classification loss and the background/foreground-split cross-entropy against hand values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rrm.method.losses import classification_loss, split_cross_entropy


def test_split_cross_entropy_hand_values() -> None:
    # 3 pixels, 2 classes. Pixel 0: logits [100, -100], label 1 -> CE 200 (the only fg pixel).
    # Pixel 1: [100, -100], label 0 -> CE 0. Pixel 2: [0, 0], label 0 -> log 2. Pixel 3 ignored.
    logits = torch.tensor([[100.0, -100.0], [100.0, -100.0], [0.0, 0.0], [5.0, 1.0]]).T.reshape(1, 2, 1, 4)
    target = torch.tensor([[[1, 0, 0, 255]]])
    bg, fg = split_cross_entropy(logits, target)
    torch.testing.assert_close(bg, torch.tensor(math.log(2) / 2))
    torch.testing.assert_close(fg, torch.tensor(200.0))


@pytest.mark.parametrize("kind", ["bg", "fg"])
def test_split_equals_full_ce_when_one_side_is_missing(kind: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 6, 5, requires_grad=True)
    target = torch.randint(1, 21, (2, 6, 5)) if kind == "fg" else torch.zeros(2, 6, 5, dtype=torch.long)
    target[0, :2] = 255
    bg, fg = split_cross_entropy(logits, target)
    present, missing = (fg, bg) if kind == "fg" else (bg, fg)
    torch.testing.assert_close(present, F.cross_entropy(logits, target, ignore_index=255))
    assert missing.item() == 0.0
    (present + missing).backward()  # the empty side contributes nothing but keeps the graph valid
    assert torch.isfinite(logits.grad).all()


def test_split_weights_each_side_by_its_own_pixels() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 21, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 7  # one fg pixel among 15 bg pixels still gets a full-weight mean of its own
    bg, fg = split_cross_entropy(logits, target)
    per_pixel = F.cross_entropy(logits, target, reduction="none")[0]
    torch.testing.assert_close(fg, per_pixel[0, 0])
    torch.testing.assert_close(bg, (per_pixel.sum() - per_pixel[0, 0]) / 15)


def test_classification_loss_matches_formula() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    s = torch.sigmoid(logits)
    expected = -(labels * s.log() + (1 - labels) * (1 - s).log()).mean()
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="logits"):
        classification_loss(logits, labels[:, :2])
    with pytest.raises(ValueError, match="target"):
        split_cross_entropy(torch.zeros(1, 21, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
