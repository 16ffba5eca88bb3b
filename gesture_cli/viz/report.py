"""One self-contained HTML page with every table and picture of a run directory (`gx report`).

    html = render_report(ReportPage(name=..., location=..., root=..., created=..., steps=[StepView(entry, files, viewer), ...]))

tasks/report.py gathers the page (which steps' results are in place, the files each wrote, the pose
samples to play); this module only draws it, so it needs no knowledge of a command beyond a few
presentation hints: for every step it shows the step's metrics, the pictures it wrote (embedded as
data URIs, so the file can be mailed or opened offline), tables for its CSV and JSON results, curves
for any `train_log.csv`, and the provenance of the step (command line, resolved config, inputs with
hashes, versions, git commit, host, times). Nothing is fetched from the network when the page is
viewed. The page itself has no scripts; the pose player of pose datasets and translation samples runs
inside an <iframe srcdoc> (viz/pose_view.py).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".webp")
VIDEO_EXTS = (".mp4", ".webm", ".avi")
MAX_IMAGES_PER_STEP = 24
MAX_IMAGE_BYTES = 350_000  # larger pictures are downscaled before embedding
MAX_IMAGE_SIDE = 1400
MAX_TABLE_ROWS = 30
MAX_TEXT_LINES = 40
MAX_JSON_TABLE_ROWS = 60
# Model files (weights' configs, tokenizers) are not results: not shown as tables.
SKIP_JSON = {"labels.json", "config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "generation_config.json", "preprocessor_config.json"}
MODEL_DIRS = {"adapter", "backbone", "merged", "tokenizer", "encoder", "model", "text_model"}

# Sections of the page, in order: (title, commands). Steps of other commands go to "Other steps".
SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Data", ("download", "pose-convert")),
    ("Feature extraction", ("extract-features",)),
    ("Linear probes", ("probe", "probe-summary")),
    ("Fine-tuning", ("lora-train",)),
    ("Evaluation", ("evaluate",)),
    ("Inference", ("infer",)),
    ("Explanations (Grad-CAM and attention)", ("gradcam",)),
    ("PCA of patch features", ("pca-compute", "pca-visualize")),
    ("Segmentation", ("segment-train",)),
    ("Keypoints", ("keypoint-train",)),
    ("Sign-to-text", ("pose-pretrain", "pose-finetune", "pose-render")),
]
SECTION_HELP = {
    "Data": "Datasets and models fetched into the cache, and pose files converted to the gx format.",
    "Feature extraction": "Each frozen backbone turns every image into one feature vector (its CLS token or mean patch token); "
                          "the vectors are stored once and reused by the probes.",
    "Linear probes": "A logistic-regression classifier per backbone on the frozen features: the higher its test accuracy, the more "
                     "directly the backbone's features separate the gestures. Chance is one over the number of classes.",
    "Fine-tuning": "The backbone itself is adapted (LoRA adapters, the whole model, or only a head) with a classification head; "
                   "the curves show the training loss and the validation metrics over the optimizer steps.",
    "Evaluation": "Trained artifacts scored on a held-out split: accuracy, precision, recall and F1, per class and averaged.",
    "Inference": "Trained artifacts applied to new inputs; top-k predictions with their probabilities.",
    "Explanations (Grad-CAM and attention)": "Where the classifier looks: per image the input, the Grad-CAM map for the "
                                             "explained class, and the attention of the CLS token, with predicted and true labels.",
    "PCA of patch features": "The first principal directions of the backbone's patch features, shown as red, green and blue: "
                             "patches with similar features get similar colours, so parts of the image the model groups together stand out.",
    "Segmentation": "A head trained on the frozen backbone's patch tokens to label every pixel; mIoU is the mean over classes of "
                    "intersection over union.",
    "Keypoints": "A regression head predicting body joints; PCKh@0.5 is the share of joints within half a head size of the truth.",
    "Sign-to-text": "A pose encoder aligned with a text encoder (retrieval R@k) and then trained with the text decoder to translate "
                    "pose sequences into sentences, scored with BLEU, chrF and ROUGE-L.",
    "Other steps": "",
}
# Scalar metrics shown first in the overview, when a step recorded them.
HEADLINE = ("test_accuracy", "accuracy", "macro_f1", "test_mIoU", "mIoU", "pixel_acc", "test_pck", "pck", "pck_kind", "val_r1", "chance_r1",
            "val_r5", "test_bleu4", "bleu4", "bleu4_slt", "chrf", "rouge_l", "explained_variance_top3", "images_per_s", "images", "feature_dim",
            "trainable_params")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:1.5em}
header p{margin:4px 0 0;color:#c7d2de}main{padding:8px 28px 40px;max-width:1400px}
h2{border-bottom:2px solid #d5dbe3;padding-bottom:4px;margin-top:34px}
section.step{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 16px;margin:14px 0}
section.step h3{margin:0 0 6px;font-size:1.05em}section.step h3 code{font-weight:normal;color:#4a5866}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}th,td{border:1px solid #dde3ea;padding:3px 8px;text-align:left}td.n{text-align:right;white-space:nowrap}
th{background:#eef2f6}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.gallery figure{margin:0;max-width:100%}
.gallery img{max-width:100%;max-height:520px;border:1px solid #dde3ea;background:#fff}
figcaption{font-size:.78em;color:#4a5866;word-break:break-all}
pre{background:#f0f3f6;padding:8px;overflow-x:auto;font-size:.8em}
.status-ok{color:#17803d}.status-failed{color:#b42318}.status-interrupted{color:#b54708}.status-running{color:#175cd3}
.muted{color:#6b7785;font-size:.85em}svg{background:#fff;border:1px solid #dde3ea;margin:6px 8px 6px 0}
details{margin-top:8px}summary{cursor:pointer;color:#175cd3}
nav a{margin-right:14px;color:#175cd3;text-decoration:none}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 160)


# --------------------------------------------------------------------------- HTML pieces


def html_table(header: list[str], rows: Iterable[Iterable], *, caption: str | None = None) -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption class='muted'>{esc(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(_td(c) for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _td(c) -> str:
    numeric = isinstance(c, (int, float)) and not isinstance(c, bool) or (isinstance(c, str) and _num(c) is not None)
    return f"<td class='n'>{esc(fmt(c))}</td>" if numeric else f"<td>{esc(fmt(c))}</td>"


def image_data_uri(path: Path) -> str:
    """The picture as a data URI; big ones are downscaled (and photos re-encoded as JPEG) first."""
    data = path.read_bytes()
    ext = path.suffix.lower()
    mime = {"jpg": "jpeg"}.get(ext[1:], ext[1:])
    if len(data) > MAX_IMAGE_BYTES and ext != ".gif":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            scale = min(1.0, MAX_IMAGE_SIDE / max(im.size))
            if scale < 1.0:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
            buf = io.BytesIO()
            if im.mode in ("RGBA", "LA", "P"):
                im.save(buf, format="PNG", optimize=True)
                mime = "png"
            else:
                im.convert("RGB").save(buf, format="JPEG", quality=85)
                mime = "jpeg"
            if buf.tell() < len(data):
                data = buf.getvalue()
            else:
                mime = {"jpg": "jpeg"}.get(ext[1:], ext[1:])
    return f"data:image/{mime};base64," + base64.b64encode(data).decode("ascii")


def svg_line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str = "step",
                   width: int = 460, height: int = 240) -> str:
    """A small inline SVG line chart: one polyline per series, axes with min/max ticks."""
    pts = [p for s in series.values() for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return ""
    colours = ["#175cd3", "#d92d20", "#17803d", "#b54708", "#7a5af8", "#0e9384"]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, right, top, bottom = 52, 12, 26, 34
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' aria-label='{esc(title)}'>",
             f"<text x='{left}' y='16' font-size='13' font-weight='bold'>{esc(title)}</text>",
             f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#888'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#888'/>"]
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f"<text x='{left - 4}' y='{sy(y) + 4:.1f}' font-size='10' text-anchor='end'>{esc(f'{y:.3g}')}</text>")
        parts.append(f"<line x1='{left}' y1='{sy(y):.1f}' x2='{left + pw}' y2='{sy(y):.1f}' stroke='#eee'/>")
    for x in (x0, x1):
        parts.append(f"<text x='{sx(x):.1f}' y='{top + ph + 14}' font-size='10' text-anchor='middle'>{esc(f'{x:.6g}')}</text>")
    parts.append(f"<text x='{left + pw / 2:.1f}' y='{height - 4}' font-size='11' text-anchor='middle'>{esc(xlabel)}</text>")
    for i, (name, s) in enumerate(series.items()):
        s = [p for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
        if not s:
            continue
        c = colours[i % len(colours)]
        if len(s) == 1:
            parts.append(f"<circle cx='{sx(s[0][0]):.1f}' cy='{sy(s[0][1]):.1f}' r='3' fill='{c}'/>")
        else:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            parts.append(f"<polyline fill='none' stroke='{c}' stroke-width='1.6' points='{d}'/>")
        parts.append(f"<text x='{left + pw - 4}' y='{top + 12 + 13 * i}' font-size='11' text-anchor='end' fill='{c}'>{esc(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- file renderers


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])


def _num(s: str) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def render_train_log(path: Path) -> str:
    """Loss and validation curves from a train_log.csv (any numeric column; val_* on their own chart)."""
    header, rows = _read_csv(path)
    if "step" not in header or not rows:
        return ""
    xi = header.index("step")
    charts = []
    groups = [("training loss", [c for c in header if c in ("loss", "train_loss")]),
              ("validation", [c for c in header if c.startswith("val_") and "loss" not in c]),
              ("validation loss", [c for c in header if c.startswith("val_") and "loss" in c]),
              ("learning rate", [c for c in header if c == "lr"])]
    for title, cols in groups:
        series = {}
        for c in cols:
            ci = header.index(c)
            pts = [(_num(r[xi]), _num(r[ci])) for r in rows if len(r) > max(xi, ci)]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if pts:
                series[c] = pts
        if series:
            charts.append(svg_line_chart(series, title=title))
    return "<div class='gallery'>" + "".join(charts) + "</div>" if charts else ""


def render_csv(path: Path, rel: str) -> str:
    header, rows = _read_csv(path)
    if not header:
        return ""
    more = f" (first {MAX_TABLE_ROWS} of {len(rows)} rows)" if len(rows) > MAX_TABLE_ROWS else ""
    return html_table(header, rows[:MAX_TABLE_ROWS], caption=f"{rel}{more}")


def render_json(path: Path, rel: str) -> str:
    """Top-level scalars as a key/value table, and lists of flat records (per-class reports) as tables."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"<p class='muted'>{esc(rel)}: not readable JSON</p>"
    if not isinstance(data, dict):
        return ""
    skip = {"schema", "kind"}
    scalars = [(k, v) for k, v in data.items() if k not in skip and _is_scalar(v)]
    out, nested = [], []
    if scalars:
        out.append(html_table(["field", "value"], scalars, caption=rel))
    for k, v in data.items():
        if isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()) and len(v) <= MAX_JSON_TABLE_ROWS:
            nested.append(html_table([k, "value"], v.items(), caption=f"{rel}: {k}"))
        elif (isinstance(v, dict) and v and len(v) <= MAX_JSON_TABLE_ROWS
              and all(isinstance(x, dict) and x and all(_is_scalar(y) for y in x.values()) for x in v.values())):
            cols = list(dict.fromkeys(c for x in v.values() for c in x))  # a row per key, e.g. {"lora": {...}, "probe": {...}}
            nested.append(html_table([k, *cols], ([name, *(x.get(c, "") for c in cols)] for name, x in v.items()), caption=f"{rel}: {k}"))
        elif isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            cols = [c for c in v[0] if all(_is_scalar(r.get(c, "")) for r in v)]
            if cols:
                shown = v[:MAX_JSON_TABLE_ROWS]
                more = f" (first {len(shown)} of {len(v)})" if len(v) > len(shown) else ""
                nested.append(html_table(cols, ([r.get(c, "") for c in cols] for r in shown), caption=f"{rel}: {k}{more}"))
    return "".join(out + nested)


