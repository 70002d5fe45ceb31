"""Hand-written torchvision module layouts (torchvision is not a dependency) for the zoo
comparisons of tests/test_torch_twin.py: GoogLeNet, ResNet (Bottleneck v1.5) and
ShuffleNetV2 with torchvision's state_dict keys, and a forward-hook MAC counter.  Imported
only after ``pytest.importorskip("torch")``."""
from __future__ import annotations

import torch

nn = torch.nn
F = torch.nn.functional


# torchvision is not a dependency: these follow torchvision's module layout (and hence
# its state_dict keys) for GoogLeNet (eval mode, no aux heads, transform_input off) and
# ResNet-50 (Bottleneck v1.5), so that the zoo specs are checked numerically against it.

class _TVBasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _TVInception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        conv = _TVBasicConv2d
        self.branch1 = conv(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(conv(cin, c3r, kernel_size=1),
                                     conv(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(conv(cin, c5r, kernel_size=1),
                                     conv(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     conv(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class _TVGoogLeNet(nn.Module):
    CFG = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
           "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
           "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
           "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
           "5b": (832, 384, 192, 384, 48, 128, 128)}

    def __init__(self):
        super().__init__()
        self.conv1 = _TVBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = _TVBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = _TVBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for k, cfg in self.CFG.items():
            setattr(self, f"inception{k}", _TVInception(*cfg))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        for k in self.CFG:
            if k in ("4a", "5a"):
                x = (self.maxpool3 if k == "4a" else self.maxpool4)(x)
            x = getattr(self, f"inception{k}")(x)
        return self.fc(x.mean((2, 3)))              # avgpool, flatten, dropout (eval)


class _TVBottleneck(nn.Module):
    def __init__(self, cin, width, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)   # v1.5
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.downsample = None
        if stride != 1 or cin != 4 * width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False),
                                            nn.BatchNorm2d(4 * width))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + idt)


class _TVResNet(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers), 1):
            blocks = []
            for b in range(n):
                blocks.append(_TVBottleneck(cin, width, 2 if (b == 0 and i > 1) else 1))
                cin = 4 * width
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


def _tv_channel_shuffle(x, groups):
    """torchvision.models.shufflenetv2.channel_shuffle."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _TVInvertedResidual(nn.Module):
    """torchvision.models.shufflenetv2.InvertedResidual."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        dw = lambda c, s: nn.Conv2d(c, c, 3, s, 1, bias=False, groups=c)  # noqa: E731
        if stride > 1:
            self.branch1 = nn.Sequential(dw(inp, stride), nn.BatchNorm2d(inp),
                                         nn.Conv2d(inp, bf, 1, bias=False), nn.BatchNorm2d(bf),
                                         nn.ReLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(),
            dw(bf, stride), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _tv_channel_shuffle(out, 2)


class _TVShuffleNetV2(nn.Module):
    """torchvision.models.shufflenet_v2_x1_0 (stages 4, 8, 4; channels 24, 116, 232, 464,
    1024), with ``width`` scaling every channel count for small test versions."""

    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), classes=1000):
        super().__init__()
        cin = channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, cout) in enumerate(zip(repeats, channels[1:]), 2):
            units = [_TVInvertedResidual(cin, cout, 2)] + [_TVInvertedResidual(cout, cout, 1)
                                                           for _ in range(n - 1)]
            setattr(self, f"stage{i}", nn.Sequential(*units))
            cin = cout
        self.conv5 = nn.Sequential(nn.Conv2d(cin, channels[-1], 1, bias=False),
                                   nn.BatchNorm2d(channels[-1]), nn.ReLU())
        self.fc = nn.Linear(channels[-1], classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.conv5(x).mean([2, 3]))


def _hook_macs(model, x) -> int:
    """Multiply-accumulates of every Conv2d / Linear for one forward (forward hooks)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out[0].numel() * m.in_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return total[0]
