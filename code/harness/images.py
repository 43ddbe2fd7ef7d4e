"""Images read as a viewer shows them: the EXIF orientation applied, then converted to 8-bit RGB from
any pixel mode Pillow opens (16-bit and float grey scaled, transparency composited onto white), or
refused in one line (DataError naming the file). And PNG encoding for the image grids.

The dataset (custom_dataloader.py), the 2019 helper utils.load_image and predict.py all read images here.
"""
import contextlib
import functools
import io

import numpy as np
import torch
from PIL import Image, ImageOps

from .cli import DataError, one_line

# What Pillow raises for unreadable, truncated or hostile files.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
ORIENTATION_TAG = 0x0112  # EXIF Orientation (ExifTags.Base.Orientation in recent Pillow)
# Orientations 5..8 store the picture turned by 90 degrees: its width and height swap.
_TURNED_ORIENTATIONS = (5, 6, 7, 8)
_ORIENTATION_SOURCES = {"exif", "xmp", "XML:com.adobe.xmp"}  # where Pillow's getexif() looks in image.info
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


@contextlib.contextmanager
def _opened(path):
    """Image.open(path), lazily (header only); its failures become one-line DataErrors naming the file."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except _IMAGE_ERRORS as error:
        raise DataError(f"{path}: cannot read image ({one_line(error)})") from None


def _orientation(image):
    """The EXIF orientation of an opened image: 2..8 when the stored pixels must be turned or mirrored
    to be seen upright, 1 when they need nothing (or the tag is absent or not a valid value)."""
    if image.format == "JPEG" and not _ORIENTATION_SOURCES & image.info.keys():
        # A JPEG's metadata is all read by Image.open; getexif() would cost 25 us more per image
        # (6% of decoding a 128x128 MiniPlaces JPEG) to find nothing.
        return 1
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if value in range(1, 9) else 1


def upright_size(image):
    """(width, height) of an opened image once its EXIF orientation is applied, without decoding it."""
    width, height = image.size
    return (height, width) if _orientation(image) in _TURNED_ORIENTATIONS else (width, height)


def read_image_size(path):
    """(width, height) of the image file as load_rgb_image returns it, read from the header.

    Raises DataError naming the file when it is missing or not an image.
    """
    with _opened(path) as image:
        return upright_size(image)


def load_rgb_image(path):
    """Decode an image file into the 8-bit RGB picture that a viewer shows: the EXIF orientation
    applied (a phone's sideways JPEG comes out upright), any pixel mode converted by to_rgb.

    Raises DataError naming the file when it is missing, truncated or not an image, or when to_rgb
    refuses its pixels.
    """
    with _opened(path) as image:
        image.load()
        upright = image if _orientation(image) == 1 else ImageOps.exif_transpose(image)
        rgb = to_rgb(upright, path)
        return rgb.copy() if rgb is image else rgb  # the `with` closes `image`


def to_rgb(image, name):
    """The 8-bit RGB version of a loaded Pillow image of any mode; `name` (the file) is for errors.

    - RGB as it is; 1 (0/1 -> 0/255), L, P, CMYK, YCbCr, RGBX and HSV by Pillow's conversion (CMYK
      by the plain formula, without ICC profiles, like every mode here);
    - transparency (RGBA, LA, PA, RGBa, P or L or RGB with a transparent colour, 16-bit grey with
      one): composited onto white, as a viewer shows it on a white page; opaque pixels are unchanged;
    - 16-bit grey (I;16, I;16L, I;16B, I;16N) and 32-bit integer I (how older Pillow versions open
      16-bit PNGs): 0..65535 scaled to 0..255, rounded; I values outside 0..65535 are refused;
    - 32-bit float F: 0..1 scaled to 0..255, rounded; values outside 0..1, NaN or infinite are
      refused (no scale can be guessed for them);
    - LAB: converted to sRGB by LittleCMS (PIL.ImageCms).
    Raises DataError (one line naming `name`) for refused values and modes Pillow cannot convert.
    """
    mode = image.mode
    transparent = "transparency" in image.info
    if mode == "RGB" and not transparent:
        return image
    if mode.startswith("I") or mode == "F":
        return _gray_to_rgb(_deep_gray_to_8bit(image, name), _deep_gray_alpha(image))
    if mode == "LAB":
        return _lab_to_rgb(image, name)
    try:
        if mode in _ALPHA_MODES or transparent:
            return _composite_on_white(np.asarray(image.convert("RGBA")))
        return image.convert("RGB")
    except ValueError:  # Pillow: "conversion from La to RGB not supported"
        raise DataError(f"{name}: pixel mode {mode} cannot be converted to RGB") from None


def _deep_gray_to_8bit(image, name):
    """(H, W) uint8 grey from an I;16*, I or F image, scaled as to_rgb describes."""
    values = np.asarray(image)  # (H, W): uint16 in the file's byte order, int32 or float32
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise DataError(f"{name}: 32-bit float pixels include NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise DataError(f"{name}: 32-bit float pixels span {low:g}..{high:g}; only 0..1 is read "
                            f"(as 0..255)")
        return np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise DataError(f"{name}: {image.mode} pixels span {low}..{high}; integer pixels are read as "
                        f"16-bit (0..65535)")
    # round(v * 255 / 65535) = round(v / 257): no value lies halfway, since 257 is odd.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _deep_gray_alpha(image):
    """(H, W) uint8 alpha of a 16-bit grey image with a transparent value (PNG tRNS), else None."""
    if "transparency" not in image.info or image.mode == "F":
        return None
    return np.where(np.asarray(image) == image.info["transparency"], 0, 255).astype(np.uint8)


def _gray_to_rgb(gray, alpha=None):
    """(H, W) uint8 grey [+ (H, W) alpha] -> RGB image (composited onto white when alpha is given)."""
    if alpha is not None:
        return _composite_on_white(np.stack([gray, gray, gray, alpha], axis=-1))
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))


def _composite_on_white(rgba):
    """(H, W, 4) uint8 RGBA -> RGB image over white: round(c * a / 255 + 255 * (1 - a / 255))."""
    rgba = rgba.astype(np.uint32)
    color, alpha = rgba[..., :3], rgba[..., 3:]
    # Integer rounding: (x + 127) // 255 = round(x / 255), with no halfway cases since 255 is odd.
    return Image.fromarray(((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _lab_to_srgb():
    """A function LAB image -> sRGB image (LittleCMS, built once per process); None when Pillow lacks
    LittleCMS."""
    try:
        from PIL import ImageCms
    except ImportError:
        return None
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                        "LAB", "RGB")
    return functools.partial(ImageCms.applyTransform, transform=transform)


def _lab_to_rgb(image, name):
    convert = _lab_to_srgb()
    if convert is None:
        raise DataError(f"{name}: LAB pixels need Pillow with LittleCMS (PIL.ImageCms) to become RGB")
    return convert(image)


PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode


def encode_png(image, compress_level=1):
    """PNG bytes of a (C, H, W) float image in [0, 1], C = 1 (grey), 3 (RGB) or 4 (RGBA), rounded to
    8 bits as torchvision's save_image does. zlib level 1 by default: a 10x10 grid of 160-pixel images
    took 0.5 s against 1.8 s at Pillow's default 6, for a 9% larger file (2-core CPU).
    Raises ValueError for any other shape."""
    if image.dim() != 3 or image.shape[0] not in PNG_MODES:
        raise ValueError(f"an image grid must be (C, H, W) with C in 1, 3, 4, got {tuple(image.shape)}")
    pixels = image.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()  # (H, W, C)
    mode = PNG_MODES[image.shape[0]]
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(buffer, format="png",
                                                                          compress_level=compress_level)
    return buffer.getvalue()
