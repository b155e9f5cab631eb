"""User mistakes are one `error:` line; bugs show where they are; --debug / RMT_DEBUG shows everything."""

import subprocess
import sys

import pytest

from tests.cli_util import one_error_line, run_cli


def test_usage_error_is_the_project_error_and_a_value_error():
    import rmt.cli
    from rmt.errors import UsageError

    assert rmt.cli.UsageError is UsageError and issubclass(UsageError, ValueError)


def test_a_bug_shows_its_traceback_not_one_line(monkeypatch, capsys):
    """A plain ValueError from inside a library (or a plain bug) is not the user's mistake."""
    from rmt import models
    from rmt.cli import main

    def broken():
        raise ValueError("boom from inside a library")

    monkeypatch.setattr(models, "list_cached", broken)
    with pytest.raises(ValueError, match="boom from inside a library"):
        main(["models", "list"])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_in_a_real_process_prints_the_traceback(tmp_path):
    """The same through the installed entry point: a traceback naming the failing code, exit 1."""
    script = ("import rmt.models, rmt.cli\n"
              "def broken(): raise ValueError('boom')\n"
              "rmt.models.list_cached = broken\n"
              "rmt.cli.main(['models', 'list'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "in broken" in done.stderr and "ValueError: boom" in done.stderr


def test_user_error_is_one_line(capsys):
    code, out, err = run_cli(capsys, "models", "pull", "no-such-model")
    assert "'no-such-model' is not a registered model" in one_error_line(code, err)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(capsys, monkeypatch, how):
    args = ["models", "pull", "no-such-model"]
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("RMT_DEBUG", "1")
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert "Traceback" in err and "UsageError" in err
    assert err.strip().splitlines()[-1].startswith("error: 'no-such-model' is not a registered model")
    # --debug lasts one call: the next one is a plain line again
    monkeypatch.delenv("RMT_DEBUG", raising=False)
    one_error_line(*run_cli(capsys, *args[-3:])[::2])


def test_a_broken_model_dir_is_the_users_error_naming_it(tmp_path, capsys):
    """What transformers raises for a model dir it cannot read is said as a user error naming the dir."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": ')  # cut short
    code, out, err = run_cli(capsys, "eval", broken, "--samples", "1", "--lengths", "0k", "--tasks", "qa1",
                             "--store", tmp_path / "r.sqlite")
    line = one_error_line(code, err)
    assert f"cannot load model {str(broken)!r}" in line


def test_loading_a_broken_tokenizer_names_the_dir(tmp_path):
    from rmt import runs
    from rmt.errors import UsageError

    broken = tmp_path / "tok"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("not json")
    (broken / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UsageError, match="cannot load model .*tok"):
        runs.load_tokenizer(broken)
