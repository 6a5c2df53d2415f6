"""dvc.yaml is complete: every file a stage imports or reads is one of its deps or params, so DVC reruns the
stage when it changes. Stages are read through DVC itself (foreach expanded, params interpolated), configs
composed by Hydra with each stage's own overrides, imports followed through the source (also inside
functions). Deps are folders by layer (at most 8 per stage); the config files a stage composes are DVC
params; the CLI, serving and team infrastructure are no stage's dep."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_pipeline.core.workspace import CONF_DIR
from tests.helpers import REPO

SRC = REPO / "src"
MAX_DEPS = 8
NO_STAGE_DEPENDS_ON = ["src/mnist_pipeline/cli", "src/mnist_pipeline/team", "src/mnist_pipeline/serving"]


class Stage(NamedTuple):
    name: str
    cmd: str
    deps: list[str]  # dvc.yaml `deps:` (files and folders)
    params: dict[str, list[str]]  # dvc.yaml `params:` by file: the keys tracked, [] for the whole file
    outs: list[str]


def stages() -> list[Stage]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [
            Stage(
                s.addressing,
                s.cmd,
                [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)],
                {d.def_path: list(d.params) for d in s.deps if isinstance(d, ParamsDependency)},
                [o.def_path for o in s.outs],
            )
            for s in repo.index.stages
        ]


def module_file(name: str, src: Path = SRC) -> Path | None:
    base = src.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def only_a_docstring(tree: ast.Module) -> bool:
    """A module with no statement but its docstring: importing it cannot change what a stage computes."""
    body = tree.body
    return not body or (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


def imported_files(*modules: str, src: Path = SRC) -> set[str]:
    """The package's files loaded when `modules` run: their imports at any depth and any place in the code,
    and the __init__ of every package on the way; a module that holds only a docstring is left out. Paths are
    relative to the folder holding `src`."""
    seen: set[Path] = set()
    needed: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if not name.startswith("mnist_pipeline"):
            continue
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(name, src)
        if path is None or path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        if not only_a_docstring(tree):
            needed.add(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return {path.relative_to(src.parent).as_posix() for path in needed}


def targets(node) -> list[str]:
    """Every `_target_` in a config as plain containers (models, Hydra callbacks)."""
    if isinstance(node, dict):
        return ([str(node["_target_"])] if "_target_" in node else []) + [t for v in node.values() for t in targets(v)]
    if isinstance(node, list):
        return [t for item in node for t in targets(item)]
    return []


def target_modules(config) -> list[str]:
    """`mnist_pipeline.ml.models.convnet` -> `mnist_pipeline.ml.models` (the longest prefix that is a module)."""
    modules = []
    for target in targets(OmegaConf.to_container(config, resolve=False)):
        parts = target.split(".")
        modules += [".".join(parts[:i]) for i in range(len(parts), 0, -1) if module_file(".".join(parts[:i]))][:1]
    return modules


def composed(cmd: str):
    """The stage's module and its config as its command composes it."""
    words = [w for w in shlex.split(cmd) if not (w.split("=", 1)[0].isupper() and "=" in w)]  # drop VAR=value
    assert words[:2] == ["python", "-m"], cmd
    module, overrides = words[2], words[3:]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(module.rsplit(".", 1)[1], overrides=overrides, return_hydra_config=True)
    return module, cfg


def config_files(name: str, cfg) -> set[str]:
    """The primary config and the option file of every config group the composition chose, but the Hydra
    block's (the `hydra` group and Hydra's own `hydra/...` groups): it only says where Hydra writes its own
    logs and how the console looks (test_the_hydra_block_sets_only_hydra_settings holds it to that)."""
    files = {f"conf/{name}.yaml"}
    for group, option in cfg.hydra.runtime.choices.items():
        if option is not None and group != "hydra" and not group.startswith("hydra/"):
            files.add(f"conf/{group}/{option}.yaml")
    return files


def params_keys(cfg) -> set[str]:
    """The params.yaml keys a config reads through `${params:key}`."""
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=False)
    return set(re.findall(r"\$\{params:([\w.-]+)\}", text))


