"""An interactive pose player: one self-contained HTML page (a canvas and a little JavaScript, no network).

    html = render_pose_viewer(samples, title="poses")                # a whole page
    frame = viewer_iframe(samples, title="val samples")               # the same page inside an <iframe srcdoc>, for gx report

Per sample the page shows the skeleton of models/skeletons.py (the parts and colours of `gx pose-render`),
with play/pause, a frame slider, the speed, a checkbox per part, confidence shading (points and edges
fade with the detector's confidence where the source records one, e.g. the body's visibility in a
.pose file) and the sample's text and gloss (and, for translation samples, the model's hypothesis).

The data is embedded as JSON, compacted: x and y are integers on a 0..1000 grid of the sample's frame
(the recorded video frame, else the box around its points), -1 where a point is masked; confidences
are integers 0..100; long samples are subsampled to `max_frames` evenly spaced frames.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np

GRID = 1000  # coordinates are stored as integers 0..GRID on the sample's frame
DEFAULT_VIEW_FRAMES = 600  # frames per sample at most in a page


def _frame_box(sample) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) the canvas shows: the recorded frame for pixel coordinates, else the points' box with a margin."""
    from gesture_cli.viz.pose_render import _recorded_size, coordinate_units

    recorded = _recorded_size(sample)
    if recorded is not None and coordinate_units(sample) == "pixels":
        return 0.0, 0.0, float(recorded[0]), float(recorded[1])
    xy = sample.keypoints[..., :2][sample.mask]
    if not len(xy):
        return 0.0, 0.0, 1.0, 1.0
    lo, hi = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
    side = float(max(hi - lo)) or 1.0
    mid = (lo + hi) / 2
    half = side * 0.55  # a square box with a 10% margin: the player keeps the aspect ratio of the movement
    return float(mid[0] - half), float(mid[1] - half), float(mid[0] + half), float(mid[1] + half)


def viewer_sample(sample, drawing, *, max_frames: int = DEFAULT_VIEW_FRAMES, confidence: np.ndarray | None = None,
                  texts: dict[str, str] | None = None) -> dict:
    """One sample as the page's JSON: ids, texts, fps, frame box and the compacted points of `drawing`."""
    t = sample.num_frames
    idx = np.arange(t) if t <= max_frames else np.linspace(0, t - 1, max_frames).round().astype(np.int64)
    fps = float(sample.fps) * len(idx) / max(t, 1)
    x0, y0, x1, y1 = _frame_box(sample)
    pts = drawing.points
    xy = sample.keypoints[idx][:, pts, :2].astype(np.float64)  # [F, P, 2]
    ok = sample.mask[idx][:, pts]
    q = np.stack([(xy[..., 0] - x0) / (x1 - x0), (xy[..., 1] - y0) / (y1 - y0)], axis=-1) * GRID
    q = np.where(ok[..., None] & np.isfinite(q), np.clip(np.round(q), -GRID, 2 * GRID), -1).astype(np.int64)
    q[~ok] = -1
    out = {"id": sample.id, "text": sample.text, "gloss": sample.gloss, "fps": round(fps, 3), "frames": len(idx),
           "aspect": round((x1 - x0) / (y1 - y0), 4) if y1 > y0 else 1.0, "xy": q.reshape(len(idx), -1).tolist()}
    if confidence is not None and confidence.shape[0] == t:
        c = np.clip(np.nan_to_num(confidence[idx][:, pts]), 0, 1)
        out["conf"] = np.round(c * 100).astype(np.int64).tolist()
    if texts:
        out["extra"] = {k: v for k, v in texts.items() if v}
    return out


def viewer_payload(samples: Sequence, *, parts: str | None = None, max_frames: int = DEFAULT_VIEW_FRAMES,
                   confidences: dict[str, np.ndarray] | None = None, texts: dict[str, dict[str, str]] | None = None) -> dict:
    """The JSON the page plays: the skeleton (points, edges, colours, parts) and every sample."""
    from gesture_cli.models.skeletons import select_parts
    from gesture_cli.viz.pose_render import DEFAULT_RENDER_PARTS, make_drawing

    if not samples:
        raise ValueError("no samples to view")
    from dataclasses import replace

    drawing = make_drawing(samples[0].layout, parts)
    sel = select_parts(samples[0].layout, parts or DEFAULT_RENDER_PARTS)  # the selection make_drawing made: part of each point
    # only points that are drawn (a dot, or the end of an edge): the face mesh has 468 points, its contours ~130
    used = set(map(int, drawing.edges.ravel()))
    keep = np.array([bool(d) or int(p) in used for p, d in zip(drawing.points, drawing.dots, strict=True)], dtype=bool)
    drawing = replace(drawing, points=drawing.points[keep], point_colors=drawing.point_colors[keep], dots=drawing.dots[keep])
    part_of = [sel.parts[i] for i, k in zip(sel.part_of, keep, strict=True) if k]
    local = {int(p): i for i, p in enumerate(drawing.points)}
    return {
        "layout": drawing.layout, "parts": list(drawing.parts), "pointPart": part_of,
        "edges": [[local[int(a)], local[int(b)]] for a, b in drawing.edges],
        "edgeColors": [_hex(c) for c in drawing.edge_colors],
        "pointColors": [_hex(c) for c in drawing.point_colors],
        "dots": [bool(d) for d in drawing.dots],
        "samples": [viewer_sample(s, drawing, max_frames=max_frames, confidence=(confidences or {}).get(s.id),
                                  texts=(texts or {}).get(s.id)) for s in samples],
    }


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


