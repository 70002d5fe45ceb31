"""Parameter initialisers named by ``ParamSpec.init`` (PyTorch's defaults by default).

kaiming_uniform  U(-b, b), b = gain·√(3/fan_in) with gain √(2/(1+5)) -- PyTorch's
                 default for conv/linear weights (a = √5), i.e. b = 1/√fan_in
uniform_fan_in   U(-1/√fan_in, 1/√fan_in) -- PyTorch's default for biases
kaiming_normal   N(0, 2/fan_in) (He et al. 2015, for ReLU nets)
he_uniform       U(-b, b), b = √(6/fan_in) (torch's kaiming_uniform_, nonlinearity relu)
xavier_uniform   U(-b, b), b = √(6/(fan_in+fan_out))
xavier_normal    N(0, 2/(fan_in+fan_out))
he:a:mode:dist   torch's kaiming_{normal,uniform}_(a, mode): gain √(2/(1+a²)), fan = fan_in or
                 fan_out; N(0, gain²/fan) or U(±gain·√(3/fan))
lecun_normal     N(0, 1/fan_in)
normal:<std> | uniform:<b> | zeros | ones | const:<v>
(the layer attrs weight_init / bias_init choose them: netspec/layers/initattrs.py)
"""
from __future__ import annotations

import math

import numpy as np


def default_fan_out(shape: tuple, fan_in: int) -> int:
    """torch's fan_out from a weight's shape: shape[0] * prod(shape[2:])."""
    return (shape[0] * int(np.prod(shape[2:]))) if len(shape) > 1 else fan_in


def init_array(init: str, shape: tuple, fan_in: int, rng: np.random.Generator, dtype,
               fan_out: int = 0) -> np.ndarray:
    """An initial array; fan_out (xavier_*) 0 means torch's rule on the shape."""
    fan_in = max(int(fan_in), 1)
    if init == "zeros":
        return np.zeros(shape, dtype)
    if init == "ones":
        return np.ones(shape, dtype)
    if init.startswith("const:"):
        return np.full(shape, float(init.split(":", 1)[1]), dtype)
    if init in ("kaiming_uniform", "uniform_fan_in"):
        b = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-b, b, size=shape).astype(dtype)
    if init == "kaiming_normal":
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)
    if init == "he_uniform":
        b = math.sqrt(6.0 / fan_in)
        return rng.uniform(-b, b, size=shape).astype(dtype)
    if init == "lecun_normal":
        return (rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)).astype(dtype)
    if init.startswith("normal:"):
        return (rng.standard_normal(shape) * float(init.split(":", 1)[1])).astype(dtype)
    if init.startswith("uniform:"):
        b = float(init.split(":", 1)[1])
        return rng.uniform(-b, b, size=shape).astype(dtype)
    if init.startswith("he:"):
        _, a, mode, dist = init.split(":")
        fan = fan_in if mode == "fan_in" else max(int(fan_out or default_fan_out(shape, fan_in)), 1)
        std = math.sqrt(2.0 / (1.0 + float(a) ** 2)) / math.sqrt(fan)
        if dist == "normal":
            return (rng.standard_normal(shape) * std).astype(dtype)
        return rng.uniform(-std * math.sqrt(3.0), std * math.sqrt(3.0), size=shape).astype(dtype)
    if init in ("xavier_uniform", "xavier_normal"):
        if not fan_out:
            fan_out = default_fan_out(shape, fan_in)
        if init == "xavier_normal":
            return (rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)
        b = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-b, b, size=shape).astype(dtype)
    raise ValueError(f"unknown initialiser {init!r}")
