"""Small vision transformer with a convolutional stem (early convolutions, then 2x2 patches), learned positions,
pre-norm encoder layers and a mean-pooled head."""
# hyperparameters: {"lr": 0.001, "momentum": 0.9, "batch": 16, "dropout": 0.0}
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        patch, stem, dim, heads, depth = 2, 32, 64, 4, 3
        tokens = (in_shape[2] // patch) * (in_shape[3] // patch)
        self.embed = nn.Sequential(
            nn.Conv2d(in_shape[1], stem, 3, padding=1), nn.BatchNorm2d(stem), nn.ReLU(),
            nn.Conv2d(stem, dim, patch, stride=patch),
        )
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, prm['dropout'], batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_shape[0])

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.encoder(x))
        return self.head(x.mean(1))

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
