"""Model factories the smoke-test tests import from a generated project: fixed and buggy pairs, one per failure."""

# Each factory pair differs only by the bug the failure's test must catch.
MODELS = '''
import time

import torch
from torch import nn


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 16, generator=g), torch.arange(8) % 4


def _mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


class LogFeatures(nn.Module):  # nan_loss: log of ReLU outputs, which are exactly 0 for half the units
    def __init__(self, eps):
        super().__init__()
        self.eps, self.inner, self.head = eps, nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.log(torch.relu(self.inner(x)) + self.eps))


class CarriedContext(nn.Module):  # graph_reuse: the CVFP context carried to the next call
    def __init__(self, detach):
        super().__init__()
        self.detach, self.update, self.head, self.context = detach, nn.Linear(32, 16), nn.Linear(16, 4), None

    def forward(self, x):
        previous = self.context if self.context is not None else torch.zeros(x.shape[0], 16)
        context = torch.tanh(self.update(torch.cat([x, previous], dim=-1)))
        self.context = context.detach() if self.detach else context
        return self.head(context)


class CutGraph(nn.Module):  # vanishing_gradients: a detach between the body and the head
    def __init__(self, cut):
        super().__init__()
        self.cut, self.body, self.head = cut, nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        hidden = torch.relu(self.body(x))
        return self.head(hidden.detach() if self.cut else hidden)


class DeepLinear(nn.Module):  # exploding_gradients: 12 layers that each multiply the norm by `gain`
    def __init__(self, gain):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16, bias=False) for _ in range(12))
        for layer in self.layers:
            nn.init.orthogonal_(layer.weight, gain=gain)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x[:, :4]


class Flatten(nn.Module):  # shape_mismatch: a batch size hard-coded in view(); BatchNorm must not trip a batch of 1
    def __init__(self, hard_coded):
        super().__init__()
        self.hard_coded, self.fc, self.norm = hard_coded, nn.Linear(16, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.norm(self.fc(x.view(8, -1) if self.hard_coded else x.reshape(x.shape[0], -1)))


class Mixer(nn.Module):  # dtype_mismatch: a matrix made in forward without dtype=x.dtype
    def __init__(self, follow):
        super().__init__()
        self.follow, self.fc = follow, nn.Linear(16, 4)

    def forward(self, x):
        mix = torch.eye(16, dtype=x.dtype, device=x.device) if self.follow else torch.eye(16)
        return self.fc(x @ mix)


class Offset(nn.Module):  # device_mismatch: a tensor made in forward without device=x.device
    def __init__(self, follow):
        super().__init__()
        self.follow, self.fc = follow, nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x) + (torch.ones(4, device=x.device) if self.follow else torch.ones(4))


class WithSpare(nn.Module):  # distributed_hang: a parameter forward never uses
    def __init__(self, spare):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.spare = nn.Linear(16, 16) if spare else None

    def forward(self, x):
        return self.fc(x)


class Broadcast(nn.Module):  # oom: a huge intermediate kept for backward
    def __init__(self, width):
        super().__init__()
        self.width, self.fc = width, nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x).unsqueeze(-1).expand(-1, -1, self.width).contiguous().mean(-1)


class Frozen(nn.Module):  # plateau: logits cut from the graph, so nothing learns
    def __init__(self, cut):
        super().__init__()
        self.cut, self.net = cut, _mlp()

    def forward(self, x):
        logits = self.net(x)
        return logits.detach().requires_grad_() if self.cut else logits


class Encoder(nn.Module):  # rank_collapse: every input mapped to the same representation
    def __init__(self, collapse):
        super().__init__()
        self.collapse = collapse
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, x):
        h = self.net(x)
        return h.mean(dim=0, keepdim=True).expand_as(h) if self.collapse else h


class Guarded(nn.Module):  # slow_throughput: a Python if on a tensor, a host sync every step
    def __init__(self, sync):
        super().__init__()
        self.sync, self.fc = sync, nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc(x)
        if self.sync and h.abs().max() > 1e6:
            h = h / 1e6
        return h.clamp(-1e6, 1e6)


def nan_fixed(): return LogFeatures(1e-6), _batch()
def nan_buggy(): return LogFeatures(0.0), _batch()
def graph_fixed(): return CarriedContext(True), _batch()
def graph_buggy(): return CarriedContext(False), _batch()
def flow_fixed(): return CutGraph(False), _batch()
def flow_buggy(): return CutGraph(True), _batch()
def explode_fixed(): return DeepLinear(1.0), _batch()
def explode_buggy(): return DeepLinear(1.3), _batch()  # 1.3**12 = 23x: over 10, far under the old limit 1000
def shape_fixed(): return Flatten(False), _batch()
def shape_buggy(): return Flatten(True), _batch()
def dtype_fixed(): return Mixer(True), _batch()
def dtype_buggy(): return Mixer(False), _batch()
def device_fixed(): return Offset(True), _batch()
def device_buggy(): return Offset(False), _batch()
def labels_fixed(): return _mlp(), (_batch()[0], torch.arange(8) % 4)
def labels_buggy(): return _mlp(), (_batch()[0], torch.arange(8) % 4 + 1)  # 1..4 for 4 classes
def ddp_fixed(): return WithSpare(False), _batch()
def ddp_buggy(): return WithSpare(True), _batch()
def memory_fixed(): return Broadcast(4), _batch()
def memory_buggy(): return Broadcast(2_000_000), _batch()  # 256 MB kept for backward
def plateau_fixed(): return Frozen(False), _batch()
def plateau_buggy(): return Frozen(True), _batch()
def rank_fixed(): return Encoder(False), torch.randn(64, 16)
def rank_buggy(): return Encoder(True), torch.randn(64, 16)
def sync_fixed(): return Guarded(False), _batch()
def sync_buggy(): return Guarded(True), _batch()
def model_only(): return _mlp()


def step(model, batch):
    """The other loss_fn form, loss_fn(model, batch): the same losses the contract's default computes."""
    if isinstance(batch, torch.Tensor):
        out = model(batch)
        return nn.functional.mse_loss(out, torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def loss(output, target=None):
    """loss_fn(output, target), written out: cross-entropy to the labels, MSE to a fixed target without them."""
    if target is None:
        return nn.functional.mse_loss(output, torch.randn(output.shape, generator=torch.Generator().manual_seed(1)))
    return nn.functional.cross_entropy(output, target)


def hangs():
    time.sleep(600)
'''

# Every pair again with each loss_fn form: `nan_fixed_step()` returns (*nan_fixed(), step), `nan_fixed_loss()`
# (*nan_fixed(), loss).
PAIR_STEMS = ("nan", "graph", "flow", "explode", "shape", "dtype", "device", "labels", "ddp", "memory", "plateau",
              "rank", "sync")
MODELS += "".join(f"\n\ndef {stem}_{variant}_{fn}():\n    model, batch = {stem}_{variant}()\n    return model, batch, {fn}\n"
                  for stem in PAIR_STEMS for variant in ("fixed", "buggy") for fn in ("step", "loss"))
