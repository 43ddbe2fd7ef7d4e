"""Data augmentation for MiniPlaces, in the assignment's vocabulary, built on Pillow and PyTorch.

Train pipeline (`get_train_transforms()`), as in the assignment:
    Scale(160) with a randomly chosen interpolation -> RandomHorizontalFlip -> RandomColor(0.15)
    -> RandomRotate(15) -> RandomSizedCrop(128) -> ToTensor -> Normalize(ImageNet mean/std)
Val pipeline (`get_val_transforms()`): Scale(160) bilinear -> ToTensor -> Normalize; the original evaluates
at 160x160 without a crop, and `center_crop=True` adds a 128x128 centre crop.

Speed: the geometric steps (Scale, RandomHorizontalFlip, RandomRotate, RandomSizedCrop, CenterCrop) each
only *plan* an affine map from output to source pixel coordinates; `Compose` chains the plans of
consecutive steps and resamples once instead of once per step, with the filter that Scale drew. Every
step still draws its random choices, in order, as specified. RandomColor (a gain per channel) is deferred
past the warp and applied to the float values: interpolation is linear per channel, so gain-then-warp
equals warp-then-gain up to 8-bit rounding and clipping. When the plan ends in ToTensor, the one
resampling is torch's `grid_sample` (about 3x faster than Pillow's affine warp on one core, and the same
code that renders batches); a plan that ends in a PIL image is rendered by Pillow. `Compose(...,
fuse=False)` (or any transform called on its own) resamples step by step with Pillow instead; the results
agree within a few grey levels (tests/test_transforms.py checks it).

Faster still, `get_train_transforms(defer=True)` ends in `DeferResample`: a DataLoader worker then only
decodes the image and draws the augmentation (a dict of small tensors, the image kept as uint8), and
`resample_batch` resamples the collated batch on the training device: a GPU does it almost for free, and
a quarter of the bytes cross from the workers. The result equals the per-image pipeline's.

Randomness comes from torch's default generator (`torch.rand`), which PyTorch seeds in every DataLoader
worker from the main process's seed: `torch.manual_seed(s)` makes runs reproducible, workers included.
"""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The original drew from OpenCV's NEAREST, LINEAR, AREA and CUBIC. Neither an affine warp in Pillow nor
# grid_sample has an area filter, and OpenCV itself emulates AREA with a bilinear variant when enlarging
# (as Scale(160) does here), so it is left out. Cost of one 128x128 warp on one core of the development
# machine: grid_sample nearest ~0.06 ms, bilinear ~0.12 ms, bicubic ~0.5 ms (Pillow's affine warp:
# 0.08, 0.6, 1.4 ms); pass `interpolations` to get_train_transforms to trade variety for speed.
INTERPOLATIONS = (Image.NEAREST, Image.BILINEAR, Image.BICUBIC)

# The same filters under grid_sample's names (its bicubic is Keys' a = -0.75, Pillow's a = -0.5).
GRID_SAMPLE_MODES = {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic"}

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "AffineWarp", "Compose", "Scale",
    "RandomHorizontalFlip", "RandomColor", "RandomRotate", "RandomSizedCrop", "CenterCrop",
    "ToTensor", "DeferResample", "resample_batch", "Normalize", "Denormalize", "get_train_transforms",
    "get_val_transforms",
]


# ---------------------------------------------------------------------------------------------------
# Random numbers from torch's generator (reproducible in DataLoader workers)
# ---------------------------------------------------------------------------------------------------
def _uniform(low, high):
    return low + (high - low) * torch.rand(()).item()


def _coin():
    return torch.rand(()).item() < 0.5


# ---------------------------------------------------------------------------------------------------
# The pending affine warp that the geometric steps share
# ---------------------------------------------------------------------------------------------------
def _compose_affine(m, t):
    """m o t for affine maps stored as (a, b, c, d, e, f): (x, y) -> (a x + b y + c, d x + e y + f)."""
    a, b, c, d, e, f = m
    p, q, r, s, u, v = t
    return (a * p + b * s, a * q + b * u, a * r + b * v + c,
            d * p + e * s, d * q + e * u, d * r + e * v + f)


