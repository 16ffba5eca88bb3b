"""The two user strings read once: dataset specs (`parse_dataset` -> DatasetSpec) and backbone references
(`parse_backbone_ref` -> BackboneRef). Parametrised over the registries, so a new source is covered
the moment it registers."""

from __future__ import annotations

import pytest

from gesture_cli.core.errors import ModelError, UsageError
from gesture_cli.data.registry import KINDS, DatasetSpec, dataset_sources, make_dataset, parse_dataset
from gesture_cli.models.backbone_ref import BackboneRef, backbone_dirname, parse_backbone_ref

SOURCES = [(kind, name) for kind in KINDS for name in sorted(dataset_sources(kind))]


@pytest.mark.parametrize(("kind", "name"), SOURCES)
def test_every_source_has_a_kind_help_and_keyword_options(kind, name):
    source = dataset_sources(kind)[name]
    assert source.kind == kind and source.help.strip()
    assert source.usage.startswith(name)
    assert all(p.default is not p.empty for p in source.parameters.values()), f"{kind}:{name}: options need defaults"


def test_parse_dataset_types_options_from_the_make_signature():
    spec = parse_dataset("synthetic-hands", ["train-per-class=4", "test_per_class=2"])
    assert isinstance(spec, DatasetSpec)
    assert (spec.name, spec.arg, spec.kind, spec.text) == ("synthetic-hands", None, "image", "synthetic-hands")
    assert spec.options == {"train_per_class": 4, "test_per_class": 2}
    assert parse_dataset(spec) is spec  # already read: passes through
    # an option typed as text keeps its text even when it looks like a number
    pose = parse_dataset("pose:somewhere", ["texts=2024", "fps=25"], kind="pose")
    assert pose.options == {"texts": "2024", "fps": 25}
    assert pose.arg == "somewhere" and pose.splits() == ["train", "val", "test"]


def test_the_same_name_reads_by_kind():
    assert parse_dataset("hf-dataset:me/poses", kind="image").source.kind == "image"
    assert parse_dataset("hf-dataset:me/poses", kind="pose").source.kind == "pose"


@pytest.mark.parametrize(
    ("spec", "opts", "kind", "message"),
    [
        ("", (), "image", "empty dataset spec; e.g. --dataset synthetic-hands or --dataset folder:DIR"),
        ("", (), "pose", "empty pose dataset spec; e.g. synthetic-signs or pose:DIR"),
        ("synthetic-hands", ("oops",), "image", "--dataset-opt 'oops' must look like KEY=VALUE, e.g. label_map=contiguous"),
        ("synthetic-hands", ("train_per_clas=3",), "image", "unknown option 'train_per_clas' for dataset 'synthetic-hands' (did you mean"),
        ("synthetic-hands:x", (), "image", "dataset 'synthetic-hands' takes no ':ARG' part; got 'synthetic-hands:x' (use plain 'synthetic-hands')"),
        ("synthetic-scenes", (), "image", "dataset 'synthetic-scenes' holds segmentation masks, not labelled images; use it with `gx segment-train`"),
        ("pose", (), "pose", "pose dataset 'pose' needs a FILE|DIR: use pose:FILE|DIR"),
        ("seg", (), "segmentation", "dataset 'seg' needs a DIR: use seg:DIR"),
        ("synthetic-scenes", ("sise=3",), "segmentation", "unknown option 'sise' for dataset 'synthetic-scenes' (did you mean 'size'?); valid: class_map, size,"),
        ("mpii", (), "keypoints", "keypoint dataset 'mpii' needs JSON[:IMGDIR]: use mpii:JSON[:IMGDIR]"),
        ("synthetic-keypoints", ("sid=3",), "keypoints", "unknown option 'sid' for keypoint dataset 'synthetic-keypoints' (did you mean 'side'?)"),
        ("video", (), "frames", "dataset 'video' needs a FILE or DIR: use video:path/to/clip.mp4 or video:path/to/dir"),
        ("video:", (), "frames", "dataset 'video' needs a FILE or DIR: use video:path/to/clip.mp4 or video:path/to/dir"),
        ("synthetic-video:x", (), "frames", "dataset 'synthetic-video' takes no ':ARG' part; got 'synthetic-video:x' (use plain 'synthetic-video')"),
    ],
)
def test_bad_specs_keep_their_messages(spec, opts, kind, message):
    with pytest.raises(UsageError) as err:
        parse_dataset(spec, opts, kind=kind)
    assert str(err.value).startswith(message), str(err.value)


