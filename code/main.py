"""Train, evaluate and attack the Assignment 2 networks on MiniPlaces, logging to TensorBoard.

    python code/main.py --demo                      # the whole assignment on a small generated dataset
    python code/main.py [data_folder] [--arch simplenet] [--epochs 90] [-b 256] [--lr 0.1] ...
    python code/main.py data --resume logs/<run>/checkpoint.pth.tar           # continue a run
    python code/main.py data --resume logs/<run>/model_best.pth.tar -e [-v] [--no-flip]
    python code/main.py data --resume logs/<run>/model_best.pth.tar -a [-v] [--eps-sweep]
    torchrun --nproc_per_node 2 code/main.py data ...                         # DistributedDataParallel
    tensorboard --logdir logs

Each run writes into logs/<run-name>/: TensorBoard events, checkpoint.pth.tar, model_best.pth.tar,
args.json, metrics.json and PNG grids; -e and -a write into the folder of the checkpoint they load
(a new run folder when that one is not writable). This file declares the flags and hands them to
the harness (code/harness/): flags (checks, --demo's defaults), training, evaluation (-e, -a), demo,
and under them runs (run folders, resume), loaders, models, checkpoints, engine, runlog and devices.
"""
import argparse
import os
import sys

from harness import signals

if __name__ == "__main__":
    signals.during_startup()  # before torch's imports: a signal while they run is one line too
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from harness import (attacks, cli, demo, devices, evaluation, flags, loaders, models, paths, runs, student,  # noqa: E402
                     training)
from harness.cli import EveryRankError, UserError


def get_args_parser():
    parser = cli.ArgumentParser(
        description="Train, evaluate (-e) or attack (-a) a network on MiniPlaces; log to TensorBoard.",
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("data_folder", nargs="?", default=None,
                        help=f"MiniPlaces folder (train.txt, val.txt, images/); default {paths.DEFAULT_DATA_DIR}")
    parser.add_argument("-j", "--workers", default=4, type=int, help="data loading worker processes")
    parser.add_argument("--epochs", default=90, type=int, help="total epochs of the schedule")
    parser.add_argument("--warmup-epochs", default=0, type=float,
                        help="epochs (may be fractional) of linear warm-up from lr 0, weight decay 0, "
                             "before the cosine")
    parser.add_argument("--start-epoch", default=0, type=int, help="first epoch (ignored with --resume)")
    parser.add_argument("-b", "--batch-size", default=256, type=int,
                        help="training mini-batch, summed over all processes of a torchrun")
    parser.add_argument("--lr", "--learning-rate", default=0.1, type=float, dest="lr", help="peak learning rate")
    parser.add_argument("--momentum", default=0.9, type=float, help="SGD momentum")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay",
                        help="weight decay (0 during warm-up)")
    parser.add_argument("-p", "--print-freq", default=10, type=int, help="log every N iterations")
    parser.add_argument("--resume", default=None, type=str, metavar="PATH",
                        help="checkpoint to continue training from, or to evaluate/attack (ours, the 2019 "
                             "harness's, or a state_dict)")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="evaluate the --resume model on val (image + horizontal flip averaged)")
    parser.add_argument("--no-flip", action="store_true",
                        help="with -e: each image once, no flip averaging (as the training log's val figures)")
    parser.add_argument("-a", "--attack", action="store_true",
                        help="accuracy of the --resume model under the default PGD attack")
    parser.add_argument("-v", "--vis", action="store_true",
                        help="with -e: saliency maps; with -a: original and adversarial images")
    parser.add_argument("--use-custom-conv", action=argparse.BooleanOptionalAction, default=False, help="use CustomConv2d (unfold/fold)")
    parser.add_argument("--gpu", default=None, type=int,
                        help="GPU index; negative for the CPU; default the first GPU if any, else the CPU")
    parser.add_argument("--arch", default=None, choices=models.arch_names(),
                        help="network (default: student_code.default_model, or the --resume checkpoint's)")
    parser.add_argument("--init", default="model", choices=models.INITS,
                        help="'model': as the network's constructor initialises it (our student_code.py: "
                             "Kaiming); 'pytorch': PyTorch's default init, as the team trained")
    parser.add_argument("--seed", default=None, type=int,
                        help="random seed (default: a random one, saved in args.json and checkpoints)")
    parser.add_argument("--logdir", default=str(paths.DEFAULT_LOG_DIR), help="folder holding the run folders")
    parser.add_argument("--run-name", default=None,
                        help="run folder name (default <arch>_<conv>_<timestamp>; with --resume, its folder)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="mixed precision: fp16 + GradScaler on CUDA, bf16 on the CPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format; --no-channels-last forces NCHW (default: NHWC on the CPU, "
                             "and on CUDA with --amp; else NCHW)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the training model")
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False,
                        help="decode each split once into a memory-mapped uint8 file under data/cache/, "
                             "so epochs skip JPEG decoding")
    parser.add_argument("--adv-train", action=argparse.BooleanOptionalAction, default=False, help="train on PGD adversarial examples")
    parser.add_argument("--adv-mode", default="mixed", choices=attacks.MODES,
                        help="adversarial training batch: clean + adversarial, or adversarial only")
    parser.add_argument("--adv-steps", default=2, type=int, help="PGD steps per adversarial training batch")
    parser.add_argument("--eps-sweep", action="store_true",
                        help=f"with -a: accuracy at epsilon {', '.join(map(str, evaluation.SWEEP_EPSILONS))}; "
                             "writes robustness.md and robustness.png")
    parser.add_argument("--demo", action="store_true",
                        help="generate the demo dataset if absent, train briefly, then run -e -v and -a -v")
    return parser


def run_mode(config, given, ctx):
    """The mode the flags ask for; returns its run folder."""
    if config.demo:
        return demo.demo(config, given, ctx)
    if config.evaluate:
        return evaluation.evaluate(config, ctx)
    if config.attack:
        return evaluation.attack(config, ctx)
    return training.train(config, given, ctx)


def main(argv=None):
    """Entry point; returns the exit code: 0; 2 a user error; 3 training diverged; 4 the student's code
    raised; 5 the disk is full; 6 out of memory; 128 + N a signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    distributed = False
    rank = int(os.environ.get("RANK", "0"))  # known before the process group is: errors print once
    config = None
    cli.safe_streams()
    with signals.handled():
        try:
            config, given = flags.parse(get_args_parser(), argv)
            if config.data_folder is None and not config.demo:
                config = config.replace(data_folder=str(paths.DEFAULT_DATA_DIR))
            rank, world_size, local_rank = devices.setup_distributed()
            distributed = world_size > 1
            device = devices.resolve_device(config.gpu, local_rank, distributed)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
            with signals.deferred():  # a signal stops the run at its next batch (harness/signals.py)
                run_mode(config, given, devices.Context(device, rank, world_size))
            signals.check()
            return 0
        except student.RAISES + (KeyboardInterrupt,) as exc:
            # Flag errors (found before the process group) and EveryRankError are alike on every process;
            # a signal reaches every process of a torchrun.
            quiet = rank != 0 and not (distributed and isinstance(exc, UserError)
                                       and not isinstance(exc, EveryRankError))
            if cli.is_out_of_memory(exc) and config is not None:
                exc = devices.out_of_memory(exc, config, loaders.VAL_BATCH_SIZE)
            code = cli.exit_code_for(student.as_user_error(exc) or exc, quiet=quiet)
            if code is None:  # our own bugs keep their traceback
                raise
            return code
        finally:
            if distributed and dist.is_initialized():
                dist.destroy_process_group()
            runs.release_run_folders()


if __name__ == "__main__":
    sys.exit(main())
