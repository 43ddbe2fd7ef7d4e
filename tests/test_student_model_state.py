"""The student's attack or attention may change the model it is handed (issue 22, kind 10): switch it to
eval mode, freeze its weights. The harness restores each module's mode and each parameter's
requires_grad after every call into the student's code, and says once that it had to."""
import pytest
import torch

from harness import attacks, engine, student
from helpers import run_main, train_argv


def meddling(base, method):
    """A subclass of the student's `base` whose `method` also calls model.eval() and freezes every weight."""
    def meddle(self, model, *args, **kwargs):
        result = getattr(base, method)(self, model, *args, **kwargs)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return result
    return type(f"Meddling{base.__name__}", (base,), {method: meddle})


@pytest.fixture
def code():
    return student.load()


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.LazyLinear(5))


def test_adversarial_training_goes_on_in_train_mode_with_its_weights(code, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(code, "PGDAttack", meddling(code.PGDAttack, "perturb"))
    modes, real_step = [], engine.train_step

    def train_step(model, *args, **kwargs):
        modes.append((model.training, all(p.requires_grad for p in model.parameters())))
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(engine, "train_step", train_step)
    exit_code, _, err = run_main(train_argv(tiny_data, tmp_path, "run", "--adv-train"), capsys)
    assert exit_code == 0, err
    assert modes and set(modes) == {(True, True)}
    notes = [line for line in err.splitlines() if line.startswith("note: student_code.py's MeddlingPGDAttack")]
    # The harness runs the attack in eval mode itself (attacks.training_batch): what the student changed
    # is requires_grad.
    assert notes == ["note: student_code.py's MeddlingPGDAttack.perturb changed the model's requires_grad; the "
                     "harness restored it (and does so after every call)"]


def test_the_attack_loop_and_the_training_batch_restore_the_model(code, monkeypatch, capsys):
    model = small_model()
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    model.train()
    model[1].eval()  # a module deliberately left in eval mode stays so
    attack = meddling(code.PGDAttack, "perturb")(torch.nn.CrossEntropyLoss())
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    attacks.training_batch(model, attack, images, labels)
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert all(p.requires_grad for p in model.parameters())
    model.eval()
    adv = engine.perturb(attack, model, images)
    assert adv.shape == images.shape and not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_the_attention_map_restores_the_model(code, monkeypatch):
    model = small_model()
    model(torch.zeros(2, 3, 8, 8))
    model.eval()
    attention = meddling(code.GradAttention, "explain")(torch.nn.CrossEntropyLoss())
    with student.model_kept(model, "GradAttention.explain"):
        attention.explain(model, torch.rand(2, 3, 8, 8))
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_a_call_that_changes_nothing_says_nothing(capsys):
    model = small_model()
    with student.model_kept(model, "Quiet.perturb"):
        model(torch.zeros(1, 3, 8, 8))
    assert capsys.readouterr().err == "" and "Quiet.perturb" not in student._RESTORED
