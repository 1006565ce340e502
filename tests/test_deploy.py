"""The deploy/ recipes, checked without a cluster.

- SLURM: the jobqueue profile builds a real ``dask_jobqueue.SLURMCluster`` (a local scheduler,
  no job submitted) whose ``job_script()`` requests the GPU and runs the dask-cuda worker with
  the lifetime set; the dask config file gives the same script; the sbatch pair is sound.
- Kubernetes: the manifests parse, every worker container asks for ``nvidia.com/gpu``, the
  DaskJob runs ``faket-dask generate`` and its config validates; with dask-kubernetes
  installed, the manifests also validate against the operator's CRD schemas.
- Docker: the image installs exactly the extras the README names for GPU clusters.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SLURM = DEPLOY / "slurm"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
README = ROOT / "README.md"

GPU_INSTALL = 'pip install -c constraints.txt ".[gpu,cluster]"'
LIFETIME = "DASK_DISTRIBUTED__WORKER__LIFETIME__"
GENERATE_PREFIX = [
    "faket-dask",
    "generate",
    "-c",
    "/config/config.yaml",
    "-o",
    "/data/dataset.zarr",
    "--resume",
]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    """Seconds of a dask duration ('110m') or a SLURM time ('02:00:00', '1-00:00:00')."""
    text = text.strip().strip("\"'")
    if ":" in text:
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0)
        h, m, s = parts
        return days * 86400 + h * 3600 + m * 60 + s
    from dask.utils import parse_timedelta

    return float(parse_timedelta(text))


def _exports(script: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines of a shell script."""
    out = {}
    for m in re.finditer(r"^\s*export\s+([A-Z_][A-Z0-9_]*)=(\S+)", script, re.MULTILINE):
        out[m.group(1)] = m.group(2).strip("\"'")
    return out


def _assert_lifetime_before(exports: dict[str, str], walltime_s: float, where: str) -> None:
    duration = exports.get(LIFETIME + "DURATION")
    stagger = exports.get(LIFETIME + "STAGGER", "0s")
    assert duration, f"{where}: no {LIFETIME}DURATION: workers would die at the walltime"
    assert exports.get(LIFETIME + "RESTART", "").lower() == "false", (
        f"{where}: {LIFETIME}RESTART must be false so the worker (and the job) ends"
    )
    latest = _seconds(duration) + _seconds(stagger)
    assert latest < walltime_s, (
        f"{where}: lifetime {duration} + stagger {stagger} is not below the walltime "
        f"({walltime_s:.0f} s)"
    )


def _profile() -> dict[str, Any]:
    from faket_dask.dist.cluster import load_profile  # the CLI's own profile reader

    return load_profile(SLURM / "profile-gpu.yaml")


def _slurm_job_script(kwargs: dict[str, Any], tmp_path: Path, monkeypatch) -> str:
    """``job_script()`` of a real SLURMCluster (a local scheduler starts; no job is submitted)."""
    dask_jobqueue = pytest.importorskip(
        "dask_jobqueue", reason="dask-jobqueue is not installed (pip install '.[test]')"
    )
    monkeypatch.chdir(tmp_path)  # log_directory is created relative to the working directory
    kwargs = dict(kwargs)
    # keep everything from the file but the dashboard port, which may be taken on this machine
    kwargs["scheduler_options"] = {**kwargs.get("scheduler_options", {}), "dashboard_address": ":0"}
    with dask_jobqueue.SLURMCluster(**kwargs) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        return cluster.job_script()


def _worker_command(script: str) -> str:
    lines = [ln for ln in script.splitlines() if " -m dask_cuda.cli " in ln]
    assert len(lines) == 1, f"expected one dask_cuda.cli worker line in:\n{script}"
    return lines[0]


def _manifests(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert docs, f"{name} holds no Kubernetes object"
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), f"{name}: incomplete object {d}"
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _cluster_specs() -> list[tuple[str, str, dict[str, Any]]]:
    """(file, cluster name, DaskCluster spec) for the DaskCluster and the DaskJob's cluster."""
    dc = _one(_manifests("daskcluster-gpu.yaml"), "DaskCluster")
    dj = _one(_manifests("daskjob.yaml"), "DaskJob")
    # the operator names a DaskJob's cluster after the job (controller: cluster_name = name)
    return [
        ("daskcluster-gpu.yaml", dc["metadata"]["name"], dc["spec"]),
        ("daskjob.yaml", dj["metadata"]["name"], dj["spec"]["cluster"]["spec"]),
    ]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# ------------------------------------------------------------------------------------------
