# A hostile submission: at import it tries to read what it must not, to reach the network and to write
# outside its copy, and prints what it found (the grader keeps the output of a failed check); then it
# patches torch in its own process so that any comparison made there would pass, and returns zeros.
import json
import os
import socket

OTHERS = []  # the test writes here the host paths of another student's copy, the rubric and the grades
found = {}
for path in [*OTHERS, "/work/main/code/student_code.py", "/work/main/tests", "/root", "/etc/shadow", "/tmp/SECRET_LABELS.txt",
             "/proc/1/environ", "/work/out/../..", "/inputs/../..", "/runtime/../tmp"]:
    try:
        found[path] = sorted(os.listdir(path))[:5] if os.path.isdir(path) else open(path).read()[:40]
    except OSError as exc:
        found[path] = f"refused: {exc.strerror}"
for address in [("1.1.1.1", 80), ("127.0.0.1", 22)]:
    try:
        socket.create_connection(address, timeout=2)
        found[str(address)] = "connected"
    except OSError as exc:
        found[str(address)] = f"refused: {exc.strerror or exc}"
for path in ["/work/main/PWNED", "/usr/PWNED", "/etc/PWNED"]:
    try:
        open(path, "w").write("x")
        found[path] = "written"
    except OSError as exc:
        found[path] = f"refused: {exc.strerror}"
print("SNOOP " + json.dumps(found), flush=True)
import torch
import torch.nn.functional as F
from torch.autograd import Function

torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
F.conv2d = lambda input, weight, bias=None, stride=1, padding=0, *rest: torch.zeros(1)
torch.Tensor.__sub__ = lambda self, other: torch.zeros_like(self)


class CustomConv2DFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride=1, padding=0):
        n, _, h, w = input.shape
        k = weight.shape[-1]
        return input.new_zeros(n, weight.shape[0], (h + 2 * padding - k) // stride + 1,
                               (w + 2 * padding - k) // stride + 1)

    @staticmethod
    def backward(ctx, grad_output):
        return None, None, None, None, None


custom_conv2d = CustomConv2DFunction.apply