class AffineWarp:
    """An image plus a planned geometric transform, resampled once by `render()`.

    `matrix` maps output coordinates to source coordinates (Pillow's AFFINE convention), in continuous
    pixel units where pixel (i, j) covers [i, i+1) x [j, j+1). `size` is the output (width, height);
    `resample` the Pillow filter; `gains` the pending per-channel RandomColor factors.
    """

    __slots__ = ("image", "size", "matrix", "resample", "gains")

    def __init__(self, image, resample=Image.BILINEAR):
        self.image = image
        self.size = image.size
        self.matrix = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        self.resample = resample
        self.gains = None

    def then(self, transform, size):
        """Append a step: `transform` maps the new output coordinates to the current ones."""
        self.matrix = _compose_affine(self.matrix, transform)
        self.size = (int(size[0]), int(size[1]))
        return self

    def render(self):
        """Resample once into a new PIL image of `size`, then apply the colour gains."""
        image = self._warp()
        if self.gains is not None:
            image = _apply_gains(image, self.gains)
        return image

    def _warp(self):
        a, b, c, d, e, f = self.matrix
        width, height = self.size
        if b != 0.0 or d != 0.0 or e <= 0.0:
            return self.image.transform(self.size, Image.AFFINE, self.matrix, resample=self.resample)
        flip = a < 0.0
        if flip:
            # Mirror the output: x_src = a (W - x') + c = (-a) x' + (a W + c); flip after resizing.
            a, c = -a, a * width + c
        if (a, c, e, f) == (1.0, 0.0, 1.0, 0.0) and self.size == self.image.size:
            image = self.image
        else:
            # Axis-aligned: Image.resize with a source box is separable (faster) and antialiases.
            src_w, src_h = self.image.size
            box = (max(0.0, c), max(0.0, f), min(src_w, c + a * width), min(src_h, f + e * height))
            image = self.image.resize(self.size, self.resample, box=box)
        return image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image


def _apply_gains(image, gains):
    """Multiply each channel by its gain and clip to 0..255, with one lookup table per band."""
    ramp = np.arange(256, dtype=np.float64)
    lut = np.clip(np.outer(gains, ramp) + 0.5, 0, 255).astype(np.uint8)  # (bands, 256)
    return image.point(lut.ravel().tolist())


def _normalized_theta(warp):
    """The warp's matrix in grid_sample's coordinates (each image spans [-1, 1], align_corners=False):
    ((a, b, c), (d, e, f)) mapping output (u, v) to source (s, t). It does not depend on the pixel size
    of the source, so the source may be resized without changing it."""
    a, b, c, d, e, f = warp.matrix
    out_w, out_h = warp.size
    src_w, src_h = warp.image.size
    # s = 2 x_src / W - 1 with x_src = a x + b y + c, x = (u + 1) w / 2, y = (v + 1) h / 2.
    return ((a * out_w / src_w, b * out_h / src_w, (a * out_w + b * out_h + 2 * c) / src_w - 1),
            (d * out_w / src_h, e * out_h / src_h, (d * out_w + e * out_h + 2 * f) / src_h - 1))


@functools.lru_cache(maxsize=16)
def _pixel_centres(n, dtype, device):
    """(n,) centres of n pixels in [-1, 1] (align_corners=False); cached: every image needs the same."""
    return (torch.arange(n, dtype=dtype, device=device) * 2 + 1) / n - 1


def _sampling_grid(theta, height, width):
    """(N, h, w, 2) source coordinates for theta (N, 2, 3), as F.affine_grid(align_corners=False) gives
    them. Computed as two contiguous (h, w) planes per image and returned as a permuted view: on the CPU
    this is ~30x faster than affine_grid's batched matmul or writing the interleaved last axis."""
    u = _pixel_centres(width, theta.dtype, theta.device).view(1, 1, 1, width)
    v = _pixel_centres(height, theta.dtype, theta.device).view(1, 1, height, 1)
    t = theta.view(-1, 2, 3, 1, 1)
    planes = t[:, :, 0] * u + (t[:, :, 1] * v + t[:, :, 2])  # (N, 2, 1, w) + (N, 2, h, 1) -> (N, 2, h, w)
    return planes.permute(0, 2, 3, 1)


def _grid_sample_modes(filters):
    """grid_sample mode names for Pillow filter codes; a clear error for filters it does not have."""
    try:
        return [GRID_SAMPLE_MODES[int(code)] for code in filters]
    except KeyError as error:
        raise ValueError(f"resampling a tensor supports only the NEAREST, BILINEAR and BICUBIC filters, "
                         f"got Pillow filter {error.args[0]}") from None


