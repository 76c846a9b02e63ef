#!/usr/bin/env bash
# Packaging test: does inputiba install and run as users install it?
#
#   1. build the sdist and, from it, the wheel (`python -m build`: what a release uploads);
#   2. check that both carry the package data (the shipped run configurations, py.typed) and
#      the `inputiba` command;
#   3. install the wheel into a fresh virtual environment, with no access to the checkout;
#   4. from a folder outside the checkout, with an empty cache: `inputiba layers` (on a
#      shipped configuration) and `inputiba explain` on one built-in photo at reduced steps,
#      then check the map (.npy), results.json and config.yaml.
#
# Dependencies. The fresh environment sees exactly the distributions the wheel declares, and
# what they in turn require (markers evaluated), taken from the environment that runs this
# script: a folder of links to those distributions is put on the fresh environment's path, and
# `pip install --no-index` installs the wheel after checking that every requirement is met.
# So a module the package imports without declaring it fails here, the test is offline, and
# the multi-gigabyte PyTorch is not installed a second time. PACKAGE_TEST_RESOLVE=1 instead
# lets pip resolve and download every dependency but torch and torchvision (and what they
# require) from the configured package indexes, as a user's `pip install` would.
#
#   bash scripts/package_test.sh              # with the environment's python (.venv in test.sh)
#   KEEP=1 bash scripts/package_test.sh       # keep the temporary folder and print its path
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY="${PYTHON:-python}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/inputiba-package-test.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "package_test: keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
say() { echo "package_test: $*"; }
fail() { echo "package_test: FAILED: $*" >&2; exit 1; }
t0=$SECONDS

# --- 1. build --------------------------------------------------------------------------------
# In an isolated build environment (setuptools from the package index) unless the running
# environment already has a recent enough setuptools, which is then used as is (offline).
build_args=()
if "$PY" - <<'PY' 2>/dev/null; then
import setuptools
major = int(setuptools.__version__.split(".")[0])
raise SystemExit(0 if major >= 77 else 1)
PY
    build_args=(--no-isolation)
fi
# A copy of the tracked and untracked-but-not-ignored files: the build never sees .venv,
# site/ or caches, and the checkout gets no build/ or egg-info folders.
mkdir -p "$tmp/src-copy"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' \
        | tar -cf - -T - | tar -xf - -C "$tmp/src-copy"
else  # an unpacked sdist, say
    tar -cf - --exclude=./.venv --exclude=./site --exclude=./build --exclude=./dist . \
        | tar -xf - -C "$tmp/src-copy"
fi
"$PY" -m build -q "${build_args[@]}" --outdir "$tmp/dist" "$tmp/src-copy" >"$tmp/build.log" 2>&1 \
    || { tail -30 "$tmp/build.log" >&2; fail "python -m build"; }
wheel=$(ls "$tmp"/dist/inputiba-*.whl)
sdist=$(ls "$tmp"/dist/inputiba-*.tar.gz)
say "built $(basename "$sdist") and $(basename "$wheel") ($((SECONDS - t0)) s)"

# --- 2. contents ------------------------------------------------------------------------------
"$PY" - "$wheel" "$sdist" "$root" <<'PY' || fail "package contents"
import sys
import tarfile
import zipfile
from pathlib import Path

wheel, sdist, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
configs = sorted(p.name for p in (root / "src/inputiba/configs").glob("*.yaml"))
assert configs, "no shipped configurations in src/inputiba/configs"
names = zipfile.ZipFile(wheel).namelist()
missing = [f"inputiba/configs/{c}" for c in configs if f"inputiba/configs/{c}" not in names]
missing += [f for f in ("inputiba/py.typed", "inputiba/cli/__init__.py") if f not in names]
assert not missing, f"missing from the wheel: {missing}"
assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))], "stray files"
entry = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
text = zipfile.ZipFile(wheel).read(entry[0]).decode() if entry else ""
assert "inputiba = inputiba.cli:main" in text, f"no inputiba command in the wheel: {text!r}"
snames = tarfile.open(sdist).getnames()
top = snames[0].split("/")[0]
need = ["pyproject.toml", "README.md", "src/inputiba/py.typed"]
need += [f"src/inputiba/configs/{c}" for c in configs]
missing = [n for n in need if f"{top}/{n}" not in snames]
assert not missing, f"missing from the sdist: {missing}"
print(f"package_test: wheel has {len(configs)} configurations, py.typed and the inputiba command")
PY

# --- 3. a fresh environment --------------------------------------------------------------------
# Without a pip or setuptools of its own (they would shadow the provided ones); the running
# environment's pip installs into it (`pip --python`).
"$PY" -m venv --without-pip "$tmp/venv"
venv_py="$tmp/venv/bin/python"
provided="$tmp/provided"
mode=declared
[ "${PACKAGE_TEST_RESOLVE:-0}" = 1 ] && mode=torch
"$PY" - "$wheel" "$provided" "$mode" <<'PY' || fail "linking the dependencies"
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

wheel, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(wheel).read(meta).decode()
reqs = [Requirement(v.strip()) for k, v in
        (line.split(":", 1) for line in text.splitlines() if line.startswith("Requires-Dist:"))]
