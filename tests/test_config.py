"""Config loading: defaults, YAML files, overrides, and clear refusals of bad keys and values."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from splatgen.config import Config, describe_config, field_docs, load_config, save_config
from splatgen.errors import ConfigError
from splatgen.resources import config_names


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.schedule.timestep == "tp-sds"


def test_yaml_then_overrides_later_wins(tmp_path: Path):
    f = tmp_path / "a.yaml"
    f.write_text("run:\n  steps: 7\n  seed: 3\ncamera:\n  batch_size: 2\n")
    cfg = load_config([f], ["run.steps=9", "render.background=white"])
    assert cfg.run.steps == 9 and cfg.run.seed == 3
    assert cfg.camera.batch_size == 2
    assert cfg.render.background == "white"


def test_unknown_key_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="run.stpes"):
        load_config(overrides=["run.stpes=3"])
    f = tmp_path / "bad.yaml"
    f.write_text("densify:\n  grad_thresh: 0.1\n")
    with pytest.raises(ConfigError, match="densify.grad_thresh"):
        load_config([f])


@pytest.mark.parametrize("override, guess", [("run.stepz=3", "run.steps"), ("densify.grad_thresh=0.1",
                                             "densify.grad_threshold"), ("rnu.steps=3", "run")])
def test_unknown_key_gets_the_closest_known_one(override, guess):
    with pytest.raises(ConfigError, match=rf"did you mean '{re.escape(guess)}'\? `splatgen config` lists every key$"):
        load_config(overrides=[override])


def test_unknown_key_far_from_every_key_gets_no_guess():
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["trainer.steps=3"])
    assert "did you mean" not in str(exc.value) and "known sections" in str(exc.value)
    assert "`splatgen config`" in str(exc.value) and "default.yaml" not in str(exc.value)


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="trainer"):
        load_config(overrides=["trainer.steps=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="run.steps"):
        load_config(overrides=["run.steps=many"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("render.background=purple", "render.background"),
        ("schedule.timestep=cosine", "schedule.timestep"),
        ("run.steps=0", "run.steps"),
        ("model.init_opacity=1.5", "model.init_opacity"),
        ("schedule.t_min=0.99", "schedule.t_min"),
        ("guidance.type=stable-diffusion", "guidance.model"),
        ("run.device=tpu", "run.device"),
        ("guidance.guidance_scale_milestones=[[0.5,-1.0]]", "guidance.guidance_scale_milestones"),
        ("guidance.guidance_scale_milestones=[[0.8,3.0],[0.5,2.0]]", "guidance.guidance_scale_milestones"),
        ("guidance.guidance_scale_milestones=[[1.5,3.0]]", "guidance.guidance_scale_milestones"),
        ("guidance.guidance_scale_milestones=[[0.5]]", "guidance.guidance_scale_milestones"),
        ("guidance.guidance_scale_milestones=[[0.5,'high']]", "guidance.guidance_scale_milestones"),
        ("render.resolution_milestones=[[0.5,true]]", "render.resolution_milestones"),
        ("render.resolution_milestones=[[0.5,0]]", "render.resolution_milestones"),
    ],
)
def test_bad_values_are_refused_with_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["run.steps"])


def test_missing_config_file_lists_bundled():
    with pytest.raises(ConfigError, match="not found"):
        load_config(["no-such-config.yaml"])


def test_bundled_names_resolve():
    names = config_names()
    assert "default" in names
    for name in names:
        load_config([name], ["guidance.model=some/folder"] if name == "pixel" else [])


def test_milestones_take_whole_numbers_and_hold_floats():
    """`[[0.5, 256]]` (ints, as people and configs/sd21.yaml write them) loads as floats. The milestone fields are
    typed List[List[Any]] and checked by the validator: OmegaConf 2.3 (allowed by pyproject.toml, pinned by
    hydra-core 1.3) refuses an int inside a List[List[float]], which broke --config sd21 and mvdream there."""
    cfg = load_config(["sd21"], ["guidance.guidance_scale_milestones=[[0.5,3]]"])
    assert cfg.render.resolution_milestones == [[0.3, 256.0], [0.6, 512.0]]
    assert cfg.guidance.guidance_scale_milestones == [[0.5, 3.0]]
    for pairs in (cfg.render.resolution_milestones, cfg.guidance.guidance_scale_milestones):
        assert all(type(v) is float for pair in pairs for v in pair)
    sections = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}
    nested_float_lists = [f"{name}.{key}" for name, cls in sections.items()
                          for key, hint in typing.get_type_hints(cls).items() if "List[List[float]]" in str(hint)]
    assert nested_float_lists == []


def test_round_trip_through_yaml(tmp_path: Path):
    cfg = load_config(overrides=["run.steps=11", "render.resolution_milestones=[[0.5,128]]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config([tmp_path / "c.yaml"])
    assert again == cfg


def test_every_field_has_a_docstring():
    from dataclasses import fields

    for sec in fields(Config):
        if sec.name == "prompt":
            continue
        cls = type(getattr(Config(), sec.name))
        docs = field_docs(cls)
        missing = [f.name for f in fields(cls) if f.name not in docs]
        assert not missing, f"{cls.__name__} fields without docstring: {missing}"
    assert "densify.max_gaussians" in describe_config()


@pytest.mark.parametrize("typed, expected", [("off", "off"), ("on", "on"), ("no", "off"), ("auto", "auto")])
def test_progress_on_off_survive_yaml_booleans(typed, expected, tmp_path: Path):
    assert load_config(overrides=[f"run.progress={typed}"]).run.progress == expected
    f = tmp_path / "p.yaml"
    f.write_text(f"run:\n  progress: {typed}\n")
    assert load_config([f]).run.progress == expected


def test_progress_bad_value_still_refused():
    with pytest.raises(ConfigError, match="run.progress"):
        load_config(overrides=["run.progress=sometimes"])


def test_a_config_never_copies_the_environment(tmp_path, monkeypatch):
    from splatgen.errors import ConfigError

    monkeypatch.setenv("SPLATGEN_TEST_SECRET", "hunter2")
    shared = tmp_path / "shared.yaml"
    shared.write_text("guidance:\n  negative_prompt: ${oc.env:SPLATGEN_TEST_SECRET}\n")
    with pytest.raises(ConfigError, match="reads an environment variable"):
        load_config([shared])
    with pytest.raises(ConfigError, match="reads an environment variable"):
        load_config(overrides=["guidance.negative_prompt=${ oc.env:SPLATGEN_TEST_SECRET}"])
    # other interpolations of the config itself still work
    ok = tmp_path / "ok.yaml"
    ok.write_text("run:\n  steps: 40\n  log_every: ${run.steps}\n")
    assert load_config([ok]).run.log_every == 40


def test_each_settings_allowed_values_are_the_keys_of_the_table_that_dispatches_on_it():
    """Adding a representation, a guidance, a weighting or a schedule is one table entry and one name in
    config.py; the two cannot drift apart."""
    from splatgen import config, schedules, sds
    from splatgen.components import GUIDANCE_BUILDERS
    from splatgen.representation.kinds import REPRESENTATIONS

    assert tuple(REPRESENTATIONS) == config.MODEL_TYPES
    assert set(GUIDANCE_BUILDERS) == set(config.GUIDANCE_TYPES)
    assert tuple(sds.WEIGHTINGS) == config.WEIGHTING_NAMES
    assert tuple(schedules.TIMESTEP_SCHEDULES) == config.TIMESTEP_SCHEDULE_NAMES
    for setting, allowed in (("model.type", config.MODEL_TYPES), ("guidance.weighting", config.WEIGHTING_NAMES),
                             ("schedule.timestep", config.TIMESTEP_SCHEDULE_NAMES)):
        with pytest.raises(ConfigError, match=re.escape(f"{setting}='nope' is not allowed; choose one of {list(allowed)}")):
            load_config(overrides=[f"{setting}=nope"])


@pytest.mark.parametrize("override, message", [
    ("densify.reference_steps=-5", "densify.reference_steps=-5 must be >= 0"),
    ("densify.reference_steps=1.5", "bad value for densify.reference_steps"),
    ("run.cpu_keep_freed_memory=maybe", "bad value for run.cpu_keep_freed_memory"),
])
def test_the_run_length_and_allocator_settings_refuse_bad_values_in_one_line(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(["default"], [override])
    assert message in str(exc.value) and "\n" not in str(exc.value)

