import pytest

from compressor.errors import CompressorError
from compressor.passes import PASSES
from compressor.registry import Registry


def test_register_and_get():
    reg = Registry("widget")
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1
    assert "alpha" in reg and reg.names() == ["alpha"]


def test_unknown_name_suggests_nearest():
    reg = Registry("widget")
    reg.register("magnitude")(1)
    with pytest.raises(CompressorError, match="unknown widget 'magnitdue' \\(did you mean 'magnitude'\\?\\)"):
        reg.get("magnitdue")


def test_duplicate_registration_is_a_bug():
    reg = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError):
        reg.register("a")(2)


def test_core_passes_are_registered():
    for name in ("train", "evaluate", "prune", "export_onnx", "benchmark"):
        assert PASSES.get(name).name == name
