# A hostile submission: grabs memory until something stops it.
import torch
from torch.autograd import Function

hoard = []


class CustomConv2DFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride=1, padding=0):
        while True:
            hoard.append(torch.ones(2**29))  # 2 GiB at a time, touched
