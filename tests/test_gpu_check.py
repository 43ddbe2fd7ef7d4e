"""bench/gpu_check.py: its CPU mode runs every step to the end, and its runner reports honestly.

A GPU is lent to few sessions, so the check runs here at toy sizes on the CPU (`--device cpu`): the
command lines it gives the tests, the benchmarks and main.py cannot rot in between. That run starts
Python, torch and torchvision about twenty times, hence its minutes; it is marked `slow`.
"""
import json
import sys
from pathlib import Path

import pytest

from helpers import run_python

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402  (bench/ is not a package)


@pytest.mark.slow
def test_every_step_runs_and_passes_on_the_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    code, stdout, stderr = run_python(BENCH / "gpu_check.py", "--device", "cpu", "--out", out, "--work", work,
                                      "--budget", 900, timeout=1200)
    assert code == 0, stdout[-4000:] + stderr[-2000:]

    keys = [step.key for step in gpu_check.plan(gpu_check.PROFILES["cpu"], work)]
    results = json.loads((out / "results.json").read_text())
    assert [(step["key"], step["status"]) for step in results["steps"]] == [(key, "passed") for key in keys]
    summary = (out / "summary.md").read_text()
    assert summary.count("| passed |") == len(keys) and "Not passed: none." in summary
    log = (out / "gpu_check.log").read_text()
    for key in keys:
        assert f"=== {key}: " in log and f"--- {key}: passed" in log
    # Figures come from what the steps wrote.
    by_key = {step["key"]: step for step in results["steps"]}
    assert by_key["conv"]["figures"]["variants"].keys() == {"nn.Conv2d", "CustomConv2d"}
    assert (by_key["conv"]["figures"]["channels_last"], by_key["conv-nhwc"]["figures"]["channels_last"]) == \
        (False, True)
    assert {"fp32_default_is_faster", "amp_default_is_faster"} <= by_key["formats"]["figures"].keys()
    assert by_key["main-cpu-eval"]["figures"]["count"] == 10
    assert list(out.glob("Image_Atten_*.png")) and list(out.glob("Adv_Image_*.png"))


def test_the_formats_step_says_whether_the_default_memory_format_is_the_faster(tmp_path):
    rows = [{"amp": amp, "channels_last": nhwc, "images_per_s": rate}
            for amp, nhwc, rate in ((False, False, 900.0), (False, True, 800.0), (True, False, 1500.0),
                                    (True, True, 2500.0))]
    (tmp_path / "formats.json").write_text(json.dumps({"batch_size": 256, "rows": rows}))
    summary, figures = gpu_check.formats_reader(tmp_path / "formats.json", "cuda")("")
    assert summary == ("batch 256: fp32 NCHW 900, NHWC 800 img/s: default NCHW is the faster; "
                       "amp NCHW 1,500, NHWC 2,500 img/s: default NHWC is the faster")
    assert (figures["fp32_default_is_faster"], figures["amp_default_is_faster"]) == (True, True)
    summary, figures = gpu_check.formats_reader(tmp_path / "formats.json", "cpu")("")
    assert "fp32 NCHW 900, NHWC 800 img/s: default NHWC is the slower" in summary
    assert figures["fp32_default_is_faster"] is False
    # gpu_check imports none of the project; its copy of the defaults must be main.py's.
    import torch

    from harness import devices
    for (device, amp), channels_last in gpu_check.DEFAULT_CHANNELS_LAST.items():
        assert devices.use_channels_last(None, torch.device(device), amp) is channels_last


def python_step(key, code, timeout=30, needs=()):
    """A step running `python -c code` whose reader returns the output's last line."""
    return gpu_check.Step(key, key, [sys.executable, "-c", code], timeout,
                          lambda output: (gpu_check.last_line(output), {}), needs=needs)


def run_steps(steps, tmp_path, budget=60):
    with open(tmp_path / "log", "w") as log:
        return gpu_check.run_all(steps, budget, log, on_outcome=lambda outcomes: None)


def test_a_failure_is_reported_and_the_next_steps_still_run(tmp_path):
    steps = [python_step("fails", "print('boom'); raise SystemExit(3)"),
             python_step("after", "print('fine')"),
             python_step("dependent", "print('never runs')", needs=("fails",))]
    outcomes = run_steps(steps, tmp_path)
    assert outcomes["fails"].status == "failed" and outcomes["fails"].summary == "exit code 3: boom"
    assert outcomes["after"].status == "passed" and outcomes["after"].summary == "fine"
    assert outcomes["dependent"].status == "skipped" and "needs fails" in outcomes["dependent"].summary
    assert "never runs" not in (tmp_path / "log").read_text()


def test_a_step_past_its_timeout_is_stopped_with_its_children(tmp_path):
    # The child sleeps in a grandchild: the whole process group must go, or communicate() would hang.
    code = ("import subprocess, sys; print('started', flush=True); "
            "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])")
    outcome = run_steps([python_step("slow", code, timeout=2)], tmp_path)["slow"]
    assert outcome.status == "timed out" and outcome.seconds < 20
    assert outcome.summary.startswith("stopped after 2 s")


def test_steps_beyond_the_budget_are_skipped(tmp_path):
    steps = [python_step("first", "import time; time.sleep(1); print('ok')"),
             python_step("second", "print('ok')")]
    outcomes = run_steps(steps, tmp_path, budget=5.5)
    assert outcomes["first"].status == "passed"
    assert outcomes["second"].status == "skipped" and "budget" in outcomes["second"].summary


def test_a_reader_without_its_file_fails_the_step(tmp_path):
    step = gpu_check.Step("conv", "conv", [sys.executable, "-c", "pass"], 30,
                          gpu_check.conv_reader(tmp_path / "missing.json"))
    outcome = run_steps([step], tmp_path)["conv"]
    assert outcome.status == "failed" and "missing.json not written" in outcome.summary


@pytest.mark.parametrize("closing,passed", [
    ("40 passed, 1 skipped, 1 warning in 20.48s", True),
    ("41 skipped in 10.84s", False),  # no CUDA: pytest exits 0, but nothing was checked
    ("1 failed, 39 passed in 20.1s", True),  # the exit code fails this one
])
def test_pytest_closing_line(closing, passed):
    if passed:
        assert gpu_check.read_pytest(f"....\n{closing}\n")[1]["passed"] > 0
    else:
        with pytest.raises(gpu_check.StepFailed, match="no test passed"):
            gpu_check.read_pytest(f"sss\n{closing}\n")


def test_only_adds_the_steps_needed_and_rejects_unknown_names(tmp_path):
    steps = gpu_check.plan(gpu_check.PROFILES["cuda"], tmp_path)
    assert [step.key for step in gpu_check.select(steps, ["main-cpu-eval"])] == [
        "demo", "main-train", "main-eval", "main-cpu-eval"]
    with pytest.raises(SystemExit, match="unknown step"):
        gpu_check.select(steps, ["mian-train"])