# SLURM: dask-jobqueue profile
# ------------------------------------------------------------------------------------------


def test_profile_is_a_valid_cluster_profile():
    prof = _profile()
    assert prof["cluster"] == "dask_jobqueue.SLURMCluster"
    assert prof["adapt"] == {"minimum": 1, "maximum": 16}
    kw = prof["kwargs"]
    assert kw["processes"] == 1
    assert kw["cores"] == 1, "cores is the worker's --nthreads: one task at a time per GPU"
    assert kw["worker_command"] == "dask_cuda.cli"
    assert "--gres=gpu:1" in kw["job_extra_directives"]


def test_profile_builds_slurm_cluster_with_gpu_worker(tmp_path, monkeypatch):
    kwargs = _profile()["kwargs"]
    script = _slurm_job_script(kwargs, tmp_path, monkeypatch)

    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --cpus-per-task=8" in script
    cmd = _worker_command(script)
    assert "--nthreads 1 " in cmd
    # a non-default worker command gets no dask-worker-only flags
    assert "--nworkers" not in cmd and "--nanny" not in cmd
    assert cmd.index(" -m dask_cuda.cli ") < cmd.index("tcp://")

    exports = _exports(script)
    _assert_lifetime_before(exports, _seconds(kwargs["walltime"]), "profile-gpu.yaml")
    assert exports["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert exports["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert exports["FAKET_DASK_OFFLINE"] == "1"
    assert "TORCH_HOME" in exports
    # the prologue runs before the worker starts
    assert script.index(LIFETIME + "DURATION") < script.index(" -m dask_cuda.cli ")


def test_jobqueue_config_file_gives_the_same_job_script(tmp_path, monkeypatch):
    import dask

    from_profile = _slurm_job_script(_profile()["kwargs"], tmp_path, monkeypatch)
    cfg = yaml.safe_load((SLURM / "jobqueue.yaml").read_text())
    section = cfg["jobqueue"]["slurm"]
    # as if the file were ~/.config/dask/jobqueue.yaml: merged over dask-jobqueue's defaults
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in section.items()}):
        from_config = _slurm_job_script({}, tmp_path, monkeypatch)

    def norm(s: str) -> str:
        return re.sub(r"tcp://\S+", "tcp://SCHEDULER", s)

    assert norm(from_config) == norm(from_profile)


def test_generated_worker_command_parses_with_dask_cuda(tmp_path, monkeypatch):
    """dask-cuda's own CLI accepts every argument that dask-jobqueue puts on the line."""
    cli = pytest.importorskip(
        "dask_cuda.cli", reason="dask-cuda (with cuda-bindings) is not installed here"
    )
    script = _slurm_job_script(_profile()["kwargs"], tmp_path, monkeypatch)
    argv = _worker_command(script).split()
    args = argv[argv.index("dask_cuda.cli") + 1 :]
    args = ["/tmp" if "$" in a else a for a in args]  # shell expansions
    ctx = cli.worker.make_context("dask-cuda-worker", args)
    assert ctx.params["nthreads"] == 1
    assert ctx.params["scheduler"].startswith("tcp://")
    assert ctx.params["preload_argv"] == ()  # nothing swallowed as unknown
    assert 'if __name__ == "__main__"' in Path(cli.__file__).read_text(), (
        "python -m dask_cuda.cli no longer runs the worker; use worker_command "
        "'dask_cuda.cli worker' or newer dask-jobqueue"
    )


# ------------------------------------------------------------------------------------------
# SLURM: scheduler-file sbatch pair
# ------------------------------------------------------------------------------------------


