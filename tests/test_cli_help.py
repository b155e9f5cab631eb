"""One CLI vocabulary: every option of every command has a one-line description, flags show no
`<bool>` type, a default is said once, and the commands share option names."""

import re

import pytest
import typer.main
from typer.testing import CliRunner

from rmt.cli import app

COMMAND = typer.main.get_command(app)


def _leaves(group, prefix=()):
    """Every command, groups' subcommands by their path ("models pull")."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _leaves(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


LEAVES = dict(_leaves(COMMAND))
COMMANDS = sorted(LEAVES)


def options(name):
    return [p for p in LEAVES[name].params if p.param_type_name == "option" and not p.hidden]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_a_description_and_one_default(name):
    assert options(name) or name.startswith("models "), name  # `rmt models list/pull` take no options
    for option in options(name):
        text = (option.help or "").strip()
        assert text, f"rmt {name} {option.opts[0]} has no description"
        assert "\n" not in text
        said = len(re.findall(r"default", text, re.I))
        shown = option.show_default not in (False, None) and option.default not in (None, False, ()) and not option.is_flag
        assert said + shown <= 1, f"rmt {name} {option.opts[0]}: default said twice ({text!r})"


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_shows_no_bool_type(name):
    result = CliRunner().invoke(app, (name.split() if name else []) + ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "(default:" not in result.output or name is None


def test_shared_vocabulary():
    flags = {name: {o for p in options(name) for o in p.opts} for name in COMMANDS}
    for name in ("generate", "eval"):
        assert {"--tasks", "--lengths", "--samples", "--seed"} <= flags[name]
    assert "--n-facts" in flags["generate"] and "--n-facts" in flags["train"]
    assert "--prompts" in flags["eval"]
    assert "--task" not in flags["generate"] and "--facts" not in flags["generate"]  # hidden old spellings


def test_train_background_help_says_none_trains_on_the_facts_alone():
    (option,) = [o for o in options("train") if "--background" in o.opts]
    assert "'none'" in option.help and "facts alone" in option.help
