"""Fine-tuning: ``volnet train --init W.safetensors --freeze until:layer3 --num-classes K`` and
``Trainer(frozen=...)`` (frozen parameters and their BN statistics bit-identical; resume keeps them
frozen)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from volnet import zoo
from volnet.cli.main import main
from volnet.cli.train import build_model, load_init, read_init
from volnet.data import make_synthetic
from volnet.errors import VolnetError
from volnet.safetensors_io import read_safetensors, save_torch_state_dict, torch_names
from volnet.spec import build
from volnet.train import Trainer

SHAPE = (1, 8, 8)  # the CLI's synthetic data: 8x8x1 images


def _arrays(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "last" / "weights.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _one_line_error(rc: int, err: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volnet train: error:") and "Traceback" not in err, err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    """A "pretrained" ResNet-18 (CIFAR stem, 10 classes, 8x8x1) as torchvision-named safetensors, with
    non-trivial BN running statistics; returns (file, torch-named arrays, volnet -> torch names)."""
    net = zoo.get("resnet18", num_classes=10, input_shape=SHAPE, seed=7)
    rng = np.random.default_rng(1)
    for k, v in net.buffers.items():
        v[...] = rng.uniform(0.5, 1.5, v.shape) if k.endswith("running_var") else rng.normal(0, 0.1, v.shape)
    path = tmp_path_factory.mktemp("pre") / "resnet18.safetensors"
    save_torch_state_dict(net, path)
    return path, read_safetensors(path), torch_names(net)


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory) -> tuple[Path, list[str]]:
    path, _, _ = pretrained
    out = tmp_path_factory.mktemp("runs") / "ft"
    argv = ["train", "--model", "resnet18", "--data", "synthetic", "--num-classes", "3", "--init", str(path),
            "--freeze", "until:layer3", "--epochs", "1", "--batch", "8", "--limit-train", "16", "--val", "8",
            "--lr", "1e-2", "--schedule", "constant", "--warmup", "0", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out, argv


def test_init_loads_everything_but_the_head(pretrained) -> None:
    path, theirs, names = pretrained
    net = build_model("resnet18", SHAPE, 3, init=(init := read_init(str(path))))
    note = load_init(net, init)
    assert "head fc (10 classes in the file) is a new FC-3" in note
    assert net.params["fc.w"].shape == (3, 512) and net.params["conv1.w"].shape == (64, 1, 3, 3)
    for k, v in {**net.params, **net.buffers}.items():
        if not k.startswith("fc."):
            assert np.array_equal(v, theirs[names[k]]), k


def test_finetune_trains_only_the_unfrozen_part(pretrained, finetuned) -> None:
    _, theirs, names = pretrained
    out, _ = finetuned
    mine = _arrays(out)
    frozen = zoo.freeze(zoo.get("resnet18", num_classes=3, input_shape=SHAPE, build=False), "until:layer3")
    doc = json.loads((out / "last" / "trainer.json").read_text())
    assert doc["config"]["frozen"] == sorted(frozen) and doc["config"]["update_frozen_bn"] is False
    assert mine["fc.w"].shape == (3, 512) and mine["fc.b"].shape == (3,)
    for k in frozen:  # weights and BN gamma/beta up to layer3: bit-identical to the file
        assert mine[k].dtype == theirs[names[k]].dtype and np.array_equal(mine[k], theirs[names[k]]), k
    frozen_layers = {k.rsplit(".", 1)[0] for k in frozen}
    for k in mine:
        layer, leaf = k.rsplit(".", 1)
        if leaf.startswith("running_"):  # frozen BN layers keep their statistics, the others update them
            same = np.array_equal(mine[k], theirs[names[k]])
            assert same == (layer in frozen_layers), k
        elif k not in frozen and not k.startswith("fc."):
            assert k.startswith("layer4.") and not np.array_equal(mine[k], theirs[names[k]]), k


def test_resume_keeps_frozen(pretrained, finetuned, capsys) -> None:
    _, theirs, names = pretrained
    out, argv = finetuned
    before = _arrays(out)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    after = _arrays(out)
    doc = json.loads((out / "last" / "trainer.json").read_text())
    frozen = set(doc["config"]["frozen"])
    assert doc["position"]["epoch"] == 2 and frozen and all(k.startswith(("conv1", "bn1", "layer1", "layer2",
                                                                          "layer3")) for k in frozen)
    for k in frozen:
        assert np.array_equal(after[k], theirs[names[k]]), k
    assert not np.array_equal(after["layer4.1.conv2.w"], before["layer4.1.conv2.w"])
    assert not np.array_equal(after["fc.w"], before["fc.w"])
    assert set(doc["info"]["args"]) >= {"init", "freeze"}


def test_init_from_a_model_directory(finetuned) -> None:
    out, _ = finetuned
    init = read_init(str(out))  # a run directory: its best/ model, volnet names
    assert init["kind"] == "volnet"
    net = build_model("resnet18", SHAPE, 5, init=init)
    assert "new FC-5" in load_init(net, init)
    src = init["arrays"]
    assert all(np.array_equal(v, src[k]) for k, v in {**net.params, **net.buffers}.items()
               if not k.startswith("fc."))
    same = build_model("resnet18", SHAPE, 3, init=init)
    assert "head" not in load_init(same, init) and np.array_equal(same.params["fc.w"], src["fc.w"])


def test_resnet_takes_the_stem_of_the_weights(tmp_path) -> None:
    net = zoo.get("resnet18", num_classes=4, input_shape=(1, 32, 32), stem="imagenet")
    path = tmp_path / "imagenet-stem.safetensors"
    save_torch_state_dict(net, path)
    init = read_init(str(path))
    small = build_model("resnet18", SHAPE, 4, init=init)  # 8x8 alone would pick the CIFAR stem
    load_init(small, init)
    assert small.params["conv1.w"].shape == (64, 1, 7, 7)
    assert np.array_equal(small.params["fc.w"], net.params["fc.w"])


@pytest.mark.parametrize("extra, words", [
    (["--freeze", "until:layer9"], "no layer or block 'layer9'"),
    (["--freeze", "layer3"], "--freeze must be until:NAME"),
    (["--freeze", "until:fc"], "nothing to train"),
    (["--init", "nowhere.safetensors"], "no such file"),
    (["--model", "resnet34"], "missing key"),
    (["--model", "INPUT [8x8x1] -> CONV3-8 -> RELU -> FC-3"], "missing key 'features.0.weight'"),
])
def test_bad_finetune_options_are_one_line_errors(pretrained, tmp_path, capsys, extra, words) -> None:
    path, _, _ = pretrained
    argv = ["train", "--model", "resnet18", "--data", "synthetic", "--num-classes", "3", "--init", str(path),
            "--epochs", "1", "--limit-train", "8", "--out", str(tmp_path / "bad"), "--quiet", *extra]
    rc = main(argv)
    _, err = capsys.readouterr()
    _one_line_error(rc, err)
    assert words in err, err
    assert not (tmp_path / "bad" / "last").exists()


# ------------------------------------------------------------------------------------------ Trainer API

SMALL = "INPUT [8x8x1] -> CONV3-4 -> BN -> RELU -> POOL2 -> CONV3-8 -> BN -> RELU -> POOL2 -> FC-3"


@pytest.mark.parametrize("update_bn", [False, True])
def test_trainer_frozen_params_and_bn_statistics(update_bn) -> None:
    train, val = make_synthetic(n_train=64, n_test=16, num_classes=3)
    net = build(SMALL, seed=0)
    frozen = zoo.freeze(net, "until:bn1")
    assert frozen == {"conv1.w", "conv1.b", "bn1.w", "bn1.b"}
    start = {k: v.copy() for k, v in {**net.params, **net.buffers}.items()}
    t = Trainer(net, train, val, epochs=2, batch_size=16, lr=1e-2, progress=False, frozen=frozen,
                update_frozen_bn=update_bn)
    assert set(t.optimizer.params) == {"conv2.w", "conv2.b", "bn2.w", "bn2.b", "fc1.w", "fc1.b"}
    t.fit()
    end = {**net.params, **net.buffers}
    for k in frozen:
        assert np.array_equal(end[k], start[k]), k
    for k in ("conv2.w", "bn2.w", "fc1.w", "bn2.running_mean"):
        assert not np.array_equal(end[k], start[k]), k
    assert np.array_equal(end["bn1.running_mean"], start["bn1.running_mean"]) is not update_bn
    assert t.config.frozen == sorted(frozen) and t.state()["config"]["frozen"] == sorted(frozen)


def test_trainer_rejects_bad_frozen_names() -> None:
    train, _ = make_synthetic(n_train=16, n_test=0, num_classes=3)
    net = build(SMALL, seed=0)
    with pytest.raises(VolnetError, match="not parameters"):
        Trainer(net, train, progress=False, frozen={"conv9.w"})
    with pytest.raises(VolnetError, match="nothing to train"):
        Trainer(net, train, progress=False, frozen=set(net.params))
    with pytest.raises(VolnetError, match="set of parameter names"):
        Trainer(net, train, progress=False, frozen="until:bn1")


def test_init_shape_mismatch_is_a_one_line_error(tmp_path, capsys) -> None:
    path = tmp_path / "small.safetensors"
    save_torch_state_dict(build("INPUT [8x8x1] -> CONV3-4 -> RELU -> FC-3", seed=0), path)
    rc = main(["train", "--model", "INPUT [8x8x1] -> CONV3-8 -> RELU -> FC-3", "--data", "synthetic",
               "--num-classes", "3", "--init", str(path), "--limit-train", "8", "--out", str(tmp_path / "r"),
               "--quiet"])
    _, err = capsys.readouterr()
    _one_line_error(rc, err)
    assert "'features.0.weight' has shape (4, 1, 3, 3), volnet 'conv1.w' needs (8, 1, 3, 3)" in err, err