def test_frame_sources_are_a_kind_read_by_name():
    from gesture_cli.data.video import ClipFrames, DatasetFrames, make_frame_source, parse_frame_spec

    assert sorted(dataset_sources("frames")) == ["synthetic-video", "video"]
    assert parse_frame_spec("video:clips").kind == "frames" and parse_frame_spec("Synthetic-Video").kind == "frames"
    assert parse_frame_spec("synthetic-hands").kind == "image"
    assert isinstance(make_frame_source("synthetic-video"), ClipFrames)
    assert isinstance(make_frame_source(parse_dataset("synthetic-hands", ["train_per_class=1", "test_per_class=1"])), DatasetFrames)
    with pytest.raises(UsageError, match="^dataset 'video' needs a FILE or DIR: use video:path/to/clip.mp4"):
        make_frame_source("video:  ")
    with pytest.raises(UsageError, match="^dataset 'synthetic-video' takes no ':ARG' part; got 'Synthetic-Video:x'"):
        make_frame_source("Synthetic-Video:x")
    with pytest.raises(UsageError, match="^dataset 'synthetic-signs' holds pose sequences with texts, not labelled images"):
        make_frame_source("synthetic-signs")
    # the image kind's errors and lists name image datasets only (video / synthetic-video as image datasets)
    with pytest.raises(UsageError) as err:
        parse_dataset("nope")
    assert str(err.value) == "unknown dataset 'nope'; valid: " + ", ".join(sorted(dataset_sources("image")))
    with pytest.raises(UsageError) as err:
        parse_dataset("synthetic-scenes")
    assert "frames" not in str(err.value) and "pca-compute" not in str(err.value)
    for kind in ("pose", "segmentation", "keypoints"):
        assert not set(dataset_sources(kind)) & set(dataset_sources("frames"))


def test_makers_take_a_spec_or_its_text():
    spec = parse_dataset("synthetic-hands", ["train_per_class=2", "test_per_class=1"])
    by_spec = make_dataset(spec, split="test", seed=0)
    by_text = make_dataset("synthetic-hands", split="test", seed=0, train_per_class=2, test_per_class=1)
    assert by_spec.spec == by_text.spec == "synthetic-hands"
    assert (by_spec.labels == by_text.labels).all()


def test_a_relative_local_path_is_recorded_absolute(tmp_path, monkeypatch):
    """Runs record --dataset's text, and evaluate, report or --resume may run from another folder: an existing
    relative path of a path source becomes absolute; anything else stays as typed, for its own error."""
    from gesture_cli.data.registry import absolute_spec_text

    for name in ("poses", "gestures", "owner/name"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "valid.json").write_text("[]")
    monkeypatch.chdir(tmp_path)
    assert absolute_spec_text("pose:poses") == f"pose:{tmp_path / 'poses'}"
    assert absolute_spec_text(" folder:gestures") == f"folder:{tmp_path / 'gestures'}"
    assert absolute_spec_text("mpii:valid.json") == f"mpii:{tmp_path / 'valid.json'}"  # its images sit beside it
    # two paths: each made absolute when it exists, the rest kept as typed
    assert absolute_spec_text("mpii:valid.json:images") == f"mpii:{tmp_path / 'valid.json'}:images"
    (tmp_path / "images").mkdir()
    assert absolute_spec_text("mpii:valid.json:images") == f"mpii:{tmp_path / 'valid.json'}:{tmp_path / 'images'}"
    assert absolute_spec_text("mpii:nowhere.json:images") == f"mpii:nowhere.json:{tmp_path / 'images'}"
    assert absolute_spec_text("mpii:valid.json:") == f"mpii:{tmp_path / 'valid.json'}:"  # an empty IMGDIR: no folder
    assert absolute_spec_text(f"folder:{tmp_path}/gestures") == f"folder:{tmp_path}/gestures"  # absolute already
    assert absolute_spec_text("folder:nowhere") == "folder:nowhere"
    assert absolute_spec_text("hf-dataset:owner/name") == "hf-dataset:owner/name"  # a hub id, though a folder has its name
    assert absolute_spec_text("synthetic-hands") == "synthetic-hands" and absolute_spec_text(None) is None
    assert absolute_spec_text("folder:" + "x" * 300) == "folder:" + "x" * 300  # too long a name for the disk: as typed


