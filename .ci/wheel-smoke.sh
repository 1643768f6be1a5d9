#!/usr/bin/env bash
# Check the wheel `make wheel` left in dist/ as a pip user on another machine would meet it
# (issue 11 item 4), then run the smoke subset of the tests (tests/smoke) against it:
#
#   1. auditwheel (in a throwaway tools venv, never a dependency of ours) must find the wheel
#      consistent with the manylinux tag in its name, and the extension must carry no symbol
#      table (stripped);
#   2. a fresh virtualenv gets the wheel and pytest, nothing else, and no path into this
#      checkout: the imported batchguard must be the one in the venv's site-packages;
#   3. tests/smoke is copied to a temporary directory and run there, under `python -I` (no
#      PYTHONPATH, no current directory on sys.path).
#
# Usage: bash .ci/wheel-smoke.sh [PYTHON]  (default python3: the interpreter whose wheel to test)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${1:-python3}
say() { printf 'wheel-smoke: %s\n' "$*"; }
die() { printf 'wheel-smoke: error: %s\n' "$*" >&2; exit 1; }

# The wheel for this interpreter: its cpXY tag, or an abi3 one that covers it.
tag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
shopt -s nullglob
wheels=("$root"/dist/batchguard-*-"$tag"-*.whl "$root"/dist/batchguard-*-abi3-*.whl)
shopt -u nullglob
((${#wheels[@]} == 1)) || die "expected one batchguard wheel for $tag in dist/, found ${#wheels[@]}: ${wheels[*]:-none} (run make wheel)"
wheel=${wheels[0]}
say "$(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"

work=$(mktemp -d "${TMPDIR:-/tmp}/batchguard-wheel-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
pip_quiet=(--quiet --no-input --disable-pip-version-check)

# 1. The tag is honoured and the extension is stripped.
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install "${pip_quiet[@]}" "auditwheel>=6,<7"
"$work/tools/bin/auditwheel" show "$wheel" | tee "$work/auditwheel.txt"
"$work/tools/bin/python" - "$wheel" "$work/auditwheel.txt" <<'PY'
"""Fail unless auditwheel's verdict covers every manylinux tag the file name claims, and the
extension has no .symtab (maturin --strip)."""
import io
import re
import sys
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile  # auditwheel's own dependency

wheel, report = Path(sys.argv[1]), Path(sys.argv[2]).read_text()

def glibc(tag: str) -> tuple[int, int]:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    if tag in legacy:
        return legacy[tag]
    major, minor = re.fullmatch(r"manylinux_(\d+)_(\d+)", tag).groups()
    return int(major), int(minor)

claimed = [glibc(t) for t in re.findall(r"(manylinux(?:1|2010|2014|_\d+_\d+))_x86_64", wheel.name)]
found = re.search(r'consistent with the following platform tag:\s*"(manylinux_\d+_\d+)_x86_64"', report)
if not claimed:
    sys.exit(f"{wheel.name} claims no manylinux tag: a plain linux_x86_64 wheel pip elsewhere refuses")
if not found:
    sys.exit("auditwheel found the wheel consistent with no manylinux policy")
needs = glibc(found.group(1))
if needs > min(claimed):
    sys.exit(f"{wheel.name} claims glibc %d.%d, but its symbols need glibc %d.%d" % (*min(claimed), *needs))
with zipfile.ZipFile(wheel) as zf:
    [so] = [n for n in zf.namelist() if re.fullmatch(r"batchguard/_native\..*\.so", n)]
    data = zf.read(so)
symtab = ELFFile(io.BytesIO(data)).get_section_by_name(".symtab")
if symtab is not None:
    sys.exit(f"{so} is not stripped: it has a .symtab")
print(f"wheel-smoke: glibc >= {needs[0]}.{needs[1]} (manylinux_{needs[0]}_{needs[1]}); {so}: {len(data) // 1024} KiB, stripped")
PY

# 2. A fresh venv: the wheel, its declared dependencies, and pytest for the smoke tests.
"$python" -m venv "$work/venv"
venv_py=$work/venv/bin/python
"$venv_py" -m pip install "${pip_quiet[@]}" "$wheel" "pytest>=8"
cd "$work"
"$venv_py" -I - "$root" <<'PY'
"""The imported package is the installed one, and nothing on sys.path leads into the checkout."""
import sys
import sysconfig
from pathlib import Path

import batchguard
import batchguard._native

checkout = Path(sys.argv[1]).resolve()
site = Path(sysconfig.get_path("platlib")).resolve()
for module in (batchguard, batchguard._native):
    where = Path(module.__file__).resolve()
    if not where.is_relative_to(site):
        sys.exit(f"{module.__name__} was imported from {where}, not from the venv's {site}")
leaks = [p for p in sys.path if p and Path(p).resolve().is_relative_to(checkout)]
if leaks:
    sys.exit(f"sys.path leads into the checkout: {leaks}")
print(f"wheel-smoke: batchguard {batchguard.__version__} from {Path(batchguard._native.__file__).resolve()}")
PY

# 3. The smoke subset, from a copy outside the checkout.
cp -r "$root/tests/smoke" "$work/smoke"
"$venv_py" -I -m pytest -q -p no:cacheprovider -W error "$work/smoke"
