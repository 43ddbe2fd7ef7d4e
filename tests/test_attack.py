"""PGDAttack (student_code Part III) and the harness's adversarial training batch (attacks.py), and what both analyses (PGD and
saliency) leave of a model in train mode.

The attack is checked against a plain PGD loop written here from Madry et al. (2018), against the
bounds torchvision's Normalize gives for black and white pixels, and on a tiny CNN trained in a
few seconds on a synthetic problem that it solves, so that "accuracy drops" is measured, not assumed.
"""
import copy
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.functional import normalize

import student_code
from harness.attacks import training_batch as adversarial_training_batch
from student_code import GradAttention, PGDAttack

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 4
SIZE = 16
# Rounding in (x +- epsilon) and in x_adv - x; float32 spacing near 2.6 is 2.4e-7.
TOL = 1e-6


def pixels_to_input(pixels):
    """Images in [0, 1] -> what the networks see (torchvision's Normalize, someone else's answer)."""
    return normalize(pixels, MEAN, STD)


def tiny_cnn(batch_norm=False):
    norm = nn.BatchNorm2d(8) if batch_norm else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 8, 8)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 4, 4)
        nn.Flatten(), nn.Linear(16 * 4 * 4, NUM_CLASSES),
    )


def random_images(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pixels_to_input(torch.rand(n, 3, SIZE, SIZE, generator=generator))


class SyntheticProblem:
    """Each class is a faint fixed pattern (0.08 of the pixel range) on grey, plus noise."""

    def __init__(self, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.patterns = torch.rand(NUM_CLASSES, 3, SIZE, SIZE, generator=generator) * 2 - 1

    def sample(self, n):
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=self.generator)
        noise = torch.randn(n, 3, SIZE, SIZE, generator=self.generator)
        pixels = (0.5 + 0.08 * self.patterns[labels] + 0.05 * noise).clamp(0, 1)
        return pixels_to_input(pixels), labels


def accuracy(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


@pytest.fixture(scope="module")
def trained():
    """(model in eval mode, test images, test labels): a tiny CNN that solves the synthetic problem."""
    torch.manual_seed(0)
    problem = SyntheticProblem()
    train_x, train_y = problem.sample(256)
    test_x, test_y = problem.sample(48)
    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for start in range(0, len(train_x), 64):
            loss = F.cross_entropy(model(train_x[start:start + 64]), train_y[start:start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    assert accuracy(model, test_x, test_y) >= 0.9, "the fixture's model did not learn the problem"
    return model, test_x, test_y


def reference_pgd(model, x, target, num_steps, step_size, epsilon, targeted):
    """The textbook loop: x.grad from loss.backward(), a signed step, clamp to the ball, clamp to the range."""
    low = pixels_to_input(torch.zeros_like(x))
    high = pixels_to_input(torch.ones_like(x))
    adv = x.clone()
    for _ in range(num_steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), target)
        loss.backward()
        step = -step_size * adv.grad.sign() if targeted else step_size * adv.grad.sign()
        adv = adv.detach() + step
        adv = torch.min(torch.max(adv, x - epsilon), x + epsilon)
        adv = torch.min(torch.max(adv, low), high)
    model.zero_grad(set_to_none=True)
    return adv


# --- bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("targeted", [True, False])
@pytest.mark.parametrize("random_start", [False, True])
def test_adversarial_stays_in_the_epsilon_ball_and_the_image_range(trained, targeted, random_start):
    model, images, labels = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=5, step_size=0.05, epsilon=0.1,
                       targeted=targeted, random_start=random_start)
    adv = attack.perturb(model, images, None if targeted else labels)
    assert (adv - images).abs().max().item() <= 0.1 + TOL
    low, high = pixels_to_input(torch.zeros_like(images)), pixels_to_input(torch.ones_like(images))
    assert (adv >= low).all() and (adv <= high).all()
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.device == images.device


def test_range_projection_is_active_on_black_and_white_pixels():
    # Saturated images: the gradient pushes about half the pixels outside [0, 1]; they must stop on the bound.
    generator = torch.Generator().manual_seed(1)
    pixels = (torch.rand(8, 3, SIZE, SIZE, generator=generator) > 0.5).float()
    images = pixels_to_input(pixels)
    torch.manual_seed(0)
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=3, step_size=0.1, epsilon=0.3).perturb(tiny_cnn(), images)
    low, high = pixels_to_input(torch.zeros_like(images)), pixels_to_input(torch.ones_like(images))
    assert (adv >= low).all() and (adv <= high).all()
    moved = (adv != images)
    assert moved.any(), "the attack did not move any pixel"
    # A pixel at a bound can only move inwards, so every moved one is strictly inside the range.
    assert ((adv[moved] > low.expand_as(adv)[moved]) & (adv[moved] < high.expand_as(adv)[moved])).all()
    assert (adv == images).float().mean() > 0.2, "too few pixels were held on the bound"


def test_valid_image_range_matches_torchvision_normalize():
    like = torch.zeros(1, 3, 1, 1)
    low, high = student_code.valid_image_range(like)
    assert torch.equal(low, pixels_to_input(torch.zeros(1, 3, 1, 1)))
    assert torch.equal(high, pixels_to_input(torch.ones(1, 3, 1, 1)))


def test_imagenet_constants_match_the_data_module():
    transforms = pytest.importorskip("custom_transforms")
    assert student_code.IMAGENET_MEAN == tuple(transforms.IMAGENET_MEAN)
    assert student_code.IMAGENET_STD == tuple(transforms.IMAGENET_STD)


def test_input_outside_the_range_is_projected_into_it():
    images = torch.full((2, 3, SIZE, SIZE), 10.0)  # far above every channel's bound
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=1, epsilon=0.1).perturb(tiny_cnn(), images)
    high = pixels_to_input(torch.ones(1, 3, 1, 1))
    assert torch.equal(adv, high.expand_as(adv))


