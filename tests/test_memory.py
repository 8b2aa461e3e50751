"""The memory ledger against the real peak (tracemalloc) of a training step and of inference."""

import pytest

from volnet.layers import FC, BatchNorm, Conv, GlobalAvgPool, ReLU
from volnet.memory import ledger, max_batch, measure_inference, measure_train_step
from volnet.net import Sequential
from volnet.spec import build
from volnet.zoo import _residual_block

TOL = 0.10  # training step (the issue's target; measured worst: the ResNet-like net, batch 16, -6.4%)
TOL_INFERENCE = 0.10  # predict (measured worst: the ResNet-like net at batch 32, +4.2%)


def resnet_like():
    b1, c = _residual_block(16, 16, 1, False)
    b2, c = _residual_block(c, 32, 2, False)
    net = Sequential([Conv(16, 3, pad=1), BatchNorm(), ReLU(), b1, b2, GlobalAvgPool(), FC(10)],
                     input_shape=(3, 16, 16))
    net.build((3, 16, 16))
    return net


NETS = {
    "three-layer": "INPUT [32x32x3] -> CONV7-32 -> RELU -> POOL2 -> FC-10",
    "lenet": "INPUT [28x28x1] -> CONV5-6 -> RELU -> POOL2 -> CONV5-16 -> RELU -> POOL2 -> FC-120 -> RELU "
             "-> FC-84 -> RELU -> FC-10",
    "vgg-bn-dropout": "INPUT [16x16x3] -> CONV3-16 -> BN -> RELU -> CONV3-16 -> BN -> RELU -> POOL2 -> "
                      "CONV3-32 -> BN -> RELU -> POOL2 -> FC-64 -> RELU -> DROPOUT0.5 -> FC-10",
    "resnet-like": resnet_like,
    "local-lrn-l2pool": "INPUT [16x16x3] -> LOCAL3-8 -> RELU -> LRN -> L2POOL2 -> CONV3-16 -> RELU -> POOL2 "
                        "-> FC-10",
}


def _net(spec):
    return build(spec) if isinstance(spec, str) else spec()


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("batch", [4, 16, 32])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_train_peak_predicted(name, batch, opt):
    spec = NETS[name]
    net = _net(spec)
    predicted = ledger(net, tuple(net.input_shape), batch, optimizer=opt)["train_peak_bytes"]
    measured = measure_train_step(spec, batch, opt)
    assert abs(predicted - measured) <= TOL * measured, (predicted, measured)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("batch", [4, 16, 32])
def test_inference_peak_predicted(name, batch):
    spec = NETS[name]
    net = _net(spec)
    predicted = ledger(net, tuple(net.input_shape), batch)["inference_peak_bytes"]
    measured = measure_inference(spec, batch)
    assert abs(predicted - measured) <= TOL_INFERENCE * measured, (predicted, measured)


#: the issue's 224x224 net: F(2x2) Winograd in blocks of tile rows, channel-major max pooling
ISSUE_224 = ("INPUT [224x224x3] -> [CONV3-64 -> RELU]*2 -> POOL2 -> [CONV3-128 -> RELU]*2 -> POOL2 -> GAP "
             "-> FC-10")


def test_big_image_step_predicted_and_bounded():
    """Within 10%, and what the issue asked of "use less": 4 images of 224x224 train in under 300 MB
    (1,070 MB before; PyTorch's peak RSS growth on the same step: 350-400 MB, BENCHMARKS.md)."""
    led = ledger(build(ISSUE_224), (3, 224, 224), 4, optimizer="adam")
    measured = measure_train_step(ISSUE_224, 4, "adam")
    assert abs(led["train_peak_bytes"] - measured) <= TOL * measured, (led["train_peak_bytes"], measured)
    assert measured < 300 * 2**20
    assert led["scratch_bytes"] < 64 * 2**20  # blocked scratch, not the whole tile grid (0.8 GB)
    assert led["train_peak_at"].endswith("(backward)")


