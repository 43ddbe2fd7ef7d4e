"""The challenge hand-in (results/) read in the grader's process: nothing here runs the student's code.

results/model.pth.tar is measured and loaded with weights_only (harness.checkpoints, tensors and plain
data only); predictions_test.txt and predictions_val.txt are parsed in the devkit's format
(harness.scoring); the errors are computed on the staff's held labels of the test images
(--test-labels) or, without them, on the dataset's val labels.
"""
from pathlib import Path

from .. import checkpoints, scoring
from ..cli import UserError

FILES = ("model.pth.tar", "predictions_test.txt", "predictions_val.txt")


def read(source, answers):
    """A dict of what the hand-in in `source`/results holds; {"handed_in": False} without results/."""
    results = Path(source) / "results"
    if not results.is_dir():
        return {"handed_in": False}
    info = {"handed_in": True, "missing": [name for name in FILES if not (results / name).is_file()]}
    model = results / "model.pth.tar"
    if model.is_file():
        info["model_bytes"] = model.stat().st_size
        try:
            checkpoints.read(model, "results/model.pth.tar")
            info["model_error"] = None
        except UserError as exc:
            info["model_error"] = str(exc).replace(str(results), "results")
    num_classes = answers["num_classes"]
    predictions, format_errors = {}, []
    for split in ("test", "val"):
        path = results / f"predictions_{split}.txt"
        if not path.is_file():
            continue
        try:
            predictions[split] = scoring.read_predictions(path, num_classes, flag=f"predictions_{split}.txt")
        except UserError as exc:
            format_errors.append(str(exc).replace(str(results) + "/", ""))
    info["format_errors"] = format_errors
    test_names = answers["test_count"]
    if "test" in predictions and len(predictions["test"]) != test_names:
        format_errors.append(f"predictions_test.txt predicts {len(predictions['test'])} images; the test set has "
                             f"{test_names}")
    labels, which = answers["held_labels"]
    split = "test" if which == "staff" else "val"
    if split in predictions:
        try:
            errors = scoring.top_k_errors(predictions[split], scoring.read_ground_truth(labels, num_classes),
                                          source=f"predictions_{split}.txt")
            info["errors"] = {"top1": errors[0], "top5": errors[4], "labels": which, "count": len(predictions[split])}
        except UserError as exc:
            format_errors.append(str(exc))
    if "val" in predictions:
        info["sample"] = [predictions["val"].get(name) for name in answers["challenge_names"]]
    return info
