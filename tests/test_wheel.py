"""The wheel built from this repository works without the checkout: the CLI indexes and
searches, ``snoop_nb.ui`` imports and finds its widget templates, and ``snoop dashboard``
serves the dashboard notebook, all from the installed package.

The wheel goes into a fresh virtual environment whose only other content is a path to this
environment's site-packages (for torch and the rest, which a test cannot reinstall in minutes).
A path line in a ``.pth`` file adds the folder without running the ``.pth`` files inside it, so
the editable install of the checkout stays out of the new environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest
from dashboard import free_port
from mediafiles import photo

ROOT = Path(__file__).resolve().parents[1]
PIP = (sys.executable, "-m", "pip")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """A wheel of the repository, installed in a fresh environment outside the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w", str(dist)],
        check=True,
        cwd=work,
    )
    (wheel,) = dist.glob("snoop_nb-*.whl")
    env_dir = work / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "snoop_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        cwd=work,
    )
    return {"work": work, "python": python, "snoop": env_dir / "bin" / "snoop", "site": site}


def clean_env() -> dict[str, str]:
    """The environment for the wheel's commands. Jupyter's data files (Voila's templates, the
    widgets' front-end extensions) are installed under the prefix of the environment that
    holds their packages, which here is this one, not the wheel's: JUPYTER_PATH says so."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    return env


def run(installed, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """A command in the wheel's environment, run from a folder outside the checkout."""
    return subprocess.run(
        list(args),
        cwd=installed["work"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_wheel_carries_the_widget_templates_and_the_dashboard(installed):
    code = (
        "import json, snoop_nb, snoop_nb.ui\n"
        "from snoop_nb.ui.assets import asset\n"
        "from snoop_nb.ui.dashboard import dashboard_notebook\n"
        "print(json.dumps({'package': snoop_nb.__file__, 'grid': asset('image_grid.vue'),"
        " 'dashboard': str(dashboard_notebook())}))\n"
    )
    out = run(installed, str(installed["python"]), "-c", code)
    assert out.returncode == 0, out.stderr
    where = json.loads(out.stdout)
    site = str(installed["site"])
    assert all(path.startswith(site) for path in where.values()), where
    assert not any(path.startswith(str(ROOT)) for path in where.values()), where
    assert "<template>" in Path(where["grid"]).read_text()
    assert json.loads(Path(where["dashboard"]).read_text())["cells"]


def test_wheel_cli_indexes_searches_and_serves_the_dashboard(installed):
    images = installed["work"] / "images"
    images.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        photo(name).resize((160, 120)).save(images / f"{name}.jpg")
    col = installed["work"] / "col.snoop"
    snoop = str(installed["snoop"])
    out = run(installed, snoop, "index", str(images), "--collection", str(col), "--quiet")
    assert out.returncode == 0, out.stderr
    out = run(installed, snoop, "search", "--collection", str(col), "--text", "a cat", "-k", "1")
    assert out.returncode == 0, out.stderr
    assert "chelsea" in out.stdout

    port = free_port()
    log = open(installed["work"] / "dashboard.log", "wb")  # noqa: SIM115
    cmd = [snoop, "dashboard", "--collection", str(col), "--port", str(port), "--preheat", "0"]
    proc = subprocess.Popen(cmd, cwd=installed["work"], env=clean_env(), stdout=log, stderr=log)
    try:
        body = _get_page(f"http://127.0.0.1:{port}/", proc, timeout=180)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    # the notebook ran in a kernel of the wheel's environment and produced the App's widgets
    assert "application/vnd.jupyter.widget-view+json" in body, body[-2000:]


def _get_page(url: str, proc: subprocess.Popen, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"snoop dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                assert response.status == 200
                return response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
