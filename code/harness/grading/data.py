"""The images the grader hands to the checks: fixed slices of the demo dataset or of MiniPlaces.

Every class in turn (the first image of each class, then the second, ...), center-cropped to 128x128
and normalized as the course's validation transform does, so a slice is the same on every run.
"""
import torch

import custom_dataloader
import custom_transforms

from .. import demo_data


def dataset_root(data):
    """The dataset's folder: `data`, or the generated demo dataset (made once, then reused)."""
    return demo_data.ensure_demo_dataset() if data is None else data


def num_classes(data):
    return demo_data.DEMO_NUM_CLASSES if data is None else 100


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
