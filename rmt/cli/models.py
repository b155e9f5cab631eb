"""`rmt models`: the registered pretrained models and the local cache of their conversions.

rmt.models imports transformers only when it loads something, and `rmt --help` imports it anyway
(through rmt.runs): it is imported at the top.
"""

import typer

from rmt import models
from rmt.errors import UsageError


def register(app):
    """Add the `rmt models` command group to the `rmt` app."""
    group = typer.Typer(name="models", help="Registered pretrained models (fetched from the package registry, "
                        "converted once into the cache) and what is cached.", no_args_is_help=True)

    @group.command("list")
    def list_models():
        """List the registered models and the conversions in the cache (with their size and state)."""
        cached = {c.name: c for c in models.list_cached()}
        print(f"cache: {models.models_dir()}")
        for name, entry in sorted(models.REGISTRY.items()):
            have = cached.pop(name, None)
            state = ("cached, " + f"{have.size_bytes / 1e6:.0f} MB" if have and have.problem is None
                     else f"cached but broken ({have.problem}): redone on next use" if have else "not cached")
            print(f"{name:16} {state:28} {entry.package}=={entry.version}  {entry.about}  [{entry.license}]")
        for name, have in sorted(cached.items()):
            state = f"cached, {have.size_bytes / 1e6:.0f} MB" if have.problem is None else f"broken ({have.problem})"
            print(f"{name:16} {state:28} (a converted .gguf file) {have.path}")

    @group.command("pull")
    def pull(names: list[str] = typer.Argument(..., help="Registered model names (see: rmt models list).")):
        """Fetch and convert registered models now, so that later commands load them at once."""
        for name in names:
            if name.lower() not in models.REGISTRY:
                raise UsageError(f"{name!r} is not a registered model; registered: {', '.join(sorted(models.REGISTRY))}")
        for name in names:
            print(models.pull(name.lower()))

    app.add_typer(group)
