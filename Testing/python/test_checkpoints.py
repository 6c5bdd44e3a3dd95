"""Official checkpoint formats load safely, their network is detected, and they convert to safetensors."""

import pickle
from collections import OrderedDict

import pytest
import torch

from nnmamba.checkpoints import (
    Architecture,
    CheckpointError,
    UnsafeCheckpointError,
    detect_architecture,
    load_checkpoint,
    load_plans,
    load_safetensors,
    save_safetensors,
)
from nnmamba.networks import NNMambaEncoder, NNMambaSeg

from checkpoint_files import Payload, legacy_pickle_bytes, nnunet_plans, write_nnunet_model


def _small_input(channels=1):
    return torch.randn(1, channels, 32, 32, 32)


def _same_output(a, b, x):
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    ya, yb = (ya[0], yb[0]) if isinstance(ya, list) else (ya, yb)
    return torch.equal(ya, yb)


@pytest.fixture(scope="module")
def amos_net():
    torch.manual_seed(1)
    return NNMambaSeg(in_ch=1, number_classes=16, variant="nnunet").eval()


@pytest.mark.parametrize("legacy_numpy", [True, False], ids=["numpy1-names", "numpy2-names"])
def test_nnunet_v1_model_and_sidecar_load_safely(tmp_path, amos_net, legacy_numpy):
    path = write_nnunet_model(tmp_path / "model_final_checkpoint.model", amos_net, nnunet_plans(), legacy_numpy)
    loaded = load_checkpoint(path)
    assert loaded.architecture == Architecture("NNMambaSeg", "nnunet", 1, 16, 32)
    assert loaded.trainer == "nnUNetTrainerV2_nnMamba"
    assert loaded.plans["plans_per_stage"][0]["patch_size"].tolist() == [128, 128, 128]
    assert loaded.plans["normalization_schemes"] == OrderedDict({0: "CT"})
    assert _same_output(loaded.build_model(), amos_net, _small_input())


def test_plain_state_dicts_with_module_prefix(tmp_path):
    torch.manual_seed(2)
    net = NNMambaSeg().eval()   # the landmark network (MICCSS, 6 outputs)
    path = tmp_path / "f1-43-valid-1.3448-test-1.3573.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = load_checkpoint(path)
    assert loaded.architecture == Architecture("NNMambaSeg", "miccss", 1, 6, 32)
    assert loaded.plans is None
    assert _same_output(loaded.build_model(), net, _small_input())


@pytest.mark.parametrize("variant", ["current", "mamba_seq"])
def test_classifier_checkpoints(tmp_path, variant):
    net = NNMambaEncoder(variant=variant).eval()
    torch.save(net.state_dict(), tmp_path / "best_weight.pth")
    loaded = load_checkpoint(tmp_path / "best_weight.pth")
    assert loaded.architecture == Architecture("NNMambaEncoder", variant, 1, 1, 32)
    x = torch.randn(1, 1, 20, 24, 20)
    assert _same_output(loaded.build_model(), net, x)


def test_detection_reads_channels_from_shapes():
    sd = NNMambaSeg(in_ch=4, channels=16, number_classes=4).state_dict()
    assert detect_architecture(sd) == Architecture("NNMambaSeg", "miccss", 4, 4, 16)


def test_one_copy_of_shared_keys_is_enough(tmp_path):
    net = NNMambaSeg(channels=16, number_classes=3).eval()
    sd = {k: v for k, v in net.state_dict().items() if ".2.mamba_layer." not in k}
    torch.save(sd, tmp_path / "dedup.pth")
    assert _same_output(load_checkpoint(tmp_path / "dedup.pth").build_model(), net, _small_input())


def test_shared_copies_that_differ_are_refused(tmp_path):
    sd = NNMambaSeg(channels=16).state_dict()
    sd = {k: v.clone() for k, v in sd.items()}
    sd["layer2.2.mamba_layer.mamba.D"] += 1
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="layer2.1.mamba_layer.mamba.D.*must be the same shared tensor"):
        load_checkpoint(tmp_path / "bad.pth").build_model()


