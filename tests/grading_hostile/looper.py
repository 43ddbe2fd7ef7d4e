# A hostile submission: starts processes that would outlive it, then loops for ever.
import os
import subprocess
import time
from torch.autograd import Function


class CustomConv2DFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride=1, padding=0):
        for _ in range(5):
            if os.fork() == 0:
                os.setsid()
                while True:
                    time.sleep(1)
        subprocess.Popen(["sleep", "1000"], start_new_session=True)
        while True:
            pass
