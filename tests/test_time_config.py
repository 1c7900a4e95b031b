"""The `time:` section of config.yaml: defaults, YAML's `off`, words and ranges by key."""

from __future__ import annotations

import pytest

from companion import config
from companion.config import ConfigError


def test_defaults_and_yaml_off(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("time:\n  quantize: off\n  swing: auto\n  end_cc: 20\n")
    t = config.load(p).time
    assert t.quantize == "off" and t.swing == "auto" and t.end_cc == 20
    assert t.clock == "follow" and t.tempo == "auto" and t.phrase_end == "adaptive"
    assert config.from_dict({"time": {"swing": 0.6, "quantize": "1/8T"}}).time.swing == 0.6


@pytest.mark.parametrize("data, key", [
    ({"swing": 0.9}, "time.swing"),
    ({"swing": "lots"}, "time.swing"),
    ({"quantize": "1/32"}, "time.quantize"),
    ({"end_note": 128}, "time.end_note"),
    ({"click_channel": 0}, "time.click_channel"),
    ({"auto_min_bpm": 150, "auto_max_bpm": 100}, "time.auto_max_bpm"),
    ({"phrase_end_min_s": 5, "phrase_end_max_s": 1}, "time.phrase_end_max_s"),
    ({"tempo_auto": True}, "time.tempo_auto"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.from_dict({"time": data})


def test_shipped_config_loads():
    from support import ROOT

    assert config.load(ROOT / "config.yaml").time.quantize == "off"