# --- against a reference and on a trained model ----------------------------------------------------


@pytest.mark.parametrize("targeted", [True, False])
def test_matches_a_reference_pgd_loop(targeted):
    torch.manual_seed(0)
    model = tiny_cnn().double().eval()
    images = random_images(6).double()
    with torch.no_grad():
        target = model(images).argmin(dim=1) if targeted else torch.arange(6) % NUM_CLASSES
    expected = reference_pgd(model, images, target, num_steps=4, step_size=0.03, epsilon=0.05, targeted=targeted)
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=4, step_size=0.03, epsilon=0.05, targeted=targeted)
    # Targeted without a target: the least confident label, which is what `target` holds.
    adv = attack.perturb(model, images, None if targeted else target)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


def test_target_loss_goes_down_and_accuracy_drops(trained):
    model, images, labels = trained
    with torch.no_grad():
        least_confident = model(images).argmin(dim=1)
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=10, step_size=0.025, epsilon=0.1).perturb(model, images)
    with torch.no_grad():
        before = F.cross_entropy(model(images), least_confident, reduction="none")
        after = F.cross_entropy(model(adv), least_confident, reduction="none")
    assert (after < before).all()
    clean_acc, adv_acc = accuracy(model, images, labels), accuracy(model, adv, labels)
    assert adv_acc < clean_acc - 0.5, f"accuracy {clean_acc:.2f} -> {adv_acc:.2f}"


def test_untargeted_raises_the_true_label_loss_and_beats_random_noise(trained):
    model, images, labels = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=10, step_size=0.025, epsilon=0.1, targeted=False)
    adv = attack.perturb(model, images, labels)
    generator = torch.Generator().manual_seed(0)
    noise = images + 0.1 * torch.randint(0, 2, images.shape, generator=generator).float().mul(2).sub(1)
    with torch.no_grad():
        before = F.cross_entropy(model(images), labels, reduction="none")
        after = F.cross_entropy(model(adv), labels, reduction="none")
    assert (after > before).all()
    # Noise of the same L-inf size barely matters; the attack's direction does.
    assert accuracy(model, adv, labels) < 0.3 < accuracy(model, noise, labels)


def test_explicit_target_is_reached(trained):
    model, images, _ = trained
    target = torch.full((images.shape[0],), 2)
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=10, step_size=0.025, epsilon=0.1).perturb(model, images, target)
    assert accuracy(model, adv, target) > accuracy(model, images, target) + 0.5


def test_loss_with_reduction_none_gives_the_same_attack(trained):
    model, images, _ = trained
    mean_loss = PGDAttack(nn.CrossEntropyLoss(), num_steps=3).perturb(model, images)
    per_image = PGDAttack(nn.CrossEntropyLoss(reduction="none"), num_steps=3).perturb(model, images)
    assert torch.equal(mean_loss, per_image)


# --- determinism and cost --------------------------------------------------------------------------


def test_deterministic_without_random_start(trained):
    model, images, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=3)
    assert torch.equal(attack.perturb(model, images), attack.perturb(model, images))


