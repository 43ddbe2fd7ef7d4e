# A student's student_code.py written to the Spring 2019 interface, for the tests: it imports the
# starter's helpers as 2019 files did, defines its own CustomConv2d (an nn.Module, not a subclass of
# nn.Conv2d), a small network as default_model, and no ARCHS, MAX_MODEL_BYTES or
# adversarial_training_batch. Kept small so that a training epoch takes seconds on a CPU.
import math

import torch
import torch.nn as nn
from torch.autograd import Function
from torch.nn.functional import fold, unfold
from torch.nn.modules.module import Module
from torchvision.utils import make_grid

from utils import resize_image  # noqa: F401  (every 2019 student file had this line)
import custom_transforms as transforms  # noqa: F401


class CustomConv2DFunction(Function):

  @staticmethod
  def forward(ctx, input_feats, weight, bias, stride=1, padding=0):
    ctx.save_for_backward(input_feats, weight, bias)
    ctx.stride, ctx.padding = stride, padding
    n, _, h, w = input_feats.shape
    out_channels, _, k, _ = weight.shape
    out_h = (h + 2 * padding - k) // stride + 1
    out_w = (w + 2 * padding - k) // stride + 1
    cols = unfold(input_feats, k, padding=padding, stride=stride)
    output = weight.view(out_channels, -1).matmul(cols) + bias.view(1, -1, 1)
    # a fresh tensor, not a view of one: nn.ReLU(inplace=True) follows in the network
    return output.view(n, out_channels, out_h, out_w).clone()

  @staticmethod
  def backward(ctx, grad_output):
    input_feats, weight, bias = ctx.saved_tensors
    n, _, h, w = input_feats.shape
    out_channels, _, k, _ = weight.shape
    cols = unfold(input_feats, k, padding=ctx.padding, stride=ctx.stride)
    dy = grad_output.reshape(n, out_channels, -1)
    grad_weight = dy.matmul(cols.transpose(1, 2)).sum(0).view_as(weight)
    grad_cols = weight.view(out_channels, -1).t().matmul(dy)
    grad_input = fold(grad_cols, (h, w), k, padding=ctx.padding, stride=ctx.stride)
    grad_bias = grad_output.sum((0, 2, 3))
    return grad_input, grad_weight, grad_bias, None, None


custom_conv2d = CustomConv2DFunction.apply


class CustomConv2d(Module):

  def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
               bias=True):
    super(CustomConv2d, self).__init__()
    assert dilation == 1 and groups == 1 and bias
    self.stride, self.padding = stride, padding
    self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels, kernel_size, kernel_size))
    self.bias = nn.Parameter(torch.Tensor(out_channels))
    self.reset_parameters()

  def reset_parameters(self):
    nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(self.weight[0].numel())
    nn.init.uniform_(self.bias, -bound, bound)

  def forward(self, input):
    return custom_conv2d(input, self.weight, self.bias, self.stride, self.padding)


class SimpleNet(nn.Module):
  # a much smaller SimpleNet: 3 convs, 16-32-32 channels
  def __init__(self, conv_op=nn.Conv2d, num_classes=100):
    super(SimpleNet, self).__init__()
    self.features = nn.Sequential(
      conv_op(3, 16, kernel_size=7, stride=4, padding=3), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
      conv_op(16, 32, kernel_size=3, stride=1, padding=1), nn.ReLU(inplace=True),
      conv_op(32, 32, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
    )
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(32, num_classes)

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.fc(x.view(x.size(0), -1))


default_model = SimpleNet


class GradAttention(object):
  def __init__(self, loss_fn):
    self.loss_fn = loss_fn

  def explain(self, model, input):
    input.requires_grad = True
    output = model(input)
    loss = self.loss_fn(output, output.max(1)[1])
    model.zero_grad()
    loss.backward()
    output = input.grad.abs().max(1, keepdim=True)[0]
    input.requires_grad = False
    return output


def vis_grad_attention(input, vis_alpha=2.0, n_rows=10, vis_output=None):
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  input = (input.detach().cpu() * std + mean).clamp(0, 1)
  output = make_grid(input, nrow=n_rows)
  if vis_output is not None:
    vis_output = make_grid(vis_output.detach().cpu(), nrow=n_rows)[0]
    output[0][vis_output > vis_alpha * vis_output.mean()] = 1.0
  return output


class PGDAttack(object):
  def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1):
    self.loss_fn = loss_fn
    self.num_steps = num_steps
    self.step_size = step_size
    self.epsilon = epsilon

  def perturb(self, model, input):
    output = input.clone().detach()
    for _ in range(self.num_steps):
      output.requires_grad = True
      pred = model(output)
      loss = self.loss_fn(pred, pred.min(1)[1])
      model.zero_grad()
      loss.backward()
      output = output - self.step_size * output.grad.sign()
      output = torch.min(torch.max(output, input - self.epsilon), input + self.epsilon).detach()
    return output


default_attack = PGDAttack
default_attention = GradAttention
default_visfunction = vis_grad_attention
