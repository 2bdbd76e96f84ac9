"""The package installed for real, in throw-away virtual environments, and run from another folder.

`pip install .` (a wheel, not editable) must carry the bundled model, its tokenizer and the corpus as
minicohere/_assets/, so `python -m minicohere generate` works with no clone in sight. And the editable
install that scripts/setup.sh makes must beat a folder named `minicohere` holding the clone, which a
script saved next to that folder would otherwise import as an empty namespace package.

Each venv sees the packages of the Python that runs the tests, whether that is the system's Python or a
learner's venv: a .pth file in the throw-away venv adds the running interpreter's site-packages (torch is
not installed again). `--system-site-packages` would not do: inside a venv it names the *base* Python's
site-packages, not the venv's. pip builds with the setuptools already there (--no-build-isolation,
--no-index): nothing is downloaded. scripts/setup.sh makes sure that setuptools can build a wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# what a build needs from the repository: the package, its assets and the project metadata
PROJECT_FILES = ["pyproject.toml", "README.md", "minicohere", "assets"]


def clean_env(**extra) -> dict:
    """The environment of a learner's shell: no PYTHONPATH to this checkout, no asset override, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MINICOHERE_ASSETS")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def running_site_dirs() -> list[str]:
    """The site-packages folders of the Python running the tests (a venv's own, plus its base's where the
    venv was made with --system-site-packages), and the user's, as this interpreter sees them."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if d in sys.path]


def make_venv(path: Path) -> Path:
    # --without-pip: the running Python's pip, visible through the .pth file below, installs into the venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    # an `import` line of a .pth file runs at start-up: addsitedir also reads the .pth files found there
    # (editable installs, setuptools' own), which a plain path line would not
    lines = [f"import site; site.addsitedir({d!r})" for d in running_site_dirs()]
    (Path(own_site) / "zz_running_python.pth").write_text("\n".join(lines) + "\n")
    return python


def pip_install(python: Path, *args, cwd: Path):
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", *args], capture_output=True, text=True, env=clean_env(), cwd=cwd,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv with `pip install .` of a copy of this checkout; the copy is deleted afterwards."""
    base = tmp_path_factory.mktemp("install")
    project = copy_project(base / "project")
    python = make_venv(base / "venv")
    pip_install(python, str(project), cwd=base)
    shutil.rmtree(project)  # whatever runs now can only come from the installed package
    return python, base


def test_regular_install_runs_the_main_job_from_another_folder(installed, tmp_path):
    python, base = installed
    out = subprocess.run([str(python), "-m", "minicohere", "generate", "--prompt", "Once upon a time",
                          "--max-new-tokens", "5", "--greedy"], capture_output=True, text=True,
                         env=clean_env(), cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Once upon a time") and len(out.stdout) > len("Once upon a time\n")
    assert out.stderr == ""


def test_regular_install_ships_the_assets_inside_the_package(installed, tmp_path):
    python, base = installed
    probe = ("import minicohere\n"
             "print(minicohere.__file__)\n"
             "for name in ('tiny-command-r', 'tokenizer', 'corpus/val.txt'):\n"
             "    print(minicohere.bundled_path(name))\n"
             "print(minicohere.Tokenizer.default().vocab_size)\n")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    package_file, *assets, vocab = out.stdout.splitlines()
    package = Path(package_file).parent
    assert package.is_relative_to(base / "venv"), package  # not this checkout, not the system's editable install
    for path in map(Path, assets):
        assert path.is_relative_to(package / "_assets") and path.exists(), path
    assert (Path(assets[0]) / "model.safetensors").is_file()
    assert int(vocab) > 0


def test_editable_install_beats_a_clone_folder_named_minicohere(tmp_path):
    # the clone lives in ~/minicohere and the learner's script in ~: the script's folder comes first on
    # sys.path, where `minicohere` is a folder without __init__.py
    home = tmp_path / "home"
    clone = copy_project(home / "minicohere")
    python = make_venv(tmp_path / "venv")
    # what scripts/setup.sh runs, without installing the dependencies (--no-deps)
    command = ["-e", ".[course]", "--config-settings", "editable_mode=compat"]
    assert " ".join(command).replace(".[course]", '".[course]"') in (REPO / "scripts" / "setup.sh").read_text()
    pip_install(python, *command, cwd=clone)
    (home / "script.py").write_text("import minicohere\n"
                                    "print(minicohere.__file__)\n"
                                    "print(minicohere.bundled_path('tiny-command-r'))\n")
    out = subprocess.run([str(python), "script.py"], capture_output=True, text=True, env=clean_env(), cwd=home,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    package_file, model = out.stdout.splitlines()
    assert Path(package_file).resolve() == (clone / "minicohere" / "__init__.py").resolve()
    assert Path(model).resolve() == (clone / "assets" / "tiny-command-r").resolve()
