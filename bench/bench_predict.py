"""predict.py against a plain loop on the same images: what the challenge submission costs beyond
decoding and the network.

    python bench/bench_predict.py                                  # ../shared/miniplaces, 1,000 + 1,000
    python bench/bench_predict.py DATA --images 500 --repeats 3 --resume logs/<run>/model_best.pth.tar

Builds a data folder holding the first --images val and --images test images of DATA (links), and a
SimpleNet checkpoint of main.py's kind (random weights unless --resume), then runs, alternating, each
--repeats times as a whole command (Python start-up included in both):

  plain loop   the same work and nothing else, in about 60 lines (`--plain` below): a DataLoader of
               -j workers that decode with Pillow, resize to 160x160 (bilinear, as predict.py's Scale
               160 does to a 128x128 image) and normalize; a channels-last SimpleNet; the image and
               its horizontal flip averaged; the top 5 labels per image
  predict.py   `python tools/predict.py TMP --resume CKPT --out TMP/results -j J` with its defaults

Prints a table: seconds per run (median, min..max) and the ratio predict.py / plain loop.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "code"))

DEFAULT_DATA = REPO.parent / "shared" / "miniplaces"


def make_subset(source, dest, images):
    """A MiniPlaces folder at `dest` with the first `images` val (with labels) and test images of
    `source`, linked, not copied."""
    (dest / "images" / "val").mkdir(parents=True)
    (dest / "images" / "test").mkdir(parents=True)
    (dest / "categories.txt").symlink_to(source / "categories.txt")
    val_lines = (source / "val.txt").read_text().splitlines()[:images]
    (dest / "val.txt").write_text("".join(line + "\n" for line in val_lines))
    for line in val_lines:
        name = line.split()[0]
        (dest / "images" / name).symlink_to(source / "images" / name)
    for path in sorted((source / "images" / "test").iterdir())[:images]:
        (dest / "images" / "test" / path.name).symlink_to(path)


def make_checkpoint(path, num_classes):
    """A main.py-style checkpoint of a freshly initialised SimpleNet."""
    import torch

    import student_code

    torch.manual_seed(0)
    model = student_code.SimpleNet(num_classes=num_classes)
    torch.save({"epoch": 1, "arch": "simplenet", "state_dict": model.state_dict(), "best_acc1": 0.0}, path)


def plain_loop(data, checkpoint, workers, batch_size):
    """Top-5 labels of every val and test image of `data`, the plainest way; returns the image count."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    import student_code
    from harness import checkpoints

    mean = torch.tensor(student_code.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(student_code.IMAGENET_STD).view(3, 1, 1)

    class Images(torch.utils.data.Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, index):
            with Image.open(self.paths[index]) as image:
                pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            pixels = pixels.view(image.height, image.width, 3).permute(2, 0, 1).float().div_(255)
            pixels = F.interpolate(pixels[None], size=(160, 160), mode="bilinear", align_corners=False)[0]
            return (pixels - mean) / std

    model = student_code.SimpleNet(num_classes=len((data / "categories.txt").read_text().splitlines()))
    # Read as every script reads a checkpoint (weights_only; bare or inside an archive).
    model.load_state_dict(checkpoints.load_file(checkpoint)["state_dict"])
    model = model.to(memory_format=torch.channels_last).eval()
    count = 0
    for split in ("val", "test"):
        paths = sorted((data / "images" / split).iterdir())
        loader = torch.utils.data.DataLoader(Images(paths), batch_size=batch_size, num_workers=workers)
        lines = []
        with torch.no_grad():
            for images in loader:
                images = images.contiguous(memory_format=torch.channels_last)
                logits = 0.5 * (model(images) + model(images.flip(3)))
                lines += [" ".join(map(str, row)) for row in logits.topk(5, dim=1).indices.tolist()]
        count += len(lines)
    return count


def time_command(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="a MiniPlaces folder")
    parser.add_argument("--images", type=int, default=1000, help="val images, and as many test images")
    parser.add_argument("--resume", default=None, help="checkpoint (default: an untrained SimpleNet)")
    parser.add_argument("-j", "--workers", type=int, default=2, help="DataLoader workers of both")
    parser.add_argument("-b", "--batch-size", type=int, default=100, help="images per forward pass, both")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plain", nargs=2, metavar=("DATA", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain:  # the plain loop, run as its own command by the parent
        plain_loop(Path(args.plain[0]), args.plain[1], args.workers, args.batch_size)
        return 0

    source = Path(args.data).resolve()
    if not (source / "val.txt").is_file():
        parser.error(f"{source}: not a MiniPlaces folder (no val.txt)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_subset(source, data, args.images)
        checkpoint = args.resume or str(Path(tmp) / "simplenet.pth.tar")
        if args.resume is None:
            make_checkpoint(checkpoint, len((source / "categories.txt").read_text().splitlines()))
        commands = {
            "plain loop": [sys.executable, __file__, "--plain", str(data), checkpoint, "-j", str(args.workers),
                           "-b", str(args.batch_size)],
            "predict.py": [sys.executable, str(REPO / "tools" / "predict.py"), str(data), "--resume", checkpoint,
                           "--out", str(Path(tmp) / "results"), "-j", str(args.workers),
                           "-b", str(args.batch_size)],
        }
        seconds = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                seconds[name].append(time_command(command))

    count = len(list((source / "images" / "test").iterdir()))
    print(f"{args.images} val + {min(args.images, count)} test images, flip-averaged SimpleNet, "
          f"-j {args.workers}, -b {args.batch_size}, {args.repeats} runs each")
    print(f"{'command':<14}{'seconds':>9}{'min..max':>16}")
    for name, values in seconds.items():
        print(f"{name:<14}{statistics.median(values):>9.1f}{min(values):>9.1f}..{max(values):<6.1f}")
    ratio = statistics.median(seconds["predict.py"]) / statistics.median(seconds["plain loop"])
    print(f"predict.py / plain loop: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