def _resample(pixels, theta, modes, size, gains):
    """Warp a batch once and apply the colour gains.

    pixels (N, H, W, 3) uint8; theta (N, 2, 3) from _normalized_theta; modes: N grid_sample modes;
    size (h, w); gains (N, 3). Returns float32 (N, 3, h, w) in [0, 1]. Edges repeat the border pixel
    (the crops stay inside the image; only the filter's taps reach past it).
    """
    source = pixels.permute(0, 3, 1, 2).float()  # (N, 3, H, W), 0..255
    grid = _sampling_grid(theta.float(), *size)
    if len(set(modes)) == 1:
        out = F.grid_sample(source, grid, mode=modes[0], padding_mode="border", align_corners=False)
    else:
        out = source.new_empty((source.shape[0], source.shape[1], *size))
        for mode in sorted(set(modes)):
            index = torch.tensor([i for i, m in enumerate(modes) if m == mode], device=source.device)
            out[index] = F.grid_sample(source[index], grid[index], mode=mode, padding_mode="border",
                                       align_corners=False)
    out.mul_((gains.float() / 255.0).view(-1, 3, 1, 1))
    return out.clamp_(0.0, 1.0)  # bicubic overshoots, gains above 1 saturate


class _Geometric:
    """Base for steps that plan an affine map; called on its own it renders immediately."""

    def plan(self, warp):
        raise NotImplementedError

    def __call__(self, image):
        return self.plan(AffineWarp(image)).render()


def _shorter_side_size(size, width, height):
    """Output (w, h) with the shorter side scaled to `size`, or `size` itself when it is a (w, h) pair."""
    if not isinstance(size, int):
        return tuple(size)
    if width <= height:
        return size, int(round(size * height / width))
    return int(round(size * width / height)), size


# ---------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------
class Compose:
    """Apply transforms in order; consecutive planning steps share one resampling when `fuse` is true."""

    def __init__(self, transforms, fuse=True):
        self.transforms = list(transforms)
        self.fuse = fuse

    def __call__(self, image):
        warp = None
        for transform in self.transforms:
            plannable = self.fuse and hasattr(transform, "plan") and (
                warp is not None or isinstance(image, Image.Image))
            if plannable:
                warp = transform.plan(warp if warp is not None else AffineWarp(image))
                continue
            if warp is not None and hasattr(transform, "from_warp"):
                image, warp = transform.from_warp(warp), None
                continue
            if warp is not None:
                image, warp = warp.render(), None
            image = transform(image)
        return warp.render() if warp is not None else image

    def __repr__(self):
        lines = [f"    {t!r}" for t in self.transforms]
        return f"{type(self).__name__}(fuse={self.fuse}, [\n" + ",\n".join(lines) + "\n])"


class Scale(_Geometric):
    """Resize so the shorter side is `size` (or to `size` = (w, h)), with an interpolation drawn at
    random from `interpolations` (Pillow filters) for every image."""

    def __init__(self, size, interpolations=INTERPOLATIONS):
        if isinstance(size, int) and size <= 0:
            raise ValueError(f"Scale size must be positive, got {size}")
        self.size = size
        self.interpolations = tuple(interpolations)

    def plan(self, warp):
        if len(self.interpolations) > 1:
            choice = int(torch.rand(()).item() * len(self.interpolations))
            warp.resample = self.interpolations[min(choice, len(self.interpolations) - 1)]
        else:
            warp.resample = self.interpolations[0]
        width, height = warp.size
        out_w, out_h = _shorter_side_size(self.size, width, height)
        return warp.then((width / out_w, 0.0, 0.0, 0.0, height / out_h, 0.0), (out_w, out_h))

    def __repr__(self):
        return f"Scale(size={self.size}, interpolations={self.interpolations})"


class RandomHorizontalFlip(_Geometric):
    """Mirror left-right with probability 0.5."""

    def plan(self, warp):
        if _coin():
            width, height = warp.size
            warp.then((-1.0, 0.0, float(width), 0.0, 1.0, 0.0), (width, height))
        return warp

    def __repr__(self):
        return "RandomHorizontalFlip()"


