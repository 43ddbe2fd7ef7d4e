"""The harness's data code: checking a data folder, building the MiniPlaces datasets and their loaders,
and `DeviceLoader`, which hands the training and evaluation loops ready batches on their device.

Training images are resampled per batch on the training device: the DataLoader workers only decode
and draw the augmentation (custom_transforms.get_train_transforms(defer=True)) and DeviceLoader renders
the batch where the model runs (a GPU does it almost for free), with the finishing step chosen with
the pipeline (train_pipeline). A student's file that offers the Fall
2019 `get_train_transforms(normalize)` gets its own per-image pipeline instead.
"""
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

import custom_dataloader
import custom_transforms
from . import devices, labels, signals, student
from .cli import UserError

VAL_BATCH_SIZE = 100


def check_data_folder(data_folder):
    path = Path(data_folder)
    if not path.is_dir():
        raise UserError(f"data folder {path} does not exist (give the MiniPlaces folder, or run --demo)")
    return path


def count_classes(root):
    """Classes listed in categories.txt (else the class folders of images/train/, else MiniPlaces' 100):
    the demo dataset has 10."""
    root = Path(root)
    if (root / "categories.txt").is_file():
        return len(labels.parse_categories(root / "categories.txt"))
    if (root / "images" / "train").is_dir():
        return len(labels.class_names_from_folders(root / "images" / "train")) or 100
    return 100


def cap_workers(workers, say=print):
    """`workers`, cut down (said in one line) to the DataLoader workers per process that this machine
    has cores for: its cores shared among the processes of a torchrun on it, at least 1. More only
    take turns with the network's threads."""
    cores = max(1, (os.cpu_count() or 1) // devices.local_process_count())
    if workers <= cores:
        return workers
    say(f"note: -j/--workers {workers} is more than the {cores} CPU core(s) this process has; using {cores}")
    return cores


def train_pipeline():
    """(transforms, finish_batch) of the training set.

    Ours defers the resampling to the batch (custom_transforms.get_train_transforms(defer=True)): the
    workers yield what resample_batch needs and `finish_batch` is finish_deferred_batch. The student's
    Fall 2019 get_train_transforms(normalize), when the file offers it, yields image tensors, finished
    by to_device.
    """
    student_transforms = student.optional("get_train_transforms")
    if student_transforms is None:
        return custom_transforms.get_train_transforms(defer=True), finish_deferred_batch
    normalize = custom_transforms.Normalize(custom_transforms.IMAGENET_MEAN, custom_transforms.IMAGENET_STD)
    return student_transforms(normalize), to_device


def build_datasets(data_folder, cache, train=True):
    """(train set or None, val set, finish_batch of the train set's pipeline: see train_pipeline).

    The datasets raise DataError (a UserError) on bad files."""
    root = check_data_folder(data_folder)
    num_classes = count_classes(root)
    train_set, finish_batch = None, None
    if train:
        transforms, finish_batch = train_pipeline()
        train_set = custom_dataloader.MiniPlacesLoader(root, num_classes=num_classes, split="train",
                                                       transforms=transforms, cache=cache)
    val_set = custom_dataloader.MiniPlacesLoader(root, num_classes=num_classes, split="val",
                                                 transforms=custom_transforms.get_val_transforms(), cache=cache)
    return train_set, val_set, finish_batch


def train_loader(train_set, batch_size, workers, device, rank, world_size, seed):
    """Shuffling, drop-last loader of `batch_size` images per process; reseeded every epoch (seed_epoch).

    Raises UserError when the batch leaves no iteration (more images per batch than the set holds).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                        generator=generator)
    if len(loader) == 0:
        raise UserError(f"a batch of {batch_size * world_size} exceeds the {len(train_set)} training images")
    return loader


def seed_epoch(loader, seed, epoch):
    """Shuffle order and worker seeds of `epoch` depend on (seed, epoch) alone, so a resumed run
    draws the same batches as an uninterrupted one."""
    loader.generator.manual_seed((seed * 1_000_003 + epoch) % 2**63)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def eval_loader(dataset, workers, device, rank=0, world_size=1, batch_size=VAL_BATCH_SIZE):
    """In-order loader over this process's share of `dataset` (a MiniPlacesLoader or a Subset of one):
    rank r of world_size w takes images r, r + w, ... (each image exactly once over all ranks), in
    batches of one image size, since the evaluation pipeline keeps aspect ratios. Its batch_sampler's
    `order` lists the dataset indices in the order the batches yield them."""
    batches = custom_dataloader.SizeGroupedBatchSampler(custom_dataloader.image_sizes(dataset), batch_size,
                                                        rank, world_size)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda")


def to_device(images, target, device, channels_last=False):
    """A batch of image tensors (N, 3, H, W) on `device` (asynchronously from pinned memory), NHWC when
    `channels_last`; `target` moves too when it is a tensor."""
    images = images.to(device, non_blocking=True, memory_format=devices.memory_format(channels_last))
    return images, _target_to(target, device)


def finish_deferred_batch(batch, target, device, channels_last=False):
    """A batch of DeferResample outputs (uint8 sources and planned warps) resampled and normalized on
    `device`: images (N, 3, h, w) float32, NHWC when `channels_last`."""
    images = custom_transforms.resample_batch(batch, device, devices.memory_format(channels_last))
    return images, _target_to(target, device)


def _target_to(target, device):
    return target.to(device, non_blocking=True) if isinstance(target, torch.Tensor) else target


class DeviceLoader:
    """Wraps a DataLoader so that it yields (images (N, 3, H, W) normalized float32 on `device`, NHWC
    when `channels_last`, target): `finish_batch` (to_device, or the pipeline's own, see train_pipeline)
    turns each collated batch into that."""

    def __init__(self, loader, device, channels_last=False, finish_batch=to_device):
        self.loader = loader
        self.device = device
        self.channels_last = channels_last
        self.finish_batch = finish_batch

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, target in self.loader:
            signals.check()  # a signal whose exception was dropped while workers started stops here
            yield self.finish_batch(images, target, self.device, self.channels_last)

    @property
    def dataset(self):
        return self.loader.dataset
