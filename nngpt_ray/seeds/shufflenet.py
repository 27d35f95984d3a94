"""ShuffleNet-style: grouped 1x1 convolutions, a channel shuffle, and a depthwise 3x3 convolution per unit."""
# hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32}
import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {'lr', 'momentum'}


def channel_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, channels, groups):
        super().__init__()
        self.groups = groups
        self.gconv1 = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gconv2 = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.gconv1(x)))
        out = self.bn2(self.dwconv(channel_shuffle(out, self.groups)))
        out = self.bn3(self.gconv2(out))
        return F.relu(x + out)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c1, c2, groups = 48, 96, 4
        self.stem = nn.Sequential(nn.Conv2d(in_shape[1], c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.stage1 = nn.Sequential(ShuffleUnit(c1, groups), ShuffleUnit(c1, groups))
        self.down = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())
        self.stage2 = nn.Sequential(ShuffleUnit(c2, groups), ShuffleUnit(c2, groups))
        self.fc = nn.Linear(c2, out_shape[0])

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
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
