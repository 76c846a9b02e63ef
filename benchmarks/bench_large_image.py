"""Time and peak memory of ``explain_images`` on one very large JPEG (default 10000 x 8000).

The photo is a synthetic pattern (it is the size that costs, not the content); the model is
the tests' tiny CNN at reduced steps, so the figures are the cost of reading the image, the
full-size maps, the overlay and the thumbnails. Run it in a fresh process for each version
compared (peak RSS is the process's maximum; it includes the ~0.7 GB of the imported torch and
the ~0.25 GB of making the test image)::

    PYTHONPATH=src python benchmarks/bench_large_image.py
    PYTHONPATH=src python benchmarks/bench_large_image.py --height 6000 --width 4000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from inputiba.workflows.explain import explain_images

TINY = f"{Path(__file__).resolve().parents[1] / 'tests' / '_tiny_model.py'}:factory"
SMALL = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=8000)
    ap.add_argument("--width", type=int, default=10000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.jpg"
        h, w = args.height, args.width
        yy, xx = np.mgrid[0:h:8, 0:w:8]
        small = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
        Image.fromarray(small).resize((w, h)).save(path, quality=90)
        del small
        t0 = time.perf_counter()
        rec = explain_images([path], model=TINY, layer="3", estimation_samples=16,
                             options=SMALL, out_dir=Path(tmp) / "out", progress=False)[0]
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB (Linux)
    print(f"status {rec['status']}, size {rec['size']}, working size "
          f"{rec.get('working_size')}: {seconds:.1f} s, peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
