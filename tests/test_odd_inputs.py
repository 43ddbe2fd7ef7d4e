"""main.py and predict.py end to end on a tiny generated dataset full of odd but valid inputs: images of
other sizes (97x131 and 131x97 among 128x128, in train, val and test), a phone JPEG stored sideways with
an EXIF orientation, a 16-bit grey PNG under a .jpg name, and val.txt and categories.txt saved as UTF-8
with BOM and CRLF line ends. Training, -e and the challenge predictions must take them all.

The reference answers are computed here image by image (batches of one, so no size can clash),
from the saved checkpoint.
Run: python -m pytest tests/test_odd_inputs.py -q --durations=5
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness import checkpoints, demo_data, labels
import custom_dataloader
import custom_transforms
import main
import predict
from helpers import assert_accuracy_of, is_top_k, load_model, make_tiny_dataset, train_argv, val_logits

NUM_CLASSES = demo_data.DEMO_NUM_CLASSES
TEST_COUNT = 3


def resize(path, size):
    with Image.open(path) as image:
        image.convert("RGB").resize(size, Image.BILINEAR).save(path, format="JPEG", quality=95)


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    root = make_tiny_dataset(tmp_path_factory.mktemp("data") / "odd", train_per_class=1, test_count=TEST_COUNT)
    images = root / "images"
    resize(images / "val/00000003.jpg", (97, 131))
    resize(images / "val/00000007.jpg", (131, 97))
    resize(images / "test/00000002.jpg", (97, 131))
    resize(images / "train/b/beach/00000001.jpg", (131, 97))
    with Image.open(images / "val/00000005.jpg") as image:  # stored sideways, tagged "turn 90 clockwise"
        sideways = image.convert("RGB").resize((96, 128)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(images / "val/00000005.jpg", format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(images / "val/00000009.jpg") as image:
        deep = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(deep).save(images / "val/00000009.jpg", format="PNG")  # 16-bit grey, .jpg name
    for name in ("val.txt", "categories.txt"):
        text = (root / name).read_bytes()
        (root / name).write_bytes(b"\xef\xbb\xbf" + text.replace(b"\n", b"\r\n"))
    return root


@pytest.fixture(scope="module")
def odd_run(odd_data, tmp_path_factory):
    """The run folder of one epoch (one SGD step) on odd_data."""
    logdir = tmp_path_factory.mktemp("logs")
    assert main.main(train_argv(odd_data, logdir, "odd", batch_size=10, lr=0.01, print_freq=1)) == 0
    return logdir / "odd"


@torch.no_grad()
def one_by_one(model, root, split):
    """{name: flip-averaged logits (C,)} of every image of `split`, each in a batch of its own."""
    dataset = custom_dataloader.MiniPlacesLoader(root, num_classes=NUM_CLASSES, split=split,
                                                 transforms=custom_transforms.get_val_transforms())
    logits = {}
    for index, (name, _) in enumerate(dataset.samples):
        image = dataset[index][0][None]  # (1, 3, H, W)
        logits[name] = (0.5 * (model(image) + model(image.flip(3))))[0]
    return logits


def test_the_dataset_as_the_loader_sees_it(odd_data):
    val = custom_dataloader.MiniPlacesLoader(odd_data, num_classes=NUM_CLASSES, split="val")
    rel, label = (odd_data / "val.txt").read_text(encoding="utf-8-sig").splitlines()[0].split()
    assert val.classes[0] == "beach" and val.samples[0] == (rel, int(label)) and rel == "val/00000001.jpg"
    assert [val.image_sizes[i] for i in (2, 4, 6)] == [(97, 131), (96, 128), (131, 97)]
    assert val.other_sizes_note() == "3 of 10 val images are not 128x128"
    assert val[8][0].mode == "RGB" and np.asarray(val[8][0]).std() > 3  # not white (std 0): 16-bit scaled


def test_training_validates_every_image(odd_run, odd_data):
    (record,) = json.loads((odd_run / "metrics.json").read_text())
    model = load_model(odd_run / checkpoints.CHECKPOINT_NAME)
    # validate() runs without the flip: the top-1 image by image without it (up to near ties).
    assert_accuracy_of(record["val_top1"], *val_logits(model, odd_data, flip=False))


def test_evaluate_takes_every_image(odd_run, odd_data, tmp_path):
    argv = [odd_data, "-e", "--resume", odd_run / checkpoints.CHECKPOINT_NAME, "-j", "0", "--gpu", "-1",
            "--logdir", tmp_path, "--run-name", "eval"]
    assert main.main([str(a) for a in argv]) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    logits = one_by_one(load_model(odd_run / checkpoints.CHECKPOINT_NAME), odd_data, "val")
    truth = labels.parse_label_file(odd_data / "val.txt", NUM_CLASSES)
    assert result["count"] == NUM_CLASSES == len(truth)
    assert_accuracy_of(result["top1"], torch.stack([logits[name] for name, _, _ in truth]),
                       torch.tensor([label for _, label, _ in truth]))


def test_predictions_for_every_image_in_name_order(odd_run, odd_data, tmp_path):
    checkpoint = odd_run / checkpoints.CHECKPOINT_NAME
    predict.make_submission(odd_data, checkpoint, tmp_path, torch.device("cpu"), batch_size=4, workers=0,
                            log=lambda *args: None)
    model = load_model(checkpoint)
    for split, count in (("val", NUM_CLASSES), ("test", TEST_COUNT)):
        lines = [line.split() for line in (tmp_path / f"predictions_{split}.txt").read_text().splitlines()]
        names = [f"{split}/{i:08d}.jpg" for i in range(1, count + 1)]
        assert [line[0] for line in lines] == names
        # Each line's five labels rank that image's logits, best first (near ties in either order).
        logits = one_by_one(model, odd_data, split)
        for name, *predicted in lines:
            assert len(predicted) == 5, name
            assert is_top_k([int(label) for label in predicted], logits[name]), (name, predicted, logits[name])