def test_backward_frees_every_cache_as_it_goes():
    """Sequential and Graph (nested) drop each layer's cache once its backward has run."""
    import numpy as np

    for net in (build(NETS["vgg-bn-dropout"]), resnet_like()):
        x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
        out = net.forward(x, train=True)
        leaves = [layer for _, layer in net.named_layers()]
        assert any(layer.cache is not None for layer in leaves)
        net.backward(np.ones_like(out), need_dx=False)
        assert all(layer.cache is None for layer in leaves)


def test_max_batch_is_the_largest_that_fits():
    net = build(NETS["lenet"])
    budget = 8 * 2**20
    n = max_batch(net, (1, 28, 28), budget, optimizer="adam")
    assert n >= 1
    assert ledger(net, (1, 28, 28), n, optimizer="adam")["train_peak_bytes"] <= budget
    assert ledger(net, (1, 28, 28), n + 1, optimizer="adam")["train_peak_bytes"] > budget


def test_summary_json_has_the_ledger_peaks():
    from volnet.summary import summary

    s = summary("INPUT [224x224x3] -> [CONV3-64]*3", memory="2GB", optimizer="adam")
    m = s.to_dict()["memory"]
    assert m["train_peak_bytes"] > m["inference_peak_bytes"] > 0
    assert m["max_batch_train"] < m["max_batch_inference"]
    assert "training step peak" in str(s)


# ------------------------------------------------------------------ volnet train --batch auto --memory
SMALL = "INPUT [8x8x1] -> CONV3-8 -> BN -> RELU -> POOL2 -> FC-32 -> DROPOUT0.2 -> RELU -> FC-10"


def _train(capsys, *argv):
    from volnet.cli.main import main

    rc = main(["train", "--model", SMALL, "--data", "digits", "--limit-train", "300", "--quiet",
               *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _budget_for(batch, opt="adam"):
    return ledger(build(SMALL), (1, 8, 8), batch, optimizer=opt)["train_peak_bytes"]


def test_train_batch_auto_uses_the_largest_batch_that_fits_and_resume_keeps_it(tmp_path, capsys):
    import json

    pytest.importorskip("sklearn")
    budget = _budget_for(40) + 100  # 41 images need more than this
    assert _budget_for(41) > budget
    out = tmp_path / "auto"
    rc, _, err = _train(capsys, "--batch", "auto", "--memory", budget, "--epochs", "1", "--out", out)
    assert rc == 0, err
    doc = json.loads((out / "last" / "trainer.json").read_text())
    assert doc["info"]["args"]["batch"] == 40
    assert doc["config"]["batch_size"] == 40
    rc, _, err = _train(capsys, "--resume", out, "--epochs", "2")
    assert rc == 0, err
    doc = json.loads((out / "last" / "trainer.json").read_text())
    assert doc["config"]["batch_size"] == 40 and doc["position"]["epoch"] == 2


def test_train_refuses_a_batch_over_the_memory_budget_before_the_run_starts(tmp_path, capsys, monkeypatch):
    import volnet.train.loop as loop

    pytest.importorskip("sklearn")

    def no_trainer(*a, **k):
        raise AssertionError("the trainer must not be built")

    monkeypatch.setattr(loop.Trainer, "__init__", no_trainer)
    budget = _budget_for(40) + 100
    out = tmp_path / "big"
    rc, _, err = _train(capsys, "--batch", 256, "--memory", budget, "--out", out)
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    from volnet.summary import format_bytes

    assert format_bytes(_budget_for(256)) in lines[0] and format_bytes(budget) in lines[0]
    assert "--batch 40 fits" in lines[0]
    assert not out.exists()
    rc, _, err = _train(capsys, "--batch", "auto", "--out", out)  # auto needs a budget
    assert rc == 2 and "--memory" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _train(capsys, "--batch", 8, "--memory", "lots", "--out", out)
    assert rc == 2 and "cannot read the memory size" in err
    assert not out.exists()


def test_memory_sizes_are_read_by_the_summary_parser():
    from volnet.summary import parse_memory

    assert parse_memory("2GB") == 2 * 2**30
    assert parse_memory("512MB") == 512 * 2**20
    assert parse_memory("1.5GiB") == 3 * 2**29
