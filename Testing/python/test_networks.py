"""The networks equal the official ones: state_dict keys and shapes, parameter counts and forward behaviour."""

import re

import pytest
import torch

from nnmamba.networks import (
    MambaLayer,
    NNMambaEncoder,
    NNMambaSeg,
    check_spatial_size,
    fold_batch_norms,
    prepare_for_inference,
)

from conftest import DATA


def official_keys(name):
    lines = (DATA / "official_keys" / f"{name}.txt").read_text().splitlines()
    result = []
    for line in lines:
        if line and not line.startswith("#"):
            key, shape = re.fullmatch(r"(\S+) \((.*)\)", line).groups()
            result.append((key, tuple(int(s) for s in shape.split(",") if s.strip())))
    return result


def our_keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name,factory", [
    ("nnMambaSeg_miccss_in1_k6", lambda: NNMambaSeg()),
    ("nnMambaSeg_nnunet_in4_k4", lambda: NNMambaSeg(in_ch=4, number_classes=4, variant="nnunet")),
    ("nnMambaEncoder_current_in1_k1", lambda: NNMambaEncoder()),
])
def test_state_dict_equals_official_list(name, factory):
    assert our_keys(factory()) == official_keys(name)


@pytest.mark.parametrize("factory,params,keys", [
    (lambda: NNMambaSeg(), 15_944_958, 334),
    (lambda: NNMambaSeg(in_ch=4, number_classes=4), 15_945_270, 334),
    (lambda: NNMambaSeg(number_classes=16), 15_959_598, 334),
    (lambda: NNMambaSeg(variant="nnunet"), 15_859_408, 304),
    (lambda: NNMambaSeg(in_ch=4, number_classes=4, variant="nnunet"), 15_859_266, 304),
    (lambda: NNMambaSeg(number_classes=16, variant="nnunet"), 15_876_318, 304),
    (lambda: NNMambaEncoder(), 12_876_321, 165),
    (lambda: NNMambaEncoder(variant="mamba_seq"), 12_905_633, 174),
])
def test_unique_parameter_counts_match_spec(factory, params, keys):
    model = factory()
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_mamba_layer_is_shared_by_blocks_1_and_2():
    net = NNMambaSeg(channels=8)
    for stage in (net.layer1, net.layer2, net.layer3):
        assert stage[0].mamba_layer is None and stage[1].mamba_layer is stage[2].mamba_layer
    sd = net.state_dict()
    assert torch.equal(sd["layer2.1.mamba_layer.mamba.A_log"], sd["layer2.2.mamba_layer.mamba.A_log"])


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_css_batched_equals_sequential():
    layer = MambaLayer(16, "miccss", scan_backend="torch").double().eval()
    _randomise_bn(layer)
    x = torch.randn(2, 16, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        layer.batch_passes = False
        sequential = layer(x)
        layer.batch_passes = True
        batched = layer(x)
    assert torch.allclose(batched, sequential, rtol=0, atol=1e-12)


def test_css_is_the_average_of_four_flipped_passes():
    """Written out independently: reverse channels / tokens before and after the one shared Mamba."""
    layer = MambaLayer(8, "miccss").double().eval()
    _randomise_bn(layer)
    x = torch.randn(1, 8, 2, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        a = torch.relu(layer.norm(layer.nin(x)))
        t = a.reshape(1, 8, -1).transpose(1, 2)
        m = layer.mamba
        rev_c = lambda v: v.flip(2)  # noqa: E731
        rev_l = lambda v: v.flip(1)  # noqa: E731
        css = (m(t) + rev_c(m(rev_c(t))) + rev_l(m(rev_l(t))) + rev_l(rev_c(m(rev_c(rev_l(t)))))) / 4
        expected = torch.relu(layer.norm2(layer.nin2(css.transpose(1, 2).reshape(a.shape) + a)))
        assert torch.allclose(layer(x), expected, rtol=0, atol=1e-12)


def test_channel_flip_pass_equals_permuted_weights():
    """Spec §4 fact 2: reversing channels around M = M with in_proj columns and out_proj rows reversed."""
    layer = MambaLayer(8, "miccss").double().eval()
    t = torch.randn(1, 20, 8, dtype=torch.float64)
    twin = MambaLayer(8, "miccss").double().eval()
    twin.load_state_dict(layer.state_dict())
    with torch.no_grad():
        twin.mamba.in_proj.weight.copy_(layer.mamba.in_proj.weight.flip(1))
        twin.mamba.out_proj.weight.copy_(layer.mamba.out_proj.weight.flip(0))
        assert torch.allclose(layer.mamba(t.flip(2)).flip(2), twin.mamba(t), atol=1e-12)


def test_basic_block_adds_mamba_of_block_input():
    net = NNMambaSeg(channels=8, variant="miccss").double().eval()
    _randomise_bn(net)
    block = net.layer1[1]
    x = torch.randn(1, 16, 4, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        conv = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        expected = torch.relu(conv + block.mamba_layer(x) + x)
        assert torch.allclose(block(x), expected, atol=1e-12)


def test_segmentation_output_is_non_negative_full_resolution():
    net = NNMambaSeg(channels=8, number_classes=5).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 16, 48))
    assert out.shape == (2, 5, 32, 16, 48) and out.min() >= 0


def test_nnunet_variant_deep_supervision():
    net = NNMambaSeg(in_ch=2, number_classes=3, variant="nnunet").eval()
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        outs = net(x)
        assert [tuple(o.shape[2:]) for o in outs] == [(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3]
        net.do_ds = False
        assert torch.equal(net(x), outs[0])


def test_sizes_not_divisible_by_16_are_refused_with_nearest_valid_sizes():
    with pytest.raises(ValueError, match=r"axis 1 is 24, nearest valid 16 or 32.*axis 2 is 7, nearest valid 16"):
        NNMambaSeg(channels=4)(torch.randn(1, 1, 32, 24, 7))
    check_spatial_size((16, 32, 128))


def test_classifier_handles_odd_sizes_and_batch():
    net = NNMambaEncoder(channels=8, number_classes=2).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 1, 23, 29, 17)).shape == (3, 2)


