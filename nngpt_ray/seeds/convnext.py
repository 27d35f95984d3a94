"""ConvNeXt-style: large-kernel depthwise convolution, LayerNorm, inverted-bottleneck MLP with GELU, layer scale."""
# hyperparameters: {"lr": 0.002, "momentum": 0.9, "batch": 32}
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, kernel):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.mlp(self.norm(y))
        return x + y.permute(0, 3, 1, 2)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c1, c2, k1, k2 = 48, 96, 5, 3
        self.stem = nn.Conv2d(in_shape[1], c1, 2, stride=2)
        self.stage1 = nn.Sequential(ConvNeXtBlock(c1, k1), ConvNeXtBlock(c1, k1))
        self.down = nn.Conv2d(c1, c2, 1)
        self.stage2 = nn.Sequential(ConvNeXtBlock(c2, k2), ConvNeXtBlock(c2, k2))
        self.norm = nn.LayerNorm(c2)
        self.head = nn.Linear(c2, out_shape[0])

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = nn.CrossEntropyLoss().to(self.device)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=prm['lr'], betas=(prm['momentum'], 0.999))

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria(self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
