"""Every random number generator a training run draws from: saved, restored and seeded together."""
import math
import random

import numpy as np
import torch


def get_rng_state():
    """Every RNG a training run draws from, as a dict of tensors (loadable with weights_only=True)."""
    _, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_internal, dtype=torch.int64),  # 624 words + position
        "python_gauss": torch.tensor([math.nan if py_gauss is None else py_gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),  # 624 uint32 words
        "numpy_pos": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())  # (devices, state bytes)
    return state


def set_rng_state(state):
    """Restore the RNGs saved by get_rng_state."""
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"].item()
    random.setstate((3, tuple(state["python"].tolist()), None if math.isnan(gauss) else gauss))
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, state["numpy_gauss"].item())
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's RNGs (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