CSS = """
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#111821;color:#e8edf2}
.wrap{padding:10px 14px}h1{font-size:1.05em;margin:0 0 8px}
.bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0;font-size:.88em}
button{background:#2b3a4a;color:#fff;border:1px solid #4b5d70;border-radius:4px;padding:3px 12px;cursor:pointer;min-width:64px}
select,input{accent-color:#5aa9ff}label{white-space:nowrap}#slider{flex:1;min-width:200px}
canvas{background:#000;display:block;border:1px solid #33414f;max-width:100%}
.text{font-size:1em;margin:6px 0}.muted{color:#9fb0c0;font-size:.85em}.swatch{display:inline-block;width:10px;height:10px;margin-right:3px}
"""

JS = r"""
(function(){
const D = JSON.parse(document.getElementById('gx-pose-data').textContent);
const cv = document.getElementById('cv'), ctx = cv.getContext('2d');
const sel = document.getElementById('sample'), slider = document.getElementById('slider'), play = document.getElementById('play');
const speed = document.getElementById('speed'), shade = document.getElementById('shade'), info = document.getElementById('info');
const text = document.getElementById('text');
const on = {}; D.parts.forEach(p => on[p] = true);
let s = 0, f = 0, playing = false, timer = null;
D.samples.forEach((x, i) => { const o = document.createElement('option'); o.value = i; o.textContent = x.id + ' (' + x.frames + ' frames)'; sel.appendChild(o); });
const parts = document.getElementById('parts');
D.parts.forEach(p => {
  const i = D.pointPart.indexOf(p), l = document.createElement('label'), c = document.createElement('input');
  c.type = 'checkbox'; c.checked = true; c.onchange = () => { on[p] = c.checked; draw(); };
  const sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = i >= 0 ? D.pointColors[i] : '#ccc';
  l.appendChild(c); l.appendChild(sw); l.appendChild(document.createTextNode(p)); parts.appendChild(l);
});
function esc(t){ const d = document.createElement('div'); d.textContent = t; return d.innerHTML; }
function pick(i){
  s = i; f = 0; const x = D.samples[s]; slider.max = Math.max(0, x.frames - 1); fit();
  let t = '';
  if (x.text) t += '<div><b>text</b> ' + esc(x.text) + '</div>';
  if (x.gloss) t += '<div><b>gloss</b> ' + esc(x.gloss) + '</div>';
  Object.entries(x.extra || {}).forEach(([k, v]) => { t += '<div><b>' + esc(k) + '</b> ' + esc(v) + '</div>'; });
  text.innerHTML = t || '<span class="muted">no text</span>';
  draw();
}
function fit(){
  // at most 720 x 720, keeping the frame's aspect ratio; an iframe may not be laid out yet: then assume 720
  const x = D.samples[s], avail = (document.documentElement.clientWidth || window.innerWidth || 760) - 40;
  let w = Math.max(240, Math.min(720, avail)), h = w / x.aspect;
  if (h > 720) { h = 720; w = h * x.aspect; }
  cv.width = Math.round(w); cv.height = Math.round(h);
}
window.addEventListener('resize', () => { fit(); draw(); });
window.addEventListener('load', () => { fit(); draw(); });
function draw(){
  const x = D.samples[s], xy = x.xy[f], c = x.conf ? x.conf[f] : null, W = cv.width, H = cv.height;
  const sx = W / 1000, sy = H / 1000, fade = shade.checked && c;
  ctx.clearRect(0, 0, W, H); ctx.lineWidth = 2; ctx.lineCap = 'round';
  const vis = i => xy[2 * i] >= 0 && on[D.pointPart[i]];
  const alpha = i => fade ? 0.15 + 0.85 * c[i] / 100 : 1;
  D.edges.forEach(([a, b], k) => {
    if (!vis(a) || !vis(b)) return;
    ctx.globalAlpha = Math.min(alpha(a), alpha(b)); ctx.strokeStyle = D.edgeColors[k];
    ctx.beginPath(); ctx.moveTo(xy[2 * a] * sx, xy[2 * a + 1] * sy); ctx.lineTo(xy[2 * b] * sx, xy[2 * b + 1] * sy); ctx.stroke();
  });
  D.dots.forEach((d, i) => {
    if (!d || !vis(i)) return;
    ctx.globalAlpha = alpha(i); ctx.fillStyle = D.pointColors[i];
    ctx.beginPath(); ctx.arc(xy[2 * i] * sx, xy[2 * i + 1] * sy, 3, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.globalAlpha = 1; slider.value = f; cv.dataset.frame = f; cv.dataset.sample = s;
  info.textContent = 'frame ' + (f + 1) + ' / ' + x.frames + ' \u00b7 ' + (f / x.fps).toFixed(2) + ' s \u00b7 ' + x.fps.toFixed(1) + ' fps';
}
function tick(){
  const x = D.samples[s]; f = (f + 1) % x.frames; draw();
  timer = setTimeout(tick, 1000 / (x.fps * parseFloat(speed.value)));
}
function setPlaying(p){
  playing = p; play.textContent = p ? 'Pause' : 'Play'; clearTimeout(timer);
  if (p) timer = setTimeout(tick, 1000 / (D.samples[s].fps * parseFloat(speed.value)));
}
play.onclick = () => setPlaying(!playing);
slider.oninput = () => { f = parseInt(slider.value, 10); draw(); };
sel.onchange = () => { pick(parseInt(sel.value, 10)); if (playing) setPlaying(true); };
shade.onchange = draw; speed.onchange = () => { if (playing) setPlaying(true); };
document.addEventListener('keydown', e => { if (e.key === ' ' && e.target === document.body) { e.preventDefault(); setPlaying(!playing); } });
pick(0);
})();
"""


