"""custom_transforms against Pillow, torchvision and hand-computed values."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

import custom_transforms as T


def smooth_image(width=128, height=128, seed=0):
    """A smooth RGB test image (gradients plus low-frequency waves), so interpolation differences stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [127 + 60 * np.sin(x / w1 + p) + 60 * np.cos(y / w2 + p)
                for w1, w2, p in rng.uniform([9, 9, 0], [20, 20, 6], (3, 3))]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def as_float(image):
    return np.asarray(image, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Pipelines: shapes, ranges, reproducibility
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(128, 128), (100, 150), (200, 90)])
def test_pipelines_output_shapes_and_ranges(size):
    image = smooth_image(*size)
    mean = np.array(T.IMAGENET_MEAN).reshape(3, 1, 1)
    std = np.array(T.IMAGENET_STD).reshape(3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std  # normalized black and white, per channel
    torch.manual_seed(0)
    for pipeline, shape in [(T.get_train_transforms(), (3, 128, 128)),
                            (T.get_val_transforms(center_crop=True), (3, 128, 128))]:
        for _ in range(5):
            out = pipeline(image)
            assert out.shape == shape and out.dtype == torch.float32
            values = out.numpy()
            assert np.all(values >= low - 1e-5) and np.all(values <= high + 1e-5)
    val = T.get_val_transforms()(image)
    short = min(size)
    expected_hw = tuple(int(round(160 * s / short)) for s in (size[1], size[0]))
    assert val.shape == (3, *expected_hw)


def test_val_pipeline_matches_torch_and_pillow_resize_and_torchvision_normalize():
    image = smooth_image(128, 128)
    # Resampled in float (grid_sample): equal to torch's own bilinear resize of the float image ...
    resized = torch.nn.functional.interpolate(TF.to_tensor(image)[None], size=(160, 160), mode="bilinear",
                                              align_corners=False)[0]
    expected = TF.normalize(resized, T.IMAGENET_MEAN, T.IMAGENET_STD)
    torch.testing.assert_close(T.get_val_transforms()(image), expected, atol=1e-5, rtol=0)
    # ... and within one grey level of Pillow's, which rounds to 8 bits.
    pillow = TF.normalize(TF.to_tensor(image.resize((160, 160), Image.BILINEAR)),
                          T.IMAGENET_MEAN, T.IMAGENET_STD)
    torch.testing.assert_close(T.Denormalize()(T.get_val_transforms()(image)), T.Denormalize()(pillow),
                               atol=1.01 / 255, rtol=0)
    # The crop is fused into the resize (one resampling of the source box), so pixels may differ
    # from resize-then-crop by rounding: compare in the [0, 1] image range within 3 grey levels.
    cropped = T.Denormalize()(T.get_val_transforms(center_crop=True)(image))
    torch.testing.assert_close(cropped, T.Denormalize()(expected[:, 16:144, 16:144]), atol=3 / 255, rtol=0)


def test_train_pipeline_is_reproducible_from_torch_seed():
    image = smooth_image()
    pipeline = T.get_train_transforms()
    torch.manual_seed(7)
    first = [pipeline(image) for _ in range(4)]
    torch.manual_seed(7)
    second = [pipeline(image) for _ in range(4)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])


def test_fused_pipeline_matches_step_by_step_pipeline():
    """One resampling gives the same geometry as resampling after every step (same random draws)."""
    image = smooth_image(seed=3)
    fused, stepwise = T.get_train_transforms(fuse=True), T.get_train_transforms(fuse=False)
    for seed in range(8):
        torch.manual_seed(seed)
        a = fused(image)
        torch.manual_seed(seed)
        b = stepwise(image)
        diff = (T.Denormalize()(a) - T.Denormalize()(b)).abs()
        # Interpolation of a smooth image differs by a few grey levels at most on average.
        assert diff.mean() < 4 / 255, (seed, diff.mean())


# ---------------------------------------------------------------------------------------------------
# Single steps
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", T.INTERPOLATIONS)
def test_scale_equals_pillow_resize(interpolation):
    image = smooth_image(100, 128)
    out = T.Scale(160, interpolations=(interpolation,))(image)
    assert out.size == (160, 205)  # shorter side 100 -> 160, longer 128 * 1.6 = 204.8
    assert np.array_equal(np.asarray(out), np.asarray(image.resize((160, 205), interpolation)))


