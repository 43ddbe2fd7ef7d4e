"""A picture that shows an attack happened (`main.py -a -v`, tag `Image/Adv_Perturbation`).

The assignment's `Image/Org_Image` and `Image/Adv_Image` look the same to the eye, as they should.
This grid puts each image on a row: the clean image, the adversarial one, and the perturbation
magnified until its largest change spans half the grey range (mid-grey: unchanged), under a caption
with the true label, the clean and the adversarial prediction, and the magnification.
"""
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from custom_transforms import Denormalize

LINE_HEIGHT = 12  # pixels: a line of Pillow's default font
CAPTION_HEIGHT = 2 * LINE_HEIGHT + 2
GAP = 2  # pixels between panels and rows, as make_grid's padding


def to_pixels(images):
    """(N, 3, H, W) normalized images -> pixel values in [0, 1] (float32, on the CPU)."""
    return Denormalize()(images.detach().float().cpu())


def magnification(clean, adversarial):
    """(factor, largest change in grey levels 0-255) of the perturbation adversarial - clean, both
    (N, 3, H, W) normalized: factor * change reaches 0.5 at the largest (1.0 when nothing changed)."""
    change = (to_pixels(adversarial) - to_pixels(clean)).abs().max().item()
    return (0.5 / change if change > 0 else 1.0), change * 255


def label_name(classes, label):
    return classes[label] if classes and 0 <= label < len(classes) else str(label)


def attack_grid(clean, adversarial, target, clean_pred, adversarial_pred, classes=None, max_rows=8):
    """(picture (3, H', W') in [0, 1], factor, largest change in grey levels) of the first `max_rows`
    images: per row clean | adversarial | 0.5 + factor * perturbation, under its caption.

    clean, adversarial: (N, 3, H, W) normalized; target, clean_pred, adversarial_pred: (N,) labels;
    classes: the class names by label (numbers are shown without them).
    """
    rows = min(max_rows, clean.shape[0])
    factor, grey_levels = magnification(clean[:rows], adversarial[:rows])
    clean_px, adversarial_px = to_pixels(clean[:rows]), to_pixels(adversarial[:rows])
    perturbation = (0.5 + factor * (adversarial_px - clean_px)).clamp(0, 1)
    height, width = clean.shape[2:]
    row_height = CAPTION_HEIGHT + height + GAP
    canvas = Image.new("RGB", (3 * width + 4 * GAP, rows * row_height + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row in range(rows):
        top = GAP + row * row_height
        draw.text((GAP, top), f"true: {label_name(classes, int(target[row]))}   "
                  f"clean: {label_name(classes, int(clean_pred[row]))}", fill="black", font=font)
        draw.text((GAP, top + LINE_HEIGHT), f"adversarial: {label_name(classes, int(adversarial_pred[row]))}   "
                  f"perturbation x{factor:.0f}", fill="black", font=font)
        for column, panel in enumerate((clean_px[row], adversarial_px[row], perturbation[row])):
            pixels = panel.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
            canvas.paste(Image.fromarray(pixels), (GAP + column * (width + GAP), top + CAPTION_HEIGHT))
    picture = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255  # (3, H', W')
    return picture, factor, grey_levels