def render_text(path: Path, rel: str) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    more = f"\n... ({len(lines) - MAX_TEXT_LINES} more lines in {rel})" if len(lines) > MAX_TEXT_LINES else ""
    return f"<p class='muted'>{esc(rel)}</p><pre>{esc(chr(10).join(lines[:MAX_TEXT_LINES]) + more)}</pre>"


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepView:
    """One step as the page shows it; tasks/report.py gathers it from the run directory."""

    entry: dict  # the step's run.json entry: command, status, metrics, provenance
    files: list[Path] = field(default_factory=list)  # the files it wrote, in the order shown (none for a failed step)
    viewer: str = ""  # HTML shown after the files: the pose player of viz/pose_view.py, or ''


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows, gathered beforehand: `render_report` reads only the files named here."""

    name: str  # the run's name, in the title
    location: str  # the run directory as the header names it (resolved)
    root: Path  # the folder the step files lie in: their captions are relative to it
    created: str  # when the run began (run.json)
    steps: list[StepView] = field(default_factory=list)


def render_step(view: StepView, root: Path) -> str:
    """A step's section: headline, error, metrics, pictures, tables, curves, video links, viewer, provenance."""
    entry = view.entry
    status = entry.get("status", "?")
    outs = ", ".join(entry.get("outputs", [])) or "-"
    dur = entry.get("duration_s")
    head = (f"<h3>{esc(entry.get('command', '?'))} <code>{esc(outs)}</code> "
            f"<span class='status-{esc(status)}'>{esc(status)}</span>"
            f"<span class='muted'> {esc(f'{dur:.1f} s' if isinstance(dur, (int, float)) else '')}</span></h3>")
    parts = [f"<section class='step'>{head}"]
    if entry.get("error"):
        parts.append(f"<p class='status-failed'>{esc(entry['error'])}</p>")
    metrics = [(k, v) for k, v in (entry.get("metrics") or {}).items() if _is_scalar(v)]
    if metrics:
        parts.append(html_table(["metric", "value"], metrics))
    files = view.files
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTS]
    figs = []
    for f in images[:MAX_IMAGES_PER_STEP]:
        rel = f.relative_to(root).as_posix()
        try:
            uri = image_data_uri(f)
        except Exception:  # a picture that cannot be read is named, not shown broken
            parts.append(f"<p class='status-failed'>{esc(rel)}: unreadable image</p>")
            continue
        figs.append(f"<figure><img src='{uri}' alt='{esc(rel)}'><figcaption>{esc(rel)}</figcaption></figure>")
    if figs:
        parts.append("<div class='gallery'>" + "".join(figs) + "</div>")
    if len(images) > MAX_IMAGES_PER_STEP:
        parts.append(f"<p class='muted'>{len(images) - MAX_IMAGES_PER_STEP} more pictures in the run directory.</p>")
    for f in files:
        rel = f.relative_to(root).as_posix()
        if f.name == "train_log.csv":
            parts.append(render_train_log(f))
        elif f.suffix == ".csv":
            parts.append(render_csv(f, rel))
        elif f.suffix == ".json" and f.name not in SKIP_JSON and not MODEL_DIRS.intersection(f.relative_to(root).parts[:-1]):
            table = render_json(f, rel)
            if table:
                parts.append(f"<details><summary>{esc(rel)}</summary>{table}</details>")
        elif f.suffix == ".txt":
            parts.append(render_text(f, rel))
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTS]
    if videos:
        links = ", ".join(f"<a href='{esc(v.relative_to(root).as_posix())}'>{esc(v.relative_to(root).as_posix())}</a>" for v in videos)
        parts.append(f"<p class='muted'>Videos (next to this report in the run directory): {links}</p>")
    parts.append(view.viewer)  # '' unless a pose dataset or translation step
    parts.append(render_provenance(entry))
    parts.append("</section>")
    return "".join(parts)


