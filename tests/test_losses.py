import math

import torch

from tapkit.training import losses


def test_focal_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0]]]])  # (N=1, M=1, 1, 2)
    target = torch.tensor([[[1.0, 0.0]]])
    # pixel 1: p = 0.5, target 1: ce = ln 2, weight = 0.25 * 0.5^2
    # pixel 2: p = sigmoid(2), target 0: ce = ln(1 + e^2), weight = 0.75 * p^2
    p2 = 1 / (1 + math.exp(-2))
    want = (0.25 * 0.25 * math.log(2) + 0.75 * p2**2 * math.log(1 + math.exp(2))) / 2
    assert math.isclose(float(losses.sigmoid_focal(logits, target)), want, rel_tol=1e-5)


def test_dice_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 0.0]]]])  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 0.0]]])
    want = 1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)
    assert math.isclose(float(losses.dice(logits, target)), want, rel_tol=1e-6)
    perfect = torch.tensor([[[[50.0, -50.0]]]])
    assert float(losses.dice(perfect, target)) < 1e-6


def test_mask_iou_and_selection():
    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1  # 8 pixels
    logits = -torch.ones(1, 3, 4, 4)
    logits[0, 0, :2] = 1  # exact
    logits[0, 1, :1] = 1  # 4 of 8
    logits[0, 2] = 1  # all 16
    assert torch.allclose(losses.mask_iou(logits, target), torch.tensor([[1.0, 0.5, 0.5]]))
    per_mask = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.1, 0.5, 0.2, 0.9]])
    assert losses.select_masks(per_mask, torch.tensor([True, False])).tolist() == [0, 2]


def test_concept_kl():
    target = torch.tensor([[0.5, 0.5]])
    assert float(losses.concept_kl(torch.zeros(1, 2), target)) < 1e-7
    logits = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert math.isclose(float(losses.concept_kl(logits, target)), want, rel_tol=1e-5)


def test_caption_loss_smoothing_and_ignore():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
    targets = torch.tensor([[1, 9]])  # 9 is padding
    assert math.isclose(float(losses.caption_loss(logits, targets, ignore_index=9, smoothing=0.1)), math.log(4), rel_tol=1e-6)
    logits = torch.tensor([[[10.0, 0.0, 0.0, 0.0]]])
    hard = float(losses.caption_loss(logits, torch.tensor([[0]]), 9, 0.0))
    smooth = float(losses.caption_loss(logits, torch.tensor([[0]]), 9, 0.1))
    log_p = torch.log_softmax(logits[0, 0], -1)
    want = -(0.9 + 0.1 / 4) * float(log_p[0]) - (0.1 / 4) * float(log_p[1:].sum())
    assert smooth > hard and math.isclose(smooth, want, rel_tol=1e-5)
