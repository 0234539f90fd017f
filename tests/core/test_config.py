"""Config loading, overrides and validation errors: each names the key, what is valid, and the fix."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core import entrypoint
from core.train import optim

CONFIG = textwrap.dedent('''
    import ml_collections
    from core.train.optim import optimizer_config

    def get_config(variant="full"):
      c = ml_collections.ConfigDict()
      c.seed = 0
      c.batch_size = 8
      c.data_dir = ""
      c.layers = (4, 4)
      c.use_bias = True
      c.variant = variant
      c.optimizer = optimizer_config(learning_rate=0.1)
      return c
''')


@pytest.fixture
def config_path(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text(CONFIG)
  return str(path)


def test_overrides_parse_as_the_existing_type(config_path):
  config = config_lib.load_config(config_path + ":quick", [
      "batch_size=16", "optimizer.learning_rate=3e-4", "layers=(8, 2)", "use_bias=false",
      "optimizer.name=sgd"])
  assert config.batch_size == 16 and isinstance(config.batch_size, int)
  assert config.optimizer.learning_rate == pytest.approx(3e-4)
  assert config.layers == (8, 2)
  assert config.use_bias is False
  assert config.optimizer.name == "sgd"
  assert config.variant == "quick"


def test_tuple_items_must_have_the_defaults_item_type(tmp_path):
  path = tmp_path / "tuples.py"
  path.write_text("import ml_collections\n\ndef get_config():\n  c = ml_collections.ConfigDict()\n"
                  "  c.sizes = (4, 4)\n  c.rates = (0.5,)\n  c.names = ('a',)\n  c.empty = ()\n  return c\n")
  config = config_lib.load_config(str(path), ["sizes=(8,)", "rates=(1, 0.25)", "names=('x', 'y')", "empty=(1, 'b')"])
  assert config.sizes == (8,) and config.names == ("x", "y") and config.empty == (1, "b")
  assert config.rates == (1.0, 0.25) and type(config.rates[0]) is float  # an int item is taken as a float
  assert config_lib.load_config(str(path), ["names=wide"]).names == ("wide",)  # the shell ate the quotes
  for words in ("fc,sfc", "(fc, sfc)", "[fc,sfc]"):  # a comma-separated list, as the shell leaves it
    assert config_lib.load_config(str(path), [f"names={words}"]).names == ("fc", "sfc")
  with pytest.raises(config_lib.ConfigError, match=r"cannot read 'fast' as a tuple literal such as \(0.5, 1.0\)"):
    config_lib.load_config(str(path), ["rates=fast"])
  for override, expected in (("sizes=(8, 1.5)", "a tuple of ints such as \\(1, 2\\)"),
                             ("sizes=(8, 'wide')", "a tuple of ints"), ("sizes=(True,)", "a tuple of ints"),
                             ("names=(1,)", "a tuple of strs"), ("rates=('fast',)", "a tuple of floats")):
    with pytest.raises(config_lib.ConfigError, match=f"config.{override.split('=')[0]}: cannot read .* as {expected}"):
      config_lib.load_config(str(path), [override])


def test_none_valued_keys_read_words_and_literals(tmp_path):
  path = tmp_path / "none.py"
  path.write_text("import ml_collections\n\ndef get_config():\n  c = ml_collections.ConfigDict()\n"
                  "  c.flag = None\n  c.size = None\n  c.name = None\n  return c\n")
  config = config_lib.load_config(str(path), ["flag=false", "size=12", "name=relu"])
  assert config.flag is False and config.size == 12 and config.name == "relu"
  for text, value in (("True", True), ("null", None), ("None", None)):
    assert config_lib.load_config(str(path), [f"flag={text}"]).flag is value


def test_warmup_steps_need_a_warmup_schedule(config_path):
  config = config_lib.load_config(config_path, ["optimizer.schedule=cosine", "optimizer.warmup_steps=10"])
  with pytest.raises(config_lib.ConfigError, match=r"must be 0 for schedule 'cosine'.*warmup_steps=0"):
    optim.validate_optimizer_config(config)
  optim.validate_optimizer_config(config_lib.load_config(
      config_path, ["optimizer.schedule=warmup_cosine", "optimizer.warmup_steps=10"]))


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.name=adamw", "optimizer.nesterov=True"],
     r"optimizer.nesterov = True is invalid: is not read by optimizer 'adamw'.*Fix: drop --config.optimizer.nesterov, "
     r"or pick an optimizer that reads it \(momentum\)"),
    (["optimizer.name=sgd", "optimizer.weight_decay=0", "optimizer.momentum=0.5"], r"optimizer.momentum = 0.5 .*'sgd'"),
    (["optimizer.name=momentum", "optimizer.weight_decay=0", "optimizer.b2=0.99"],
     r"optimizer.b2 = 0.99 .*'momentum'.*\(adam, adamw\)"),
    (["optimizer.schedule=constant", "optimizer.warmup_steps=0", "optimizer.end_learning_rate=1e-5"],
     r"end_learning_rate = 1e-05 is invalid: must be 0 for schedule 'constant'"),
    (["optimizer.schedule=cosine", "optimizer.warmup_steps=0", "optimizer.learning_rate=1e-3",
      "optimizer.end_learning_rate=1e-2"],
     r"end_learning_rate = 0.01 is invalid: must not exceed learning_rate = 0.001"),
])
def test_settings_the_optimizer_never_reads_are_refused(config_path, overrides, message):
  config = config_lib.load_config(config_path, overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    optim.validate_optimizer_config(config)


def test_every_optimizer_accepts_its_own_defaults():
  for name in optim.OPTIMIZERS:
    for schedule in optim.SCHEDULES:
      warmup = 10 if schedule.startswith("warmup_") else 0
      optim.validate_optimizer_config(ml_collections.ConfigDict({"optimizer": optim.optimizer_config(
          name=name, schedule=schedule, warmup_steps=warmup, momentum=0.5 if name == "momentum" else 0.9)}),
          num_steps=100)


def test_weight_decay_is_never_silently_ignored(config_path):
  """Only adamw has weight decay: sgd/momentum/adam default to 0, and a non-zero value for them is an error."""
  assert optim.optimizer_config(name="adam").weight_decay == 0 and optim.optimizer_config().weight_decay == 1e-4
  config = config_lib.load_config(config_path, ["optimizer.name=adam"])  # the file's adamw default of 1e-4 stays
  with pytest.raises(config_lib.ConfigError, match=r"weight_decay = 0.0001 is invalid: must be 0 for optimizer "
                                                   r"'adam'.*name=adamw or --config.optimizer.weight_decay=0"):
    optim.validate_optimizer_config(config)
  with pytest.raises(config_lib.ConfigError, match="has no weight decay here"):
    optim.make_optimizer(config.optimizer, 10)
  optim.validate_optimizer_config(config_lib.load_config(config_path, ["optimizer.name=adam",
                                                                       "optimizer.weight_decay=0"]))
  # and adamw applies it: zero gradients still shrink every weight by lr * weight_decay
  tx = optim.make_optimizer(optim.optimizer_config(learning_rate=0.1, weight_decay=0.5), 10)
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.05, rtol=1e-6)
  # decay_vectors=False: matrices decay, biases and norm scales (ndim < 2) do not, through an NNX state as well
  tx = optim.make_optimizer(optim.optimizer_config(learning_rate=0.1, weight_decay=0.5, decay_vectors=False), 10)
  model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.LayerNorm(3, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  leaves = list(zip(jax.tree.leaves(updates), jax.tree.leaves(params)))
  assert sorted(p.ndim for _, p in leaves) == [1, 1, 1, 2]  # bias, norm scale and bias, kernel
  for update, param in leaves:
    np.testing.assert_allclose(update, -0.05 * param if param.ndim >= 2 else 0.0, rtol=1e-6, atol=0)


def test_a_warmup_as_long_as_the_run_is_an_error():
  opt = optim.optimizer_config(schedule="warmup_cosine", warmup_steps=100)
  with pytest.raises(config_lib.ConfigError, match=r"warmup_steps = 100 is not below the run's 50 steps"):
    optim.make_optimizer(opt, 50)
  optim.make_optimizer(opt, 101)


def test_unknown_key_names_the_key_and_the_close_match(config_path):
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'optimizer.learning_rat'.*"
                                                   r"Did you mean 'learning_rate'"):
    config_lib.load_config(config_path, ["optimizer.learning_rat=0.1"])
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'optimiser'.*Valid keys here: .*optimizer"):
    config_lib.load_config(config_path, ["optimiser.name=sgd"])


def test_wrong_type_names_the_expected_type(config_path):
  with pytest.raises(config_lib.ConfigError, match=r"config.batch_size: cannot read '1.5' as int"):
    config_lib.load_config(config_path, ["batch_size=1.5"])
  with pytest.raises(config_lib.ConfigError, match=r"as bool"):
    config_lib.load_config(config_path, ["use_bias=maybe"])
  with pytest.raises(config_lib.ConfigError, match=r"is a section, not a value"):
    config_lib.load_config(config_path, ["optimizer=3"])


def test_config_is_locked_after_loading(config_path):
  config = config_lib.load_config(config_path)
  with pytest.raises(AttributeError, match="config is locked"):
    config.new_key = 1


def test_invalid_values_name_key_and_valid_choices(config_path):
  config = config_lib.load_config(config_path, ["optimizer.learning_rate=-0.1"])
  with pytest.raises(config_lib.ConfigError, match=r"config.optimizer.learning_rate = -0.1 is invalid: "
                                                   r"must be a finite number > 0"):
    optim.validate_optimizer_config(config)
  for text in ("inf", "1e400", "nan"):
    with pytest.raises(config_lib.ConfigError, match=r"must be a finite number > 0"):
      optim.validate_optimizer_config(config_lib.load_config(config_path, [f"optimizer.learning_rate={text}"]))
  config = config_lib.load_config(config_path, ["optimizer.name=adagrad"])
  with pytest.raises(config_lib.ConfigError, match=r"valid choices are 'sgd', 'momentum', 'adam', 'adamw'"):
    optim.validate_optimizer_config(config)
  config = config_lib.load_config(config_path, ["batch_size=10"])
  with pytest.raises(config_lib.ConfigError, match=r"must be divisible by the number of devices \(4\).*"
                                                   r"e.g. 8, 12"):
    config_lib.check_divisible(config, "batch_size", 4, "the number of devices")
  config = config_lib.load_config(config_path, ["data_dir=/no/such/dir"])
  with pytest.raises(config_lib.ConfigError, match=r"config.data_dir = '/no/such/dir' is invalid: the path "
                                                   r"does not exist"):
    config_lib.check_existing_path(config, "data_dir")
  assert config_lib.check_existing_path(config_lib.load_config(config_path), "data_dir") == ""


def test_missing_config_file_and_missing_get_config(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.load_config(str(tmp_path / "nope.py"))
  bad = tmp_path / "bad.py"
  bad.write_text("x = 1\n")
  with pytest.raises(config_lib.ConfigError, match="defines no get_config"):
    config_lib.load_config(str(bad))


@pytest.mark.parametrize("spec, message", [
    ("configs/core/fashion_mlp.py:quik", r"fashion_mlp.py:quik: unknown variant 'quik'.*Fix: pass one of"),
    ("configs/bsd/fashion_mlp.py:quick,bsdd", r"unknown variant 'bsdd'.*'bsd'.*Fix: pass one of"),
    ("configs/sft_knowledge/quick.py:foo", r"has no variants .*Fix: pass --config configs/sft_knowledge/quick.py "
                                           r"without ':foo'"),
    # two choices, or two sizes: the last had won without a word (BP-SNN trained under a command naming BSD)
    ("configs/bsd/fashion_mlp.py:quick,bsd,bp_snn", r"combines 'bsd' and 'bp_snn', of which it takes one"),
    ("configs/moiie/easyvqa_tiny.py:quick,vanilla,moiie", r"combines 'vanilla' and 'moiie'"),
    ("configs/bsd/fashion_mlp.py:quick,full", r"combines 'quick' and 'full'"),
])
def test_bad_variants_are_config_errors_naming_the_fix(spec, message):
  """A mistyped `:variant` is a one-line config error (exit 2 from the entrypoint), not a traceback."""
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config(spec)


def test_entrypoint_argument_parsing(config_path):
  spec, overrides, workdir = entrypoint.parse_args(
      ["--config", config_path, "--config.batch_size", "32", "--config.seed=3", "--workdir=/tmp/w"])
  assert (spec, overrides, workdir) == (config_path, ["batch_size=32", "seed=3"], "/tmp/w")
  with pytest.raises(config_lib.ConfigError, match="unknown argument '--lr=3'"):
    entrypoint.parse_args(["--config", config_path, "--lr=3"])
  with pytest.raises(config_lib.ConfigError, match="--config is required"):
    entrypoint.parse_args(["--workdir", "/tmp/w"])
  # a flag where a value belongs is a missing value, not the value (else: "unknown argument '/tmp/w'")
  with pytest.raises(config_lib.ConfigError, match=r"--config.seed needs a value: write --config.seed=<value>"):
    entrypoint.parse_args(["--config", config_path, "--config.seed", "--workdir", "/tmp/w"])
  with pytest.raises(config_lib.ConfigError, match=r"--workdir needs a value"):
    entrypoint.parse_args(["--config", config_path, "--workdir", "--config.seed=3"])
  assert entrypoint.parse_args(["--config", config_path, "--config.seed", "-1"])[1] == ["seed=-1"]  # a negative value


def test_entrypoint_fails_before_compiling_with_one_line(tmp_path):
  """A bad value exits with status 2 and a one-line message; no traceback, no JAX compilation."""
  result = subprocess.run(
      [sys.executable, "-m", "core.classifier.train", "--config", "configs/core/digits_cnn.py",
       "--config.optimizer.learning_rate=-1", "--workdir", str(tmp_path)],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert "config error: config.optimizer.learning_rate = -1.0 is invalid" in result.stderr
  assert "Traceback" not in result.stderr
  result = subprocess.run(
      [sys.executable, "-m", "core.classifier.train", "--config", "configs/core/digits_cnn.py",
       "--config.modle.name=mlp", "--workdir", str(tmp_path)],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "unknown config key 'modle'" in result.stderr and "Did you mean 'model'" in result.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_sections_list_every_field_and_reject_unknown_ones():
  section = config_lib.section("train", {"num_steps": 10, "log_every": 5}, {"log_every": 2})
  assert dict(section) == {"num_steps": 10, "log_every": 2}
  with pytest.raises(config_lib.ConfigError, match=r"unknown optimizer field\(s\) 'lr'; valid: .*learning_rate"):
    optim.optimizer_config(lr=0.1)


def test_repository_config_paths_work_from_any_directory(tmp_path, monkeypatch):
  """Reports name their configs `configs/<paper>/...`: they must not depend on the working directory."""
  monkeypatch.chdir(tmp_path)
  assert config_lib.load_config("configs/bsd/digits_mlp.py:quick").task == "classify"
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.load_config("configs/bsd/no_such_experiment.py")


def test_every_run_records_its_config_and_a_changed_config_is_named(config_path, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("ENTRYPOINT_PROG", "paper.train")
  workdir = str(tmp_path / "run")
  seen = []

  def run(*overrides):
    entrypoint.run(lambda config, w: seen.append(config.batch_size),
                   argv=["--config", config_path, *overrides, "--workdir", workdir])
    return capsys.readouterr().err

  assert run() == ""  # a first run has nothing to compare with
  note = run("--config.batch_size=32", "--config.optimizer.learning_rate=0.01")
  assert "batch_size: 8 -> 32" in note and "optimizer.learning_rate: 0.1 -> 0.01" in note
  assert "seed" not in note and "continues under the new settings" in note
  assert run("--config.batch_size=32", "--config.optimizer.learning_rate=0.01") == ""  # same as the last run
  monkeypatch.setenv("ENTRYPOINT_PROG", "paper.evaluate")
  assert run() == ""  # another verb's runs are not compared with train's
  records = [json.loads(line) for line in open(f"{workdir}/{entrypoint.COMMANDS_FILE}")]
  assert [r["prog"] for r in records] == ["paper.train"] * 3 + ["paper.evaluate"]
  assert records[1]["config"]["batch_size"] == 32 and records[1]["config"]["layers"] == [4, 4]
  assert "--config.batch_size=32" in records[1]["command"] and seen == [8, 32, 32, 8]


def test_a_divisor_that_is_not_positive_names_its_own_key(config_path, tmp_path):
  config = config_lib.load_config(config_path)
  with pytest.raises(config_lib.ConfigError, match=r"config.vision.patch_size is 0.*Fix: set config.vision."
                                                   r"patch_size to a positive value"):
    config_lib.check_divisible(config, "batch_size", 0, "config.vision.patch_size")
  # --workdir naming a file is one line too
  afile = tmp_path / "afile.txt"
  afile.write_text("x")
  result = subprocess.run([sys.executable, "-m", "core.classifier.train", "--config", "configs/core/digits_cnn.py",
                           "--workdir", str(afile)], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr


def test_errors_that_name_their_fix_end_an_entrypoint_with_one_line(config_path, capsys, monkeypatch):
  from core.data.errors import DataSourceMissingError

  def missing(config, workdir):
    raise DataSourceMissingError("Fashion-MNIST is missing. Fix: sudo apt-get install -y dataset-fashion-mnist")

  def broken(config, workdir):
    raise RuntimeError("a bug")

  monkeypatch.delenv(entrypoint.TRACEBACK_ENV_VAR, raising=False)
  with pytest.raises(SystemExit) as exit_info:
    entrypoint.run(missing, argv=["--config", config_path], require_workdir=False)
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("error: Fashion-MNIST is missing. Fix:") and entrypoint.TRACEBACK_ENV_VAR in err
  with pytest.raises(RuntimeError, match="a bug"):  # anything else keeps its traceback
    entrypoint.run(broken, argv=["--config", config_path], require_workdir=False)
  monkeypatch.setenv(entrypoint.TRACEBACK_ENV_VAR, "1")
  with pytest.raises(DataSourceMissingError):
    entrypoint.run(missing, argv=["--config", config_path], require_workdir=False)


def test_a_config_error_found_during_the_run_is_one_line_and_exit_2(config_path, capsys):
  """A check that needs the run's files (a server's health, the checkpoints) raises ConfigError from the library
  call; the entrypoint reports it as it reports one found by validation."""

  def needs_a_server(config, workdir):
    raise config_lib.ConfigError("the server at http://x runs 'gridworld'. Fix: point --config.env_url elsewhere.")

  with pytest.raises(SystemExit) as exit_info:
    entrypoint.run(needs_a_server, argv=["--config", config_path], require_workdir=False)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith("config error: the server at http://x runs 'gridworld'. Fix:")


def test_the_source_fingerprint_reads_regular_visible_files_only(tmp_path):
  from core import report
  (tmp_path / "core").mkdir()
  (tmp_path / "core" / "a.py").write_text("x = 1\n")
  before = report.source_fingerprint(str(tmp_path))
  # an editor's lock file: a dangling link named like a source file (the fingerprint raised FileNotFoundError)
  os.symlink("user@host.1234:1700000000", tmp_path / "core" / ".#a.py")
  (tmp_path / "core" / ".backup.py").write_text("y = 2\n")
  assert report.source_fingerprint(str(tmp_path)) == before
  (tmp_path / "core" / "a.py").write_text("x = 2\n")
  assert report.source_fingerprint(str(tmp_path)) != before
