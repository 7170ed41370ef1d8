"""The container recipe (Dockerfile, .dockerignore, README "Container") is consistent with the
repository. Docker does not run here, so the image itself is not built by these tests: they
check what can be checked without it.
"""
import re
from pathlib import Path

import dfd_kit

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list:
    """The arguments of every *name* instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.M)]


def test_every_file_the_dockerfile_copies_or_runs_exists():
    named = []
    for args in _instructions("COPY"):
        named += [a for a in args.split()[:-1] if not a.startswith("--") and a != "."]
    for args in _instructions("RUN") + _instructions("ENTRYPOINT"):
        named += re.findall(r"(?:binder|scripts)/[\w./-]+", args)
    assert "binder/apt.txt" in named and "binder/postBuild" in named and "binder/start" in named
    for path in named:
        assert (ROOT / path).is_file(), f"the Dockerfile names {path}, which does not exist"


def test_the_image_starts_jupyterlab_through_binders_start_script():
    """binder/start pins the Jittor cache that binder/postBuild compiled into the image."""
    assert _instructions("ENTRYPOINT") == ['["bash", "binder/start"]']
    assert "jupyter" in _instructions("CMD")[0] and "8888" in _instructions("CMD")[0]


def test_the_build_context_leaves_out_environments_caches_data_and_the_official_weights():
    ignored = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    for path in (".git", ".venv", "node_modules", ".cache", "data", "runs", "Params/AE_whole", "Params/Combine"):
        assert path in ignored, f"{path} would be sent to docker build"
    assert "Params" not in ignored and "Params/demo" not in ignored   # the demo model is in the image


def test_the_readme_mounts_the_official_weights_where_the_loader_reads_them():
    workdir = _instructions("WORKDIR")[-1]
    readme = (ROOT / "README.md").read_text()
    params = dfd_kit.PARAMS_ROOT.relative_to(dfd_kit.REPO_ROOT)
    for part in ("AE_whole", "Combine"):
        assert f'-v "$PWD/Params/{part}:{workdir}/{params}/{part}"' in readme
    assert f'-v "$PWD/drawings:{workdir}/drawings"' in readme


def test_scripts_run_by_bash_in_the_container_keep_lf_line_endings():
    """A Windows checkout would otherwise give them CR LF, on which bash fails."""
    attributes = (ROOT / ".gitattributes").read_text()
    for pattern in ("*.sh", "binder/postBuild", "binder/start", "Dockerfile"):
        assert re.search(rf"^{re.escape(pattern)}\s+text eol=lf$", attributes, re.M), pattern