env = {"extra": ""}
todo = [r for r in reqs if r.marker is None or r.marker.evaluate(env)]
if mode == "torch":
    todo = [r for r in todo if r.name in ("torch", "torchvision")]
seen: dict[str, metadata.Distribution] = {}
done: set[tuple[str, str]] = set()  # (distribution, extra): "" for its plain requirements
while todo:
    req = todo.pop()
    key = req.name.lower().replace("_", "-").replace(".", "-")
    wanted = {""} | set(req.extras)
    if all((key, e) in done for e in wanted):
        continue
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        if mode == "torch":
            continue  # pip resolves it from the index
        sys.exit(f"package_test: {req.name} is required but not installed here")
    seen[key] = dist
    for extra in wanted - {e for k, e in done if k == key}:
        done.add((key, extra))
        for sub in dist.requires or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": extra}):
                todo.append(r)
out.mkdir(parents=True)
linked = set()
for dist in seen.values():
    base = Path(dist.locate_file(""))
    for f in dist.files or []:
        first = f.parts[0]
        if first in ("..", "__pycache__") or first in linked or first.endswith(".pth"):
            continue
        src = base / first
        if src.exists():
            (out / first).symlink_to(src)
            linked.add(first)
print(f"package_test: {len(seen)} distributions provided ({mode}): "
      + ", ".join(sorted(d.metadata['Name'] for d in seen.values())))
PY
site=$("$venv_py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$provided" > "$site/_inputiba_package_test.pth"
if [ "$mode" = declared ]; then
    "$PY" -m pip --python "$venv_py" install -q --no-index "$wheel" >"$tmp/pip.log" 2>&1 \
        || { grep -v "is ignored" "$tmp/pip.log" | tail -20 >&2; fail "pip install --no-index (a declared dependency is missing?)"; }
else
    "$PY" -m pip --python "$venv_py" install -q "$wheel" >"$tmp/pip.log" 2>&1 \
        || { grep -v "is ignored" "$tmp/pip.log" | tail -20 >&2; fail "pip install"; }
fi
say "installed the wheel into a fresh environment ($((SECONDS - t0)) s)"

# --- 4. run it from outside the checkout ---------------------------------------------------------
work="$tmp/run"
mkdir -p "$work"
cd "$work"
export INPUTIBA_CACHE="$tmp/cache"
unset PYTHONPATH
bin="$tmp/venv/bin"
"$bin/python" - "$root" <<'PY' || fail "the installed package is not the wheel's"
import sys
from pathlib import Path

import inputiba

where = Path(inputiba.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"imported from the checkout: {where}"
assert (where.parent / "py.typed").exists() and (where.parent / "configs").is_dir()
print(f"package_test: inputiba {inputiba.__version__} from {where.parent}")
PY

"$bin/inputiba" layers --config small_cnn_32 >layers_small.txt 2>&1 \
    || { cat layers_small.txt >&2; fail "inputiba layers --config small_cnn_32"; }
grep -q "features.1" layers_small.txt || fail "inputiba layers: no features.1 in $(cat layers_small.txt)"
"$bin/inputiba" layers efficientnet-lite0 --depth 2 --match _blocks >layers.txt 2>&1 \
    || { cat layers.txt >&2; fail "inputiba layers efficientnet-lite0"; }
grep -q "_blocks.5 " layers.txt || fail "inputiba layers: no _blocks.5 in $(cat layers.txt)"
say "inputiba layers: ok ($((SECONDS - t0)) s)"

"$bin/python" -c "
from PIL import Image
from inputiba.data.assets import builtin_photos
Image.fromarray(builtin_photos(['chelsea'])['chelsea']).save('chelsea.png')"
# Reduced steps: every stage runs, a few passes each.
"$bin/inputiba" explain chelsea.png --config efficientnet_lite0 --out out -q \
    --estimation-samples 16 --set feat_steps=2 --set feat_draws=2 --set gan_epochs=1 \
    --set gan_dataset_size=16 --set gan_subset_size=8 --set input_steps=2 --set input_draws=2 \
    >explain.log 2>&1 || { cat explain.log >&2; fail "inputiba explain"; }
"$bin/python" - <<'PY' || fail "the outputs of inputiba explain"
import json
from pathlib import Path

import numpy as np
from PIL import Image

out = Path("out")
size = Image.open("chelsea.png").size[::-1]
for name in ("chelsea.npy", "chelsea.feature.npy", "chelsea.gan.npy"):
    m = np.load(out / name)
    assert m.shape == size, f"{name}: shape {m.shape}, image {size}"
    assert m.dtype == np.float32 and np.isfinite(m).all() and m.min() >= 0, name
assert np.load(out / "chelsea.npy").max() <= 1
records = json.loads((out / "results.json").read_text())
assert [r["status"] for r in records] == ["ok"], records
assert records[0]["settings"]["layer"] == "_blocks.5", records[0]["settings"]
for name in ("chelsea.png", "index.html", "config.yaml"):
    assert (out / name).stat().st_size > 0, name
print(f"package_test: inputiba explain: ok (target {records[0]['target']['name']!r})")
PY
say "passed in $((SECONDS - t0)) s"
