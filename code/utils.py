"""The 2019 starter's helpers, which student files import: resize_image, load_image, save_image and
AverageMeter, on Pillow instead of OpenCV. The harness never imports this module.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from harness import files, images
from harness.metrics import AverageMeter  # noqa: F401  (the 2019 helper, defined once in the harness)

# OpenCV's interpolation codes, which 2019 code passes (cv2.INTER_NEAREST ... cv2.INTER_LANCZOS4), as
# Pillow filters. Pillow's BOX filter averages the source pixels each output pixel covers, which is what
# INTER_AREA does when shrinking.
CV2_INTERPOLATIONS = {0: Image.NEAREST, 1: Image.BILINEAR, 2: Image.BICUBIC, 3: Image.BOX, 4: Image.LANCZOS}


def load_image(filename):
    """The image in `filename` as an (H, W, 3) uint8 RGB array, as the dataset reads it: upright (EXIF
    orientation applied), every pixel mode converted to 8-bit RGB (harness.images.load_rgb_image).

    As the 2019 helper (which used cv2.imread and turned BGR into RGB). Raises harness.cli.DataError (a UserError), one line naming the file, when it is missing or not a readable image.
    """
    return np.asarray(images.load_rgb_image(filename))


def resize_image(img, new_size, interpolation):
    """Resize an (H, W[, C]) uint8 array to new_size = (width, height), as the 2019 helper (cv2.resize).

    interpolation: an OpenCV code (cv2.INTER_NEAREST = 0, INTER_LINEAR = 1, INTER_CUBIC = 2,
    INTER_AREA = 3, INTER_LANCZOS4 = 4). Returns an (height, width[, C]) uint8 array.
    Raises ValueError for another code or a size that is not two positive ints.
    """
    if interpolation not in CV2_INTERPOLATIONS:
        raise ValueError(f"interpolation must be an OpenCV code 0-4 (cv2.INTER_NEAREST ... INTER_LANCZOS4), "
                         f"got {interpolation!r}")
    width, height = (int(v) for v in new_size)
    if width < 1 or height < 1:
        raise ValueError(f"new_size must be (width, height) of positive ints, got {new_size!r}")
    image = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    return np.asarray(image.resize((width, height), CV2_INTERPOLATIONS[interpolation]))


def save_image(filename, img):
    """Write an (H, W[, 3]) uint8 RGB array to `filename` (format from its suffix), atomically."""
    path = Path(filename)
    image = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise ValueError(f"{path}: unknown image file suffix '{path.suffix}'")
    files.atomic_write(path, lambda f: image.save(f, format=file_format))
