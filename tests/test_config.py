"""Typed configs: defaults < file < flags; unknown keys rejected with a suggestion."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gesture_cli.core.config import resolve_config
from gesture_cli.core.errors import UsageError


@dataclass(frozen=True)
class Cfg:
    backbone: str = "tiny-vit"
    batch_size: int = 8
    lr: float = 1e-3
    splits: tuple[str, ...] = ()
    image_size: int | None = None
    bf16: bool = False


def test_layers_file_below_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("backbone: dinov2-small\nbatch-size: 32\nlr: 0.01\nsplits: [train, test]\n")
    cfg = resolve_config(Cfg, f, {"batch_size": 4, "image_size": None})
    assert cfg == Cfg(backbone="dinov2-small", batch_size=4, lr=0.01, splits=("train", "test"))


def test_json_file_and_type_coercion(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"image_size": "224", "bf16": "yes", "splits": "train,val"}')
    cfg = resolve_config(Cfg, f)
    assert cfg.image_size == 224 and cfg.bf16 is True and cfg.splits == ("train", "val")


def test_unknown_key_suggests_closest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch_sise: 3\n")
    with pytest.raises(UsageError, match=r"unknown key 'batch_sise' \(did you mean 'batch_size'\?\)"):
        resolve_config(Cfg, f)


def test_bad_type_and_bad_file(tmp_path):
    with pytest.raises(UsageError, match="'batch_size' must be int"):
        resolve_config(Cfg, None, {"batch_size": "many"})
    f = tmp_path / "c.yaml"
    f.write_text("- a list\n")
    with pytest.raises(UsageError, match="top level must be a mapping"):
        resolve_config(Cfg, f)
    with pytest.raises(UsageError, match="file not found"):
        resolve_config(Cfg, tmp_path / "missing.yaml")
    f.write_text("a: [unclosed\n")
    with pytest.raises(UsageError, match="cannot parse"):
        resolve_config(Cfg, f)


def test_config_is_frozen():
    cfg = resolve_config(Cfg)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 3  # type: ignore[misc]


def test_a_tilde_in_the_config_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "c.yaml").write_text("batch_size: 5\n")
    assert resolve_config(Cfg, "~/c.yaml").batch_size == 5


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_a_config_file_that_sets_nothing_is_refused(tmp_path, text):
    """An empty file is most likely the wrong file: it must not launch a run with every default."""
    f = tmp_path / "e.yaml"
    f.write_text(text)
    with pytest.raises(UsageError, match=r"^--config .*e\.yaml sets no options; .*drop --config$"):
        resolve_config(Cfg, f)


def test_an_encoder_config_file_is_named_by_its_own_option(tmp_path):
    """Errors about the --encoder-config file said --config, an option the user did not give for it."""
    from gesture_cli.models.pose_encoder import pose_encoder_config

    (tmp_path / "e.yaml").write_text("")
    (tmp_path / "k.yaml").write_text("d_modl: 3\n")
    for name, needle in (("e.yaml", "sets no options; write at least one 'key: value' line, or drop --encoder-config"),
                         ("k.yaml", "unknown key 'd_modl' (did you mean 'd_model'?)"), ("none.yaml", "file not found")):
        with pytest.raises(UsageError) as err:
            pose_encoder_config(tmp_path / name)
        assert str(err.value).startswith(f"--encoder-config {tmp_path / name}") and needle in str(err.value), err.value


def test_an_empty_config_file_stops_the_command_before_it_runs(runner, tmp_path):
    from conftest import invoke, one_line_error

    (tmp_path / "e.yaml").write_text("")
    res = invoke(runner, "lora-train", "--config", tmp_path / "e.yaml", "-r", tmp_path / "run")
    one_line_error(res, 2, "e.yaml sets no options", "drop --config")
    assert not (tmp_path / "run").exists()


@dataclass(frozen=True)
class OptsCfg:
    dataset_opts: tuple[str, ...] = ()
    encoder_opts: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()


def test_opts_flags_override_the_file_per_key(tmp_path):
    """A flag's KEY=VALUE replaces the file's entry of that key and keeps the others; other lists are replaced whole."""
    f = tmp_path / "c.yaml"
    f.write_text('encoder_opts: ["d_model=64", "n_layers=2", "gcn_dims=32"]\ndataset_opts: [label_map=contiguous]\nsplits: [train, val]\n')
    cfg = resolve_config(OptsCfg, f, {"encoder_opts": ["d_model=32"], "dataset_opts": ["test_fraction=0.3"], "splits": ["test"]})
    assert cfg.encoder_opts == ("d_model=32", "n_layers=2", "gcn_dims=32")
    assert cfg.dataset_opts == ("label_map=contiguous", "test_fraction=0.3")
    assert cfg.splits == ("test",)
    assert resolve_config(OptsCfg, f, {"encoder_opts": ["d-model=16"]}).encoder_opts == ("d-model=16", "n_layers=2", "gcn_dims=32")
    assert resolve_config(OptsCfg, None, {"dataset_opts": ["a=1", "a=2"]}).dataset_opts == ("a=1", "a=2")  # one layer: as given


def test_opts_may_be_written_as_a_mapping(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("encoder_opts: {d_model: 64, n_layers: 2}\ndataset_opts: {label_map: contiguous, flip: true, test_fraction: 0.3}\n")
    cfg = resolve_config(OptsCfg, f, {"encoder_opts": ["n_layers=4"]})
    assert cfg.encoder_opts == ("d_model=64", "n_layers=4")
    assert cfg.dataset_opts == ("label_map=contiguous", "flip=true", "test_fraction=0.3")
    f.write_text("encoder_opts: {d_model: [64]}\n")
    with pytest.raises(UsageError, match="'encoder_opts' must be a list of KEY=VALUE strings or a mapping"):
        resolve_config(OptsCfg, f)
