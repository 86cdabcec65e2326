#!/usr/bin/env bash
# Release check: build the wheel and sdist, check them with twine, install the wheel into a
# fresh virtual environment outside the repository and use it from an empty folder, as a new
# user would: `vgi-vision sql` on one photograph and `vgi-vision classify` on a folder, with
# the labels asserted. Usage: scripts/check_release.sh [PYTHON] (default python3).
set -euo pipefail
python=${1:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "+ build wheel and sdist"
"$python" -m venv "$work/build-env"
pip_quiet() { "$@" >"$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }; }
pip_quiet "$work/build-env/bin/pip" install build twine
"$work/build-env/bin/python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
"$work/build-env/bin/twine" check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)
# (grep without -q: an early exit would break the pipe and fail the pipeline; the sdist
# carries the top-level models/ folder, which the wheel installs as vgi_vision/models/)
unzip -l "$wheel" | grep "vgi_vision/models/efficientnet-lite0/model.onnx" >/dev/null \
  || { echo "the wheel does not carry the model" >&2; exit 1; }
tar tzf "$work"/dist/*.tar.gz | grep "^[^/]*/models/efficientnet-lite0/model.onnx" >/dev/null \
  || { echo "the sdist does not carry the model" >&2; exit 1; }
unzip -l "$wheel" | grep "vgi_vision/gallery/templates/grid.html" >/dev/null \
  || { echo "the wheel does not carry the gallery's templates" >&2; exit 1; }

echo "+ install $(basename "$wheel") into a fresh environment"
"$python" -m venv "$work/user-env"
pip_quiet "$work/user-env/bin/pip" install "$wheel"

mkdir -p "$work/elsewhere/photos"
cp "$repo"/test/sql/data/* "$work/elsewhere/photos/"
cd "$work/elsewhere"
vgi="$work/user-env/bin/vgi-vision"
"$vgi" --version

echo "+ vgi-vision sql"
out=$("$vgi" sql "SELECT label FROM vision.classify('photos/coffee.png', top_k := 1)")
echo "$out"
grep -q "espresso" <<<"$out" || { echo "expected espresso" >&2; exit 1; }

echo "+ vgi-vision classify"
"$vgi" classify photos --top-k 1 --format csv -o labels.csv
cat labels.csv
expect() {  # file, label: the file's top-1 label must be this one
  grep -q "^\"\?photos/$1\"\?,1,[0-9]*,\"\?$2\"\?," labels.csv \
    || { echo "expected $1 -> $2" >&2; exit 1; }
}
expect coffee.png espresso
expect cat.png "tiger cat"
expect grace_hopper.jpg "graduation cap"
expect rocket.jpg missile
echo "release check passed"
