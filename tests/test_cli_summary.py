"""``volnet summary``: table, --json equal to the API, --memory, errors as one line + caret, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from volnet.cli.main import main
from volnet.summary import summary

VGG16 = (
    "INPUT [224x224x3] -> [CONV3-64 -> RELU]*2 -> POOL2 -> [CONV3-128 -> RELU]*2 -> POOL2 -> "
    "[CONV3-256 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> "
    "FC-4096 -> RELU -> FC-4096 -> RELU -> FC-1000"
)
SMALL = "INPUT [32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["summary", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_vgg16_table_totals(capsys):
    rc, out, err = run(capsys, VGG16)
    assert rc == 0 and err == ""
    total = next(line for line in out.splitlines() if line.startswith("total "))
    assert total.split()[1:] == ["15,087,080", "138,357,544", "15,470,264,320"]
    assert "CONV3-64" in out and "1,728+64" in out and "[7x7x512]" in out
    assert "parameters x3" in out


def test_json_equals_api(capsys):
    rc, out, _ = run(capsys, VGG16, "--json", "--batch", "8", "--memory", "6GB", "--optimizer", "adam")
    assert rc == 0
    d = json.loads(out)
    api = summary(VGG16, batch=8, memory="6GB", optimizer="adam").to_dict()
    assert d == json.loads(json.dumps(api))
    assert d["totals"]["params"] == 138_357_544 and d["memory"]["param_factor"] == 4


def test_memory_prints_batch_line(capsys):
    rc, out, _ = run(capsys, VGG16, "--memory", "4GB")
    assert rc == 0
    n = summary(VGG16, memory="4GB").memory["max_batch"]
    assert f"largest batch that fits in 4.00 GB: {n:,}" in out


def test_batch_dtype_and_input_override(capsys):
    rc, out, _ = run(capsys, SMALL, "--batch", "10", "--dtype", "float64", "--input", "64x64x1", "--json")
    d = json.loads(out)
    assert rc == 0 and d["batch"] == 10 and d["dtype"] == "float64" and d["input"] == "[64x64x1]"
    assert d["memory"]["activations_bytes"] == 10 * 8 * d["totals"]["activations"]


def test_bad_spec_one_line_with_caret(capsys):
    rc, out, err = run(capsys, "INPUT [32x32x3] -> CONV3-12 -> RELUU -> FC-10")
    assert rc == 2 and out == ""
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 3 and "Traceback" not in err
    assert lines[0].startswith("volnet summary: error: unknown layer 'RELUU'; did you mean 'RELU'?")
    assert lines[2].index("^") == lines[1].index("RELUU")


def test_shape_error_exit_2_with_formula(capsys):
    rc, _, err = run(capsys, "INPUT [10x10x3] -> CONV3-8/2p0 -> FC-2")
    assert rc == 2 and "(10 - 3 + 2*0)/2 + 1 = 4.5" in err and "^" in err and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["--memory", "lots"], "memory size"),
    (["--optimizer", "adamm"], "did you mean 'adam'"),
    (["--input", "32by32"], "WxHxD"),
])
def test_bad_options_exit_2(capsys, args, needle):
    rc, _, err = run(capsys, SMALL, *args)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_spec_file_and_model_directory(capsys, tmp_path: Path):
    f = tmp_path / "net.txt"
    f.write_text("# the notes' small net\nINPUT [32x32x3]\n  -> CONV3-12 -> RELU\n  -> POOL2 -> FC-10\n")
    rc, out, _ = run(capsys, str(f), "--json")
    assert rc == 0 and json.loads(out)["totals"] == summary(SMALL).totals

    from volnet.spec import build

    net = build(SMALL)
    net.save(str(tmp_path / "model"))
    rc, out, _ = run(capsys, str(tmp_path / "model"), "--json")
    assert rc == 0 and json.loads(out)["totals"] == summary(SMALL).totals


def test_zoo_name(capsys):
    zoo = pytest.importorskip("volnet.zoo")
    assert zoo is not None
    rc, out, err = run(capsys, "vgg16", "--json")
    assert rc == 0, err
    assert json.loads(out)["totals"]["params"] == 138_357_544


def test_unknown_word_mentions_other_sources(capsys):
    rc, _, err = run(capsys, "vgg17")  # a zoo typo: the did-you-mean first, before the layer types
    assert rc == 2
    assert err.startswith("volnet summary: error: 'vgg17' is not a zoo model: did you mean 'vgg19'?")
    assert "file, model directory or spec" in err and err.count("\n") == 1
    rc, _, err = run(capsys, "qwertyuiop")
    assert rc == 2 and "not a file, model directory or zoo name either; zoo: lenet5, alexnet" in err


def test_console_script_subprocess():
    exe = Path(sys.executable).with_name("volnet")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "volnet.cli.main"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run([*cmd, "summary", "INPUT [224x224x3] -> [CONV3-64]*3"], capture_output=True,
                        text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "9,633,792" in ok.stdout and "73.50 MB" in ok.stdout
    bad = subprocess.run([*cmd, "summary", "INPUT [8x8x3] -> POOL?"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "^" in bad.stderr