class RandomColor:
    """Multiply each RGB channel by (1 + U(-color_range, color_range)), clipped to the valid range.

    On a PIL image (or inside a fused Compose) the gains act on 0..255 values; on a float tensor
    (3, H, W) in [0, 1] they act on the tensor.
    """

    def __init__(self, color_range=0.15):
        self.color_range = color_range

    def _draw_gains(self):
        r = self.color_range
        return [1.0 + r * (2.0 * g - 1.0) for g in torch.rand(3).tolist()]

    def plan(self, warp):
        gains = self._draw_gains()
        warp.gains = gains if warp.gains is None else [g * h for g, h in zip(warp.gains, gains)]
        return warp

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            gains = torch.tensor(self._draw_gains(), dtype=image.dtype, device=image.device)
            return (image * gains.view(3, 1, 1)).clamp_(0.0, 1.0)
        return _apply_gains(image.convert("RGB"), self._draw_gains())

    def __repr__(self):
        return f"RandomColor(color_range={self.color_range})"


def rotated_rect_with_max_area(width, height, angle):
    """(w, h) of the largest axis-aligned rectangle inside a width x height rectangle rotated by
    `angle` radians (the classic closed form; the same one the assignment's OpenCV code used)."""
    if width <= 0 or height <= 0:
        return 0.0, 0.0
    width_is_longer = width >= height
    side_long, side_short = (width, height) if width_is_longer else (height, width)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if side_short <= 2.0 * sin_a * cos_a * side_long or abs(sin_a - cos_a) < 1e-10:
        # Half constrained: two corners of the crop touch the longer sides.
        x = 0.5 * side_short
        return (x / sin_a, x / cos_a) if width_is_longer else (x / cos_a, x / sin_a)
    # Fully constrained: the crop touches all four sides.
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a


class RandomRotate(_Geometric):
    """Rotate by U(-degree_range, degree_range) degrees (counter-clockwise positive, like PIL), then crop
    the largest axis-aligned rectangle inside; angles within +-1 degree are skipped."""

    def __init__(self, degree_range=15):
        self.degree_range = degree_range

    def plan(self, warp):
        degree = _uniform(-self.degree_range, self.degree_range)
        if abs(degree) <= 1.0:
            return warp
        width, height = warp.size
        crop_w, crop_h = rotated_rect_with_max_area(width, height, math.radians(degree))
        out_w, out_h = max(1, int(crop_w)), max(1, int(crop_h))
        # PIL.Image.rotate's inverse map: output offsets from the centre, rotated by -degree.
        phi = -math.radians(degree)
        cos_p, sin_p = math.cos(phi), math.sin(phi)
        shift_x = width / 2 - cos_p * out_w / 2 - sin_p * out_h / 2
        shift_y = height / 2 + sin_p * out_w / 2 - cos_p * out_h / 2
        return warp.then((cos_p, sin_p, shift_x, -sin_p, cos_p, shift_y), (out_w, out_h))

    def __repr__(self):
        return f"RandomRotate(degree_range={self.degree_range})"


class RandomSizedCrop(_Geometric):
    """Crop a random area fraction in `area_range` with aspect ratio in `ratio_range` (w/h, swapped with
    probability 0.5) and resize it to `size`; after `num_trials` misses, scale the shorter side to
    `size` and take the centre crop. The filter is the one the pipeline already chose (Scale's draw),
    or bilinear when used alone, because the whole chain is resampled once."""

    def __init__(self, size, area_range=(0.25, 1.0), ratio_range=(0.8, 1.2), num_trials=10):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.area_range = area_range
        self.ratio_range = ratio_range
        self.num_trials = num_trials

    def plan(self, warp):
        width, height = warp.size
        out_w, out_h = self.size
        # One draw for all trials (each: area, aspect, swap, x, y), since a torch call costs ~10 us.
        (area_low, area_high), (ratio_low, ratio_high) = self.area_range, self.ratio_range
        for r_area, r_aspect, r_swap, r_x, r_y in torch.rand(self.num_trials, 5).tolist():
            target_area = (area_low + (area_high - area_low) * r_area) * width * height
            aspect = ratio_low + (ratio_high - ratio_low) * r_aspect
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if r_swap < 0.5:
                crop_w, crop_h = crop_h, crop_w
            if 0 < crop_w <= width and 0 < crop_h <= height:
                x1 = min(int(r_x * (width - crop_w + 1)), width - crop_w)  # uniform in 0..width-crop_w
                y1 = min(int(r_y * (height - crop_h + 1)), height - crop_h)
                return warp.then((crop_w / out_w, 0.0, float(x1), 0.0, crop_h / out_h, float(y1)),
                                 (out_w, out_h))
        return _plan_center_fallback(warp, out_w, out_h)

    def __repr__(self):
        return (f"RandomSizedCrop(size={self.size}, area_range={self.area_range}, "
                f"ratio_range={self.ratio_range}, num_trials={self.num_trials})")


