"""The layers hold: import-linter's contracts (pyproject.toml) and a light `station --help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_every_import_contract_is_kept():
    result = subprocess.run(
        [str(LINT_IMPORTS)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_the_linter_does_catch_a_layer_broken(tmp_path):
    """The check can fail: a contract that the service may not use the tracker is broken."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "station"\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "tracker above service (wrong on purpose)"\ntype = "layers"\n'
        'layers = ["station.tracker", "station.service"]\n'
    )
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "station.service.line_station -> station.tracker" in result.stdout


def test_station_help_loads_no_opencv_litert_or_tensorflow():
    code = (
        "import sys\n"
        "from station.cli import main\n"
        "for args in (['--help'], ['run', '--help'], ['soak', '--help'], ['calibrate', '-h']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'cv2', 'ai_edge_litert') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
