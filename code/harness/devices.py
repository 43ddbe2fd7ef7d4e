"""Devices and processes: the CPU or a GPU, torchrun's process group, and mixed-precision settings."""
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .cli import UserError


def setup_distributed():
    """(rank, world_size, local_rank); joins the torchrun process group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return rank, world_size, local_rank


def resolve_device(gpu, local_rank, distributed):
    """--gpu N -> cuda:N; negative -> CPU; default the first GPU (a torchrun's LOCAL_RANK) if any."""
    if gpu is not None and gpu < 0:
        if distributed and dist.get_backend() == "nccl":
            raise UserError("--gpu -1 under torchrun on a GPU machine: the process group uses nccl (GPU only)")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpu is not None:
            raise UserError(f"--gpu {gpu}: no CUDA GPU is available (use --gpu -1 for the CPU)")
        return torch.device("cpu")
    index = local_rank if distributed else (gpu or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"--gpu {index}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def amp_settings(enabled, device):
    """(autocast dtype or None, GradScaler): fp16 with loss scaling on CUDA, bf16 (no scaling) on the CPU."""
    if not enabled:
        return None, torch.amp.GradScaler(device.type, enabled=False)
    if device.type == "cuda":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, torch.amp.GradScaler(device.type, enabled=False)


def use_channels_last(requested, device, amp=False):
    """Whether the network and its batches use the channels-last (NHWC) memory format on `device`.

    `requested` is the user's choice (--channels-last True, --no-channels-last False) and wins; None
    picks the format measured faster (docs/training-and-resume.md, "Memory format"):
      - the CPU: NHWC. oneDNN's convolutions and max-pooling run natively in it; on the 2-core AVX2
        development machine SimpleNet's training step ran 1.33x and its evaluation forward pass
        1.57x faster than in NCHW (bench/bench_train.py, with --inference), and with the
        unfold/fold convolution the network was no slower (bench/bench_conv.py);
      - CUDA: NHWC with --amp (cuDNN's fp16 tensor-core kernels are NHWC; PyTorch's channels-last
        tutorial), NCHW in full precision, until bench/gpu_check.py measures otherwise on a GPU;
      - any other device: NCHW, the format every operator supports.
    """
    if requested is not None:
        return bool(requested)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return bool(amp)
    return False


def memory_format(channels_last):
    """The torch.memory_format of a use_channels_last() answer."""
    return torch.channels_last if channels_last else torch.contiguous_format


def memory_format_name(channels_last):
    """The memory format's name as the run's first line says it: NHWC (channels-last) or NCHW."""
    return "NHWC" if channels_last else "NCHW"


def broadcast_object(value, rank, world_size):
    """rank 0's `value` on every rank (run names and random seeds must agree)."""
    if world_size == 1:
        return value
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@dataclass(frozen=True)
class Context:
    """Where this process runs: its device and its place in a torchrun (rank 0 of 1 otherwise)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    def broadcast(self, value):
        return broadcast_object(value, self.rank, self.world_size)

    def say(self, message):
        """Print `message` (flushed) on the main process only: rank 0 speaks for the run."""
        if self.is_main:
            print(message, flush=True)


def local_process_count():
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def reset_peak_memory(device):
    """Start a new peak-memory window (CUDA only: the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak memory in MiB: CUDA's max allocated on a GPU; the process's peak resident size on the CPU.

    The CPU figure is the peak since the process started (getrusage cannot be reset); NaN where the
    `resource` module does not exist (Windows).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 2**10


# The loops of the harness whose frames tell where memory ran out (engine's function names).
_STAGES = {"train_one_epoch": "training", "validate": "validating", "attack_eval": "attacking"}


def out_of_memory(exc, config, val_batch_size):
    """The one-line cli.OutOfMemory for `exc` (an allocation failure) in a main.py run: the loop it
    happened in (from the traceback), the batch size there and what to try."""
    import traceback

    from . import cli

    frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    stage = next((_STAGES[name] for name in reversed(frames) if name in _STAGES), None)
    if stage == "training" or (stage is None and not (config.evaluate or config.attack)):
        half = max(1, config.batch_size // 2)
        return cli.out_of_memory(exc, f"training with -b {config.batch_size}",
                                 f"try -b {half} (with --lr {config.lr * half / config.batch_size:g}, the linear "
                                 "scaling rule), or fewer -j workers")
    where = "on the CPU" if config.gpu is not None and config.gpu < 0 else "on this device"
    return cli.out_of_memory(exc, f"{stage or 'evaluating'} in batches of {val_batch_size} val images {where}",
                             "close what else uses the memory, or try the other device (--gpu -1 for the CPU)")


def check_compile(device):
    """--compile needs what TorchInductor builds kernels with: a C++ compiler on the CPU, Triton on a
    GPU. Raises UserError, before the first epoch, when it is missing (else torch.compile fails at the
    first step with a long traceback ending in InvalidCxxCompiler)."""
    try:
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            missing = None if has_triton() else "Triton, which it compiles GPU kernels with"
        else:
            from torch._inductor import cpp_builder

            cpp_builder.get_cpp_compiler()
            missing = None
    except (ImportError, AttributeError):  # private APIs of another version: the first step will tell
        return
    except RuntimeError:  # torch._inductor.exc.InvalidCxxCompiler
        cxx = os.environ.get("CXX")
        if cxx:
            raise UserError(f"--compile: torch.compile needs a C++ compiler to build CPU kernels with, and $CXX "
                            f"({cxx}) is not one that runs; fix or unset CXX, or run without --compile")
        missing = "a C++ compiler (g++) to build CPU kernels with"
    if missing:
        raise UserError(f"--compile: torch.compile needs {missing}, and this machine has none; install it "
                        "(e.g. apt install g++) or run without --compile")


# ---------------------------------------------------------------------------------------------------
# bfloat16 on the CPU: native on some CPUs, emulated (and slower than fp32) on others
# ---------------------------------------------------------------------------------------------------

# Native bf16 counts as faster unless the probe finds it slower: on a loaded machine the probe's
# figure swings (1.2x to 3.0x on the 2-core AVX-512 EPYC), and a higher bar would let the load choose.
BF16_PROBE_MIN_SPEEDUP = 1.0
_bf16_probe = {}  # cached: the probe's speed-up, measured once per process


def cpu_model():
    """The CPU's model name as lscpu gives it ("unknown CPU" without lscpu), for benchmark tables."""
    import subprocess

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    found = re.search(r"^Model name:\s*(.*)$", lscpu, re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"


# oneDNN's instruction-set levels, as ONEDNN_MAX_CPU_ISA names them (oneDNN Developer Guide, "CPU
# Dispatcher Control"; AVX10_2 and AVX10_2_AMX_2 in its newer releases), with the native bf16 features each
# lets oneDNN use. A level below a feature makes oneDNN compute as a CPU without it:
# ONEDNN_MAX_CPU_ISA=AVX2 (with ATEN_CPU_CAPABILITY=avx2) runs an AVX-512 BF16 or AMX CPU as an AVX2
# one, which is how docs/measurements.md measures "a CPU without native bf16".
ONEDNN_LEVELS = {
    **dict.fromkeys(("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"), ()),
    **dict.fromkeys(("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_2", "AVX10_2_512"),
                    ("AVX512_BF16",)),
    **dict.fromkeys(("AVX10_1_512_AMX", "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16",
                     "AVX10_2_AMX_2", "AVX10_2_512_AMX_2"), ("AMX", "AVX512_BF16")),
}
_NATIVE_BF16 = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))


def onednn_isa_cap():
    """(variable, level) where ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA, caps oneDNN at one
    of ONEDNN_LEVELS; else None. Read as oneDNN reads it: the first variable set to a non-empty value
    counts, in any letter case, untrimmed; DEFAULT, ALL or an unknown value mean no cap."""
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        level = os.environ.get(variable, "").upper()
        if level:
            return (variable, level) if level in ONEDNN_LEVELS else None
    return None


def cpu_description():
    """The CPU's model name, the flags that decide its fast paths (AVX2, AVX-512, bf16, AMX) and any
    oneDNN cap (onednn_isa_cap), for benchmark tables."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    found = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    cpu_flags = set(found.group(1).split()) if found else set()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16") if f in cpu_flags]
    cap = onednn_isa_cap()
    capped = f"; oneDNN capped at {cap[1]} by {cap[0]}" if cap else ""
    return (f"{cpu_model()} ({', '.join(shown)}; torch capability {torch.backends.cpu.get_cpu_capability()}"
            f"{capped})")


def native_bf16_features():
    """The CPU features that compute bfloat16 natively, by name: 'AMX' (Intel Sapphire Rapids on) and
    'AVX512_BF16' (Intel Cooper Lake on, AMD Zen 4 on); empty where bf16 is emulated (AVX2, plain
    AVX-512), and PyTorch's oneDNN then runs bf16 autocast slower than fp32. A feature the CPU has but
    onednn_isa_cap() keeps oneDNN from using does not count."""
    cap = onednn_isa_cap()
    return [name for name, check in _NATIVE_BF16
            if (cap is None or name in ONEDNN_LEVELS[cap[1]]) and getattr(torch.cpu, check, lambda: False)()]


def bf16_speedup():
    """How many times faster a training step of a small convolutional network runs in bf16 autocast
    than in fp32 on this CPU (NHWC, 2 conv layers, batch 8 at 64 px, best of 5), measured once per
    process (about a second); None where the CPU has no native bf16 (not measured)."""
    if "speedup" not in _bf16_probe:
        with torch.random.fork_rng(devices=[]):  # the probe's weights must not move a seeded run's RNG
            _bf16_probe["speedup"] = _measure_bf16_speedup() if native_bf16_features() else None
    return _bf16_probe["speedup"]


def _measure_bf16_speedup():
    import time

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 5, stride=2, padding=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    net = net.to(memory_format=torch.channels_last)
    images = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)

    def best_time(bf16):
        times = []
        for _ in range(6):  # the first is a warm-up (oneDNN picks its kernels)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = net(images).float().square().mean()
            loss.backward()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    return best_time(False) / best_time(True)


def cpu_bf16_is_faster(device):
    """True on a CPU that computes bf16 natively and where the probe found bf16 autocast faster."""
    if device.type != "cpu":
        return False
    speedup = bf16_speedup()
    return speedup is not None and speedup >= BF16_PROBE_MIN_SPEEDUP


def cpu_precision_note(amp, device, flag="--amp",
                       why_fp32="training stays fp32 unless asked: the course's figures are fp32"):
    """The line a run on the CPU prints about bf16, or None: on a CPU with native bf16, how much faster
    the probe found it (and, when off, that `flag` would use it and `why_fp32` it is off); on one
    without, that --amp is emulated and slower."""
    if device.type != "cpu":
        return None
    features = native_bf16_features()
    if not features:
        if not amp:
            return None
        return (f"note: --amp on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native bf16) emulates "
                "bf16 and is slower than fp32 (bench/bench_cpu_paths.py measures it)")
    speedup = bf16_speedup()
    found = f"this CPU computes bf16 natively ({', '.join(features)}): a probe ran bf16 autocast {speedup:.1f}x " \
            "as fast as fp32"
    if amp:
        return f"note: {found}; this run uses it"
    if speedup < BF16_PROBE_MIN_SPEEDUP:
        return None
    return f"note: {found}; {flag} would use it ({why_fp32})"
