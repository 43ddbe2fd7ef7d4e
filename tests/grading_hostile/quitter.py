# A hostile submission: ends its process in the middle of a check.
import os
from torch.autograd import Function


class CustomConv2DFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride=1, padding=0):
        os._exit(3)