def test_random_start_follows_the_seed(trained):
    model, images, labels = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=1, targeted=False, random_start=True)
    torch.manual_seed(1)
    first = attack.perturb(model, images, labels)
    torch.manual_seed(1)
    again = attack.perturb(model, images, labels)
    torch.manual_seed(2)
    other = attack.perturb(model, images, labels)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_costs_num_steps_passes_and_keeps_no_graph_across_steps():
    model = tiny_cnn()
    step_inputs = []

    def check_previous_steps_freed(module, args):
        # Each step's input must be gone by the next step: no graph holds it.
        assert all(ref() is None for ref in step_inputs[:-1]), "an earlier step's graph is still alive"
        step_inputs.append(weakref.ref(args[0]))

    model.register_forward_pre_hook(check_previous_steps_freed)
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=4).perturb(model, random_images(4))
    assert len(step_inputs) == 4
    assert all(ref() is None for ref in step_inputs)
    assert adv.grad_fn is None and not adv.requires_grad


def test_epsilon_zero_returns_the_input_without_a_pass():
    model = tiny_cnn()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    images = random_images(3)
    adv = PGDAttack(nn.CrossEntropyLoss(), epsilon=0).perturb(model, images)
    assert torch.equal(adv, images) and adv.data_ptr() != images.data_ptr() and not calls


# --- nothing the caller owns changes ----------------------------------------------------------------


