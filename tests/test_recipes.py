"""Recipes (``volnet train --recipe``), label smoothing / onecycle / random erasing through the CLI and
checkpoints, and the fmnist-30min recipe learning on a subset."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from volnet.cli import train as cli_train
from volnet.cli.main import main
from volnet.data import Augment, batches, load_dataset, random_erase
from volnet.errors import ConfigError, DataError
from volnet.train import TrainConfig, Trainer, read_checkpoint
from volnet.train.recipes import RECIPES, get_recipe

SMALL = "INPUT [8x8x1] -> CONV3-8 -> BN -> RELU -> POOL2 -> FC-32 -> RELU -> FC-10"


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli_train.add_arguments(p)
    return p.parse_args(list(argv))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------ the table

@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_valid_options(name):
    r = get_recipe(name)
    assert set(r) <= set(cli_train.DEFAULTS) | {"workers"}, set(r) - set(cli_train.DEFAULTS)
    a = cli_train._resolve(_args("--recipe", name))
    cfg = cli_train.train_config(a)  # every value passes TrainConfig's checks
    assert a["recipe"] == name and cfg.epochs == r["epochs"]
    assert a["augment"] in cli_train._AUGMENT_CHOICES


def test_recipe_fields_and_flag_overrides():
    a = cli_train._resolve(_args("--recipe", "fmnist-30min"))
    got = (a["optim"], a["batch"], a["schedule"], a["warmup"], a["momentum"], a["weight_decay"],
           a["label_smoothing"])
    assert got == ("nesterov", 128, "cosine", 2.0, 0.9, 5e-4, 0.0)
    b = cli_train._resolve(_args("--recipe", "fmnist-30min", "--epochs", "3", "--lr", "0.05", "--batch", "64",
                                 "--model", "default", "--label-smoothing", "0.1", "--schedule", "onecycle"))
    got = (b["epochs"], b["lr"], b["batch"], b["model"], b["label_smoothing"], b["schedule"])
    assert got == (3, 0.05, 64, "default", 0.1, "onecycle")
    assert b["optim"] == "nesterov" and b["warmup"] == 2.0  # the rest stays the recipe's
    # no --recipe: exactly the old defaults
    c = cli_train._resolve(_args())
    assert {k: v for k, v in c.items() if k != "recipe"} == cli_train.DEFAULTS and c["recipe"] is None
    # onecycle without a recipe: the rise is 30% of the run unless --warmup is given
    assert cli_train._resolve(_args("--schedule", "onecycle"))["warmup"] == 0.0
    assert cli_train._resolve(_args("--schedule", "onecycle", "--warmup", "1"))["warmup"] == 1.0
    assert cli_train._resolve(_args("--schedule", "cosine"))["warmup"] == cli_train.DEFAULTS["warmup"]


def test_workers_come_from_the_recipe_and_its_stored_name(tmp_path):
    assert cli_train._workers(_args("--recipe", "fmnist-30min")) == 2
    assert cli_train._workers(_args("--recipe", "fmnist-30min", "--workers", "1")) == 1
    assert cli_train._workers(_args("--recipe", "default")) == 1 and cli_train._workers(_args()) == 1
    (tmp_path / "last").mkdir()
    stored = {"info": {"args": {"recipe": "fmnist-30min"}}}
    (tmp_path / "last" / "trainer.json").write_text(json.dumps(stored))
    assert cli_train._workers(_args("--resume", str(tmp_path))) == 2
    (tmp_path / "last" / "trainer.json").write_text("{broken")
    assert cli_train._workers(_args("--resume", str(tmp_path))) == 1


def test_recipe_help_and_unknown_name(capsys, tmp_path):
    rc, out, err = _run(capsys, "train", "--recipe", "help")
    assert rc == 0 and "fmnist-30min:" in out and "--warmup 2.0" in out and "default:" in out
    rc, out, err = _run(capsys, "train", "--recipe", "fmnist-30", "--out", tmp_path / "r")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "did you mean 'fmnist-30min'" in lines[0] and "recipes: default, fmnist-30min" in lines[0]
    assert not (tmp_path / "r").exists()


def test_a_recipe_run_defaults_to_runs_slash_its_name(capsys, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(capsys, "train", "--recipe", "default", "--model", SMALL, "--data", "digits",
                      "--epochs", "1", "--quiet")
    assert rc == 0, err
    assert read_checkpoint(tmp_path / "runs" / "default").doc["info"]["args"]["recipe"] == "default"


# ------------------------------------------------------------------------------------------ options

def test_new_options_validate_and_round_trip():
    cfg = TrainConfig(schedule="onecycle", warmup=1.5, epochs=4, label_smoothing=0.1,
                      augment=Augment(pad=2, flip=True, erase=0.5)).validate()
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    old = cfg.to_dict()
    old["augment"].pop("erase")
    old.pop("label_smoothing")  # a checkpoint written before these options
    back = TrainConfig.from_dict(old)
    assert back.augment.erase == 0.0 and back.label_smoothing == 0.0
    for bad in ({"label_smoothing": 1.0}, {"label_smoothing": -0.1}, {"label_smoothing": float("nan")},
                {"schedule": "onecycle", "epochs": 2, "warmup": 2.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
    with pytest.raises(DataError, match="erase"):
        Augment(erase=1.5)


@pytest.mark.parametrize("argv,word", [(["--label-smoothing", "1.5"], "--label-smoothing"),
                                       (["--schedule", "onecycle", "--warmup", "9"], "--warmup")])
def test_bad_new_flags_are_one_line_errors(capsys, tmp_path, argv, word):
    rc, out, err = _run(capsys, "train", "--model", SMALL, "--data", "digits", "--epochs", "2",
                        "--out", tmp_path / "r", *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and word in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


def test_random_erase_draws_and_determinism():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, size=(2000, 2, 28, 28)).astype(np.float32)
    out = random_erase(x, np.random.default_rng(1), p=0.5)
    assert out.dtype == x.dtype and out.shape == x.shape and not np.shares_memory(out, x)
    zeros = (out == 0).reshape(2000, 2, -1)
    assert np.array_equal(zeros[:, 0], zeros[:, 1])  # every channel of the same rectangle
    frac = zeros[:, 0].mean(axis=1)
    erased = frac > 0
    assert 0.45 < erased.mean() < 0.55
    assert frac[erased].min() >= 0.02 * 0.5 and frac[erased].max() <= 0.37  # area 2-33% (sides rounded)
    assert np.array_equal(out[~erased], x[~erased])
    assert np.array_equal(out, random_erase(x, np.random.default_rng(1), p=0.5))
    # in batches: a pure function of (seed, epoch, batch), so resuming mid-epoch gives the same batches
    aug = Augment(pad=2, flip=True, erase=0.5)
    y = np.zeros(len(x), np.int64)
    full = [b for b, _ in batches(x[:256], y[:256], 64, seed=3, epoch=1, augment=aug)]
    tail = [b for b, _ in batches(x[:256], y[:256], 64, seed=3, epoch=1, start=2, augment=aug)]
    assert all(np.array_equal(a, b) for a, b in zip(full[2:], tail))
    assert aug.describe() == "random crop (pad 2) + horizontal flip + random erasing (p 0.5)"


def test_cli_run_stores_and_resumes_the_new_options(capsys, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "r"
    rc, _, err = _run(capsys, "train", "--model", SMALL, "--data", "digits", "--epochs", "2", "--batch", "64",
                      "--optim", "nesterov", "--lr", "0.05", "--schedule", "onecycle", "--label-smoothing",
                      "0.1", "--augment", "crop+erase", "--val", "200", "--out", out, "--quiet")
    assert rc == 0, err
    cfg = read_checkpoint(out).config
    assert (cfg.schedule, cfg.label_smoothing, cfg.augment.erase, cfg.augment.flip) == \
        ("onecycle", 0.1, 0.5, False)
    rc, _, err = _run(capsys, "train", "--resume", out, "--epochs", "3", "--quiet")
    assert rc == 0, err
    cfg = read_checkpoint(out).config
    assert cfg.epochs == 3 and cfg.label_smoothing == 0.1 and cfg.augment.erase == 0.5


# ------------------------------------------------------------------------------------------ it learns

def test_fmnist_recipe_learns_on_a_subset():
    """The fmnist-30min recipe's settings (net, Nesterov, warm-up + cosine, crop + flip) for a
    shortened schedule: 2 epochs on 1,500 training images (chance is 10%)."""
    try:
        train, test = load_dataset("fashion-mnist", download=False)
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    a = cli_train._resolve(_args("--recipe", "fmnist-30min", "--epochs", "2"))
    cfg = cli_train.train_config(a)
    train, val, test = train.subset(np.arange(1500)), train.subset(np.arange(1500, 1800)), \
        test.subset(np.arange(300))
    net = cli_train.build_model(a["model"], train.shape, train.num_classes, seed=0)
    cfg = cfg.replace(augment=cli_train._augment(a["augment"], train))
    t = Trainer(net, train, val, test, cfg, progress=False)
    h = t.fit()
    assert h[1]["train_loss"] < h[0]["train_loss"], h
    assert t.test_result["test_acc"] > 0.5, t.test_result
    assert h[1]["val_acc"] > 0.5, h


# ------------------------------------------------------------------------------------------ benchmarks

def test_torch_replica_is_the_recipes_net_and_the_plot_reads_both_logs(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    torch = pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    mods = {}
    for name in ("torch_recipe", "plot_recipe"):
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", root / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mods[name]
        spec.loader.exec_module(mods[name])
    tnet = mods["torch_recipe"].build_net(torch, c=1, k=10, hw=28)
    vnet = cli_train.build_model(get_recipe("fmnist-30min")["model"], (1, 28, 28), 10)
    assert sum(p.numel() for p in tnet.parameters()) == vnet.num_params() == 871_530
    # the plot: volnet's metrics.jsonl + results.json and torch's JSON lines
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"epoch": e, "train_loss": 0.5, "train_acc": 0.9, "val_loss": 0.3, "val_acc": 0.9 + e / 100,
             "lr": 0.1, "seconds": 45.0, "images_per_s": 1200.0, "step": e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "results.json").write_text(json.dumps({"test_acc": 0.915}))
    tlog = tmp_path / "t.jsonl"
    tlog.write_text('{"epoch": 1, "minutes": 0.7, "val_acc": 0.9}\n'
                    '{"epoch": 2, "minutes": 1.4, "val_acc": 0.92}\n{"test_acc": 0.918, "minutes": 1.4}\n')
    # volnet: the other time of the process (start-up, data, test: 30 s of 120 s) counted before epoch 1
    assert mods["plot_recipe"].volnet_curve(run, 120.0) == ([1.25, 2.0], [91.0, 92.0], 91.5, 2.0)
    assert mods["plot_recipe"].torch_curve(tlog) == ([0.7, 1.4], [90.0, 92.0], 91.8, 1.4)
    out = tmp_path / "c.png"
    assert mods["plot_recipe"].main([str(run), "120", str(tlog), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_torch_replica_defaults_are_the_recipe():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "torch_recipe.py"
    spec = importlib.util.spec_from_file_location("_bench_torch_recipe_defaults", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    seen = {}
    mod_argparse = mod.argparse

    class Stop(Exception):
        pass

    real = mod_argparse.ArgumentParser.parse_args

    def grab(self, argv=None, namespace=None):
        seen.update(vars(real(self, argv, namespace)))
        raise Stop

    mod_argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(Stop):
            mod.main([])
    finally:
        mod_argparse.ArgumentParser.parse_args = real
    r = get_recipe("fmnist-30min")
    assert (seen["epochs"], seen["batch"], seen["lr"], seen["momentum"], seen["weight_decay"],
            seen["warmup"], seen["label_smoothing"], seen["seed"]) == \
        (r["epochs"], r["batch"], r["lr"], r["momentum"], r["weight_decay"], r["warmup"],
         r.get("label_smoothing", 0.0), r.get("seed", 0))
    assert (r["optim"], r["schedule"], r["augment"]) == ("nesterov", "cosine", "flip+crop")
