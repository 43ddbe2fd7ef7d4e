"""Out of memory, a missing compiler and torchrun's batch check (issue 22, kinds 7, 8 and 12).

Memory runs out as torch reports it (the CPU allocator's RuntimeError, CUDA's OutOfMemoryError),
injected where each loop runs: one line naming the loop, the batch size and what to try, exit 6, in
training, validation, -e, -a and predict.py.
"""
import os

import pytest
import torch

import main
import predict
from harness import checkpoints, cli, engine
from helpers import REPO_ROOT, run_main, run_python, run_torchrun, train_argv

CPU_OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes. Error code 12 " \
          "(Cannot allocate memory)"
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("oom")
    assert main.main(train_argv(tiny_data, logdir, "run")) == 0
    return logdir / "run" / checkpoints.CHECKPOINT_NAME


def _raising(name, error):
    """A stand-in for engine.<name> that runs out of memory inside a function of that name (the
    harness reads the loop from the traceback)."""
    def loop(*args, **kwargs):
        raise error
    loop.__name__ = loop.__qualname__ = name
    loop.__code__ = loop.__code__.replace(co_name=name)
    return loop


@pytest.mark.parametrize("error", [RuntimeError(CPU_OOM), torch.OutOfMemoryError(CUDA_OOM)], ids=["cpu", "cuda"])
def test_out_of_memory_in_training_names_the_batch_size(error, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine, "train_one_epoch", _raising("train_one_epoch", error))
    code, _, err = run_main(train_argv(tiny_data, tmp_path, "run", lr=0.1), capsys)
    assert code == cli.EXIT_OUT_OF_MEMORY == 6
    [line] = err.strip().splitlines()
    assert line.startswith("error: out of memory while training with -b 4 (")
    assert line.endswith("try -b 2 (with --lr 0.05, the linear scaling rule), or fewer -j workers")


@pytest.mark.parametrize("mode, loop, stage", [(None, "validate", "validating"), ("-e", "validate", "validating"),
                                               ("-a", "attack_eval", "attacking")])
def test_out_of_memory_in_evaluation_names_its_batches(mode, loop, stage, checkpoint, tiny_data, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setattr(engine, loop, _raising(loop, RuntimeError(CPU_OOM)))
    argv = train_argv(tiny_data, tmp_path, "run") if mode is None else \
        [tiny_data, "--resume", checkpoint, mode, "--gpu", -1, "-j", 0, "--logdir", tmp_path]
    code, _, err = run_main(argv, capsys)
    assert code == 6
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: out of memory while {stage} in batches of 100 val images on the CPU (")


def test_out_of_memory_in_predict(checkpoint, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(predict, "predict_top5", _raising("predict_top5", RuntimeError(CPU_OOM)))
    code = predict.main([str(tiny_data), "--resume", str(checkpoint), "--out", str(tmp_path / "out"), "-b", "50",
                         "--gpu", "-1", "-j", "0"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 6 and line.startswith("error: out of memory while predicting in batches of 50 (")
    assert line.endswith("try -b 25") and not list((tmp_path / "out").glob("*.txt"))


def test_an_error_that_only_mentions_memory_keeps_its_traceback(capsys):
    with pytest.raises(RuntimeError):
        cli.run(_raising("body", RuntimeError("index out of range")))


def test_compile_without_a_compiler_is_one_line_before_the_first_epoch(tiny_data, tmp_path):
    env = {**os.environ, "CXX": "/nonexistent/g++"}  # TorchInductor's compiler, as a machine without one has
    code, out, err = run_python(REPO_ROOT / "code" / "main.py", *train_argv(tiny_data, tmp_path, "run2", "--compile"),
                                env=env)
    assert code == 2 and err.strip() == ("error: --compile: torch.compile needs a C++ compiler to build CPU kernels "
                                         "with, and $CXX (/nonexistent/g++) is not one that runs; fix or unset CXX, "
                                         "or run without --compile")
    assert "Epoch" not in out


def test_evaluation_under_torchrun_does_not_check_the_training_batch(checkpoint, tiny_data, tmp_path):
    code, out, err = run_torchrun([tiny_data, "--resume", checkpoint, "-e", "--no-flip", "--gpu", -1, "-j", 0,
                                   "--logdir", tmp_path], nproc=3)
    assert code == 0, err
    assert "(10 val images" in out  # -b 256 does not split over 3 processes: not asked for, not checked