def render_provenance(entry: dict) -> str:
    rows = [("command line", " ".join(entry.get("argv") or [])), ("started", entry.get("start", "")), ("ended", entry.get("end", "")),
            ("host", entry.get("host", "")), ("git commit", entry.get("git_sha") or "-"), ("cache key", entry.get("cache_key", ""))]
    rows += [(f"version {k}", v) for k, v in (entry.get("versions") or {}).items()]
    rows += [(f"input {i.get('path')}", i.get("hash", "")) for i in entry.get("inputs") or []]
    cfg = json.dumps(entry.get("config") or {}, indent=1, sort_keys=True)
    return (f"<details><summary>provenance</summary>{html_table(['', ''], rows)}"
            f"<p class='muted'>resolved config</p><pre>{esc(cfg)}</pre></details>")


def overview(steps: list[dict]) -> str:
    rows = []
    for s in steps:
        m = s.get("metrics") or {}
        heads = [(k, m[k]) for k in HEADLINE if k in m and _is_scalar(m[k])][:3]
        dur = s.get("duration_s")
        rows.append((s.get("command", "?"), ", ".join(s.get("outputs", [])), s.get("status", "?"),
                     f"{dur:.1f}\u00a0s" if isinstance(dur, (int, float)) else "-", ", ".join(f"{k} {fmt(v)}" for k, v in heads)))
    return html_table(["command", "outputs", "status", "time", "key results"], rows)


