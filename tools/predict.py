"""Make the MiniPlaces challenge submission from a trained checkpoint.

    python tools/predict.py [data_folder] --resume logs/<run>/model_best.pth.tar [--out results]
                           [--gpu N] [-b 100] [-j 4] [--no-flip]

Writes into --out (default the repo's results/), each file atomically:
  model.pth.tar          the checkpoint without its optimizer, GradScaler and RNG states; refused when it
                         is models.MAX_MODEL_BYTES bytes or more (the course's "10 MB", read strictly as
                         10,000,000 bytes)
  predictions_test.txt   `test/00000001.jpg l1 l2 l3 l4 l5` per test image, in name order: the 5 most
                         confident distinct labels, the most confident first (the devkit's format)
  predictions_val.txt    the same for the val images
and prints the val top-1 ... top-5 error table (scoring.py prints the same table from the file).
Logits are averaged over each image and its horizontal flip, as main.py's -e does (--no-flip: off).
The network runs with nn.Conv2d whatever conv op it was trained with: both share one state_dict.
--out is checked before any work (check_outputs); --resume may be an archive holding the checkpoint.
"""
import argparse
import io
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import checkpoints, cli, devices, files, loaders, models, paths, scoring, signals, student  # noqa: E402
import custom_dataloader  # noqa: E402
import custom_transforms  # noqa: E402
from harness.cli import UserError  # noqa: E402

MODEL_NAME = "model.pth.tar"
TEST_PREDICTIONS = "predictions_test.txt"
VAL_PREDICTIONS = "predictions_val.txt"


def get_args_parser():
    parser = cli.ArgumentParser(description="Write results/: the challenge model and the test and val predictions.",
                     formatter_class=cli.HelpFormatter)
    parser.add_argument("data_folder", nargs="?", default=str(paths.DEFAULT_DATA_DIR),
                        help="MiniPlaces folder (val.txt, images/val, images/test)")
    parser.add_argument("--resume", required=True, metavar="PATH",
                        help="checkpoint of main.py, e.g. logs/<run>/model_best.pth.tar")
    parser.add_argument("--out", default=str(paths.DEFAULT_RESULTS_DIR), help="folder for the submission files")
    parser.add_argument("--gpu", default=None, type=int,
                        help="GPU index; negative for the CPU; default the first GPU if any, else the CPU")
    parser.add_argument("-b", "--batch-size", default=100, type=int, help="images per forward pass")
    parser.add_argument("-j", "--workers", default=4, type=int, help="data loading worker processes")
    parser.add_argument("--no-flip", action="store_true", help="do not average over the horizontal flip")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="predict in bf16 autocast on the CPU (fp16 on CUDA): faster where the CPU computes "
                             "bf16 natively; says how many val predictions change against fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format; --no-channels-last forces NCHW (default: NHWC on the CPU, "
                             "NCHW on CUDA)")
    return parser


# ---------------------------------------------------------------------------------------------------
# The challenge model
# ---------------------------------------------------------------------------------------------------


