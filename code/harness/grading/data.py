"""The images the grader hands to the checks: fixed slices of the demo dataset or of MiniPlaces.

Every class in turn (the first image of each class, then the second, ...), center-cropped to 128x128
and normalized as the course's validation transform does, so a slice is the same on every run.
"""
from pathlib import Path

import torch

import custom_dataloader
import custom_transforms

from .. import demo_data, scoring


def dataset_root(data):
    """The dataset's folder: `data`, or the generated demo dataset (made once, then reused)."""
    return demo_data.ensure_demo_dataset() if data is None else data


def num_classes(data):
    """The classes of categories.txt (the demo dataset's 10), else MiniPlaces' 100."""
    return demo_data.DEMO_NUM_CLASSES if data is None else scoring.num_classes_for(Path(data) / "val.txt")


def image_slice(data, split, count):
    """(images (count, 3, 128, 128) float32, labels (count,)) from `split` of the dataset."""
    dataset = custom_dataloader.MiniPlacesLoader(dataset_root(data), num_classes=num_classes(data), split=split,
                                                 transforms=custom_transforms.get_val_transforms(center_crop=True))
    by_class = {}
    for index, (_, label) in enumerate(dataset.samples):
        by_class.setdefault(label, []).append(index)
    indices = [index for rank in range(count) for index in
               (members[rank] for members in by_class.values() if rank < len(members))][:count]
    samples = [dataset[i] for i in indices]
    return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])


def challenge_sample(data, count):
    """(images (count, 3, 160, 160), names ['val/00000001.jpg', ...]): the first val images in name order,
    transformed as tools/predict.py does (Scale 160, no crop)."""
    dataset = custom_dataloader.MiniPlacesLoader(dataset_root(data), num_classes=num_classes(data), split="val",
                                                 transforms=custom_transforms.get_val_transforms())
    order = sorted(range(len(dataset.samples)), key=lambda i: str(dataset.samples[i][0]))[:count]
    names = [f"val/{Path(str(dataset.samples[i][0])).name}" for i in order]
    return torch.stack([dataset[i][0] for i in order]), names


def label_files(data):
    """(val label file, test image count) of the dataset."""
    root = Path(dataset_root(data))
    return root / "val.txt", len(list((root / "images" / "test").glob("*.jpg")))
