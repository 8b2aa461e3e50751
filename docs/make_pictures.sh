#!/bin/sh
# Re-draws the pictures of the README's "Seeing inside the net" (needs runs/default from make train,
# Fashion-MNIST, volnet[viz], and chromium + chromium-driver + selenium for the two screenshots).
set -e
cd "$(dirname "$0")/.."
V=.venv/bin/volnet
.venv/bin/python - <<'PY'
import numpy as np
from PIL import Image
from volnet.data import load_dataset
train, test = load_dataset("fashion-mnist")
for i, name in [(0, "boot"), (1, "pullover")]:
    x, y = test[i]
    a = np.asarray(x, dtype=np.float64).reshape(28, 28)
    a = (255 * (a - a.min()) / (a.max() - a.min())).astype(np.uint8)
    Image.fromarray(a).resize((28, 28)).save(f"docs/{name}.png")
    print(name, y)
PY
$V train --model default --data fashion-mnist --epochs 3 --limit-train 20000 --augment flip --out /tmp/docs/run --overwrite --quiet
$V show filters runs/default -o docs/filters.png
$V show activations runs/default docs/pullover.png --layers conv1 relu2 pool1 relu4 -o docs/activations.png
$V show occlusion runs/default docs/boot.png -o docs/occlusion.png
$V show saliency runs/default docs/boot.png -o docs/saliency.png
cp /tmp/docs/run/curves.png docs/curves.png
$V report /tmp/docs/run -o /tmp/docs/report.html
.venv/bin/python docs/screenshots.py
