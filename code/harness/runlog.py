"""What a run prints and logs: the console, TensorBoard and PNG grids (`RunLog`), and the running
averages of the training and evaluation loops (`MetricLogger`).

TensorBoard layout (the assignment's tags):
  * `data/training_loss`, `data/learning_rate` every print-freq iterations, x = global iteration;
  * `data/top1_accuracy`, `data/top5_accuracy` with a `train` and a `val` series each, x = epoch
    (1-based, as the 2019 harness logged them), written as torch's add_scalars lays them out: one
    sub-run folder per series, `data_top1_accuracy_train` and so on;
  * `data/validation_loss` and `perf/*` once per epoch, x = the global iteration of the epoch's last
    step, so the validation loss shares the training loss's axis;
  * `Image/...` grids, x = the batch index.
A resumed run purges what the interrupted run logged after the checkpoint: the main folder from the
resumed global iteration, every series folder from the resumed epoch (one SessionLog.START each, which
TensorBoard honours per folder), so after any resume each step appears once.
"""
import contextlib
import os
import sys
import threading
from pathlib import Path

import torch
import torch.distributed as dist

from .metrics import AverageMeter
from . import cli, files, images


class RunLog:
    """Console, TensorBoard and PNG output of one run; every method is a no-op when not `active`
    (the other ranks of a distributed run, or a loop called without a log).

    purge_step / purge_epoch: the global iteration and the 1-based epoch from which a resumed run
    rewrites history (None for a new run).
    """

    def __init__(self, run_dir=None, active=False, purge_step=None, purge_epoch=None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.active = active and run_dir is not None
        self.purge_epoch = purge_epoch
        self._writer = None
        self._series_writers = {}
        if self.active:
            self._writer = self._summary_writer(self.run_dir, purge_step)

    def _summary_writer(self, folder, purge_step):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is only needed where a run logs

        _quiet_event_writer_threads()
        try:
            with self._writing(folder):
                return SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        except cli.UserError:
            _remove_empty_events(folder)
            raise

    @contextlib.contextmanager
    def _writing(self, folder=None):
        """TensorBoard's writes fail in its writer thread and surface at the next call: as one line
        (cli.DiskFull when the disk is full) naming the events folder."""
        try:
            yield
        except OSError as exc:
            where = Path(exc.filename) if exc.filename else Path(folder or self.run_dir) / "events.out.tfevents.*"
            if exc.errno in cli.NO_SPACE:
                raise cli.disk_full(where) from None
            raise cli.UserError(f"cannot write {where} ({exc.strerror or cli.one_line(exc)})") from None

    def print(self, *args, **kwargs):
        if self.active:
            print(*args, **kwargs, flush=True)

    def scalar(self, tag, value, step):
        if self.active:
            with self._writing():
                self._writer.add_scalar(tag, float(value), step)

    def series(self, tag, values, epoch):
        """{series name: value} under one tag at `epoch` (1-based), as SummaryWriter.add_scalars stores it."""
        if not self.active:
            return
        for name, value in values.items():
            key = f"{tag.replace('/', '_')}_{name}"
            if key not in self._series_writers:
                self._series_writers[key] = self._summary_writer(self.run_dir / key, self.purge_epoch)
            with self._writing():
                self._series_writers[key].add_scalar(tag, float(value), epoch)

    def text(self, tag, text):
        if self.active:
            with self._writing():
                self._writer.add_text(tag, text)

    def image(self, tag, image, step):
        """An image grid (C, H, W) in [0, 1] (C = 1, 3 or 4) to TensorBoard under `tag` and to
        <run>/<name>_<step>.png.

        Encoded once, for both (images.encode_png, zlib level 1): add_image would encode its own copy at
        level 6, 1.3 s more per grid. SummaryWriter has no public call for encoded bytes, so the summary
        goes to its file writer as add_image itself sends it.
        """
        if not self.active:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        png = images.encode_png(image)
        channels, height, width = image.shape
        summary = Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png))])
        with self._writing():
            self._writer._get_file_writer().add_summary(summary, step)
        files.write_bytes(self.run_dir / f"{tag.split('/')[-1]}_{step:04d}.png", png)

    def flush(self):
        with self._writing():
            for writer in self._writers():
                writer.flush()

    def close(self):
        """Close every writer and remove the events files left empty (a full disk, a run stopped before
        its first record). Inside a `finally` that an error unwinds, a failure here never replaces it."""
        unwinding = sys.exc_info()[1] is not None
        failure = None
        for writer in self._writers():
            try:
                with self._writing():
                    writer.close()
            except cli.UserError as exc:
                failure = failure or exc
        for folder in {self.run_dir, *(self.run_dir / key for key in self._series_writers)} - {None}:
            _remove_empty_events(folder)
        self._writer, self._series_writers = None, {}
        if failure is not None and not unwinding:
            raise failure

    def _writers(self):
        return [w for w in (self._writer, *self._series_writers.values()) if w is not None]


def _remove_empty_events(folder):
    """Remove the events files that this process left empty in `folder` (their names end in
    .<hostname>.<pid>.<n>): TensorBoard would list them as runs with no data."""
    for path in Path(folder).glob(f"events.out.tfevents.*.{os.getpid()}.*"):
        try:
            if path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


def _quiet_event_writer_threads():
    """TensorBoard's writer thread re-raises its error after storing it for the next call, which
    prints a thread traceback; the error reaches the user as one line from that next call instead."""
    if getattr(threading.excepthook, "quiet_event_writers", False):
        return
    hook = threading.excepthook

    def excepthook(args):
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError)):
            hook(args)

    excepthook.quiet_event_writers = True
    threading.excepthook = excepthook


class MetricLogger:
    """Running averages of several metrics, each weighted by its batch size, e.g.

        metrics = MetricLogger(loss=("Loss", ":.4e"), top1=("Acc@1", ":6.2f"))
        metrics.update(n=images.shape[0], loss=loss, top1=acc1)   # 0-d tensors stay on their device
        metrics.add(images=images.shape[0])                       # a plain total
        metrics.all_reduce(device)                                # one collective for all of them
        metrics.averages()                                        # {"loss": ..., "top1": ..., "count": ...}
        metrics.totals["images"]
    """

    def __init__(self, **formats):
        self.meters = {name: AverageMeter(label, fmt) for name, (label, fmt) in formats.items()}
        self.totals = {}

    def update(self, n, **values):
        for name, value in values.items():
            self.meters[name].update(value, n)

    def add(self, **amounts):
        for name, amount in amounts.items():
            self.totals[name] = self.totals.get(name, 0) + amount

    @property
    def count(self):
        return next(iter(self.meters.values())).count if self.meters else 0

    def all_reduce(self, device):
        """Sums and counts over all processes in one all_reduce, so every rank reads the global averages."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        meters, names = list(self.meters.values()), list(self.totals)
        values = [float(m.sum) for m in meters] + [float(m.count) for m in meters]
        values += [float(self.totals[name]) for name in names]
        reduced = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(reduced)
        reduced = reduced.tolist()
        for i, meter in enumerate(meters):
            meter.sum, meter.count = reduced[i], int(reduced[len(meters) + i])
        for i, name in enumerate(names):
            self.totals[name] = reduced[2 * len(meters) + i]

    def averages(self):
        return {**{name: meter.avg for name, meter in self.meters.items()}, "count": self.count}

    def __str__(self):
        return "  ".join(str(meter) for meter in self.meters.values())
