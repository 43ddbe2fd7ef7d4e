"""bfloat16 on the CPU (issue 26): detected from the CPU's features (against /proc/cpuinfo's flags),
confirmed by a probe that leaves seeded runs alone, said in one line; predict.py --amp says how many
val predictions bf16 changes."""
import json
import os
import platform
import re
from pathlib import Path

import pytest
import torch

import main
import predict
from harness import checkpoints, devices
from helpers import REPO_ROOT, run_python, train_argv

CPUINFO = Path("/proc/cpuinfo")


@pytest.fixture
def uncapped(monkeypatch):
    """No oneDNN instruction-set cap in the environment: the CPU as it is."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo (not Linux)")
def test_native_bf16_features_match_the_kernels_cpu_flags(uncapped):
    flags = set(re.search(r"^flags\s*:(.*)$", CPUINFO.read_text(), re.MULTILINE).group(1).split())
    expected = [name for name, flag in (("AMX", "amx_tile"), ("AVX512_BF16", "avx512_bf16")) if flag in flags]
    assert devices.native_bf16_features() == expected


@pytest.mark.parametrize("environment, kept, capped_by", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, [], "AVX2 by ONEDNN_MAX_CPU_ISA"),  # an AVX2 CPU: neither feature
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}, [], "AVX512_CORE_VNNI by"),  # AVX-512 with VNNI: no bf16 yet
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, ["AVX512_BF16"], "AVX512_CORE_BF16 by"),  # Zen 4: no AMX
    ({"ONEDNN_MAX_CPU_ISA": "AVX10_2"}, ["AVX512_BF16"], "AVX10_2 by"),  # above bf16, beside AMX
    ({"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, ["AMX", "AVX512_BF16"], "by DNNL_MAX_CPU_ISA"),  # the older name
    ({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX2"}, [], "AVX2 by DNNL_MAX_CPU_ISA"),  # empty: the next
    ({"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"}, ["AMX", "AVX512_BF16"], None),  # the first set wins
    ({"ONEDNN_MAX_CPU_ISA": "DEFAULT"}, ["AMX", "AVX512_BF16"], None),  # no cap
    ({"ONEDNN_MAX_CPU_ISA": " AVX2 "}, ["AMX", "AVX512_BF16"], None),  # oneDNN does not trim: unknown, no cap
    ({"ONEDNN_MAX_CPU_ISA": "NOT_AN_ISA"}, ["AMX", "AVX512_BF16"], None),  # oneDNN ignores it: no cap
])
def test_a_onednn_isa_cap_hides_the_features_above_it(environment, kept, capped_by, uncapped, monkeypatch):
    """As on a CPU with AMX and AVX-512 BF16, capped as oneDNN's "CPU Dispatcher Control" says."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert devices.native_bf16_features() == kept
    description = devices.cpu_description()
    assert ("oneDNN capped at" in description) == (capped_by is not None)
    assert capped_by is None or capped_by in description