def test_old_classifier_groups_pooled_channels_into_seven_tokens():
    net = NNMambaEncoder(channels=8, variant="mamba_seq").eval()
    captured = {}
    net.mamba_seq.register_forward_hook(lambda m, inp, out: captured.update(inp=inp[0].clone()))
    feats = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: feats.update({name: o.mean((2, 3, 4))}))
    with torch.no_grad():
        net(torch.randn(1, 1, 16, 16, 16))
    grouped = captured["inp"]                          # (1, 16, 7)
    assert grouped.shape == (1, 16, 7)
    assert torch.allclose(grouped[0, :, 0], feats["layer1"][0])
    assert torch.allclose(grouped[0, 3, 1:3], feats["layer2"][0, 6:8])      # channel 2c + j
    assert torch.allclose(grouped[0, 3, 3:7], feats["layer3"][0, 12:16])    # channel 4c + j


@pytest.mark.parametrize("factory,shape", [
    (lambda: NNMambaSeg(channels=8, number_classes=3), (2, 1, 32, 16, 48)),
    (lambda: NNMambaSeg(in_ch=2, channels=8, number_classes=3, variant="nnunet"), (1, 2, 32, 32, 32)),
    (lambda: NNMambaEncoder(channels=8, number_classes=2), (2, 1, 23, 29, 17)),
    (lambda: NNMambaEncoder(channels=8, variant="mamba_seq"), (1, 1, 16, 16, 16)),
])
@pytest.mark.parametrize("channels_last", [False, True], ids=["ncdhw", "channels-last"])
def test_prepared_network_computes_the_same(factory, shape, channels_last):
    model = factory().eval()
    _randomise_bn(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    x = torch.randn(*shape)
    with torch.no_grad():
        expected, got = model(x), fast(x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x)
    expected, got = (expected[0], got[0]) if isinstance(expected, list) else (expected, got)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())   # the original is untouched


def test_batch_norm_cannot_be_folded_while_training():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(NNMambaSeg(channels=8).train())


def test_reverse_mix_equals_flipped_mix():
    block = MambaLayer(8, "miccss").mamba.double().eval()
    xz = torch.randn(2, 32, 37, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(block.mix(xz, reverse=True), block.mix(xz.flip(-1)).flip(-1), atol=1e-12)
