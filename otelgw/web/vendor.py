"""Re-vendor the UI's front-end libraries from the npm registry (needs node/npm; `make run`
does not: the output is committed under static/vendor/).

    python otelgw/web/vendor.py

Pinned versions below; the files are copied as published, with bare module specifiers
("preact", "htm") rewritten to relative paths so the browser loads them without an import map
(which a strict Content-Security-Policy would have to allow).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {"preact": "10.29.8", "htm": "3.1.1", "uplot": "1.6.32"}
# (package, file in the package, vendored name)
FILES = [
    ("preact", "dist/preact.module.js", "preact.module.js"),
    ("preact", "hooks/dist/hooks.module.js", "hooks.module.js"),
    ("htm", "dist/htm.module.js", "htm.module.js"),
    ("uplot", "dist/uPlot.esm.js", "uPlot.esm.js"),
    ("uplot", "dist/uPlot.min.css", "uPlot.min.css"),
]
LICENCES = {"preact": "MIT", "htm": "Apache-2.0", "uplot": "MIT"}
REWRITES = {'from"preact"': 'from"./preact.module.js"', "from 'preact'": "from './preact.module.js'",
            'from "preact"': 'from "./preact.module.js"'}
OUT = Path(__file__).resolve().parent / "static" / "vendor"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in PACKAGES.items():
            subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as archive:
                archive.extractall(Path(tmp) / name, filter="data")
        for package, source, target in FILES:
            text = (Path(tmp) / package / "package" / source).read_text()
            for old, new in REWRITES.items():
                text = text.replace(old, new)
            (OUT / target).write_text(text)
        for package in LICENCES:
            shutil.copy(Path(tmp) / package / "package" / "LICENSE", OUT / f"LICENSE.{package}")
    lines = ["# Vendored front-end libraries (otelgw/web/vendor.py)", "",
             "| package | version | licence |", "| --- | --- | --- |"]
    lines += [f"| {name} | {version} | {LICENCES[name]} (LICENSE.{name}) |" for name, version in PACKAGES.items()]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
