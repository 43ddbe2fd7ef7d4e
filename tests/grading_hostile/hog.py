# A hostile submission: grabs memory until something stops it, as soon as it is imported (before any
# check's timer starts: page faults are slow on a loaded VM, and the cap, not the timer, must end it).
import torch

hoard = []
while True:
    hoard.append(torch.ones(2**29))  # 2 GiB at a time, touched
