"""Everyday use: notebook views of summaries and nets, summary depth / units / frozen split, the zoo list,
``--version`` and ``python -m volnet``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import volnet
from volnet import zoo
from volnet.cli.main import main
from volnet.summary import format_count, summary

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_summary_renders_in_notebooks_as_its_table() -> None:
    s = volnet.summary(volnet.build("INPUT [32x32x3] -> [CONV3-8 -> RELU]*2 -> POOL2 -> FC-10"))
    assert repr(s) == str(s) and repr(s).startswith("layer  ")  # IPython shows the text table
    page = s._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + 7 + 1  # head, input + 6 layers, total
    assert "<td style=\"text-align:left\">conv1</td>" in page and "21,298" in page and "21.3K" in page
    assert "-&gt;" not in page and "<script" not in page


def test_net_repr_shows_spec_and_parameter_count() -> None:
    net = volnet.build("INPUT [8x8x1] -> CONV3-4 -> RELU -> FC-3")
    assert repr(net) == "Sequential('INPUT [8x8x1] -> CONV3-4 -> RELU -> FC-3')  # 811 parameters (811)"
    page = net._repr_html_()
    assert "<b>Sequential</b>: 811 parameters" in page and "INPUT [8x8x1] -&gt; CONV3-4" in page
    assert "<table>" in page
    r18 = zoo.get("resnet18", build=False)
    assert repr(r18).endswith("# 11,689,512 parameters (11.7M)")


def test_human_units_beside_exact_counts() -> None:
    assert [format_count(n) for n in (0, 999, 1000, 11_689_512, 1_814_073_344, 138_357_544)] == [
        "0", "999", "1K", "11.7M", "1.81G", "138M"]
    text = str(summary(zoo.get("resnet18", build=False)))
    assert "parameters 11,689,512 (11.7M): trainable 11,689,512, frozen 0" in text
    assert "multiply-adds 1,814,073,344 (1.81G)" in text


def test_summary_depth_folds_blocks_and_keeps_totals(capsys) -> None:
    net = zoo.get("resnet18", build=False)
    full, d1, d2 = summary(net), summary(net, depth=1), summary(net, depth=2)
    names1 = [r.name for r in d1.shown_rows()]
    assert names1 == ["input", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                      "avgpool", "fc"]
    assert [r.name for r in d2.shown_rows()][5:7] == ["layer1.0", "layer1.1"]
    row = {r.name: r for r in d1.shown_rows()}
    assert row["layer4"].params == sum(r.params for r in full.rows if r.name.startswith("layer4."))
    assert row["layer4"].token == "SEQUENTIAL[16]" and row["layer4"].volume == "[7x7x512]"
    assert d1.totals == full.totals
    rc, out, _ = _run(capsys, "summary", "resnet18", "--depth", "1")
    assert rc == 0 and "layer3   SEQUENTIAL[16]" in out and "layer3.0" not in out
    rc, _, err = _run(capsys, "summary", "resnet18", "--depth", "0")
    assert rc == 2 and "depth must be an integer >= 1" in err


def test_summary_counts_frozen_parameters() -> None:
    net = zoo.get("resnet18", num_classes=10, input_shape=(3, 32, 32), build=False)
    frozen = zoo.freeze(net, "layer3")
    s = summary(net, frozen=frozen)
    fc_and_layer4 = sum(r.params for r in s.rows if r.name.startswith(("layer4.", "fc")))
    assert s.totals["trainable"] == fc_and_layer4 and s.totals["frozen"] == s.totals["params"] - fc_and_layer4
    assert f"frozen {s.totals['frozen']:,}" in str(s)


def test_zoo_command_lists_the_zoo(capsys) -> None:
    rc, out, _ = _run(capsys, "zoo")
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("resnet18 "))
    assert "11,689,512 (11.7M)" in line and "[224x224x3]" in line and "He et al. 2015" in line
    assert "[32x32x1]" in next(x for x in out.splitlines() if x.startswith("lenet5 "))
    rc, out, _ = _run(capsys, "zoo", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == zoo.names() and rows[6]["params"] == 6_624_904


def test_version_and_python_dash_m(capsys) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"volnet {volnet.__version__}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "volnet", "summary", "INPUT [8x8x1] -> FC-2"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "total" in r.stdout


def test_spec_comments_after_layers_and_real_line_numbers(tmp_path, capsys) -> None:
    text = "# a small net\n\nINPUT [8x8x3]   # CIFAR-like\n-> CONV3-4 -> RELU  # first block\n# pool next\n" \
           "-> POOL2\n-> FC-3\n"
    net = volnet.build(text)
    assert net.spec() == "INPUT [8x8x3] -> CONV3-4 -> RELU -> POOL2 -> FC-3"
    f = tmp_path / "net.txt"
    f.write_text(text.replace("FC-3", "FC-3?"))
    for cmd in ("summary", "export"):
        rc, _, err = _run(capsys, cmd, f, *(["x.onnx"] if cmd == "export" else []))
        assert rc == 2 and "(line 7, column 4)" in err, err  # the file's 7th line, comments counted


def test_folder_data_keeps_grayscale_with_channels(tmp_path, capsys) -> None:
    Image = pytest.importorskip("PIL.Image")
    import numpy as np

    from volnet.cli.train import load_data

    rng = np.random.default_rng(0)
    for cls in ("ring", "dot"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            img = Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8))
            img.save(tmp_path / "imgs" / cls / f"{i}.png")
    name = f"folder:{tmp_path / 'imgs'}"
    grey, _, _, _ = load_data(name, channels=1, quiet=True)
    rgb, _, _, _ = load_data(name, quiet=True)
    assert grey.shape == (1, 8, 8) and rgb.shape == (3, 8, 8) and grey.classes == ["dot", "ring"]
    out = tmp_path / "run"
    rc, _, err = _run(capsys, "train", "--model", "INPUT [8x8x1] -> CONV3-2 -> RELU -> FC-2", "--data", name,
                      "--channels", "1", "--epochs", "1", "--val", "2", "--out", out, "--quiet")
    assert rc == 0, err
    rc, _, err = _run(capsys, "train", "--data", "digits", "--channels", "1", "--out", tmp_path / "r2")
    assert rc == 2 and "--channels applies to folder:PATH" in err


def test_missing_dataset_message_speaks_cli_first(tmp_path) -> None:
    from volnet.data import load_dataset
    from volnet.errors import DataError

    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(e.value)
    assert "pass --data-dir DIR (Python: data_dir=DIR)" in msg and "--no-download" in msg


def test_dataset_slices_like_an_array() -> None:
    import numpy as np

    from volnet.data import Dataset

    ds = Dataset(np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2), np.arange(10) % 3, ["a", "b", "c"],
                 "toy")
    head = ds[:4]
    assert isinstance(head, Dataset) and len(head) == 4 and head.classes == ["a", "b", "c"]
    assert head.name == "toy" and head.y.tolist() == [0, 1, 2, 0]
    x, y = ds[5]
    assert x.shape == (1, 2, 2) and y == 2 and float(x[0, 0, 0]) == 20.0
    assert ds[np.array([9, 0])].y.tolist() == [0, 0] and len(ds[ds.y == 1]) == 3
    head.x[0] = -1  # a copy: the original is untouched
    assert float(ds.x[0, 0, 0, 0]) == 0.0


def test_limit_train_scales_the_validation_split() -> None:
    pytest.importorskip("sklearn")
    from volnet.cli.train import load_data

    train, val, _, _ = load_data("digits", limit_train=200, quiet=True)
    assert len(train) == 200 and len(val) == 20  # 10% of the 200 used, not of the 1438
    train, val, _, _ = load_data("digits", limit_train=200, val="0.25", quiet=True)
    assert len(val) == 50
    train, val, _, _ = load_data("digits", quiet=True)
    assert len(val) == 144 and len(train) == 1294  # 10% of all 1438


def test_train_prints_settings_in_words_and_explains_the_star(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    rc, _, err = _run(capsys, "train", "--model", "INPUT [8x8x1] -> FC-10", "--data", "digits",
                      "--epochs", "1", "--limit-train", "64", "--out", tmp_path / "r")
    assert rc == 0, err
    assert "augment: random crop (pad 1);" in err and "{'pad'" not in err
    assert "epoch 1/1  train loss" in err and "  * = best val acc so far (saved as best/)" in err


def test_shell_completion_of_subcommands_and_options(tmp_path) -> None:
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ARGCOMPLETE": "1", "COMP_LINE": "volnet su",
           "COMP_POINT": "9", "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"}
    r = subprocess.run([sys.executable, "-m", "volnet"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [c.strip() for c in out.read_text().split("\n")] == ["summary"]
    env.update(COMP_LINE="volnet summary --de", COMP_POINT="19")
    subprocess.run([sys.executable, "-m", "volnet"], env=env, capture_output=True, text=True, timeout=120)
    assert "--depth" in [c.strip() for c in out.read_text().split("\n")]
