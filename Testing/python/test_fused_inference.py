"""The inference rewrite (BN folded, fused oneDNN convolutions) computes the reference network.

For every network variant the predictor can be given and every CPU scan back end, the network that
``NetworkPredictor`` runs must agree with the unmodified network to 1e-5 of the output's magnitude, and the
rewrite must leave the state_dict (the official keys the checkpoints load into) untouched.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nnmamba import ssm
from nnmamba.networks import NNMambaEncoder, NNMambaSeg, fused, prepare_for_inference
from nnmamba.networks.fused import FusedBasicBlock, FusedConv3d
from nnmamba.predictor import NetworkPredictor

TOLERANCE = 1e-5
CPU_SCANS = ["torch", "reference"] + (["numba"] if ssm.numba_kernel.numba_available() else [])


def relative_error(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def randomise_bn(model):
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) * 0.4 - 0.2)
    return model


NETWORKS = {
    "seg-miccss": (lambda scan: NNMambaSeg(channels=8, number_classes=3, scan_backend=scan), (2, 1, 32, 16, 48)),
    "seg-miccss-cube": (lambda scan: NNMambaSeg(in_ch=2, channels=16, number_classes=4, scan_backend=scan),
                        (1, 2, 32, 32, 32)),
    "seg-nnunet": (lambda scan: NNMambaSeg(in_ch=2, channels=8, number_classes=3, variant="nnunet", scan_backend=scan),
                   (1, 2, 32, 32, 16)),
    "cls-current": (lambda scan: NNMambaEncoder(channels=8, number_classes=2, scan_backend=scan), (2, 1, 23, 29, 17)),
    "cls-mamba-seq": (lambda scan: NNMambaEncoder(channels=8, variant="mamba_seq", scan_backend=scan),
                      (1, 1, 16, 16, 16)),
}


@pytest.mark.parametrize("scan", CPU_SCANS)
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_predictor_network_equals_the_reference_network(name, scan):
    factory, shape = NETWORKS[name]
    torch.manual_seed(0)
    model = randomise_bn(factory(scan).eval())
    if hasattr(model, "do_ds"):
        model.do_ds = False          # the predictor's setting: the full-resolution output only
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = NetworkPredictor(model, device="cpu", activation="none")
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = model(x)
        got = predictor.model(x.contiguous(memory_format=torch.channels_last_3d))
        tiles = torch.from_numpy(predictor(x.numpy()))
    assert relative_error(got, expected) <= TOLERANCE
    assert relative_error(tiles, expected) <= TOLERANCE
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # the original is untouched


def test_predictor_uses_the_fused_modules_on_the_cpu():
    predictor = NetworkPredictor(NNMambaSeg(channels=8, number_classes=3).eval(), device="cpu")
    kinds = {type(m) for m in predictor.model.modules()}
    assert {FusedConv3d, FusedBasicBlock} <= kinds
    assert not kinds & {nn.BatchNorm3d, nn.Conv3d}


def test_checkpoint_loads_unchanged_and_runs_through_the_predictor():
    torch.manual_seed(0)
    trained = randomise_bn(NNMambaSeg(channels=8, number_classes=3, variant="nnunet").eval())
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    loaded = NNMambaSeg(channels=8, number_classes=3, variant="nnunet").eval()
    loaded.load_state_dict(state, strict=True)
    loaded.do_ds = False
    predictor = NetworkPredictor(loaded, device="cpu", activation="none")
    assert list(loaded.state_dict()) == list(state)                 # still the official keys
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        assert relative_error(torch.from_numpy(predictor(x.numpy())), loaded(x)) <= TOLERANCE


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "fallback"])
def test_fused_convolution_with_and_without_onednn(monkeypatch, onednn):
    if onednn and not fused.onednn_fusion_available():
        pytest.skip("this PyTorch has no oneDNN fused convolution")
    monkeypatch.setattr(fused, "onednn_fusion_available", lambda: onednn)
    torch.manual_seed(0)
    conv = nn.Conv3d(6, 5, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 8, 7).contiguous(memory_format=torch.channels_last_3d)
    residual = torch.randn(2, 5, 5, 4, 4)
    with torch.no_grad():
        plain = conv(x)
        assert relative_error(FusedConv3d(conv)(x), plain) <= TOLERANCE
        assert relative_error(FusedConv3d(conv, relu=True)(x), F.relu(plain)) <= TOLERANCE
        assert relative_error(FusedConv3d(conv, relu=True)(x, residual), F.relu(plain + residual)) <= TOLERANCE


def test_fused_convolution_falls_back_for_float64_and_gradients():
    conv = nn.Conv3d(3, 4, 3, padding=1).double()
    x = torch.randn(1, 3, 5, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(FusedConv3d(conv, relu=True)(x), F.relu(conv(x)))
    x.requires_grad_(True)
    FusedConv3d(conv.float(), relu=True)(x.detach().float().requires_grad_(True)).sum().backward()


def test_rewrite_can_be_switched_off():
    model = NNMambaSeg(channels=8, number_classes=3).eval()
    plain = prepare_for_inference(model, fuse=False)
    assert not any(isinstance(m, (FusedConv3d, FusedBasicBlock)) for m in plain.modules())
    fused_only = prepare_for_inference(model)
    assert any(isinstance(m, FusedConv3d) for m in fused_only.modules())


def test_kept_projections_follow_new_weights_and_are_not_copied():
    import copy

    from nnmamba.networks import MambaLayer

    torch.manual_seed(0)
    layer, other = MambaLayer(8, "miccss").eval(), MambaLayer(8, "miccss").eval()
    x = torch.randn(1, 8, 4, 4, 4)
    with torch.inference_mode():
        layer(x)                                   # fills the kept A and stacked projections
    twin = copy.deepcopy(layer)                    # no inference tensors copied along
    layer.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert torch.allclose(layer(x), other(x), atol=1e-6)
    assert "_css_cache" not in twin.__dict__ and "_A_cache" not in twin.mamba.__dict__
    twin.train()
    twin(x).sum().backward()                       # training after inference still has its gradients
    assert twin.mamba.A_log.grad is not None
