"""Score MiniPlaces predictions as the challenge devkit's eval_cls does: the top-1 ... top-5 error
(`python tools/score.py results/predictions_val.txt data/val.txt` prints the table).

A prediction file has one line per image, `val/00000001.jpg l1 l2 l3 l4 l5`: five distinct class
indices, the most confident first. An image's top-k error is 0 when its true label is among the first
k guesses and 1 otherwise; the table gives the mean over all images for k = 1..5 (the challenge ranks
by the top-5 error). Every ground-truth image must be predicted exactly once and no other.
"""
from pathlib import Path

from .cli import UserError
from .labels import parse_categories, parse_label_file

NUM_GUESSES = 5
DEFAULT_NUM_CLASSES = 100


def _read_lines(path, flag):
    """(line number, stripped text) of each non-blank line; UserError naming `flag` and the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # with or without the BOM that Windows editors write
    except FileNotFoundError:
        raise UserError(f"{flag}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag}: cannot read {path} ({type(exc).__name__})") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def num_classes_for(ground_truth_file):
    """Classes in categories.txt next to the ground-truth file (the demo dataset has 10), else 100."""
    categories = Path(ground_truth_file).with_name("categories.txt")
    if categories.is_file():
        return len(parse_categories(categories))
    return DEFAULT_NUM_CLASSES


def read_ground_truth(path, num_classes=DEFAULT_NUM_CLASSES):
    """{image name: label} from a label file like val.txt (`val/00000001.jpg 71` per line)."""
    return {name: label for name, label, _ in parse_label_file(path, num_classes)}


def parse_prediction_line(line, where, num_classes):
    """(image name, [labels]) from `name l1 ... l5`; `where` is 'file:line' for the message."""
    fields = line.split()
    if len(fields) != 1 + NUM_GUESSES:
        raise UserError(f"{where}: expected '<image> l1 l2 l3 l4 l5' ({NUM_GUESSES} labels), "
                        f"got {len(fields) - 1} label(s)")
    name, label_texts = fields[0], fields[1:]
    try:
        labels = [int(text) for text in label_texts]
    except ValueError:
        raise UserError(f"{where}: labels must be integers, got '{' '.join(label_texts)}'") from None
    outside = [label for label in labels if not 0 <= label < num_classes]
    if outside:
        raise UserError(f"{where}: label {outside[0]} is outside 0..{num_classes - 1}")
    if len(set(labels)) != len(labels):
        raise UserError(f"{where}: the {NUM_GUESSES} labels must be distinct, got {' '.join(label_texts)}")
    return name, labels


def read_predictions(path, num_classes=DEFAULT_NUM_CLASSES, flag="predictions"):
    """{image name: [5 labels, most confident first]} from a devkit prediction file."""
    predictions = {}
    for number, line in _read_lines(path, flag):
        where = f"{path}:{number}"
        name, labels = parse_prediction_line(line, where, num_classes)
        if name in predictions:
            raise UserError(f"{where}: image {name} is predicted twice")
        predictions[name] = labels
    if not predictions:
        raise UserError(f"{flag}: {path} holds no predictions")
    return predictions


def top_k_errors(predictions, ground_truth, max_guesses=NUM_GUESSES, source="predictions"):
    """[top-1 error, ..., top-max_guesses error] as fractions in [0, 1].

    predictions: {name: [labels]}; ground_truth: {name: label}. Both must cover the same images.
    """
    missing = [name for name in ground_truth if name not in predictions]
    if missing:
        raise UserError(f"{source}: {len(missing)} image(s) of the ground truth have no prediction "
                        f"(first: {sorted(missing)[0]})")
    extra = [name for name in predictions if name not in ground_truth]
    if extra:
        raise UserError(f"{source}: {len(extra)} predicted image(s) are not in the ground truth "
                        f"(first: {sorted(extra)[0]})")
    # rank[name] = position of the true label among the guesses (max_guesses when absent)
    ranks = []
    for name, label in ground_truth.items():
        guesses = predictions[name][:max_guesses]
        ranks.append(guesses.index(label) if label in guesses else max_guesses)
    count = len(ranks)
    return [sum(rank >= k for rank in ranks) / count for k in range(1, max_guesses + 1)]


def format_error_table(errors, count=None):
    """The devkit's '# guesses vs cls error' table, with the error also in percent."""
    header = "# guesses  vs cls error" + (f"  ({count} images)" if count is not None else "")
    rows = [f"{k:9d}  {error:13.4f}  ({100 * error:.2f}%)" for k, error in enumerate(errors, 1)]
    return "\n".join([header, *rows])


def score_files(predictions_file, ground_truth_file, num_classes=None):
    """(errors, image count) of a prediction file against a label file."""
    num_classes = num_classes or num_classes_for(ground_truth_file)
    truth = read_ground_truth(ground_truth_file, num_classes)
    predictions = read_predictions(predictions_file, num_classes)
    return top_k_errors(predictions, truth, source=str(predictions_file)), len(truth)