# evaluate / infer results of a dense or pose task sit with that task's training, not with classification
TASK_SECTIONS = {"segment": "Segmentation", "keypoint": "Keypoints", "translate": "Sign-to-text"}


def section_of(step: dict, known: dict[str, str]) -> str:
    command = step.get("command")
    if command in ("evaluate", "infer"):
        for out in step.get("outputs", []):
            name = out.split("/", 1)[-1]
            for task, title in TASK_SECTIONS.items():
                if name.startswith(task):
                    return title
    return known.get(command, "Other steps")


def render_report(page: ReportPage) -> str:
    """The whole page: header, overview table, then each step under its section."""
    steps = [v.entry for v in page.steps]
    by_section: dict[str, list[StepView]] = {}
    known = {c: title for title, cmds in SECTIONS for c in cmds}
    for v in page.steps:
        by_section.setdefault(section_of(v.entry, known), []).append(v)
    order = [t for t, _ in SECTIONS] + ["Other steps"]
    titles = [t for t in order if t in by_section]
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    body = [f"<header><h1>gx report: {esc(page.name)}</h1><p>{esc(page.location)} · created {esc(page.created)}"
            f" · {len(steps)} step(s) shown · report written {esc(when)}</p></header><main>"]
    body.append("<nav>" + "".join(f"<a href='#s{i}'>{esc(t)}</a>" for i, t in enumerate(titles)) + "</nav>")
    body.append("<h2>Overview</h2>" + overview(steps))
    for i, t in enumerate(titles):
        body.append(f"<h2 id='s{i}'>{esc(t)}</h2>")
        if SECTION_HELP.get(t):
            body.append(f"<p>{esc(SECTION_HELP[t])}</p>")
        body.extend(render_step(v, page.root) for v in by_section[t])
    body.append("</main>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>gx report: {esc(page.name)}</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>")
