"""MobileNetV2-style: inverted residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1 projection) with ReLU6."""
# hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32}
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_skip else out


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c1, c2, last, expand = 32, 64, 256, 4
        self.stem = nn.Sequential(nn.Conv2d(in_shape[1], c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(c1, c1, 1, expand), InvertedResidual(c1, c2, 2, expand), InvertedResidual(c2, c2, 1, expand),
        )
        self.head = nn.Sequential(nn.Conv2d(c2, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6())
        self.fc = nn.Linear(last, out_shape[0])

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(x.mean((2, 3)))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = nn.CrossEntropyLoss().to(self.device)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria(self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
