"""Reference PyTorch nets exported to ONNX for the autodiff tests and benchmark."""

from __future__ import annotations

import io
import warnings

import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class SmallCNN(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.bn(self.c2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = self.b2(self.c2(h))
        return F.relu(h + (x if self.down is None else self.down(x)))


class ResNetish(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Hardswish(),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.body(x)
        return x + h if self.residual else h


class MobileNetish(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1),
            InvertedResidual(16, 24, 2),
            InvertedResidual(24, 24, 1),
            InvertedResidual(24, 32, 2),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


def _double_conv(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.InstanceNorm2d(cout, affine=True),
        nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(),
    )


class UNetish(nn.Module):
    """Segmentation: ConvTranspose and bilinear Upsample decoders with Concat skips."""

    input_shape = (1, 32, 32)

    def __init__(self, classes: int = 3):
        super().__init__()
        self.e1 = _double_conv(1, 8)
        self.e2 = _double_conv(8, 16)
        self.bott = _double_conv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.d2 = _double_conv(32, 16)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.red1 = nn.Conv2d(16, 8, 1)
        self.d1 = _double_conv(16, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        s1 = self.e1(x)
        s2 = self.e2(F.max_pool2d(s1, 2))
        b = self.bott(F.max_pool2d(s2, 2))
        h = self.d2(torch.cat([self.up2(b), s2], 1))
        h = self.d1(torch.cat([self.red1(self.up1(h)), s1], 1))
        return self.out(h)


class TransformerBlockNet(nn.Module):
    """Patch embedding, one pre-norm transformer block (LayerNorm, attention, GELU MLP)."""

    input_shape = (1, 32, 32)

    def __init__(self, classes: int = 4, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 64, dim) * 0.1)
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        n, s, d = t.shape
        q, k, v = self.qkv(self.ln1(t)).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, s, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        t = t + self.proj((att @ v).transpose(1, 2).reshape(n, s, d))
        t = t + self.mlp(self.ln2(t))
        return self.head(t.mean(1))


class AttentionNet(nn.Module):
    """torch's own attention modules (nn.MultiheadAttention, scaled_dot_product_attention),
    whose TorchScript export onnx's shape inference cannot fully type."""

    input_shape = (1, 16, 16)

    def __init__(self, classes: int = 3, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.mha(t, t, t, need_weights=False)[0]
        q = t.unsqueeze(1)
        t = t + F.scaled_dot_product_attention(q, q, q)[:, 0]
        return self.head(t.mean(1))


class FullyConvSeg(nn.Module):
    """Any input size divisible by 8: stride-2 conv, max pool, nearest upsampling,
    ConvTranspose and Concat skips; exported with dynamic height and width."""

    input_shape = (1, 24, 32)

    def __init__(self, classes: int = 2):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.up_t = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(24, classes, 1)

    def forward(self, x):
        s1 = F.relu(self.c1(x))
        h = F.relu(self.down(s1))
        h = F.max_pool2d(F.relu(self.mid(h)), 2)
        up_nearest = F.interpolate(h, scale_factor=4.0, mode="nearest")
        h = torch.cat([self.up_t(F.interpolate(h, scale_factor=2.0, mode="nearest")), s1], 1)
        return self.out(torch.cat([h, up_nearest[:, :8]], 1))


class NHWC(nn.Module):
    """A channels-last wrapper: the exported graph starts with a Transpose."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        c, h, w = net.input_shape
        self.input_shape = (h, w, c)

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


class WithSoftmax(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


NETS = {
    "small_cnn": SmallCNN,
    "resnet": ResNetish,
    "mobilenet": MobileNetish,
    "unet": UNetish,
    "transformer": TransformerBlockNet,
    "attention": AttentionNet,
}


def make_net(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = NETS[name]()
    # non-trivial normalization statistics, so BatchNorm is not the identity
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def export(net: nn.Module, *, dynamo: bool, batch: int = 2, dynamic_spatial: bool = False) -> onnx.ModelProto:
    """``net`` exported with the TorchScript (dynamo=False) or torch.export (dynamo=True)
    exporter, with a dynamic batch dimension (and dynamic height and width if asked)."""
    x = torch.randn(batch, *net.input_shape)
    if dynamic_spatial:
        axes = {0: "batch", 2: "height", 3: "width"}
        dims = {
            0: torch.export.Dim("batch"),
            2: 8 * torch.export.Dim("h8", max=64),
            3: 8 * torch.export.Dim("w8", max=64),
        }
    else:
        axes, dims = {0: "batch"}, {0: torch.export.Dim("batch")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(
                net,
                (x,),
                dynamo=True,
                verbose=False,
                input_names=["input"],
                output_names=["scores"],
                dynamic_shapes=(dims,),
            )
            return prog.model_proto
        f = io.BytesIO()
        torch.onnx.export(
            net,
            (x,),
            f,
            dynamo=False,
            input_names=["input"],
            output_names=["scores"],
            dynamic_axes={"input": axes, "scores": axes},
        )
        return onnx.load_from_string(f.getvalue())
