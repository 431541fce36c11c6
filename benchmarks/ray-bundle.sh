#!/usr/bin/env bash
# Ray for the GPU machines (issue 31's check: one sweep through `--launcher ray` on one
# node), which run Python 3.12 and reach no package index. Like the vLLM bundle
# (../shared/tools/build-vllm-bundle.sh): built here, sent in parts of at most 43 MB, each
# with a call's working tree, appended in order on the machine.
#
#   bash benchmarks/ray-bundle.sh .stage/ray      # here: OUTDIR/part00, part01, install.sh
#   # on the GPU machine, one call a part, made at once one after the other:
#   cat .stage/ray/part00 > /tmp/ray-bundle.tar          # call 1 (carry .stage/ray/part00)
#   cat .stage/ray/part01 >> /tmp/ray-bundle.tar         # call 2, ... then, in the last call:
#   bash .stage/ray/install.sh && export PYTHONPATH=/tmp/ray-site:$PYTHONPATH
#
# Ray's needs the GPU image lacks: jsonschema and its three (the image has click, filelock,
# msgpack, packaging, protobuf, pyyaml and requests).
set -euo pipefail
out=${1:?usage: ray-bundle.sh OUTDIR}
mkdir -p "$out"; out=$(cd "$out" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$work/wheels" ray==2.60.0 jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1 \
  jsonschema-specifications==2025.9.1
tar -C "$work" -cf "$work/all.tar" wheels
rm -f "$out"/part*
split -b 43M -d -a 2 "$work/all.tar" "$out/part"
sum=$(sha256sum "$work/all.tar" | cut -d' ' -f1)
cat > "$out/install.sh" <<INSTALL
#!/usr/bin/env bash
# On the GPU machine, once every part was appended, in order, to /tmp/ray-bundle.tar.
set -euo pipefail
echo "$sum  /tmp/ray-bundle.tar" | sha256sum -c --quiet - ||
  { echo "ray bundle incomplete or its parts out of order"; exit 1; }
rm -rf /tmp/ray-b && mkdir -p /tmp/ray-b /tmp/ray-site && tar -xf /tmp/ray-bundle.tar -C /tmp/ray-b
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
  --target /tmp/ray-site /tmp/ray-b/wheels/*.whl
PYTHONPATH=/tmp/ray-site python3 -c "import ray; print('ray', ray.__version__, 'ready: export PYTHONPATH=/tmp/ray-site')"
INSTALL
chmod +x "$out/install.sh"
ls -l "$out"
