"""tools/grade.py's checks on our solution, the 2019 student's file and the common mistakes.

Each graded file runs in the sandbox as a real submission would (a child process with its own working
copy); the grading context (inputs, the reference network with few steps, the reference solution's
measurements) is built once for the module.
"""
import json
from pathlib import Path

import pytest
import torch

# Six sandboxed children, each importing torch, and our solution measured as the reference: about a
# minute on the 2-core machine (the isolation tests, tests/test_grading_hostile.py, are not slow).
pytestmark = pytest.mark.slow

from harness import devices  # noqa: E402
from harness.grading import batch, rubric as rubrics, starter

REPO = Path(__file__).resolve().parent.parent
OURS = (REPO / "code" / "student_code.py").read_text(encoding="utf-8")
STUDENT_2019 = (REPO / "tests" / "student_2019" / "student_code.py").read_text(encoding="utf-8")


def mutate(text, *replacements):
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def scores(results):
    return {test["name"]: (test["score"], test["max_score"], test["output"]) for test in results["tests"]}


# bias added wrong, a PGD that steps the wrong way, a saliency map of the wrong sign, no default_attention
MISTAKES_1 = mutate(STUDENT_2019,
                    ("matmul(cols) + bias.view(1, -1, 1)", "matmul(cols) + bias.mean()"),
                    ("output = output - self.step_size", "output = output + self.step_size"),
                    ("output = input.grad.abs().max(1, keepdim=True)[0]",
                     "output = -input.grad.abs().max(1, keepdim=True)[0]"),
                    ("default_model = SimpleNet\n", ""))
# a transposed weight gradient and a built-in forward, a PGD without projection, a saliency map of the
# wrong shape, a network that raises
MISTAKES_2 = mutate(STUDENT_2019,
                    ("grad_weight = dy.matmul(cols.transpose(1, 2)).sum(0).view_as(weight)",
                     "grad_weight = cols.matmul(dy.transpose(1, 2)).sum(0).reshape(weight.shape)"),
                    ("    output = weight.view(out_channels, -1).matmul(cols) + bias.view(1, -1, 1)\n"
                     "    # a fresh tensor, not a view of one: nn.ReLU(inplace=True) follows in the network\n"
                     "    return output.view(n, out_channels, out_h, out_w).clone()",
                     "    return torch.nn.functional.conv2d(input_feats, weight, bias, stride, padding)"),
                    ("output = torch.min(torch.max(output, input - self.epsilon), input + self.epsilon).detach()",
                     "output = output.detach()"),
                    ("output = input.grad.abs().max(1, keepdim=True)[0]", "output = input.grad.abs()"),
                    ("    x = self.avgpool(self.features(x))", "    raise ValueError('not yet')"))