def serialize(state):
    """The bytes torch.save writes for `state`."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------------------


def check_outputs(out_dir):
    """Refuse, in one line naming --out and before any work, an output that would fail only after the
    minutes of prediction: --out a file, or below one; a folder that cannot be created or written in;
    a folder in the place of one of the three files.

    A folder is writable when its permission bits and os.access say so and a real (invisible, unnamed)
    file can be made in it: the bits are honoured even for root, who could write anyway, as main.py -e
    leaves a read-only run folder alone; the real attempt catches a read-only mount.
    """
    out_dir = Path(out_dir)
    existing = next(folder for folder in (out_dir, *out_dir.parents) if folder.exists() or folder == folder.parent)
    if not existing.is_dir():
        below = "" if existing == out_dir else f" (cannot create {out_dir} below it)"
        raise UserError(f"--out: {existing} is a file, not a folder{below}")
    why = _not_writable(existing)
    if why and existing == out_dir:
        raise UserError(f"--out: {out_dir} {why}: predict.py cannot write its files there")
    if why:
        raise UserError(f"--out: cannot create {out_dir}: {existing} {why}")
    for name in (MODEL_NAME, TEST_PREDICTIONS, VAL_PREDICTIONS):
        if (out_dir / name).is_dir():
            raise UserError(f"--out: {out_dir / name} is a folder; predict.py writes its {name} file there "
                            "(move the folder away or choose another --out)")


def _not_writable(folder):
    """Why no file can be written into `folder` (e.g. 'is read-only'), or None when one can."""
    bits = folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if not bits or not os.access(folder, os.W_OK | os.X_OK):
        return "is read-only (no write permission)"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot be written in ({exc.strerror or exc})"
    return None


# ---------------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------------


def load_split(root, split, num_classes):
    """MiniPlacesLoader of `split` with the validation transforms (Scale 160, as main.py evaluates)."""
    return custom_dataloader.MiniPlacesLoader(root, num_classes=num_classes, split=split,
                                              transforms=custom_transforms.get_val_transforms())


@torch.no_grad()
def predict_top5(model, loader, device, flip_average=True, channels_last=False, amp_dtype=None):
    """(N, 5) int64 tensor: the 5 most confident labels of each image, in the loader's order; the
    batches in the channels-last memory format when `channels_last` (the model should be too), the
    forward pass in autocast to `amp_dtype` when given."""
    guesses = []
    for images, _ in loader:
        signals.check()  # a signal stops here, between batches (harness/signals.py)
        images, _ = loaders.to_device(images, None, device, channels_last)  # (B, 3, H, W)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (B, C)
            if flip_average:
                logits = 0.5 * (logits + model(torch.flip(images, dims=(3,))).float())
        guesses.append(logits.topk(scoring.NUM_GUESSES, dim=1, sorted=True).indices.cpu())  # (B, 5)
    return torch.cat(guesses)


def format_predictions(names, top5):
    """Devkit lines `name l1 l2 l3 l4 l5`, sorted by image name."""
    rows = sorted(zip(names, top5.tolist()))
    return "".join(f"{name} {' '.join(map(str, labels))}\n" for name, labels in rows)


def predict_split(model, dataset, device, batch_size, workers, flip_average, channels_last=False, amp_dtype=None):
    """({image name: [5 labels]}, devkit file text) for every image of `dataset` (a MiniPlacesLoader, or
    a Subset of one: names from the loader's .samples).

    Batches hold images of one size, so the predictions come in the sampler's order, not the dataset's.
    """
    loader = loaders.eval_loader(dataset, workers, device, batch_size=batch_size)
    top5 = predict_top5(model, loader, device, flip_average, channels_last, amp_dtype)
    rows = dataset.indices if isinstance(dataset, torch.utils.data.Subset) else range(len(dataset))
    samples = dataset.dataset.samples if isinstance(dataset, torch.utils.data.Subset) else dataset.samples
    names = [samples[rows[index]][0] for index in loader.batch_sampler.order]
    return dict(zip(names, top5.tolist())), format_predictions(names, top5)


# How many val images --amp predicts again in fp32 to count what the lower precision changed.
AMP_CHECK_IMAGES = 1000


def amp_changes(amp_predictions, fp32_predictions):
    """(images compared, top-1 labels that differ, 5-label lists that differ) of two {name: [5 labels]}."""
    names = list(fp32_predictions)
    top1 = sum(amp_predictions[name][0] != fp32_predictions[name][0] for name in names)
    lists = sum(amp_predictions[name] != fp32_predictions[name] for name in names)
    return len(names), top1, lists


def make_submission(data_folder, checkpoint_path, out_dir, device, batch_size=100, workers=4,
                    flip_average=True, channels_last=None, amp=False, log=print):
    """Write the challenge model and both prediction files into out_dir; returns the val errors.

    `channels_last` None picks the memory format for the device, NCHW for a network that fails in NHWC
    (models.choose_channels_last)."""
    out_dir = Path(out_dir)
    check_outputs(out_dir)
    checkpoint = checkpoints.read_finite(checkpoint_path, "--resume")
    root = loaders.check_data_folder(data_folder)
    num_classes = loaders.count_classes(root)
    if num_classes < scoring.NUM_GUESSES:
        raise UserError(f"{root}: {num_classes} classes; the challenge needs at least {scoring.NUM_GUESSES}")
    # nn.Conv2d whatever conv op it was trained with: both share one state_dict.
    arch, model, note = models.model_from_checkpoint(checkpoint, None, num_classes, data=root)
    if note:
        log(note)
    model_bytes = serialize(checkpoints.model_only(checkpoint, arch))
    models.check_model_size(len(model_bytes), out_dir / MODEL_NAME)  # before minutes of inference
    files.check_room(out_dir / MODEL_NAME, len(model_bytes))  # likewise (the prediction files are small)
    channels_last = models.choose_channels_last(channels_last, device, model, say=log)
    amp_dtype, _ = devices.amp_settings(amp, device)
    note = devices.cpu_precision_note(amp, device, why_fp32="the predictions stay fp32 unless asked: they are "
                                                             "the hand-in")
    if note:
        log(note)
    model = model.to(device, memory_format=devices.memory_format(channels_last)).eval()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out_dir} ({exc.strerror})") from None
    test_set, val_set = load_split(root, "test", num_classes), load_split(root, "val", num_classes)
    workers = loaders.cap_workers(workers, say=log)

    def predict(dataset):
        start = time.perf_counter()
        log(f"=> predicting {len(dataset)} {dataset.split} images on {device} ...")
        size_note = dataset.other_sizes_note()
        if size_note:
            log(f"note: {size_note} (predicted in batches of one size)")
        result = predict_split(model, dataset, device, batch_size, workers, flip_average, channels_last, amp_dtype)
        log(f"   {len(dataset)} images in {time.perf_counter() - start:.1f} s")
        return result

    _, test_text = predict(test_set)
    val_predictions, val_text = predict(val_set)
    if amp_dtype is not None:
        sample = torch.utils.data.Subset(val_set, range(min(AMP_CHECK_IMAGES, len(val_set))))
        fp32_predictions, _ = predict_split(model, sample, device, batch_size, workers, flip_average, channels_last)
        count, top1, lists = amp_changes(val_predictions, fp32_predictions)
        log(f"=> --amp ({str(amp_dtype).replace('torch.', '')}) against fp32 on the first {count} val images: "
            f"{top1} top-1 labels and {lists} 5-label lists differ")
    truth = {name: label for name, label in val_set.samples}
    errors = scoring.top_k_errors(val_predictions, truth, source=VAL_PREDICTIONS)

    files.write_bytes(out_dir / MODEL_NAME, model_bytes)
    files.write_text(out_dir / TEST_PREDICTIONS, test_text)
    files.write_text(out_dir / VAL_PREDICTIONS, val_text)
    log(f"=> {out_dir / MODEL_NAME} ({len(model_bytes) / 2**20:.2f} MiB, {arch} after epoch "
        f"{checkpoint.epoch}), {out_dir / TEST_PREDICTIONS}, {out_dir / VAL_PREDICTIONS}")
    log(f"val error ({'image + flip averaged' if flip_average else 'image only'}):")
    log(scoring.format_error_table(errors, len(truth)))
    return errors


def main(argv=None):
    """Entry point; returns the exit code: 0; 2 a user error; 4 an error in the student's file; 5 the
    disk is full; 6 out of memory; 128 + N a signal N (nothing is written then)."""
    args = None

    def translate(exc):
        if cli.is_out_of_memory(exc) and args is not None:
            half = max(1, args.batch_size // 2)
            return cli.out_of_memory(exc, f"predicting in batches of {args.batch_size}", f"try -b {half}")
        return student.as_user_error(exc)

    def body(argv):
        nonlocal args
        args = get_args_parser().parse_args(argv)
        if args.batch_size < 1:
            raise UserError(f"-b/--batch-size must be at least 1, got {args.batch_size}")
        if args.workers < 0:
            raise UserError(f"-j/--workers must not be negative, got {args.workers}")
        with signals.deferred():
            make_submission(args.data_folder, args.resume, args.out,
                            devices.resolve_device(args.gpu, local_rank=0, distributed=False),
                            batch_size=args.batch_size, workers=args.workers, flip_average=not args.no_flip,
                            channels_last=args.channels_last, amp=args.amp)

    return cli.run(body, argv, translate)


if __name__ == "__main__":
    sys.exit(main())