# In a fresh process (oneDNN reads its cap once): PyTorch's own view of oneDNN's bf16, the harness's
# features, whether it would probe or pick bf16, and the CPU description's cap.
CAPPED_CHECK = """
import json, torch
from harness import devices
print(json.dumps([torch.ops.mkldnn._is_mkldnn_bf16_supported(), devices.native_bf16_features(),
                  devices.cpu_bf16_is_faster(torch.device("cpu")), devices.cpu_description()]))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX2 is an x86 instruction set")
def test_capped_at_avx2_the_cpu_runs_as_one_without_native_bf16():
    """Under ONEDNN_MAX_CPU_ISA=AVX2 PyTorch says oneDNN has no bf16 (it falls back to its generic
    kernels), and the harness agrees: no native feature, no probe, fp32 defaults, the cap named."""
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                   "PYTHONPATH": str(REPO_ROOT / "code")}
    code, out, err = run_python("-c", CAPPED_CHECK, env=environment, timeout=120)
    assert code == 0, err
    onednn_bf16, features, picks_bf16, description = json.loads(out.splitlines()[-1])
    assert (onednn_bf16, features, picks_bf16) == (False, [], False)
    assert "torch capability AVX2; oneDNN capped at AVX2 by ONEDNN_MAX_CPU_ISA" in description


def test_the_probe_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(devices, "native_bf16_features", lambda: ["AVX512_BF16"])
    monkeypatch.setattr(devices, "_bf16_probe", {})
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    speedup = devices.bf16_speedup()
    assert torch.equal(torch.rand(3), expected) and speedup > 0


CPU = torch.device("cpu")


@pytest.mark.parametrize("features, speedup, amp, expected", [
    ([], None, False, None),
    ([], None, True, r"note: --amp on this CPU \(\w+, no native bf16\) emulates bf16 and is slower than fp32"),
    (["AVX512_BF16"], 1.8, False, r"note: this CPU computes bf16 natively \(AVX512_BF16\): a probe ran bf16 autocast "
                                  r"1\.8x as fast as fp32; --amp would use it \(training stays fp32 unless asked"),
    (["AMX", "AVX512_BF16"], 1.8, True, r"natively \(AMX, AVX512_BF16\).*; this run uses it$"),
    (["AVX512_BF16"], 0.9, False, None),  # native, but the probe found it slower: nothing to suggest
])
def test_the_note_follows_the_hardware(features, speedup, amp, expected, monkeypatch):
    monkeypatch.setattr(devices, "native_bf16_features", lambda: features)
    monkeypatch.setattr(devices, "_bf16_probe", {"speedup": speedup})
    note = devices.cpu_precision_note(amp, CPU)
    assert note is None if expected is None else re.search(expected, note)
    assert devices.cpu_bf16_is_faster(CPU) == (speedup is not None and speedup >= devices.BF16_PROBE_MIN_SPEEDUP)
    assert devices.cpu_precision_note(amp, torch.device("cuda")) is None


def test_amp_changes_counts_top1_labels_and_lists():
    fp32 = {"a.jpg": [1, 2, 3, 4, 5], "b.jpg": [1, 2, 3, 4, 5], "c.jpg": [9, 8, 7, 6, 5]}
    amp = {"a.jpg": [1, 2, 3, 4, 5], "b.jpg": [1, 3, 2, 4, 5], "c.jpg": [8, 9, 7, 6, 5], "d.jpg": [0, 1, 2, 3, 4]}
    assert predict.amp_changes(amp, fp32) == (3, 1, 2)


def test_predict_with_amp_writes_the_files_and_says_what_changed(tiny_data, tmp_path, capsys):
    assert main.main(train_argv(tiny_data, tmp_path / "logs", "run")) == 0
    checkpoint = tmp_path / "logs" / "run" / checkpoints.CHECKPOINT_NAME
    lines = []
    predict.make_submission(tiny_data, checkpoint, tmp_path / "amp", CPU, workers=0, amp=True, log=lines.append)
    predict.make_submission(tiny_data, checkpoint, tmp_path / "fp32", CPU, workers=0, log=lines.append)
    [said] = [line for line in lines if line.startswith("=> --amp")]
    count, top1, lists = map(int, re.fullmatch(r"=> --amp \(bfloat16\) against fp32 on the first (\d+) val "
                                               r"images: (\d+) top-1 labels and (\d+) 5-label lists differ", said).groups())
    amp_rows = (tmp_path / "amp" / predict.VAL_PREDICTIONS).read_text().splitlines()
    fp32_rows = (tmp_path / "fp32" / predict.VAL_PREDICTIONS).read_text().splitlines()
    assert count == len(fp32_rows) == 10 and [r.split()[0] for r in amp_rows] == [r.split()[0] for r in fp32_rows]
    assert lists == sum(a != b for a, b in zip(amp_rows, fp32_rows))
    assert top1 == sum(a.split()[1] != b.split()[1] for a, b in zip(amp_rows, fp32_rows)) <= lists
