"""'capacity' vs 'lambda' real samples for the WGAN, on the small digits CNN of the test suite.

A quick, CPU-friendly version of ``gan_real_modes.py``: trains the tests' DigitsCNN on
scikit-learn digits, explains 48 held-out digits with each mode (paper settings, 30 input steps,
10 GAN epochs) and prints the mean deletion AUC (lower is better, background value) and
insertion AUC (higher is better) at 2% of the pixels a step.

    python benchmarks/gan_real_modes_digits.py
"""
import sys
import warnings
from pathlib import Path

import torch

from inputiba import InputIBA, estimate_layer_statistics
from inputiba.metrics.functional import deletion, insertion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402 - the tests' digits data and model

warnings.simplefilter("ignore")
torch.set_num_threads(1)

x, y = conftest._digits()
g = torch.Generator().manual_seed(0)
perm = torch.randperm(len(x), generator=g)
d = (x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]])
model = conftest.digits_model.__wrapped__(d)
stats = estimate_layer_statistics(model, "features.4", torch.split(d[0], 200), progress=False)
xt = d[2][:48]
with torch.no_grad():
    t = model(xt).argmax(1)
for mode in ("capacity", "lambda"):
    ex = InputIBA(model, "features.4", stats, preset="paper", gan_real=mode, input_steps=30, gan_epochs=10)
    maps = ex.attribute(xt, target=t)
    dl = deletion(model, xt, t, maps, step=0.02, baseline=float(xt.min())).auc.mean().item()
    ins = insertion(model, xt, t, maps, step=0.02).auc.mean().item()
    print(mode, "deletion", round(dl, 4), "insertion", round(ins, 4), flush=True)
