"""harness.attack_grid: the picture that shows an attack happened, checked against values computed here."""
import pytest
import torch

from harness import attack_grid
from harness.attack_grid import CAPTION_HEIGHT, GAP

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def normalized(pixels):
    return (pixels - MEAN) / STD


@pytest.fixture
def attack():
    """Two 16x16 mid-grey images; the adversarial one changes one pixel of image 0 by +0.02 (5.1 grey levels)."""
    clean_px = torch.full((2, 3, 16, 16), 0.5)
    adversarial_px = clean_px.clone()
    adversarial_px[0, 1, 3, 4] += 0.02
    return normalized(clean_px), normalized(adversarial_px)


def test_the_perturbation_is_magnified_to_half_the_grey_range(attack):
    clean, adversarial = attack
    factor, grey_levels = attack_grid.magnification(clean, adversarial)
    assert factor == pytest.approx(25.0, rel=1e-4)  # 0.5 / 0.02
    assert grey_levels == pytest.approx(5.1, rel=1e-4)
    assert attack_grid.magnification(clean, clean) == (1.0, 0.0)


def test_each_row_holds_caption_clean_adversarial_and_perturbation(attack):
    clean, adversarial = attack
    labels = torch.tensor([0, 1])
    picture, factor, _ = attack_grid.attack_grid(clean, adversarial, labels, labels, torch.tensor([1, 1]),
                                                 ["beach", "tower"])
    row_height = CAPTION_HEIGHT + 16 + GAP
    assert picture.shape == (3, 2 * row_height + GAP, 3 * 16 + 4 * GAP)
    assert factor == pytest.approx(25.0, rel=1e-4)
    top = GAP + CAPTION_HEIGHT  # row 0's panels
    clean_panel = picture[:, top:top + 16, GAP:GAP + 16]
    perturbation = picture[:, top:top + 16, GAP + 2 * (16 + GAP):GAP + 2 * (16 + GAP) + 16]
    assert clean_panel.sub(0.5).abs().max() <= 1 / 255 + 1e-6  # mid-grey, rounded to 8 bits
    # Unchanged pixels are mid-grey; the changed one reaches 0.5 + 25 * 0.02 = 1.0 in its channel.
    assert perturbation[1, 3, 4].item() == pytest.approx(1.0)
    assert perturbation[0, 3, 4].sub(128 / 255).abs() < 1e-6
    assert perturbation[1, 0, 0].sub(128 / 255).abs() < 1e-6
    caption = picture[:, GAP:GAP + CAPTION_HEIGHT, :]
    assert (caption < 0.5).any()  # the text is drawn in black on white


def test_labels_are_named_when_the_classes_are_known():
    assert attack_grid.label_name(["beach", "tower"], 1) == "tower"
    assert attack_grid.label_name(None, 7) == "7"
    assert attack_grid.label_name(["beach"], 3) == "3"
