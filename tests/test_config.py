import pytest

from faket_dask.config import SimulationConfig, config_from_dict, load_config, save_config
from faket_dask.errors import InputError

pytestmark = pytest.mark.timeout(30)


def test_defaults_are_valid_and_digest_is_stable():
    a, b = SimulationConfig(), SimulationConfig()
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64
    assert config_from_dict({"seed": 1}).digest() != a.digest()


def test_yaml_round_trip(tmp_path):
    cfg = config_from_dict(
        {
            "seed": 3,
            "tilts": {"angles": "-30:30:3", "shape": [32, 48]},
            "style": {"weights": "random"},
        }
    )
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.tilts.shape == (32, 48)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(
        InputError, match=r"'style\.precison' is not known \(did you mean 'precision'"
    ):
        config_from_dict({"style": {"precison": "fp32"}})


def test_unknown_top_level_key_lists_known_keys():
    with pytest.raises(InputError, match=r"'bogus' is not known \(known keys: seed"):
        config_from_dict({"bogus": 1})


def test_wrong_type_is_named():
    with pytest.raises(InputError, match=r"'seed' is invalid.*integer"):
        config_from_dict({"seed": "many"})
    with pytest.raises(InputError, match=r"'style\.precision' is invalid"):
        config_from_dict({"style": {"precision": "fp8"}})


def test_angles_are_checked_at_load():
    with pytest.raises(InputError, match=r"tilts\.angles.*STOP"):
        config_from_dict({"tilts": {"angles": "-60:61:2"}})


def test_styled_output_needs_style():
    with pytest.raises(InputError, match=r"style\.enabled"):
        config_from_dict({"style": {"enabled": False}})
    cfg = config_from_dict({"style": {"enabled": False}, "output": {"modalities": ["noisy"]}})
    assert cfg.output.modalities == ["noisy"]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n  tilts: 2")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)


def test_particle_mixes_refer_to_known_classes():
    from faket_dask.config import apply_mix

    parts = [
        {"name": "a", "template": "builtin:sphere", "abundance": 1.0},
        {"name": "b", "template": "builtin:rod", "count": 2},
    ]
    cfg = config_from_dict(
        {"sample": {"particles": parts, "occupancy": 0.1, "mixes": [{"a": 2.0, "b": 5}]}}
    )
    mixed = apply_mix(cfg.sample, cfg.sample.mixes[0])
    assert [p.name for p in mixed.particles] == ["a", "b"]
    assert mixed.particles[0].abundance == 2.0 and mixed.particles[1].count == 5
    with pytest.raises(InputError, match="mix names unknown class 'c'"):
        config_from_dict({"sample": {"particles": parts, "occupancy": 0.1, "mixes": [{"c": 1}]}})


def test_builtin_template_names_match_the_templates_module():
    from faket_dask.config import BUILTIN_TEMPLATE_SHAPES
    from faket_dask.stages.templates import BUILTIN_SHAPES

    assert BUILTIN_TEMPLATE_SHAPES == tuple(BUILTIN_SHAPES)