def test_scale_draws_every_interpolation():
    image = smooth_image(64, 64)
    results = set()
    torch.manual_seed(0)
    for _ in range(30):
        results.add(T.Scale(100)(image).tobytes())
    assert len(results) == len(T.INTERPOLATIONS)


def test_horizontal_flip_mirrors_or_keeps():
    image = smooth_image(90, 70)
    mirrored, same = np.asarray(ImageOps.mirror(image)), np.asarray(image)
    outcomes = []
    torch.manual_seed(0)
    for _ in range(20):
        out = np.asarray(T.RandomHorizontalFlip()(image))
        assert np.array_equal(out, mirrored) or np.array_equal(out, same)
        outcomes.append(np.array_equal(out, mirrored))
    assert 0 < sum(outcomes) < len(outcomes)


@pytest.mark.parametrize("degrees", [5.0, 15.0, 30.0])
def test_rotated_rect_square_matches_closed_form(degrees):
    # For a square the largest inscribed axis-aligned square has side s / (cos a + sin a).
    angle = math.radians(degrees)
    w, h = T.rotated_rect_with_max_area(160, 160, angle)
    expected = 160 / (math.cos(angle) + math.sin(angle))
    assert w == pytest.approx(expected) and h == pytest.approx(expected)


def test_rotated_rect_corners_lie_inside_rotated_image():
    width, height, angle = 200, 120, math.radians(12)
    w, h = T.rotated_rect_with_max_area(width, height, angle)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    for sx, sy in [(1, 1), (1, -1), (-1, 1), (-1, -1)]:
        x, y = sx * w / 2, sy * h / 2
        # Rotate the crop corner back into the frame of the source rectangle.
        u, v = cos_a * x + sin_a * y, -sin_a * x + cos_a * y
        assert abs(u) <= width / 2 + 1e-6 and abs(v) <= height / 2 + 1e-6


def test_random_rotate_matches_pillow_rotate_and_centre_crop():
    image = smooth_image(160, 160, seed=1)
    torch.manual_seed(3)
    degree = -15 + 30 * torch.rand(()).item()  # the draw RandomRotate makes with this seed
    assert abs(degree) > 1
    torch.manual_seed(3)
    out = T.RandomRotate(15)(image)
    side = int(160 / (math.cos(math.radians(abs(degree))) + math.sin(math.radians(abs(degree)))))
    assert out.size == (side, side)
    rotated = image.rotate(degree, resample=Image.BILINEAR)
    left = (160 - side) / 2
    reference = rotated.crop((round(left), round(left), round(left) + side, round(left) + side))
    # Same rotation, but the crop of the reference snaps to whole pixels: allow a small difference.
    assert np.abs(as_float(out) - as_float(reference)).mean() < 6


def test_random_rotate_has_no_black_corners():
    white = Image.new("RGB", (160, 160), (255, 255, 255))
    torch.manual_seed(0)
    for _ in range(10):
        assert np.asarray(T.RandomRotate(15)(white)).min() >= 250


def test_train_pipeline_never_samples_outside_the_image():
    """A white image stays white up to RandomColor's darkest gain: no black borders from the warp."""
    white = Image.new("RGB", (128, 128), (255, 255, 255))
    pipeline, denormalize = T.get_train_transforms(), T.Denormalize()
    torch.manual_seed(0)
    for _ in range(30):
        assert denormalize(pipeline(white)).min() >= 0.85 - 2 / 255


def test_axis_aligned_warp_with_mirror_is_exact():
    """Without rotation the warp takes the resize-with-box path, and a mirror becomes a transpose."""
    image = smooth_image(100, 120)
    warp = T.AffineWarp(image)
    warp.then((-1.0, 0.0, 100.0, 0.0, 1.0, 0.0), (100, 120))  # what RandomHorizontalFlip plans
    T.CenterCrop(80).plan(warp)
    expected = ImageOps.mirror(image).crop((10, 20, 90, 100))
    assert np.array_equal(np.asarray(warp.render()), np.asarray(expected))


def test_random_rotate_skips_small_angles():
    image = smooth_image()
    torch.manual_seed(0)
    out = T.RandomRotate(1.0)(image)  # every draw lies within +-1 degree
    assert np.array_equal(np.asarray(out), np.asarray(image))


def test_random_sized_crop_fallback_is_scale_then_centre_crop():
    image = smooth_image(100, 150)
    # An impossible area range makes all 10 trials fail.
    out = T.RandomSizedCrop(64, area_range=(2.0, 3.0))(image)
    reference = image.resize((64, 64), Image.BILINEAR, box=(0, 25, 100, 125))
    assert np.array_equal(np.asarray(out), np.asarray(reference))


