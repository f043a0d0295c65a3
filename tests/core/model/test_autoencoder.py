"""The autoencoder's layout, determinism and weight transport."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fediot.core.model import (
    Autoencoder,
    ModelInputError,
    build_autoencoder,
    get_weights,
    hidden_sizes,
    set_weights,
    weight_shapes,
)


def test_layer_sizes_for_115_features() -> None:
    assert hidden_sizes(115) == (86, 58, 38, 29)
    model = build_autoencoder(115)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    widths = [(m.in_features, m.out_features) for m in linears]
    assert widths == [
        (115, 86), (86, 58), (58, 38), (38, 29), (29, 38), (38, 58), (58, 86), (86, 115)
    ]
    assert weight_shapes(model)[:2] == [(86, 115), (86,)]
    assert len(get_weights(model)) == 16


def test_activations_tanh_between_hidden_layers_linear_bottleneck_and_output() -> None:
    model = build_autoencoder(115)
    kinds = [type(m).__name__ for m in model.encoder] + ["|"] + [
        type(m).__name__ for m in model.decoder
    ]
    assert kinds == [
        "Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh", "Linear", "|",
        "Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh", "Linear",
    ]
    # A linear output can reach standardised values beyond ±1.
    with torch.no_grad():
        output_layer = model.decoder[-1]
        assert isinstance(output_layer, nn.Linear)
        output_layer.bias.fill_(5.0)
        assert model(torch.zeros(1, 115)).min().item() > 1.0


def test_rounding_follows_the_seed() -> None:
    # round() (half to even) as in the FedIoT seed, not int() truncation.
    assert hidden_sizes(10) == (8, 5, 3, 2)
    assert hidden_sizes(4, (0.5,)) == (2,)
    with pytest.raises(ModelInputError, match="empty layer"):
        hidden_sizes(1, (0.25,))
    with pytest.raises(ModelInputError, match="not in \\(0, 1\\]"):
        hidden_sizes(115, (1.5,))


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = get_weights(build_autoencoder(115, seed=7))
    assert torch.rand(1).item() == expected_next.item()
    second = get_weights(build_autoencoder(115, seed=7))
    other = get_weights(build_autoencoder(115, seed=8))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(w.dtype == np.float32 for w in first)


def test_set_weights_round_trip_and_copies() -> None:
    source = build_autoencoder(20, seed=1)
    target = build_autoencoder(20, seed=2)
    weights = get_weights(source)
    set_weights(target, weights)
    x = torch.randn(4, 20)
    torch.testing.assert_close(source(x), target(x))
    weights[0][:] = 0.0  # the returned arrays are copies, not views
    assert np.abs(get_weights(source)[0]).sum() > 0


def test_set_weights_validates_before_writing() -> None:
    model = build_autoencoder(20, seed=1)
    before = get_weights(model)
    bad = get_weights(build_autoencoder(20, seed=2))
    bad[5] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ModelInputError, match=r"weight array 5 \(encoder.4.bias\) has shape"):
        set_weights(model, bad)
    bad = get_weights(model)
    bad[2][0, 0] = np.nan
    with pytest.raises(ModelInputError, match="NaN or inf"):
        set_weights(model, bad)
    with pytest.raises(ModelInputError, match="got 15 weight arrays"):
        set_weights(model, before[:-1])
    for a, b in zip(before, get_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_float64_weights_are_accepted_as_float32() -> None:
    model = build_autoencoder(12)
    set_weights(model, [w.astype(np.float64) for w in get_weights(model)])
    assert isinstance(model, Autoencoder)
    assert all(p.dtype == torch.float32 for p in model.parameters())