def test_a_recorded_path_is_normalised(tmp_path, monkeypatch):
    """`..` and a trailing '/' are taken out of a recorded path as the text reads: `mpii:../mpii/x.json:../mpii` typed
    in work/ must not record work/.. (gone once work/ is deleted or the run is imported elsewhere); a symlink stays a
    symlink, and `link/..` (not where the text reads) stays as typed."""
    from gesture_cli.data.registry import absolute_opts_text, absolute_spec_text

    for name in ("work", "mpii", "sig", "real/inner"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "mpii" / "x.json").write_text("[]")
    (tmp_path / "texts.csv").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real" / "inner")
    monkeypatch.chdir(tmp_path / "work")
    assert absolute_spec_text("mpii:../mpii/x.json:../mpii") == f"mpii:{tmp_path / 'mpii' / 'x.json'}:{tmp_path / 'mpii'}"
    assert absolute_spec_text("pose:../sig/") == f"pose:{tmp_path / 'sig'}"
    assert absolute_spec_text("pose:./../sig") == f"pose:{tmp_path / 'sig'}"
    assert absolute_opts_text(["texts=../texts.csv"]) == (f"texts={tmp_path / 'texts.csv'}",)
    assert absolute_spec_text(f"folder:{tmp_path}/work/../sig/") == f"folder:{tmp_path / 'sig'}"  # typed absolute
    assert absolute_spec_text("folder:../link") == f"folder:{tmp_path / 'link'}"  # not resolved to real/inner
    assert absolute_spec_text("folder:../link/..") == f"folder:{tmp_path / 'work' / '..' / 'link' / '..'}"  # real/, not tmp_path


def test_a_dataset_recorded_relative_is_the_same_as_its_absolute_path(tmp_path, monkeypatch):
    """Runs made before paths were recorded absolute hold them relative; --resume and evaluate from the same folder
    must still see the same data (and its recorded options), not a different dataset."""
    from gesture_cli.data.registry import same_dataset

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert same_dataset("folder:data", f"folder:{tmp_path / 'data'}") and same_dataset("folder:data", "folder:data")
    assert not same_dataset("folder:data", f"folder:{tmp_path}") and not same_dataset("folder:data", "synthetic-hands")
    assert same_dataset(None, None) and not same_dataset(None, "folder:data")


REGISTRY = {"tiny-vit": type("E", (), {"source": "tiny", "family": "vit", "gated": False})(),
            "dinov2-small": type("E", (), {"source": "facebook/dinov2-small", "family": "dinov2", "gated": False})()}


@pytest.mark.parametrize(
    ("text", "kind", "name", "hub_id", "dirname"),
    [
        ("tiny-vit", "registry", "tiny-vit", None, "tiny-vit"),
        ("dinov2-small", "registry", "dinov2-small", "facebook/dinov2-small", "dinov2-small"),
        ("timm:vit_small_patch14_dinov2.lvd142m", "timm", "vit_small_patch14_dinov2.lvd142m", None, "timm-vit_small_patch14_dinov2.lvd142m"),
        ("someone/some-model", "hub", "someone/some-model", "someone/some-model", "someone--some-model"),
    ],
)
def test_backbone_refs(text, kind, name, hub_id, dirname):
    ref = parse_backbone_ref(text, REGISTRY)
    assert (ref.kind, ref.name, ref.hub_id, ref.dirname, ref.display) == (kind, name, hub_id, dirname, text)
    assert parse_backbone_ref(ref, {}) is ref


def test_backbone_ref_paths_and_errors(tmp_path):
    folder = tmp_path / "my model"
    folder.mkdir()
    ref = parse_backbone_ref(str(folder), lambda: pytest.fail("a path needs no registry"))
    assert ref.kind == "path" and ref.hub_id is None and ref.dirname == "my_model"
    with pytest.raises(ModelError, match="TorchScript file 'gone.pt' does not exist"):
        parse_backbone_ref("gone.pt", REGISTRY)
    with pytest.raises(UsageError, match="dinov2-small"):
        parse_backbone_ref("dinov2-smal", REGISTRY)
    assert isinstance(ref, BackboneRef)


@pytest.mark.parametrize("text", ["dinov2-small", "timm:a/b", "org/name", "/abs/dir/model.pt2", "./rel/x", "~/m", "weird name!", ""])
def test_backbone_dirname_is_a_function_of_the_text(text):
    # the folder-name rules artifacts were written with before the ref existed, kept for them
    import re
    from pathlib import Path

    p, spec = Path(text), text
    if spec.startswith(("/", "./", "../", "~")) or p.suffix in {".pt", ".pt2"}:
        spec = p.stem if p.suffix else p.name
    spec = spec.replace("timm:", "timm-").replace("/", "--")
    assert backbone_dirname(text) == (re.sub(r"[^A-Za-z0-9._+-]", "_", spec) or "backbone")
