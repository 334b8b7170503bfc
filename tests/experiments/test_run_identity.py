"""What makes a run folder's run another run (experiments.run_folder.differences)."""

from experiments.run_folder import differences

RECORDED = {"task_name": "resnet", "model": {"arch": "resnet18", "finetune": "head"}, "data": {"root": "/d"}}


def test_a_changed_value_is_a_difference_named_by_its_dotted_key():
    new = {**RECORDED, "model": {"arch": "resnet50", "finetune": "head"}}
    assert differences(RECORDED, new) == ["model.arch: 'resnet18' -> 'resnet50'"]
    assert differences(RECORDED, {**RECORDED, "task_name": "vit"}) == ["task_name: 'resnet' -> 'vit'"]
    assert differences(RECORDED, RECORDED) == []


def test_keys_only_one_version_of_the_framework_has_are_not_differences():
    """A run recorded before a key existed (data.gpu_decode) resumes after an upgrade, and one recorded
    with a key since dropped; a value that really changed beside it is still found."""
    upgraded = {**RECORDED, "data": {"root": "/d", "gpu_decode": False}}
    assert differences(RECORDED, upgraded) == []
    assert differences(upgraded, RECORDED) == []
    moved = {**RECORDED, "data": {"root": "/e", "gpu_decode": False}}
    assert differences(RECORDED, moved) == ["data.root: '/d' -> '/e'"]
