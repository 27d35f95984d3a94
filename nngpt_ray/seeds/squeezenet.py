"""SqueezeNet-style: fire modules (1x1 squeeze, then parallel 1x1 and 3x3 expand, concatenated), conv classifier."""
# hyperparameters: {"lr": 0.02, "momentum": 0.9, "batch": 16, "dropout": 0.2}
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout'}


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.BatchNorm2d(squeeze), nn.ReLU(inplace=True))
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        s = self.squeeze(x)
        return self.act(torch.cat([self.expand1(s), self.expand3(s)], 1))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c0, s1, e1, s2, e2 = 64, 16, 64, 32, 128
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], c0, 3, padding=1), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
            Fire(c0, s1, e1), Fire(2 * e1, s1, e1), nn.MaxPool2d(2, ceil_mode=True),
            Fire(2 * e1, s2, e2), Fire(2 * e2, s2, e2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(prm['dropout']), nn.Conv2d(2 * e2, out_shape[0], 1), nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)

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