def hand_in(folder, student_file, dataset, broken=False):
    """folder/results/ as tools/predict.py writes it, from the (untrained) network of `student_file`: the
    model's state_dict and the top-5 of each demo val and test image, flip-averaged."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("handed_in_student_code", student_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.default_model(num_classes=10).eval()
    results = folder / "results"
    results.mkdir(parents=True)
    torch.save(model.state_dict() if not broken else {"weights": print}, results / "model.pth.tar")
    dataset_root = dataset
    for split in ("val", "test"):
        import custom_dataloader
        import custom_transforms
        dataset = custom_dataloader.MiniPlacesLoader(dataset_root, num_classes=10, split=split,
                                                     transforms=custom_transforms.get_val_transforms())
        samples = [dataset[index] for index in range(len(dataset))]
        images = torch.stack([image for image, _ in samples])
        with torch.no_grad():
            top5 = (model(images) + model(torch.flip(images, dims=(3,)))).topk(5, dim=1).indices.tolist()
        names = [label if split == "test" else f"val/{Path(str(path)).name}"
                 for (_, label), (path, _) in zip(samples, dataset.samples)]
        lines = [f"{name} {' '.join(map(str, labels if not broken else labels[:4]))}" for name, labels in zip(names, top5)]
        (results / f"predictions_{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory, demo_dataset):
    """{name: {check: (score, max_score, output)}} for our solution, the 2019 file and the mistakes,
    graded as one batch (two at a time) on a small demo dataset with a reference network of few steps."""
    root = tmp_path_factory.mktemp("grading")
    dataset = demo_dataset(train_per_class=4, val_per_class=1, test_count=4)
    subs = root / "subs"
    subs.mkdir()
    for name, text in (("ours", OURS), ("mistakes2", MISTAKES_2), ("starter", starter.make(OURS))):
        (subs / f"{name}.py").write_text(text, encoding="utf-8")
    (subs / "s2019").mkdir()  # a folder with the challenge's results/
    (subs / "s2019" / "student_code.py").write_text(STUDENT_2019, encoding="utf-8")
    hand_in(subs / "s2019", REPO / "tests" / "student_2019" / "student_code.py", dataset)
    (subs / "mistakes1").mkdir()  # with a hand-in holding a pickled function for a model and 4 labels a line
    (subs / "mistakes1" / "student_code.py").write_text(MISTAKES_1, encoding="utf-8")
    hand_in(subs / "mistakes1", REPO / "tests" / "student_2019" / "student_code.py", dataset, broken=True)
    everyone = batch.grade_folder(subs, root / "grades", data=dataset, jobs=2, say=lambda line: None, refnet_steps=30)
    everyone["summary"] = (root / "grades" / "summary.md").read_text(encoding="utf-8")
    return everyone


def test_our_solution_scores_full_marks(graded):
    results = graded["ours"]
    challenge = rubrics.load().max_score - sum(test["max_score"] for test in results["tests"]
                                               if not test["name"].startswith("Challenge:"))
    assert results["score"] == rubrics.load().max_score - challenge == 26, json.dumps(results, indent=1)
    assert all(test["status"] == "passed" for test in results["tests"] if not test["name"].startswith("Challenge:"))
    assert set(results) >= {"score", "execution_time", "output", "tests"}
    assert set(results["tests"][0]) == {"name", "score", "max_score", "status", "output", "visibility"}


def test_the_training_check_runs_in_the_precision_the_grader_chose(graded):
    # bf16 autocast where this CPU computes it natively and faster, for the reference and every student alike
    for name in ("ours", "s2019"):
        output = scores(graded[name])["Part II: short training lowers the loss"][2]
        assert ("both in bf16 autocast" in output) == devices.cpu_bf16_is_faster(torch.device("cpu")), output


def test_the_2019_students_file_is_graded(graded):
    results = scores(graded["s2019"])
    assert all(results[name][0] == results[name][1] for name in results if name.startswith("Part I:"))
    # its attack does not clamp to the valid image range, and its custom_conv2d takes no dilation
    assert results["Part III: PGD stays in the valid image range"][0] == 0
    assert results["Part III: PGD is as strong as the reference"][0] == 2
    assert "TypeError" in results["Part I: beyond 2019 (dilation, groups, no bias, rectangular kernels)"][2]


def test_common_mistakes_lose_the_right_points(graded):
    results = scores(graded["mistakes1"])
    assert results["Part I: test_conv forward"][0] == 0
    assert "output differs by up to" in results["Part I: test_conv forward"][2]
    # one filter: its bias is its mean, so the smallest failing case has several
    assert "smallest failing case: input 1x2x7x7, 3 filters 3x3, stride 2, padding 1: output differs by up to" in \
        results["Part I: held cases, forward"][2]
    assert results["Part I: no built-in convolution"][0] == 2
    assert results["Part III: saliency map shape"][0] == 1
    assert results["Part III: saliency equals the input gradient"][0] == 0
    assert results["Part III: PGD stays within epsilon"][0] == 2
    assert results["Part III: PGD is as strong as the reference"][0] == 0

    results = scores(graded["mistakes2"])
    assert results["Part I: test_conv forward"][0] == 1
    assert results["Part I: test_conv backward"][0] == 0
    assert "grad_weight differs by up to" in results["Part I: test_conv backward"][2]
    assert results["Part I: held cases, forward"][0] == 2
    assert results["Part I: held cases, gradients"][0] < 2
    assert results["Part I: no built-in convolution"][0] == 0
    assert "convolution" in results["Part I: no built-in convolution"][2]
    assert results["Part III: saliency map shape"][0] == 0
    assert "(8, 3, 128, 128)" in results["Part III: saliency map shape"][2]
    assert results["Part III: PGD stays within epsilon"][0] == 0
    assert "projected back" in results["Part III: PGD stays within epsilon"][2]


def test_missing_names_are_not_attempted_and_errors_name_the_line(graded):
    results = scores(graded["mistakes1"])
    assert results["Part II: default_model builds"][2] == "not attempted: student_code.py defines no default_model " \
                                                          "(needed for Part II)"
    line = scores(graded["mistakes2"])["Part II: logits of the right shape"][2]
    assert line.startswith("student_code.py:") and "in forward: ValueError: not yet" in line


def test_the_starter_imports_runs_and_scores_zero(graded):
    results = graded["starter"]
    assert results["score"] == 0, json.dumps(results, indent=1)
    lines = scores(results)
    assert "NotImplementedError: YOUR CODE HERE" in lines["Part I: test_conv forward"][2]
    assert "NotImplementedError: YOUR CODE HERE" in lines["Part III: PGD stays within epsilon"][2]


def test_the_starter_keeps_the_2019_names_and_drops_the_solution():
    made = starter.make(OURS)
    for name in ("class CustomConv2DFunction", "def custom_conv2d", "class CustomConv2d", "class SimpleNet",
                 "default_model = SimpleNet", "class GradAttention", "class PGDAttack", "def vis_grad_attention",
                 "default_attack = PGDAttack"):
        assert name in made, name
    for solution in ("class _Geometry", "baddbmm_", "class CustomNet2", "def _input_gradient", "SOLUTION"):
        assert solution not in made, solution
    markers = sum(line.strip() in ("# BEGIN SOLUTION", "# BEGIN SOLUTION (removed)", "# END SOLUTION")
                  for line in OURS.splitlines())
    assert markers >= 18  # every part has its regions
    assert starter.strip_markers(OURS).count("\n") == OURS.count("\n") - markers  # the markers, nothing else
    with pytest.raises(ValueError, match="line 2: BEGIN SOLUTION is never ended"):
        starter.make("x = 1\n# BEGIN SOLUTION\ny = 2\n")


def test_the_summary_flags_similar_pairs_beyond_the_starter(graded):
    summary = graded["summary"]
    assert "- mistakes1 and s2019: code" in summary or "- mistakes1 and mistakes2: code" in summary, summary
    assert "ours and starter" not in summary
    assert "Part I: test_conv forward: " in summary  # the most common failures, by check


def test_the_challenge_is_graded_from_results(graded):
    results = scores(graded["s2019"])
    assert results["Challenge: model within 10 MB loads with weights_only"][0] == 1, results
    assert results["Challenge: predictions follow the devkit's format"][0] == 1
    assert "on 10 images of the val labels (no --test-labels)" in results["Challenge: top-5 error on held labels"][2]
    assert results["Challenge: the model reproduces its predictions"][0] == 1
    assert "for 8 of 8 sample images" in results["Challenge: the model reproduces its predictions"][2]
    broken = scores(graded["mistakes1"])
    assert "not a torch checkpoint" in broken["Challenge: model within 10 MB loads with weights_only"][2]
    assert broken["Challenge: predictions follow the devkit's format"][0] == 0
    assert "predictions_test.txt" in broken["Challenge: predictions follow the devkit's format"][2]
    assert scores(graded["ours"])["Challenge: top-5 error on held labels"][2] == "not attempted: no results/ handed in"
