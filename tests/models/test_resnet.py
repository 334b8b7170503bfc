import pytest
import torch
import torchvision
from configured import configured
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from models import resnet as R

BLOCK_COUNTS = {"resnet18": 8, "resnet34": 16, "resnet50": 16, "resnet101": 33, "resnet152": 50}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {arch: torchvision.models.get_model(arch, weights=None).eval() for arch in BLOCK_COUNTS}


@pytest.mark.parametrize("arch", list(BLOCK_COUNTS))
def test_block_indexing_follows_torchvision_module_names(nets, arch):
    net = nets[arch]
    expected = [name for name, m in net.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    names = [name for name, _ in R.residual_blocks(net)]
    assert names == expected and len(names) == BLOCK_COUNTS[arch]


def test_resnet152_block_ranges(nets):
    names = [name for name, _ in R.residual_blocks(nets["resnet152"])]
    assert names[0:3] == ["layer1.0", "layer1.1", "layer1.2"]
    assert names[3] == "layer2.0" and names[10] == "layer2.7"
    assert names[11] == "layer3.0" and names[46] == "layer3.35"
    assert names[47:] == ["layer4.0", "layer4.1", "layer4.2"]
    assert R.projection_blocks(nets["resnet152"]) == [0, 3, 11, 47]
    assert R.projection_blocks(nets["resnet18"]) == [2, 4, 6]  # layer1.0 of a BasicBlock net keeps its shape


@pytest.mark.parametrize("arch,index", [("resnet18", 1), ("resnet18", 2), ("resnet50", 1), ("resnet50", 3)])
def test_branch_and_shortcut_reassemble_the_block(nets, arch, index):
    """residual_branch and shortcut are the parts of torchvision's own forward: relu(F(x) + s(x))."""
    _, block = R.residual_blocks(nets[arch])[index]
    x = torch.relu(torch.randn(2, block.conv1.in_channels, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(R.residual_branch(block, x) + R.shortcut(block, x)))


def manual_branch(block, x):
    """The residual branch written out layer by layer, independently of models.resnet."""
    if isinstance(block, Bottleneck):
        h = torch.relu(block.bn1(block.conv1(x)))
        h = torch.relu(block.bn2(block.conv2(h)))
        return block.bn3(block.conv3(h))
    h = torch.relu(block.bn1(block.conv1(x)))
    return block.bn2(block.conv2(h))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_dropped_block_outputs_its_shortcut_exactly(nets, arch):
    net = nets[arch]
    for _i, (_, block) in enumerate(R.residual_blocks(net)):
        x = torch.relu(torch.randn(2, block.conv1.in_channels, 8, 8))  # block inputs come out of a ReLU
        with torch.no_grad():
            out = R.AblatedBlock(block, "drop")(x)
            if block.downsample is None:
                assert torch.equal(out, x)
            else:
                assert torch.equal(out, torch.relu(block.downsample(x)))
                assert out.shape == block(x).shape  # projection keeps the shape


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_shortcut_mode_is_relu_of_the_branch(nets, arch):
    for _, block in R.residual_blocks(nets[arch]):
        x = torch.relu(torch.randn(2, block.conv1.in_channels, 8, 8))
        with torch.no_grad():
            out = R.AblatedBlock(block, "shortcut")(x)
            torch.testing.assert_close(out, torch.relu(manual_branch(block, x)))
            assert out.shape == block(x).shape


@pytest.mark.parametrize("mode", ["drop", "shortcut"])
def test_ablating_every_projection_block_keeps_the_network_running(nets, mode):
    net = nets["resnet50"]
    with R.ablated(net, R.projection_blocks(net), mode) as names:
        assert names == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert not any(isinstance(b, R.AblatedBlock) for _, b in R.residual_blocks(net))  # restored


def test_ablation_keeps_parameter_names_and_changes_the_output(nets):
    net = nets["resnet18"]
    keys = list(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        with R.ablated(net, [3], "drop") as names:
            assert names == ["layer2.1"] and list(net.state_dict()) == keys
            assert not torch.allclose(net(x), before)
        torch.testing.assert_close(net(x), before)


@pytest.mark.parametrize(
    "blocks,message",
    [
        ([50], "0..49"),
        ([-1], "0..49"),
        ([3, 3], "repeats"),
        (["a"], "integers"),
        ([2.5], "integers"),
        ([True], "integers"),
    ],
)
def test_bad_block_lists_state_the_valid_range(blocks, message):
    with pytest.raises(ValueError, match=message) as err:
        R.validate_blocks(blocks, 50, "resnet152")
    assert "ablate.blocks" in str(err.value)


def test_module_names_the_range_of_its_arch():
    with pytest.raises(ValueError, match=r"resnet18 has 8 residual blocks, 0\.\.7"):
        configured("task=resnet", "model", arch="resnet18", weights=None, ablate_blocks=[8])


def test_bad_arch_and_weights_name_their_keys():
    with pytest.raises(ValueError, match="model.arch"):
        R.build_resnet("vgg16", None)
    with pytest.raises(ValueError, match="model.weights"):
        R.build_resnet("resnet18", "IMAGENET1K_V9")


def test_offline_weights_fail_fast_naming_the_keys(tmp_path, monkeypatch, no_waiting):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    monkeypatch.setattr(
        torchvision.models._api, "load_state_dict_from_url", _no_network
    )  # as offline, even with a network
    with pytest.raises(RuntimeError) as err:
        R.build_resnet("resnet18", "IMAGENET1K_V1")
    assert no_waiting == []  # one attempt, no retries
    assert "model.weights=null" in str(err.value) and "model.checkpoint" in str(err.value)


def _no_network(*args, **kwargs):
    import urllib.error

    raise urllib.error.URLError("no network")


def test_checkpoint_state_dicts_load(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(weights=None)
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pt")
    model = configured(
        "task=resnet", "model", arch="resnet18", checkpoint=str(tmp_path / "imagenet.pt"), num_classes=10
    )
    torch.testing.assert_close(model.net.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert model.net.fc.out_features == 10
    # a state dict that already has our 10-class head loads whole, head included
    torch.save(model.net.state_dict(), tmp_path / "ours.pt")
    again = configured("task=resnet", "model", arch="resnet18", checkpoint=str(tmp_path / "ours.pt"), num_classes=10)
    torch.testing.assert_close(again.net.fc.weight, model.net.fc.weight)
    with pytest.raises(FileNotFoundError, match="model.checkpoint"):
        configured("task=resnet", "model", arch="resnet18", checkpoint=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize(
    "finetune,trainable",
    [
        ("head", {"fc"}),
        ("last_stage", {"layer4", "fc"}),
        ("full", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}),
    ],
)
def test_finetune_modes_and_frozen_batchnorm(finetune, trainable):
    model = configured("task=resnet", "model", arch="resnet18", weights=None, finetune=finetune)
    got = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert got == trainable
    model.train()
    for name, m in model.net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.training == (name.split(".")[0] in trainable), name
    drifting = configured(
        "task=resnet", "model", arch="resnet18", weights=None, finetune=finetune, freeze_bn=False
    ).train()
    assert all(m.training for m in drifting.net.modules() if isinstance(m, nn.BatchNorm2d))
