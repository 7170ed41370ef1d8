"""The three places that name dependencies agree: pyproject.toml, environment.yml and
binder/environment.yml (Binder ignores top-level files when binder/ exists)."""
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), 1)[0].lower().replace("_", "-")


def _env_requirements(path: Path) -> dict:
    reqs = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s+-\s+(.+?)\s*$", line)
        if m and not m.group(1).endswith(":") and not m.group(1).startswith("-e"):
            req = m.group(1).replace(" ", "")
            if "=" in req and not re.search(r"[<>=]=|[<>]", req):   # conda's single '='
                req = req.replace("=", "==")
            reqs[_name(req)] = req
    return reqs


def _pyproject_requirements() -> dict:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_name(d): d.replace(" ", "") for d in deps}


def test_binder_environment_is_identical_to_top_level():
    assert (ROOT / "binder" / "environment.yml").read_text() == (ROOT / "environment.yml").read_text()


def test_environment_pins_every_pyproject_dependency_the_same_way():
    env, py = _env_requirements(ROOT / "environment.yml"), _pyproject_requirements()
    for name, req in py.items():
        assert name in env, f"{name} is in pyproject.toml but not in environment.yml"
        assert env[name] == req, f"{name}: pyproject says {req}, environment.yml says {env[name]}"


def test_environment_uses_python_311_and_numpy_below_2():
    env = _env_requirements(ROOT / "environment.yml")
    assert env["python"] == "python==3.11"
    assert "<2" in env["numpy"]


def test_jupyterlab_settings_are_written_and_merged(tmp_path):
    """scripts/jupyterlab_settings.py (run by `make setup` and binder/postBuild) turns comms
    over kernel subshells off in an environment's JupyterLab, keeping other overrides."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("jl_settings", ROOT / "scripts" / "jupyterlab_settings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                "@jupyterlab/apputils-extension:kernels-settings": {"showStatusBarItem": False}}))
    assert mod.write_overrides(tmp_path) == path
    got = json.loads(path.read_text())
    assert got["@jupyterlab/apputils-extension:kernels-settings"] == {"showStatusBarItem": False,
                                                                      "commsOverSubshells": "disabled"}
    assert got["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    # the setting exists in the JupyterLab this project installs
    import sys

    kernels = Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/apputils-extension/kernels-settings.json"
    assert "commsOverSubshells" in json.loads(kernels.read_text())["properties"]