def bn_dropout_net():
    """Batch norms and dropout in train mode, except the second batch norm, deliberately left in eval."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 8, 8)
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),  # (N, 8, 2, 2)
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(32, NUM_CLASSES),
    ).train()
    model[5].eval()
    return model


ANALYSES = {
    "pgd": lambda model, images: PGDAttack(nn.CrossEntropyLoss(), num_steps=3).perturb(model, images),
    "saliency": lambda model, images: GradAttention(nn.CrossEntropyLoss()).explain(model, images),
}


@pytest.mark.parametrize("analysis", ANALYSES.values(), ids=ANALYSES.keys())
def test_analysis_of_a_train_mode_model_leaves_it_exactly_as_it_was(analysis):
    torch.manual_seed(0)
    model = bn_dropout_net()
    model(random_images(4, seed=5))  # running statistics away from their initial values
    state = copy.deepcopy(model.state_dict())  # buffers included: running mean/var, num_batches_tracked
    modes = [m.training for m in model.modules()]
    modes_seen = []
    for module in model.modules():
        module.register_forward_pre_hook(lambda module, args: modes_seen.append(module.training))
    images = random_images(4)

    first, second = analysis(model, images), analysis(model, images)

    assert not any(modes_seen)  # every module ran in eval mode
    assert [m.training for m in model.modules()] == modes  # the frozen batch norm included
    assert state.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert torch.equal(first, second)  # dropout did not draw twice
    # Someone else's answer: the same analysis of an eval-mode copy.
    assert torch.equal(first, analysis(copy.deepcopy(model).eval(), images))




@pytest.mark.parametrize("training", [True, False])
def test_input_gradients_flags_and_mode_untouched(training):
    torch.manual_seed(0)
    model = tiny_cnn(batch_norm=True)
    model.train(training)
    frozen = model[0].bias
    frozen.requires_grad_(False)
    F.cross_entropy(model(random_images(4, seed=3)), torch.zeros(4, dtype=torch.long)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    images = random_images(4)
    saved = images.clone()

    PGDAttack(nn.CrossEntropyLoss(), num_steps=2, random_start=True).perturb(model, images)

    assert torch.equal(images, saved) and not images.requires_grad and images.grad is None
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert frozen.grad is None
    for name, p in model.named_parameters():
        if name in grads:
            assert torch.equal(p.grad, grads[name]), name
    assert all(m.training == training for m in model.modules())


def test_input_that_requires_grad_is_left_so():
    images = random_images(2).requires_grad_(True)
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=1).perturb(tiny_cnn(), images)
    assert images.requires_grad and images.grad is None and not adv.requires_grad


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_inside_no_grad_and_inference_mode(trained, context):
    model, images, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=2)
    expected = attack.perturb(model, images)
    with context():
        adv = attack.perturb(model, images)
    assert torch.equal(adv, expected)


# --- argument checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": -0.1}, "epsilon must be >= 0"),
    ({"epsilon": float("nan")}, "epsilon must be >= 0"),
    ({"num_steps": 0}, "num_steps must be an int >= 1"),
    ({"num_steps": 2.5}, "num_steps must be an int >= 1"),
    ({"step_size": 0}, "step_size must be > 0"),
    ({"step_size": -0.01}, "step_size must be > 0"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PGDAttack(nn.CrossEntropyLoss(), **kwargs)


def test_untargeted_without_labels_raises():
    attack = PGDAttack(nn.CrossEntropyLoss(), targeted=False)
    with pytest.raises(ValueError, match="untargeted PGDAttack needs the true labels"):
        attack.perturb(tiny_cnn(), random_images(2))


@pytest.mark.parametrize("images, target, error, message", [
    (torch.zeros(2, 1, 16, 16), None, ValueError, r"RGB images \(N, 3, H, W\), got \(2, 1, 16, 16\)"),
    (torch.zeros(3, 16, 16), None, ValueError, r"RGB images \(N, 3, H, W\), got \(3, 16, 16\)"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.long), None, TypeError, "float tensor"),
    (torch.zeros(2, 3, 16, 16), torch.zeros(3, dtype=torch.long), ValueError, "target must be a tensor of 2 class"),
])
def test_bad_inputs_raise(images, target, error, message):
    with pytest.raises(error, match=message):
        PGDAttack(nn.CrossEntropyLoss()).perturb(tiny_cnn(), images, target)


def test_aliases():
    assert student_code.default_attack is PGDAttack


# --- adversarial training --------------------------------------------------------------------------


@pytest.mark.parametrize("mode, factor", [("mixed", 2), ("adv", 1)])
def test_adversarial_training_batch_shapes_and_labels(mode, factor):
    torch.manual_seed(0)
    model = tiny_cnn(batch_norm=True)
    images, labels = random_images(5), torch.arange(5) % NUM_CLASSES
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=2)
    batch, batch_labels = adversarial_training_batch(model, attack, images, labels, mode=mode)
    assert batch.shape == (5 * factor, 3, SIZE, SIZE) and torch.equal(batch_labels, labels.repeat(factor))
    adv = batch[5:] if mode == "mixed" else batch
    if mode == "mixed":
        assert torch.equal(batch[:5], images)
    # The adversarial half is the attack on the model in eval mode.
    assert torch.equal(adv, attack.perturb(model.eval(), images))


def test_adversarial_training_batch_attacks_in_eval_mode_and_keeps_bn_statistics():
    torch.manual_seed(0)
    model = tiny_cnn(batch_norm=True).train()
    model[1].eval()  # a frozen batch norm must stay frozen afterwards
    bn = nn.BatchNorm2d(3).train()
    model.insert(0, bn)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    modes_seen = []
    model.register_forward_pre_hook(lambda module, args: modes_seen.append(module.training))
    modes = [m.training for m in model.modules()]

    adversarial_training_batch(model, PGDAttack(nn.CrossEntropyLoss(), num_steps=3), random_images(4),
                               torch.zeros(4, dtype=torch.long))

    assert modes_seen == [False] * 3
    assert [m.training for m in model.modules()] == modes
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name


def test_adversarial_training_batch_gives_an_untargeted_attack_the_labels():
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    images, labels = random_images(4), torch.tensor([0, 1, 2, 3])
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=2, targeted=False)
    adv, _ = adversarial_training_batch(model, attack, images, labels, mode="adv")
    assert torch.equal(adv, attack.perturb(model, images, labels))


@pytest.mark.parametrize("mode, labels, message", [
    ("both", torch.zeros(2, dtype=torch.long), "mode must be one of mixed, adv; got 'both'"),
    ("mixed", torch.zeros(3, dtype=torch.long), "labels must be a tensor of 2 class indices"),
])
def test_adversarial_training_batch_bad_arguments(mode, labels, message):
    with pytest.raises(ValueError, match=message):
        adversarial_training_batch(tiny_cnn(), PGDAttack(nn.CrossEntropyLoss()), random_images(2), labels, mode)


def test_adversarial_training_smoke_run():
    # A few SGD steps on generated tensors, as --adv-train runs them: the loss is finite, the weights
    # move, and batch norm counts exactly one batch per step (the attack passes run in eval mode).
    torch.manual_seed(0)
    problem = SyntheticProblem(seed=1)
    model = tiny_cnn(batch_norm=True).train()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=2, step_size=0.05, epsilon=0.1, targeted=False)
    for _ in range(4):
        images, labels = problem.sample(8)
        batch, batch_labels = adversarial_training_batch(model, attack, images, labels, mode="mixed")
        assert batch.shape == (16, 3, SIZE, SIZE) and batch_labels.shape == (16,)
        loss = F.cross_entropy(model(batch), batch_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert model.training and model[1].num_batches_tracked.item() == 4
    assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start))
