import pytest

from models.registry import Registry, RegistryError


def _save(value):
    return lambda d: (d / "w.txt").write_text(value)


def test_register_promote_rollback(tmp_path):
    reg = Registry(tmp_path)
    v1 = reg.register("churn", _save("1"), metrics={"c": 0.81}, version="churn-v1")
    v2 = reg.register("churn", _save("2"), metrics={"c": 0.84}, version="churn-v2")
    assert reg.current_version("churn") == v2
    assert (reg.path("churn") / "w.txt").read_text() == "2"
    assert reg.compare("churn", v1, v2) == {"c": (0.81, 0.84)}
    assert reg.rollback("churn") == v1
    assert (reg.path("churn") / "w.txt").read_text() == "1"
    assert [m.version for m in reg.versions("churn")] == [v1, v2]


def test_failed_save_leaves_nothing(tmp_path):
    reg = Registry(tmp_path)

    def boom(d):
        (d / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        reg.register("pricing", boom)
    assert reg.versions("pricing") == []
    assert reg.current_version("pricing") is None


def test_unknown_and_invalid_names(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError):
        reg.meta("fraud", "nope")
    with pytest.raises(RegistryError):
        reg.meta("../etc", "x")
    with pytest.raises(RegistryError, match="train"):
        reg.path("demand")
