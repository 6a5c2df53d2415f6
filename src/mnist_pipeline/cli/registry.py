"""`mnist-pipeline registry [rollback VERSION]`: the registered versions, and moving the alias back."""

from __future__ import annotations

import argparse

from mnist_pipeline.cli.common import fail, open_store, registered_model, reported

VERSION_COLUMNS = (
    ("version", 7),
    ("variant", 22),
    ("val acc", 8),
    ("test acc", 8),
    ("data", 12),
    ("commit", 10),
    ("dvc exp", 16),
)


def format_versions(versions, alias: str, holder: int | None) -> str:
    """One line per version; `*` marks the one `alias` points to (version `holder`)."""

    def cell(value: str, width: int) -> str:
        return value if len(value) <= width else value[: width - 1] + "~"

    def accuracy(text: str | None) -> str:
        try:
            return f"{float(text):.4f}"  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "-"

    lines = ["  " + " ".join(f"{name:<{width}}" for name, width in VERSION_COLUMNS)]
    for v in versions:
        t = v.tags
        values = (
            f"v{v.number}",
            t.get("variant", "-"),
            accuracy(t.get("val_accuracy")),
            accuracy(t.get("test_accuracy")),
            t.get("data.sha256", "-")[:12] or "-",
            t.get("git.commit", "-")[:10] or "-",
            t.get("dvc.exp") or "-",
        )
        mark = "*" if v.number == holder else " "
        lines.append(f"{mark} " + " ".join(f"{cell(x, w):<{w}}" for x, (_, w) in zip(values, VERSION_COLUMNS)))
    lines.append(f"* = @{alias}")
    return "\n".join(lines)


def registry_command(args: argparse.Namespace) -> int:
    name = args.name or registered_model(args.dataset)
    with reported():
        open_store(args)
        from mnist_pipeline.tracking import registry

        if args.action == "rollback":
            return rollback(registry, name, args.alias, args.version)
        versions = registry.versions(name)
        held = registry.holder(name, args.alias)
    if not versions:
        print(f"no versions of {name} registered yet: run the pipeline (dvc repro)")
        return 0
    print(format_versions(versions, args.alias, held.number if held else None))
    return 0


def rollback(registry, name: str, alias: str, version: int | None) -> int:
    if version is None:
        raise fail("rollback needs the VERSION to move the alias to (see `mnist-pipeline registry`)", code=2)
    versions = {v.number: v for v in registry.versions(name)}
    target = versions.get(version)
    if target is None:
        listed = ", ".join(f"v{n}" for n in versions) or "none"
        raise fail(f"{name} has no version {version} (registered: {listed})")
    before = registry.holder(name, alias)
    registry.set_alias(name, alias, target.number)
    was = f"v{before.number} {before.tags.get('variant', '?')}" if before else "no version"
    print(f"@{alias}: v{target.number} {target.tags.get('variant', '?')} (was {was})")
    return 0