def _plan_center_fallback(warp, out_w, out_h):
    """Scale the shorter side to fit (out_w, out_h), then take the centre crop."""
    width, height = warp.size
    scale = min(width / out_w, height / out_h)  # source pixels per output pixel
    x1 = (width - scale * out_w) / 2
    y1 = (height - scale * out_h) / 2
    return warp.then((scale, 0.0, x1, 0.0, scale, y1), (out_w, out_h))


class CenterCrop(_Geometric):
    """Take the centre `size` crop (int or (w, h)); the image must be at least that large."""

    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def plan(self, warp):
        width, height = warp.size
        out_w, out_h = self.size
        if out_w > width or out_h > height:
            raise ValueError(f"CenterCrop{self.size} is larger than the {width}x{height} image")
        x1, y1 = (width - out_w) // 2, (height - out_h) // 2
        return warp.then((1.0, 0.0, float(x1), 0.0, 1.0, float(y1)), (out_w, out_h))

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


class ToTensor:
    """PIL image or (H, W[, C]) uint8 array -> float32 tensor (C, H, W) in [0, 1].

    After a fused plan it resamples the source straight into the tensor (`_resample`, grid_sample) and
    applies the pending RandomColor gains there, on the float values.
    """

    def __call__(self, image):
        return self._convert(image)

    def from_warp(self, warp):
        if warp.resample not in GRID_SAMPLE_MODES or warp.image.mode != "RGB":
            # Pillow-only filters (LANCZOS, ...) and gray images: render with Pillow, then convert.
            return ToTensor._convert(warp.render())
        pixels = torch.from_numpy(np.array(warp.image, dtype=np.uint8))[None]  # (1, H, W, 3)
        theta = torch.tensor([_normalized_theta(warp)], dtype=torch.float32)  # (1, 2, 3)
        gains = torch.tensor([warp.gains or (1.0, 1.0, 1.0)], dtype=torch.float32)  # (1, 3)
        size = (warp.size[1], warp.size[0])
        return _resample(pixels, theta, _grid_sample_modes([warp.resample]), size, gains)[0]

    @staticmethod
    def _convert(image):
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        # (H, W, C) uint8 -> (C, H, W) float32 in NumPy: single-threaded on purpose, since torch's
        # intra-op threads cost more than they save on a 50k-value image (and stall when cores are busy).
        chw = np.ascontiguousarray(array.transpose(2, 0, 1)).astype(np.float32)
        chw *= 1.0 / 255.0
        return torch.from_numpy(chw)

    def __repr__(self):
        return "ToTensor()"


class DeferResample:
    """The last step of a fused pipeline whose resampling happens per batch (`resample_batch`).

    Instead of an image tensor it returns what the resampling needs, as a dict of tensors that the
    DataLoader's default collate stacks: "pixels" the decoded source (H, W, 3) uint8, "theta" the
    planned warp (2, 3), "filter" the Pillow filter code, "gains" the RandomColor gains (3,), "size" the
    output (h, w), and the Normalize "mean" and "std" (3,). Sources of another size than `source_size`
    (w, h) are first resized to it, so that every sample of a batch stacks (MiniPlaces is all 128x128).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, source_size=(128, 128)):
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.source_size = tuple(source_size)
        # Made once: collate copies them into the batch, and a torch.tensor call costs ~10 us.
        self._mean = torch.tensor(self.mean, dtype=torch.float32)
        self._std = torch.tensor(self.std, dtype=torch.float32)

    def __call__(self, image):
        return self.from_warp(AffineWarp(image))

    def from_warp(self, warp):
        _grid_sample_modes([warp.resample])  # fail here, in the worker, with a clear message
        image = warp.image if warp.image.mode == "RGB" else warp.image.convert("RGB")
        if image.size != self.source_size:
            image = image.resize(self.source_size, Image.BILINEAR)
        return {
            "pixels": torch.from_numpy(np.array(image, dtype=np.uint8)),
            "theta": torch.tensor(_normalized_theta(warp), dtype=torch.float32),
            "filter": torch.tensor(int(warp.resample)),
            "gains": torch.tensor(warp.gains or (1.0, 1.0, 1.0), dtype=torch.float32),
            "size": torch.tensor((warp.size[1], warp.size[0])),
            "mean": self._mean,
            "std": self._std,
        }

    def __repr__(self):
        return f"DeferResample(mean={self.mean}, std={self.std}, source_size={self.source_size})"


def resample_batch(batch, device=None, memory_format=torch.contiguous_format):
    """Render a collated batch of DeferResample outputs on `device` (default: where the batch is).

    Returns the normalized images (N, 3, h, w) float32, as the per-image pipeline (ToTensor then
    Normalize) would have produced them, in `memory_format`.
    """
    sizes = batch["size"]  # (N, 2)
    if not bool((sizes == sizes[:1]).all()):
        mixed = sorted(set(map(tuple, sizes.tolist())))
        raise ValueError(f"resample_batch: the batch mixes output sizes {mixed}")
    modes = _grid_sample_modes(batch["filter"].tolist())
    device = batch["pixels"].device if device is None else device
    pixels, theta, gains, mean, std = (batch[key].to(device, non_blocking=True)
                                       for key in ("pixels", "theta", "gains", "mean", "std"))
    images = _resample(pixels, theta, modes, tuple(sizes[0].tolist()), gains)  # (N, 3, h, w) in [0, 1]
    # (x - mean) / std as Normalize computes it: x * (1 / std) + (-mean / std).
    scale = 1.0 / std
    bias = -mean * scale
    images = images * scale.view(-1, 3, 1, 1)
    images += bias.view(-1, 3, 1, 1)
    return images.contiguous(memory_format=memory_format)


def _channel_view(values, like):
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def _use_numpy(tensor):
    """CPU float32 tensors outside autograd are computed with NumPy, which is single-threaded: torch's
    intra-op thread pool makes these 50k-value ops slower, and when the cores are busy (other
    processes, DataLoader workers) 100x slower (58 us vs 12.7 ms measured on a loaded 2-core machine)."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32 and not tensor.requires_grad