def render_pose_viewer(samples: Sequence, *, title: str = "gx pose viewer", parts: str | None = None, max_frames: int = DEFAULT_VIEW_FRAMES,
                       confidences: dict[str, np.ndarray] | None = None, texts: dict[str, dict[str, str]] | None = None) -> str:
    """The whole page: controls, a canvas, the data as JSON and the player script; nothing is fetched."""
    data = viewer_payload(samples, parts=parts, max_frames=max_frames, confidences=confidences, texts=texts)
    # '</' cannot appear inside a <script> element; JSON allows escaping the slash
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    has_conf = any("conf" in x for x in data["samples"])
    t = html.escape(title)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{t}</title><style>{CSS}</style></head><body><div class='wrap'><h1>{t}</h1>"
        "<div class='bar'><select id='sample' aria-label='sample'></select><button id='play'>Play</button>"
        "<input id='slider' type='range' min='0' max='0' value='0' aria-label='frame'>"
        "<label>speed <select id='speed'><option value='0.25'>0.25x</option><option value='0.5'>0.5x</option>"
        "<option value='1' selected>1x</option><option value='2'>2x</option></select></label>"
        f"<label><input id='shade' type='checkbox'{' checked' if has_conf else ' disabled'}> confidence shading</label></div>"
        "<div class='bar' id='parts'></div><canvas id='cv' width='640' height='640'></canvas>"
        "<div class='bar muted' id='info'></div><div class='text' id='text'></div></div>"
        f"<script type='application/json' id='gx-pose-data'>{blob}</script><script>{JS}</script></body></html>"
    )


def viewer_iframe(samples: Sequence, *, title: str, height: int = 900, **kwargs) -> str:
    """The viewer inside an <iframe srcdoc>: its script runs in its own document, the host page stays script-free."""
    page = render_pose_viewer(samples, title=title, **kwargs)
    return (f"<iframe title='{html.escape(title, quote=True)}' srcdoc=\"{html.escape(page, quote=True)}\" "
            f"style='width:100%;max-width:780px;height:{height}px;border:1px solid #dde3ea;border-radius:6px' "
            "sandbox='allow-scripts'></iframe>")


# ---- gx report ----------------------------------------------------------------------------------
REPORT_FRAMES = 150  # frames per sample in a report (the page carries every viewer)


def report_viewer(samples: Sequence, *, title: str, confidences: dict[str, np.ndarray] | None = None,
                  texts: dict[str, dict[str, str]] | None = None) -> str:
    """The player of a report step, under a one-line hint; tasks/report.py picks the samples and texts."""
    return "<p class='muted'>Pose viewer (play, step, toggle parts):</p>" + viewer_iframe(
        samples, title=title, max_frames=REPORT_FRAMES, confidences=confidences, texts=texts)


def report_viewer_failure(spec, exc: Exception) -> str:
    """What a report step shows instead of the player when its pose data cannot be read (moved or deleted since the run)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"<p class='muted'>Pose viewer: {html.escape(str(spec))} could not be read ({html.escape(first)}).</p>"