def test_random_sized_crop_areas_and_aspects_within_range():
    image = smooth_image(160, 160)
    torch.manual_seed(0)
    crop = T.RandomSizedCrop(128)
    for _ in range(50):
        warp = crop.plan(T.AffineWarp(image))
        a, b, c, d, e, f = warp.matrix
        crop_w, crop_h = a * 128, e * 128  # source pixels covered by the 128x128 output
        assert b == 0 and d == 0 and warp.size == (128, 128)
        assert 0.25 * 160 * 160 * 0.95 <= crop_w * crop_h <= 160 * 160
        assert 0.8 * 0.95 <= crop_w / crop_h <= 1.2 / 0.8 * 1.05
        assert 0 <= c and c + crop_w <= 160 and 0 <= f and f + crop_h <= 160


def test_random_color_on_pil_matches_numpy_with_same_draws():
    image = smooth_image()
    torch.manual_seed(5)
    gains = 1 + 0.15 * (2 * torch.rand(3).numpy().astype(np.float64) - 1)
    torch.manual_seed(5)
    out = T.RandomColor(0.15)(image)
    expected = np.clip(as_float(image) * gains + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(out), expected)


def test_random_color_on_tensor_scales_channels_within_range():
    tensor = torch.full((3, 8, 8), 0.5)
    torch.manual_seed(0)
    for _ in range(20):
        out = T.RandomColor(0.15)(tensor)
        ratios = out[:, 0, 0] / 0.5
        assert torch.all(ratios >= 0.85 - 1e-6) and torch.all(ratios <= 1.15 + 1e-6)
        assert torch.all(out == out[:, :1, :1])  # one gain per channel


def test_to_tensor_matches_torchvision():
    image = smooth_image(40, 30)
    torch.testing.assert_close(T.ToTensor()(image), TF.to_tensor(image))
    gray = image.convert("L")
    torch.testing.assert_close(T.ToTensor()(gray), TF.to_tensor(gray))


def test_normalize_matches_torchvision_and_denormalize_inverts_it():
    torch.manual_seed(0)
    tensor = torch.rand(3, 16, 12)
    normalized = T.Normalize()(tensor)
    torch.testing.assert_close(normalized, TF.normalize(tensor, T.IMAGENET_MEAN, T.IMAGENET_STD))
    torch.testing.assert_close(T.Denormalize()(normalized), tensor)
    batch = torch.stack([normalized, normalized])  # (N, 3, H, W)
    torch.testing.assert_close(T.Denormalize()(batch), torch.stack([tensor, tensor]))
    # Tensors in autograd (and on GPUs) take the torch path instead of NumPy: same values.
    leaf = tensor.clone().requires_grad_()
    torch.testing.assert_close(T.Normalize()(leaf), normalized)
    torch.testing.assert_close(T.Denormalize()(T.Normalize()(leaf)), tensor)


def test_denormalize_clamps_to_image_range():
    out = T.Denormalize()(torch.tensor([-100.0, 0.0, 100.0]).view(3, 1, 1).expand(3, 4, 4))
    assert out.min() >= 0 and out.max() <= 1
    assert out[0].max() == 0 and out[2].min() == 1


@pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4, 5), (4, 8, 8)])
def test_denormalize_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"expects \(3, H, W\) or \(N, 3, H, W\)"):
        T.Denormalize()(torch.zeros(shape))


def test_center_crop_rejects_small_images():
    with pytest.raises(ValueError, match="larger than the 100x100 image"):
        T.CenterCrop(128)(smooth_image(100, 100))


# ---------------------------------------------------------------------------------------------------
# Resampling into tensors (grid_sample) and per batch (DeferResample + resample_batch)
# ---------------------------------------------------------------------------------------------------
def test_sampling_grid_matches_affine_grid():
    theta = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    for height, width in [(128, 128), (7, 11)]:
        expected = torch.nn.functional.affine_grid(theta, (4, 3, height, width), align_corners=False)
        torch.testing.assert_close(T._sampling_grid(theta, height, width), expected)


