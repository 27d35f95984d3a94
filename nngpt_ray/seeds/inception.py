"""Inception-style: parallel 1x1, 3x3, double-3x3 and pooled branches concatenated along channels."""
# hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32}
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


def conv_bn(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InceptionBlock(nn.Module):
    def __init__(self, cin, c1, c3, c5, cp):
        super().__init__()
        self.b1 = conv_bn(cin, c1, 1)
        self.b3 = nn.Sequential(conv_bn(cin, c3, 1), conv_bn(c3, c3, 3))
        self.b5 = nn.Sequential(conv_bn(cin, c5, 1), conv_bn(c5, c5, 3), conv_bn(c5, c5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c0 = 32
        b1, b2 = (16, 24, 8, 8), (32, 48, 16, 16)
        self.stem = conv_bn(in_shape[1], c0, 3)
        self.inc1 = InceptionBlock(c0, *b1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.inc2 = InceptionBlock(sum(b1), *b2)
        self.fc = nn.Linear(sum(b2), out_shape[0])

    def forward(self, x):
        x = self.inc2(self.pool(self.inc1(self.stem(x))))
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
