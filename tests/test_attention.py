"""GradAttention and vis_grad_attention (student_code Part III).

The saliency map is checked against the closed-form gradient of a linear classifier and against
x.grad from loss.backward(); the picture against torchvision's make_grid and hand-computed sizes.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.functional import normalize
from torchvision.utils import make_grid

import student_code
from student_code import GradAttention, vis_grad_attention

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_images(n, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(n, 3, size, size, generator=generator), MEAN, STD)


def tiny_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    )


# --- GradAttention ---------------------------------------------------------------------------------


def test_saliency_of_a_linear_classifier_matches_the_closed_form():
    # logits = W x + b; d CE(logits, y) / d x = W^T (softmax(logits) - onehot(y)), / N for the mean.
    torch.manual_seed(0)
    n, size, classes = 4, 5, 3
    linear = nn.Linear(3 * size * size, classes).double()
    model = nn.Sequential(nn.Flatten(), linear)
    images = random_images(n, size).double()
    with torch.no_grad():
        logits = model(images)
        predicted = logits.argmax(dim=1)
        residual = logits.softmax(dim=1) - F.one_hot(predicted, classes).double()  # (N, classes)
        grad = (residual @ linear.weight / n).view(n, 3, size, size)
    expected = grad.abs().amax(dim=1, keepdim=True)

    saliency = GradAttention(nn.CrossEntropyLoss()).explain(model, images)

    torch.testing.assert_close(saliency, expected, rtol=1e-12, atol=1e-15)


def test_saliency_matches_backward_on_a_cnn():
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    images = random_images(3)
    x = images.clone().requires_grad_(True)
    logits = model(x)
    F.cross_entropy(logits, logits.argmax(dim=1)).backward()
    expected = x.grad.abs().max(dim=1, keepdim=True).values
    model.zero_grad(set_to_none=True)

    saliency = GradAttention(nn.CrossEntropyLoss()).explain(model, images)

    assert saliency.shape == (3, 1, 8, 8) and saliency.dtype == images.dtype
    assert (saliency >= 0).all() and saliency.sum() > 0
    torch.testing.assert_close(saliency, expected)


@pytest.mark.parametrize("training", [True, False])
def test_saliency_leaves_input_model_and_gradients_untouched(training):
    torch.manual_seed(0)
    model = tiny_cnn().train(training)
    model[0].bias.requires_grad_(False)
    F.cross_entropy(model(random_images(2, seed=1)), torch.tensor([0, 1])).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    images = random_images(2)
    saved = images.clone()

    GradAttention(nn.CrossEntropyLoss()).explain(model, images)

    assert torch.equal(images, saved) and not images.requires_grad and images.grad is None
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
        if name in grads:
            assert torch.equal(p.grad, grads[name]), name
        else:
            assert p.grad is None, name
    assert all(m.training == training for m in model.modules())


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_saliency_works_inside_no_grad_and_inference_mode(context):
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    attention = GradAttention(nn.CrossEntropyLoss())
    expected = attention.explain(model, random_images(2))
    with context():
        saliency = attention.explain(model, random_images(2))
    assert torch.equal(saliency, expected)


def test_saliency_rejects_a_non_image_batch():
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\), got \(3, 8, 8\)"):
        GradAttention(nn.CrossEntropyLoss()).explain(tiny_cnn(), random_images(1)[0])


# --- vis_grad_attention ----------------------------------------------------------------------------


def denormalize(images):
    """Hand-written inverse of Normalize: pixel = x * std + mean."""
    return images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


@pytest.mark.parametrize("n, n_rows, size, expected_hw", [
    # make_grid: 2-pixel borders around and between; rows = ceil(n / n_rows).
    (7, 3, 8, (3 * 10 + 2, 3 * 10 + 2)),
    (10, 10, 8, (1 * 10 + 2, 10 * 10 + 2)),
    (4, 10, 16, (1 * 18 + 2, 4 * 18 + 2)),
    (1, 1, 8, (8, 8)),  # a single image: no borders
])
def test_picture_shape_and_range(n, n_rows, size, expected_hw):
    images = random_images(n, size)
    picture = vis_grad_attention(images, n_rows=n_rows)
    assert picture.shape == (3, *expected_hw)
    assert picture.min() >= 0 and picture.max() <= 1


def test_picture_without_saliency_is_the_denormalized_grid():
    images = random_images(5)
    torch.testing.assert_close(vis_grad_attention(images, n_rows=2), make_grid(denormalize(images), nrow=2))


def test_saliency_above_alpha_times_mean_is_painted_red():
    images = random_images(3)
    saliency = torch.zeros(3, 1, 8, 8)
    saliency[0, 0, 1, 2] = 10.0  # mean = 10 / 192 + 1 / 192; threshold 2 x mean ~ 0.115
    saliency[2, 0, 5, 5] = 1.0
    picture = vis_grad_attention(images, vis_alpha=2.0, n_rows=3, vis_output=saliency)
    plain = make_grid(denormalize(images), nrow=3)

    assert torch.equal(picture[1:], plain[1:])
    changed = (picture[0] != plain[0]).nonzero().tolist()
    # Image i sits at column 2 + 10 i, row 2 in the grid.
    painted = [[2 + 1, 2 + 2], [2 + 5, 2 + 20 + 5]]
    assert (picture[0][tuple(torch.tensor(painted).t())] == 1).all()
    assert all(pixel in painted for pixel in changed)


def test_alpha_decides_which_pixels_are_painted():
    images = random_images(1)
    saliency = torch.zeros(1, 1, 8, 8)
    saliency[0, 0, 0, 0] = 4.0
    saliency[0, 0, 0, 1] = 1.0  # mean 5 / 64: alpha 2 paints both, alpha 40 only the 4.0
    low = vis_grad_attention(images, vis_alpha=2.0, n_rows=1, vis_output=saliency)
    high = vis_grad_attention(images, vis_alpha=40.0, n_rows=1, vis_output=saliency)
    assert low[0, 0, 0] == 1 and low[0, 0, 1] == 1
    assert high[0, 0, 0] == 1 and high[0, 0, 1] == denormalize(images)[0, 0, 0, 1]


def test_uniform_saliency_paints_nothing():
    # No pixel stands out. The grid's zero borders must not count towards the mean: with them
    # (mean 128 / 264 here) every pixel would pass the threshold.
    images = random_images(2)
    picture = vis_grad_attention(images, vis_alpha=1.0, vis_output=torch.ones(2, 1, 8, 8))
    assert torch.equal(picture, make_grid(denormalize(images)))


def test_picture_accepts_saliency_straight_from_explain():
    torch.manual_seed(0)
    images = random_images(4)
    saliency = GradAttention(nn.CrossEntropyLoss()).explain(tiny_cnn().eval(), images)
    picture = vis_grad_attention(images, vis_output=saliency)
    assert picture.shape == (3, 12, 4 * 10 + 2) and 0 <= picture.min() and picture.max() <= 1
    assert (picture[0] == 1).any()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_rows": 0}, "n_rows must be an int >= 1"),
    ({"vis_output": torch.zeros(2, 3, 8, 8)}, r"vis_output must be a saliency map of shape \(2, 1, 8, 8\)"),
    ({"vis_output": torch.zeros(1, 1, 8, 8)}, r"got \(1, 1, 8, 8\)"),
])
def test_picture_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vis_grad_attention(random_images(2), **kwargs)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_picture_and_saliency_from_cuda_tensors():
    model = tiny_cnn().cuda().eval()
    images = random_images(2).cuda()
    saliency = GradAttention(nn.CrossEntropyLoss()).explain(model, images)
    assert saliency.device == images.device
    picture = vis_grad_attention(images, vis_output=saliency)
    assert picture.device.type == "cpu" and picture.shape == (3, 12, 22)


def test_aliases():
    assert student_code.default_attention is GradAttention
    assert student_code.default_visfunction is vis_grad_attention
