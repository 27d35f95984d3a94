"""DenseNet-style: each layer's output is concatenated to its input (growth rate k), transitions halve channels and size."""
# hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32}
import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {'lr', 'momentum'}


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


def dense_block(cin, growth, layers):
    return nn.Sequential(*[DenseLayer(cin + i * growth, growth) for i in range(layers)])


def transition(cin, cout):
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, ceil_mode=True))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c0, growth, layers = 32, 16, 4
        c1 = (c0 + layers * growth) // 2
        c2 = c1 + layers * growth
        self.stem = nn.Conv2d(in_shape[1], c0, 3, padding=1, bias=False)
        self.block1 = dense_block(c0, growth, layers)
        self.trans1 = transition(c0 + layers * growth, c1)
        self.block2 = dense_block(c1, growth, layers)
        self.norm = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2, out_shape[0])

    def forward(self, x):
        x = self.block2(self.trans1(self.block1(self.stem(x))))
        x = F.relu(self.norm(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

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