def test_wrong_shapes_and_missing_keys_are_listed(tmp_path):
    sd = dict(NNMambaSeg(channels=16).state_dict())
    sd.pop("conv5.conv.0.bias")
    sd["conv6.conv.0.weight"] = torch.zeros(3, 3, 3, 3, 3)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing: conv5.conv.0.bias; 1 wrong shape: conv6.conv.0.weight"):
        load_checkpoint(tmp_path / "broken.pth").build_model()


def test_not_an_nnmamba_checkpoint(tmp_path):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(CheckpointError, match="not an nnMamba checkpoint"):
        load_checkpoint(tmp_path / "linear.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no state_dict found"):
        load_checkpoint(tmp_path / "empty.pth")


def test_historical_layernorm_variant_is_named(tmp_path):
    sd = dict(NNMambaSeg(channels=16).state_dict())
    sd["mamba_layer_1.norm.weight"] = torch.ones(16)
    with pytest.raises(CheckpointError, match="LayerNorm"):
        detect_architecture(sd)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "junk.model").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.model"):
        load_checkpoint(tmp_path / "junk.model")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")
    torch.save(NNMambaSeg(channels=8).state_dict(), tmp_path / "whole.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "truncated.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"12345678garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


# ------------------------------------------------------------------------------------------------ safety

def test_checkpoint_with_arbitrary_object_is_refused_naming_it(tmp_path):
    sd = dict(NNMambaSeg(channels=16).state_dict())
    torch.save({"state_dict": sd, "extra": Payload(3)}, tmp_path / "evil.model")
    with pytest.raises(UnsafeCheckpointError, match=r"checkpoint_files\.Payload.*trust=True"):
        load_checkpoint(tmp_path / "evil.model")
    assert load_checkpoint(tmp_path / "evil.model", trust=True).architecture.channels == 16


def test_plans_with_code_are_refused_naming_the_global(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (print, ("this would have run",))

    path = tmp_path / "plans.pkl"
    path.write_bytes(pickle.dumps({"plans": {"x": RunsCode()}}))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.print.*Refused"):
        load_plans(path)


def test_sidecar_with_code_blocks_the_whole_checkpoint(tmp_path, amos_net):
    path = write_nnunet_model(tmp_path / "model_best.model", amos_net, nnunet_plans())
    path.with_name(path.name + ".pkl").write_bytes(pickle.dumps({"plans": Payload()}))
    with pytest.raises(UnsafeCheckpointError, match="Payload"):
        load_checkpoint(path)


def test_plain_numpy_plans_load(tmp_path):
    path = tmp_path / "nnUNetPlansv2.1_plans_3D.pkl"
    path.write_bytes(legacy_pickle_bytes(nnunet_plans(num_classes=3, modality="MRI")))
    plans = load_plans(path)
    assert plans["all_classes"] == [1, 2, 3] and plans["modalities"] == {0: "MRI"}
    assert float(plans["dataset_properties"]["intensityproperties"][0]["mean"]) == 40.5


# ------------------------------------------------------------------------------------------- safetensors

def test_convert_to_safetensors_round_trip(tmp_path, amos_net):
    path = write_nnunet_model(tmp_path / "model_final_checkpoint.model", amos_net, nnunet_plans())
    loaded = load_checkpoint(path)
    out = save_safetensors(loaded, tmp_path / "weights.safetensors", metadata={"task": "AMOS"})
    assert not (tmp_path / "weights.safetensors.partial").exists()
    back = load_safetensors(out)
    assert back.architecture == loaded.architecture
    assert _same_output(back.build_model(), amos_net, _small_input())
    # shared Mamba tensors are stored once
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert meta["task"] == "AMOS"
    assert len(keys) == len(amos_net.state_dict()) - sum(".2.mamba_layer." in k for k in amos_net.state_dict())