class Normalize:
    """(tensor - mean) / std per channel, for (C, H, W) or (N, C, H, W) float tensors; returns a new one."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(mean)
        self.std = tuple(std)
        # (x - mean) / std = x * (1 / std) + (-mean / std): one multiply-add per value.
        self._scale = (1.0 / np.asarray(self.std, dtype=np.float32)).reshape(-1, 1, 1)
        self._bias = -np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1) * self._scale

    def __call__(self, tensor):
        if _use_numpy(tensor):
            out = tensor.numpy() * self._scale
            out += self._bias
            return torch.from_numpy(out)
        return torch.addcmul(_channel_view(self._bias.ravel(), tensor), tensor,
                             _channel_view(self._scale.ravel(), tensor))

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class Denormalize:
    """Undo Normalize: tensor * std + mean, clamped to the [0, 1] image range.

    Works on (3, H, W) and (N, 3, H, W) float tensors on any device; returns a new tensor.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, tensor):
        if tensor.dim() not in (3, 4) or tensor.shape[-3] != len(self.mean):
            raise ValueError(f"Denormalize expects (3, H, W) or (N, 3, H, W), got {tuple(tensor.shape)}")
        if _use_numpy(tensor):
            out = tensor.numpy() * np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
            out += np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
            return torch.from_numpy(np.clip(out, 0.0, 1.0, out=out))
        out = tensor * _channel_view(self.std, tensor) + _channel_view(self.mean, tensor)
        return out.clamp_(0.0, 1.0)

    def __repr__(self):
        return f"Denormalize(mean={self.mean}, std={self.std})"


# ---------------------------------------------------------------------------------------------------
# The assignment's pipelines
# ---------------------------------------------------------------------------------------------------
def get_train_transforms(fuse=True, interpolations=INTERPOLATIONS, defer=False):
    """The assignment's training augmentation; `fuse=False` resamples after every geometric step;
    `interpolations` are the Pillow filters Scale draws from; `defer=True` ends in DeferResample (the
    resampling and Normalize then happen per batch, in `resample_batch`)."""
    finish = ([DeferResample(IMAGENET_MEAN, IMAGENET_STD)] if defer
              else [ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return Compose([
        Scale(160, interpolations),
        RandomHorizontalFlip(),
        RandomColor(0.15),
        RandomRotate(15),
        RandomSizedCrop(128),
        *finish,
    ], fuse=fuse)


def get_val_transforms(center_crop=False):
    """Scale(160) bilinear (the original evaluates at 160x160); `center_crop=True` adds a 128 centre crop."""
    steps = [Scale(160, interpolations=(Image.BILINEAR,))]
    if center_crop:
        steps.append(CenterCrop(128))
    steps += [ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return Compose(steps)
