"""The network Part III's checks explain and attack: small, fixed, trained once by the grader and cached.

It lives here, not in the student's file or ours, so the child can build it from the grader's runtime
without seeing our solution; it uses nn.Conv2d only. Trained with SGD on the first images of the
training split (demo or MiniPlaces) for a fixed number of steps, seeded: the same data, torch and CPU
give the same weights, and every submission in a grading run is checked on the same network.
"""
import torch
import torch.nn as nn

NUM_CLASSES = 100  # MiniPlaces' count; the demo's 10 labels are its first ten
TRAIN_STEPS = 150
BATCH = 32
LEARNING_RATE = 0.05


class ReferenceNet(nn.Module):
    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),   # 16x16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),            # 8x8
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def train(images, labels, seed=0, steps=TRAIN_STEPS):
    """A ReferenceNet trained on (images, labels) with SGD and momentum: its state_dict."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ReferenceNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        index = torch.randint(len(images), (BATCH,), generator=generator)
        loss = criterion(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().state_dict()