def test_sbatch_scripts():
    sched = (SLURM / "scheduler-file" / "scheduler.sbatch").read_text()
    workers = (SLURM / "scheduler-file" / "workers.sbatch").read_text()

    assert re.search(r"dask scheduler\s*\\?\s*--scheduler-file \"\$SCHEDULER_FILE\"", sched)
    assert 'SCHEDULER_FILE="$SHARED/scheduler.json"' in sched
    assert 'SCHEDULER_FILE="$SHARED/scheduler.json"' in workers

    assert re.search(r"^#SBATCH --gres=gpu:\d+", workers, re.MULTILINE)
    assert "dask cuda worker" in workers
    assert re.search(r"srun\b[^\n]*\\\n\s*dask cuda worker", workers), "workers start via srun"
    assert '--scheduler-file "$SCHEDULER_FILE"' in workers
    assert re.search(r"--nthreads 1\b", workers)

    walltime = re.search(r"^#SBATCH --time=(\S+)", workers, re.MULTILINE)
    assert walltime
    _assert_lifetime_before(_exports(workers), _seconds(walltime.group(1)), "workers.sbatch")
    assert _exports(workers)["FAKET_DASK_OFFLINE"] == "1"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("name", ["scheduler.sbatch", "workers.sbatch"])
def test_sbatch_scripts_are_valid_bash(name):
    path = SLURM / "scheduler-file" / name
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


def test_scheduler_file_readme_has_the_three_commands():
    text = (SLURM / "scheduler-file" / "README.md").read_text()
    assert "sbatch --export=ALL deploy/slurm/scheduler-file/scheduler.sbatch" in text
    assert "deploy/slurm/scheduler-file/workers.sbatch" in text
    assert re.search(r"faket-dask generate [^\n]*--scheduler-file \$SHARED/scheduler.json", text)


# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["daskcluster-gpu.yaml", "daskjob.yaml", "pvc.yaml", "client-pod.yaml"]
)
def test_manifests_parse(name):
    _manifests(name)