def path_settings(cfg) -> dict[str, str]:
    """Settings that name a file or folder the stage reads or writes (`*_dir`, `*_file`), outside `hydra`."""

    def keys(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and key != "hydra":
                yield from keys(value, f"{prefix}{key}.")
            elif str(key).endswith(("_dir", "_file")):
                yield f"{prefix}{key}"

    return {key: str(OmegaConf.select(cfg, key)) for key in keys(OmegaConf.to_container(cfg, resolve=False))}


def covered(path: str, declared: list[str]) -> bool:
    return any(path == d or PurePosixPath(path).is_relative_to(d) for d in declared)


def whole_files(params: dict[str, list[str]]) -> list[str]:
    """The params files a stage tracks whole (`- conf/model/deep_cnn.yaml:` with no keys)."""
    return [path for path, keys in params.items() if not keys]


STAGES = stages()
IDS = [s.name for s in STAGES]


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_every_imported_module_and_config_file_is_a_dep_or_a_params_file(stage):
    module, cfg = composed(stage.cmd)
    modules = imported_files(module, *target_modules(cfg))
    missing = sorted(path for path in modules if not covered(path, stage.deps))
    assert not missing, f"{stage.name} imports these but does not depend on them in dvc.yaml: {missing}"
    configs = config_files(module.rsplit(".", 1)[1], cfg)
    missing = sorted(path for path in configs if not covered(path, stage.deps + whole_files(stage.params)))
    assert not missing, f"{stage.name} composes these but lists them neither as deps nor as params: {missing}"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_every_params_yaml_value_a_config_reads_is_a_param_of_the_stage(stage):
    """conf/ reads DVC's values from params.yaml (`${params:train.epochs}`): the stage must track them there."""
    _, cfg = composed(stage.cmd)
    tracked = stage.params.get("params.yaml", [])
    untracked = sorted(key for key in params_keys(cfg) if not any(key == t or key.startswith(f"{t}.") for t in tracked))
    assert not untracked, f"{stage.name} reads params.yaml's {untracked} but tracks only {tracked}"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_every_path_a_stage_uses_is_declared(stage):
    """data_dir, model_dir, reports_dir...: what a stage reads is a dep, what it writes an out; the reverse
    direction (outs inside a folder setting) counts too, e.g. reports_dir=reports and reports/summary.json."""
    _, cfg = composed(stage.cmd)
    declared = [*stage.deps, *stage.outs, *stage.params]
    undeclared = {
        key: path
        for key, path in path_settings(cfg).items()
        if not (covered(path, declared) or any(PurePosixPath(d).is_relative_to(path) for d in declared))
    }
    assert not undeclared, f"{stage.name} uses paths dvc.yaml does not declare: {undeclared}"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_each_stage_lists_at_most_eight_deps(stage):
    assert len(stage.deps) <= MAX_DEPS, f"{stage.name}: {len(stage.deps)} deps: {stage.deps}"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_no_stage_depends_on_the_cli_serving_or_team_code(stage):
    """Editing the CLI, the tracking server or the PostgreSQL code reruns no stage: no dep is one of those
    folders, inside one, or a folder holding one (e.g. all of src/mnist_pipeline)."""
    overlapping = [
        d
        for d in stage.deps
        for f in NO_STAGE_DEPENDS_ON
        if PurePosixPath(d).is_relative_to(f) or PurePosixPath(f).is_relative_to(d)
    ]
    assert not overlapping, f"{stage.name} depends on {overlapping}"


def test_trained_models_depend_on_the_pinned_environment_and_their_scores_on_the_models():
    """A TensorFlow/Keras upgrade (requirements.lock) retrains; each evaluate then reruns because its model
    changed (a retrain always writes a new run id into run.json), so evaluate does not list the lock itself.
    prepare (NumPy's exact /255 scaling) and report (bookkeeping over the evaluated files) do not rerun for it."""
    with_lock = {stage.name.split("@")[0] for stage in STAGES if "requirements.lock" in stage.deps}
    assert with_lock == {"train"}
    train_outs = {s.name.split("@")[1]: s.outs for s in STAGES if s.name.startswith("train@")}
    for stage in STAGES:
        if stage.name.startswith("evaluate@"):
            variant = stage.name.split("@")[1]
            assert train_outs[variant] == [f"models/{variant}"] and f"models/{variant}" in stage.deps, stage.name


def test_the_dependency_walk_follows_the_stages_imports():
    """report imports evaluation.files, data.prepared and tracking.logged_models, each with its package's
    __init__ (tracking's is a docstring: not needed); the top package's __init__ holds only its docstring."""
    files = imported_files("mnist_pipeline.report")
    assert {
        "src/mnist_pipeline/report.py",
        "src/mnist_pipeline/evaluation/files.py",
        "src/mnist_pipeline/data/prepared.py",
        "src/mnist_pipeline/tracking/logged_models.py",
        "src/mnist_pipeline/core/__init__.py",
    } <= files
    assert "src/mnist_pipeline/__init__.py" not in files
    assert not any(PurePosixPath(f).is_relative_to(d) for f in files for d in NO_STAGE_DEPENDS_ON)


def test_the_dependency_walk_sees_imports_inside_functions_and_skips_docstring_only_modules(tmp_path):
    package = tmp_path / "src" / "mnist_pipeline"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": '"""Only a docstring: cannot change what a stage computes."""\n',
        "stage.py": '"""A stage."""\n\ndef run():\n    from mnist_pipeline.sub import lazy\n    return lazy.VALUE\n',
        "sub/__init__.py": '"""A docstring"""\nVALUE = 1  # one statement: it counts\n',
        "sub/lazy.py": "import mnist_pipeline.sub.empty\nVALUE = 2\n",
        "sub/empty.py": "",
        "unused.py": "VALUE = 3\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert imported_files("mnist_pipeline.stage", src=tmp_path / "src") == {
        "src/mnist_pipeline/stage.py",
        "src/mnist_pipeline/sub/__init__.py",
        "src/mnist_pipeline/sub/lazy.py",
    }


def test_the_hydra_block_sets_only_hydra_settings():
    """conf/hydra/ is exempt from the deps above because it lands under `hydra:` only: no `@package` moves it
    elsewhere, so it cannot change a stage's settings."""
    for path in (REPO / "conf" / "hydra").rglob("*.yaml"):
        assert "@package" not in path.read_text(), path
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        with_block = compose("evaluate", overrides=["variant=v"])
        without = compose("evaluate", overrides=["variant=v", "~hydra"])
    assert with_block == without
