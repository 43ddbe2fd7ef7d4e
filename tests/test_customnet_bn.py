"""bench/customnet_bn.py's pieces: the unshared CustomNet, its copy of a trained CustomNet, evaluation
with batch statistics and the recomputed running statistics, checked against PyTorch's own BN."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn

BENCH = Path(__file__).resolve().parent.parent / "bench" / "customnet_bn.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("customnet_bn", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained_like(bench, num_classes=5):
    """A CustomNet whose running statistics are not the initial ones (a few train-mode passes)."""
    model = bench.build(False, num_classes, "pytorch", seed=0).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("init", ["pytorch", "kaiming"])
def test_unshared_starts_from_customnets_weights(bench, init):
    shared = bench.build(False, 7, init, seed=3)
    unshared = bench.build(True, 7, init, seed=3)
    extra = {name: p for name, p in unshared.state_dict().items() if name not in shared.state_dict()}
    assert sum(p.numel() for n, p in unshared.named_parameters() if n in extra) == 300_480
    assert all(name.startswith(("residual_block2_again.", "downsample_again.")) for name in extra)
    for name, value in shared.state_dict().items():
        torch.testing.assert_close(unshared.state_dict()[name], value, rtol=0, atol=0, msg=name)
    # The copies are drawn afresh, not copied.
    assert not torch.equal(unshared.residual_block2_again[0].weight, unshared.residual_block2[0].weight)
    assert unshared(torch.randn(2, 3, 48, 48)).shape == (2, 7)


def test_unshare_is_the_same_function(bench):
    model = trained_like(bench)
    copy = bench.unshare(model)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x))
        with bench.batch_statistics(model), bench.batch_statistics(copy):
            torch.testing.assert_close(copy(x), model(x))


def test_batch_statistics_is_train_mode_and_restores_the_buffers(bench):
    model = trained_like(bench)
    before = {name: b.clone() for name, b in model.named_buffers()}
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        with bench.batch_statistics(model):
            inside = model(x)
        reference = trained_like(bench).train()(x)
    torch.testing.assert_close(inside, reference)
    assert not model.training and not any(m.training for m in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_recomputed_statistics_average_the_batches_and_both_applications(bench):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    batches = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(3)]

    class Twice(nn.Module):  # one BN applied to two inputs, as CustomNet does
        def __init__(self):
            super().__init__()
            self.bn = bn

        def forward(self, x):
            return self.bn(x) + self.bn(2 * x + 1)

    bench.recompute_statistics_(Twice(), [(x, None) for x in batches])
    seen = batches + [2 * x + 1 for x in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0))
    torch.testing.assert_close(bn.running_var,
                               torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in seen]).mean(0))
    assert bn.momentum == 0.1 and not bn.training


def test_per_application_statistics_reproduce_batch_statistics_and_pooled_ones_do_not(bench):
    model = trained_like(bench)
    x = torch.randn(32, 3, 64, 64)
    per_application = bench.recompute_statistics_(bench.unshare(model), [(x, None)])
    pooled = bench.recompute_statistics_(model, [(x, None)])
    with torch.no_grad():
        with bench.batch_statistics(model):
            batch = model(x)
        # Eval mode with statistics of this very batch equals batch statistics, up to the unbiased
        # running variance (n / (n - 1), n = 32 * 4 * 4 at the last BN), when each application has its own.
        per_application_error = (per_application(x) - batch).abs().max().item()
        pooled_error = (pooled(x) - batch).abs().max().item()
    assert per_application_error < 0.02 * batch.abs().max().item()
    assert pooled_error > 10 * per_application_error
    gaps = bench.mismatch(per_application)
    assert set(gaps) == set(bench.SHARED_BNS) and all(shift > 0 for shift, _ in gaps.values())


def test_subset_label_file_relabels(bench, tmp_path):
    source = tmp_path / "val.txt"
    source.write_text("val/1.jpg 71\nval/2.jpg 5\nval/3.jpg 0\nval/4.jpg 70\n")
    count = bench.write_subset_label_file(source, tmp_path / "out.txt", bench.chosen_classes(20)[:15])
    assert bench.chosen_classes(20)[:3] == [0, 5, 10] and count == 3
    assert (tmp_path / "out.txt").read_text() == "val/2.jpg 1\nval/3.jpg 0\nval/4.jpg 14\n"