def test_gpu_workers_in_every_cluster():
    for fname, cluster_name, spec in _cluster_specs():
        containers = spec["worker"]["spec"]["containers"]
        assert containers, fname
        for c in containers:
            limits = c["resources"]["limits"]
            assert limits.get("nvidia.com/gpu") == "1", f"{fname}: {c['name']} has no GPU limit"
            args = c["args"]
            assert args[:3] == ["dask", "cuda", "worker"], f"{fname}: {args}"
            assert args[args.index("--name") + 1] == "$(DASK_WORKER_NAME)"
            assert args[args.index("--nthreads") + 1] == "1"
            env = _env(c)
            assert env[LIFETIME + "DURATION"] and env[LIFETIME + "STAGGER"]
            assert env["FAKET_DASK_OFFLINE"] == "1"
            assert env["TORCH_HOME"] == "/opt/torch"  # where the Dockerfile puts the weights
            assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
            assert {m["mountPath"] for m in c["volumeMounts"]} == {"/data"}

        sched = spec["scheduler"]
        (sc,) = sched["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
        # the operator looks the scheduler's ports up by these names
        assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}, fname
        for probe in ("readinessProbe", "livenessProbe"):
            assert sc[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
        svc = sched["service"]
        assert svc["selector"] == {
            "dask.org/cluster-name": cluster_name,
            "dask.org/component": "scheduler",
        }, f"{fname}: the Service would select no scheduler pod"
        assert {p["name"]: p["port"] for p in svc["ports"]} == ports


def test_daskjob_runs_generate_to_completion():
    docs = _manifests("daskjob.yaml")
    job = _one(docs, "DaskJob")
    pod = job["spec"]["job"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["args"][: len(GENERATE_PREFIX)] == GENERATE_PREFIX
    # DASK_SCHEDULER_ADDRESS is injected by the operator; a value here would override it
    assert "DASK_SCHEDULER_ADDRESS" not in _env(c)
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})

    # the config the job reads is the ConfigMap's config.yaml, and it is a valid config
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"] == "/config"
    cm = _one(docs, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    from faket_dask.config import config_from_dict

    cfg = config_from_dict(yaml.safe_load(cm["data"]["config.yaml"]), source="ConfigMap")
    assert cfg.style.device == "cuda"

    # the runner and the workers write the store at the same path on the same claim
    worker = job["spec"]["cluster"]["spec"]["worker"]["spec"]
    wmounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    wvolumes = {v["name"]: v for v in worker["volumes"]}
    assert mounts["data"] == wmounts["data"] == "/data"
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert wvolumes["data"]["persistentVolumeClaim"]["claimName"] == claim
    pvc = _one(_manifests("pvc.yaml"), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_client_pod_points_at_the_daskcluster():
    dc = _one(_manifests("daskcluster-gpu.yaml"), "DaskCluster")
    pod = _one(_manifests("client-pod.yaml"), "Pod")
    (c,) = pod["spec"]["containers"]
    assert _env(c)["DASK_SCHEDULER_ADDRESS"] == f"tcp://{dc['metadata']['name']}-scheduler:8786"
    claim = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    dclaim = {
        v["persistentVolumeClaim"]["claimName"] for v in dc["spec"]["worker"]["spec"]["volumes"]
    }
    assert claim == dclaim


def test_one_image_everywhere():
    images = set()
    for name in ("daskcluster-gpu.yaml", "daskjob.yaml", "client-pod.yaml"):
        text = (K8S / name).read_text()
        images |= set(re.findall(r"^\s*image:\s*\"?([^\"\s#]+)", text, re.MULTILINE))
    assert len(images) == 1, f"client, scheduler and workers must share one image: {images}"
    assert not next(iter(images)).endswith(":latest")


def _crd_schema(crd_dir: Path, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((crd_dir / f"{kind}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def convert(s: Any) -> Any:
        # OpenAPI v3 -> JSON Schema: int-or-string, and no unknown keys where none are allowed
        if isinstance(s, list):
            return [convert(x) for x in s]
        if not isinstance(s, dict):
            return s
        s = {k: convert(v) for k, v in s.items()}
        if s.get("x-kubernetes-int-or-string"):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if (
            "properties" in s
            and not s.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in s
        ):
            s["additionalProperties"] = False
        return s

    return convert(schema)


@pytest.mark.parametrize(
    ("name", "kind"), [("daskcluster-gpu.yaml", "DaskCluster"), ("daskjob.yaml", "DaskJob")]
)
def test_manifests_match_the_operator_crds(name, kind):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    dk = pytest.importorskip(
        "dask_kubernetes", reason="dask-kubernetes is not installed (pip install '.[cluster]')"
    )
    crd_dir = Path(dk.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds"
    if not (crd_dir / f"{kind.lower()}.yaml").is_file():
        pytest.skip(f"this dask-kubernetes ships no CRD schema at {crd_dir}")
    schema = _crd_schema(crd_dir, kind.lower())
    obj = _one(_manifests(name), kind)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors({"spec": obj["spec"]}),
        key=lambda e: list(e.path),
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


# ------------------------------------------------------------------------------------------
# Docker
# ------------------------------------------------------------------------------------------


def _dockerfile_runs() -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [ln.strip() for ln in joined.splitlines() if ln.strip()]


def test_dockerfile_installs_the_extras_the_readme_names():
    readme = README.read_text()
    assert GPU_INSTALL in readme, (
        f"README.md does not give the GPU cluster install line {GPU_INSTALL!r}; the Dockerfile "
        "installs exactly that, so the README must name it"
    )
    readme_extras = set(re.search(r'"\.\[([^\]]*)\]"', GPU_INSTALL).group(1).split(","))

    instructions = _dockerfile_runs()
    project_installs = [i for i in instructions if i.startswith("RUN") and '".[' in i]
    assert len(project_installs) == 1, project_installs
    (install,) = project_installs
    assert GPU_INSTALL in install
    extras = set(re.search(r'"\.\[([^\]]*)\]"', install).group(1).split(","))
    assert extras == readme_extras == {"gpu", "cluster"}


def test_dockerfile_order_cuda_torch_then_project_then_weights():
    ins = _dockerfile_runs()

    def first(pred) -> int:
        idx = [i for i, s in enumerate(ins) if pred(s)]
        assert idx, "instruction not found"
        return idx[0]

    base = [s for s in ins if s.startswith("ARG BASE_IMAGE=")]
    assert base, "pin the base image in ARG BASE_IMAGE"
    tag = base[0].split("=", 1)[1]
    assert ":" in tag and not tag.endswith(":latest"), f"unpinned base image {tag}"

    torch_cuda = first(lambda s: s.startswith("RUN") and "--index-url" in s and "torch==" in s)
    project = first(lambda s: s.startswith("RUN") and GPU_INSTALL in s)
    torch_home = first(lambda s: s.startswith("ENV TORCH_HOME="))
    fetch = first(lambda s: s.startswith("RUN") and "faket-dask weights fetch" in s)
    offline = first(lambda s: s.startswith("ENV") and "FAKET_DASK_OFFLINE=1" in s)
    assert torch_cuda < project, "install the CUDA torch before the project"
    assert project < fetch and torch_home < fetch < offline
    assert "ENV TORCH_HOME=/opt/torch" in ins  # the path the Kubernetes manifests use
    for s in ins:
        if s.startswith("RUN") and "pip install" in s and "--index-url" not in s:
            for part in s.split("&&"):
                if "pip install" in part and "--upgrade pip" not in part:
                    assert "-c constraints.txt" in part, f"unconstrained install: {part}"


# ------------------------------------------------------------------------------------------
# Docs and the CLI they name
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        "docs/clusters.md",
        "deploy/README.md",
        "deploy/docker/README.md",
        "deploy/slurm/scheduler-file/README.md",
    ],
)
def test_relative_links_resolve(doc):
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc}: broken link {target}"


def _cli_command(*names: str):
    typer = pytest.importorskip("typer")
    from faket_dask_cli.main import app

    cmd = typer.main.get_command(app)
    for name in names:
        sub = getattr(cmd, "commands", {}).get(name)
        if sub is None:
            pytest.skip(f"`faket-dask {' '.join(names)}` is not registered yet")
        cmd = sub
    return cmd


def test_generate_accepts_the_options_the_recipes_use():
    cmd = _cli_command("generate")
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    job = _one(_manifests("daskjob.yaml"), "DaskJob")
    used = {a for a in job["spec"]["job"]["spec"]["containers"][0]["args"] if a.startswith("-")}
    used |= {"--scheduler", "--scheduler-file", "--cluster-profile", "--resume"}
    missing = sorted(used - opts)
    assert not missing, f"faket-dask generate lacks {missing}, which deploy/ and docs/ use"


def test_weights_fetch_exists():
    _cli_command("weights", "fetch")


# ------------------------------------------------------------------------------------------
# Cluster profiles shown in the docs
# ------------------------------------------------------------------------------------------


def _doc_profiles() -> list[tuple[str, str]]:
    """(where, YAML text) of every ```yaml block in the README and docs that names a cluster."""
    found = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)
        for k, text in enumerate(blocks):
            if re.search(r"^cluster:", text, re.MULTILINE):
                found.append((f"{page.name} block {k}", text))
    return found


def test_docs_show_the_cluster_profiles():
    where = [w for w, _ in _doc_profiles()]
    assert any(w.startswith("generate.md") for w in where)
    assert any(w.startswith("clusters.md") for w in where)


@pytest.mark.parametrize("where,text", _doc_profiles(), ids=[w for w, _ in _doc_profiles()])
def test_every_profile_in_the_docs_renders(where, text, tmp_path, monkeypatch):
    """Each profile loads as the CLI loads it; a dask-jobqueue one renders a sound job script:
    one thread per dask-cuda GPU worker, and worker lifetime keys that reach the script."""
    from faket_dask.dist.cluster import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text(text)
    prof = load_profile(path)
    if not prof["cluster"].startswith("dask_jobqueue."):
        return  # e.g. dask_kubernetes' KubeCluster: it needs a Kubernetes API to build
    lifetime_in_client = [k for k in prof.get("dask_config") or {} if "lifetime" in k]
    assert not lifetime_in_client, (
        f"{where}: dask_config {lifetime_in_client} is set in the client and never reaches "
        "the workers' job script; export it in job_script_prologue"
    )
    kwargs = prof["kwargs"]
    script = _slurm_job_script(kwargs, tmp_path, monkeypatch)
    if kwargs.get("worker_command") == "dask_cuda.cli":
        assert "--nthreads 1 " in _worker_command(script), f"{where}: one task per GPU"
        assert "#SBATCH --gres=gpu:1" in script
    exports = _exports(script)
    if any(k.startswith(LIFETIME) for k in exports) or where.startswith("generate.md"):
        _assert_lifetime_before(exports, _seconds(kwargs["walltime"]), where)
