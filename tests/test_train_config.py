"""The typed training config (options.TrainConfig): training_options.json round trip, older and foreign files,
presets, and tools/train.py's flags -> config."""
import dataclasses
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from afgan_tf.training import options
from afgan_tf.training.options import OptionError, TrainConfig


def _config():
    return options.resolve_options(cfg="stylegan3-r", batch=16, gamma=2.5, num_replicas=2, cbase=1024, cmax=32,
                                   mbstd_group=2, aug="fixed", p=0.3, metrics="fid50k_full,kid50k", desc="d",
                                   strategy="mirrored", ckpt_ticks=2, ckpt_keep=5, dataset_name="ds")


def test_round_trip_through_training_options_json(tmp_path):
    c = _config()
    c.save(str(tmp_path))
    with open(tmp_path / "training_options.json") as fh:
        on_disk = json.load(fh)
    # the file's keys are exactly the fields, and its values the config's (JSON types: tuples become lists)
    assert set(on_disk) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert on_disk["loss_kwargs"]["r1_gamma"] == 2.5 and on_disk["augment_p"] == 0.3
    assert on_disk["metrics"] == ["fid50k_full", "kid50k"] and on_disk["strategy"] == "mirrored"
    back = TrainConfig.load(str(tmp_path))
    assert json.loads(json.dumps(back.to_json())) == json.loads(json.dumps(c.to_json()))
    assert back.G_kwargs == json.loads(json.dumps(c.G_kwargs)) and back.ckpt_keep == 5
    # to_json is a copy: changing it does not change the config
    c.to_json()["loss_kwargs"]["r1_gamma"] = 99
    assert c.loss_kwargs["r1_gamma"] == 2.5


def test_older_file_missing_keys_takes_defaults(tmp_path):
    d = _config().to_json()
    for key in ("ckpt_keep", "loss_scale_kwargs", "G_class", "strategy"):   # fields added after the first runs
        del d[key]
    (tmp_path / "training_options.json").write_text(json.dumps(d))
    c = TrainConfig.load(str(tmp_path))
    defaults = TrainConfig()
    assert c.ckpt_keep == defaults.ckpt_keep == 3
    assert c.loss_scale_kwargs == dict(initial_scale=2.0 ** 15, growth_interval=2000)
    assert c.strategy == defaults.strategy
    from afgan_tf.networks import presets
    cls = presets.generator_class("stylegan3-r")
    assert c.G_class == f"{cls.__module__}.{cls.__qualname__}"    # the generator of cfg, as before the field
    assert c.loss_kwargs["r1_gamma"] == 2.5                        # the keys present are kept


def test_unknown_key_is_one_clear_error(tmp_path):
    d = _config().to_json()
    d["learning_rate_warmup"] = 5
    d["zz_other"] = 1
    path = tmp_path / "training_options.json"
    path.write_text(json.dumps(d))
    with pytest.raises(OptionError) as e:
        TrainConfig.load(str(tmp_path))
    msg = str(e.value)
    assert str(path) in msg and "learning_rate_warmup, zz_other" in msg and "\n" not in msg
    path.write_text("{not json")
    with pytest.raises(OptionError, match="not valid JSON"):
        TrainConfig.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="training_options.json missing"):
        TrainConfig.load(str(tmp_path / "nothing"))


def test_other_fields_by_name():
    """A config field that is no flag of resolve_options is stored as given (how a new hyper-parameter flows from
    its flag); a name that is no field is one error."""
    c = options.resolve_options(cfg="stylegan3-t", batch=8, gamma=1.0, ada_interval=8, image_snapshot_ticks=3)
    assert c.ada_interval == 8 and c.image_snapshot_ticks == 3 and c.network_snapshot_ticks == 50
    with pytest.raises(OptionError, match="unknown training option.* no_such_option"):
        options.resolve_options(cfg="stylegan3-t", batch=8, gamma=1.0, no_such_option=1)


def test_presets_fill_unset_fields_only():
    preset = options.CPU_PRESETS["cpu-tiny"]
    values = dict(preset="cpu-tiny", cfg=None, batch=None, gamma=0.7, res=64, tick=4.0, snap=50, cbase=32768)
    out = options.apply_preset(dict(values), given={"gamma", "snap"})
    assert out["gamma"] == 0.7 and out["snap"] == 50                # given: kept
    assert out["batch"] == preset["batch"] and out["res"] == preset["res"] and out["tick"] == preset["tick"]
    assert out["cbase"] == preset["cbase"] and out["cfg"] == "stylegan3-t"
    assert options.apply_preset(dict(values, preset="none"), given=set()) == dict(values, preset="none")
    shapes = options.apply_preset(dict(values, preset="cpu-shapes", cfg="stylegan3-r"), given={"cfg"})
    assert shapes["cfg"] == "stylegan3-r" and shapes["data"] == "shapes:16384:16"


def test_flags_to_config_in_one_place(tmp_path):
    """tools/train.py's flags -> train_flags.flag_values -> session.prepare: the dry-run config of a preset with
    one flag given, and an in-place continuation that reads the run's config and changes only --kimg."""
    from absl import flags as absl_flags
    from flags import train_flags
    from afgan_tf.training import session
    fv = absl_flags.FlagValues()
    train_flags.define_flags(fv)
    fv(["train.py", "--preset=cpu-tiny", "--snap=7", "--data=shapes:64:16", f"--outdir={tmp_path}", "-n"])
    values, given = train_flags.flag_values(fv)
    assert "snap" in given and "batch" not in given
    plan = session.prepare(values, given)
    c = plan.config
    assert c.network_snapshot_ticks == 7 and c.batch_size == 8 and c.cfg == "stylegan3-t"
    assert c.kimg_per_tick == 0.4 and plan.resume.kind == "fresh" and plan.run_dir.startswith(str(tmp_path))
    os.makedirs(plan.run_dir)
    c.save(plan.run_dir)
    fv2 = absl_flags.FlagValues()
    train_flags.define_flags(fv2)
    fv2(["train.py", f"--outdir={plan.run_dir}", "--kimg=0.5", "--tick=9", "-n"])
    plan2 = session.prepare(*train_flags.flag_values(fv2))
    assert plan2.resume.kind == "inplace" and plan2.run_dir == plan.run_dir
    assert plan2.config.total_kimg == 0.5 and plan2.config.kimg_per_tick == 9
    assert plan2.config.network_snapshot_ticks == 7 and plan2.config.G_kwargs == json.loads(json.dumps(c.G_kwargs))