@pytest.mark.parametrize("interpolation", T.INTERPOLATIONS)
def test_tensor_warp_of_a_whole_pixel_crop_is_exact(interpolation):
    """Sampling exactly at source pixel centres must return the pixels, whatever the filter."""
    image = smooth_image(100, 120)
    warp = T.CenterCrop((64, 80)).plan(T.AffineWarp(image, resample=interpolation))
    expected = TF.to_tensor(image.crop((18, 20, 82, 100)))  # (100 - 64) / 2, (120 - 80) / 2
    torch.testing.assert_close(T.ToTensor().from_warp(warp), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("interpolation", T.INTERPOLATIONS)
def test_tensor_warp_matches_pillow_affine_warp(interpolation):
    """A rotated, scaled warp rendered by grid_sample agrees with Pillow's own affine warp (bicubic:
    Keys a = -0.75 against Pillow's -0.5) inside the image; both read the same source pixels."""
    image = smooth_image(seed=4)
    cos, sin = math.cos(0.2), math.sin(0.2)
    matrix = (0.8 * cos, 0.8 * sin, 20.0, -0.8 * sin, 0.8 * cos, 40.0)  # stays inside 128x128
    warp = T.AffineWarp(image, resample=interpolation).then(matrix, (96, 96))
    pillow = TF.to_tensor(image.transform((96, 96), Image.AFFINE, matrix, resample=interpolation))
    diff = (T.ToTensor().from_warp(warp) - pillow).abs()
    assert diff.mean() < 1 / 255 and diff.max() < 8 / 255, (diff.mean(), diff.max())


def test_to_tensor_renders_pillow_only_filters_with_pillow():
    image = smooth_image(seed=2)
    warp = T.Scale(160, interpolations=(Image.LANCZOS,)).plan(T.AffineWarp(image))
    expected = TF.to_tensor(image.resize((160, 160), Image.LANCZOS))
    torch.testing.assert_close(T.ToTensor().from_warp(warp), expected)


def _deferred_and_per_image(images, seeds, **kwargs):
    deferred, per_image = T.get_train_transforms(defer=True, **kwargs), T.get_train_transforms(**kwargs)
    items, expected = [], []
    for image, seed in zip(images, seeds):
        torch.manual_seed(seed)
        items.append(deferred(image))
        torch.manual_seed(seed)
        expected.append(per_image(image))
    return torch.utils.data.default_collate(items), torch.stack(expected)


def test_deferred_batch_equals_per_image_pipeline():
    images = [smooth_image(seed=s) for s in range(12)]
    batch, expected = _deferred_and_per_image(images, range(12))
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (12, 128, 128, 3)
    assert len(set(batch["filter"].tolist())) == 3  # a batch that mixes all three filters
    out = T.resample_batch(batch)
    assert out.shape == (12, 3, 128, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_deferred_batch_in_channels_last():
    batch, expected = _deferred_and_per_image([smooth_image(seed=1)] * 3, range(3))
    out = T.resample_batch(batch, torch.device("cpu"), torch.channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_deferred_sources_of_other_sizes_are_resized_to_stack():
    """Normalized warps do not depend on the source's pixel size: a resized source gives nearly the
    same crop (one extra bilinear resampling)."""
    images = [smooth_image(100, 150, seed=1), smooth_image(128, 128, seed=2), smooth_image(200, 90, seed=3)]
    batch, expected = _deferred_and_per_image(images, [3, 4, 5], interpolations=(Image.BILINEAR,))
    assert batch["pixels"].shape == (3, 128, 128, 3)
    out = T.resample_batch(batch)
    diff = (T.Denormalize()(out) - T.Denormalize()(expected)).abs()
    assert diff.mean() < 3 / 255, diff.mean()


def test_resample_batch_rejects_mixed_output_sizes():
    small = T.Compose([T.CenterCrop(64), T.DeferResample()])(smooth_image())
    large = T.Compose([T.CenterCrop(96), T.DeferResample()])(smooth_image())
    batch = {key: torch.stack([small[key], large[key]]) for key in ("theta", "filter", "gains", "mean", "std",
                                                                    "size")}
    batch["pixels"] = torch.stack([small["pixels"], large["pixels"]])
    with pytest.raises(ValueError, match=r"mixes output sizes \[\(64, 64\), \(96, 96\)\]"):
        T.resample_batch(batch)


def test_defer_resample_rejects_pillow_only_filters():
    pipeline = T.get_train_transforms(defer=True, interpolations=(Image.LANCZOS,))
    message = "only the NEAREST, BILINEAR and BICUBIC filters, got Pillow filter 1"
    with pytest.raises(ValueError, match=message):
        pipeline(smooth_image())
